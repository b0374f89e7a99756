"""Training: recipe, model setup (HF + RoPE), document masking, loader, DeepSpeed ZeRO-3 loop, checkpoints, export."""
