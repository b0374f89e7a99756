"""Train a Hugging Face causal LM on a longmix mix with HF's Trainer (docs/interop.md).

    python docs/examples/hf_trainer.py MANIFEST MODEL_DIR OUT_DIR [STEPS]
"""
import sys

import torch
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

from longmix.train.dataset import PackedDataset

KEYS = ("input_ids", "labels", "position_ids")  # cu_seqlens differ in length per row: not stacked


def collate(items: list[dict]) -> dict:
    return {k: torch.stack([item[k] for item in items]) for k in KEYS}


def build_trainer(manifest: str, model_dir: str, out_dir: str, steps: int, batch_size: int = 4,
                  dataset: torch.utils.data.Dataset | None = None) -> Trainer:
    # Per-document attention: no attention_mask and no cache, so transformers reads documents from the
    # position_ids restarts (labels are -100 at each document's first token and on padding).
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa")
    model.config.use_cache = False
    args = TrainingArguments(output_dir=out_dir, per_device_train_batch_size=batch_size, max_steps=steps,
                             logging_steps=1, learning_rate=1e-4, report_to=[], save_strategy="no", seed=0)
    return Trainer(model=model, args=args, train_dataset=dataset or PackedDataset(manifest), data_collator=collate)


if __name__ == "__main__":
    manifest, model_dir, out_dir = sys.argv[1:4]
    trainer = build_trainer(manifest, model_dir, out_dir, int(sys.argv[4]) if len(sys.argv) > 4 else 100)
    trainer.train()
    trainer.save_model(out_dir)
