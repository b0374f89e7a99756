"""Long-context evaluation: loss vs context length with a power-law fit, retrieval probes, RoPE analysis."""
