"""What a sliding window costs or saves in the per-document core on CPU: forward + backward tokens/s of a
Gemma 3-shaped model (5 local layers with a 512-token window per full-attention layer, 4 heads / 1 KV head)
with the window honoured, against the same model with every layer full causal (the baseline: what longmix
computed before windows were honoured), in the same process, alternating.

    .venv/bin/python tests/bench/bench_attention_window.py [--lengths 2048,4096] [--repeat 3] [--json FILE]

Two row layouts per length: one document filling the row (the window bites on every query past 512) and
a row packed with documents of 300-1,500 tokens (most documents barely exceed the window).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

SHAPE = {  # Gemma 3 270M's attention shape, fewer and narrower layers (2 CPU cores)
    "model_type": "gemma3_text", "hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 6,
    "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 64, "query_pre_attn_scalar": 64,
    "vocab_size": 4096, "sliding_window": 512, "max_position_embeddings": 32768,
    "layer_types": ["sliding_attention"] * 5 + ["full_attention"],
}


def _model(windowed: bool):
    from transformers import AutoConfig, AutoModelForCausalLM

    from longmix.train import attention

    attention.register()
    cfg = dict(SHAPE)
    if not windowed:
        cfg["layer_types"] = ["full_attention"] * cfg["num_hidden_layers"]
    config = AutoConfig.for_model(**cfg)
    config.use_cache = False
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attention.DOC_SDPA)
    return model.train()


def _row(length: int, packed: bool, seed: int = 0):
    from longmix.train.masking import build_arrays

    rng = np.random.default_rng(seed)
    ids = rng.integers(3, SHAPE["vocab_size"], size=(1, length))
    if packed:
        lens = []
        while sum(lens) < length:
            lens.append(int(min(rng.integers(300, 1500), length - sum(lens))))
    else:
        lens = [length]
    ids, pos, tgt = build_arrays(ids, [np.array(lens)], np.array([0]), True)
    return torch.from_numpy(ids), torch.from_numpy(pos), torch.from_numpy(tgt), lens


def _step(model, ids, pos, tgt) -> float:
    t = time.perf_counter()
    logits = model(input_ids=ids, position_ids=pos, use_cache=False).logits
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), tgt.flatten(), ignore_index=-100).backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", default="2048,4096")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(2)
    models = {"windowed": _model(True), "full (baseline)": _model(False)}
    results = []
    for length in [int(x) for x in args.lengths.split(",")]:
        for packed in (False, True):
            ids, pos, tgt, lens = _row(length, packed)
            times: dict[str, list[float]] = {k: [] for k in models}
            for m in models.values():
                _step(m, ids, pos, tgt)  # warm-up
            for _ in range(args.repeat):
                for name, m in models.items():
                    times[name].append(_step(m, ids, pos, tgt))
            tps = {k: length / statistics.median(v) for k, v in times.items()}
            ratio = tps["windowed"] / tps["full (baseline)"]
            layout = f"{len(lens)} documents (longest {max(lens)})" if packed else "1 document"
            results.append({"length": length, "layout": layout, "tokens_per_s": tps, "ratio": ratio})
            print(f"{length:>6} tokens, {layout:<32} windowed {tps['windowed']:8.0f} tok/s   "
                  f"full {tps['full (baseline)']:8.0f} tok/s   ratio {ratio:.2f}x", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
