"""Generation throughput of `longmix.models.generate` (batched, left-padded, KV cache) against the baseline: a bare
transformers `model.generate` loop, one prompt at a time, greedy, same model, prompts, thread count and stop token.

    .venv/bin/python tests/bench/bench_sft_generate.py [--model build/models/smollm2-135m] [--prompts 8]
        [--prompt-tokens 400] [--new-tokens 64] [--batch-size 8] [--threads 2] [--json FILE]

The prompts are `longmix sft-data`'s own first-step prompts (chat template + chunk) over chunks of the demo
corpus's docs (or any JSONL with `text`), so the figure is the one the data generator sees. Tokens counted: new
tokens up to the stop token, in both arms. The two arms run alternately, best of --repeat.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def prompts_of(loaded, model: Path, corpus: Path, n: int, prompt_tokens: int) -> list[list[int]]:
    from longmix.data.sft.chat import load_chat_template
    from longmix.data.sft.longqa import GEN_PREFILL, generation_messages
    from longmix.data.sft.shard import Prompter

    prompter = Prompter(loaded.tokenizer, load_chat_template(model), loaded.bos_id)
    out = []
    for f in sorted(corpus.glob("*.jsonl")) if corpus.is_dir() else [corpus]:
        for line in f.read_text().splitlines():
            ids = loaded.tokenizer.encode(json.loads(line)["text"], add_special_tokens=False).ids
            if len(ids) >= prompt_tokens:
                chunk = loaded.tokenizer.decode(ids[:prompt_tokens])
                style = ("factual", "summary")[len(out) % 2]
                out.append(prompter.ids(generation_messages(style, chunk), GEN_PREFILL[style]))
            if len(out) == n:
                return out
    raise SystemExit(f"only {len(out)} documents of {prompt_tokens}+ tokens in {corpus}")


def baseline(loaded, prompts: list[list[int]], new_tokens: int, stops: list[int]) -> int:
    """A bare transformers loop: one prompt at a time, greedy (KV cache on, transformers' default)."""
    import torch

    count = 0
    with torch.no_grad():
        for p in prompts:
            ids = torch.as_tensor([p])
            out = loaded.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                        max_new_tokens=new_tokens, eos_token_id=stops, pad_token_id=stops[0])
            new = out[0, len(p):].tolist()
            count += next((k for k, t in enumerate(new) if t in stops), len(new))
    return count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=REPO / "build/models/smollm2-135m")
    ap.add_argument("--corpus", type=Path, default=REPO / "build/demo/corpus/docs")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--prompt-tokens", type=int, default=400)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import torch

    from longmix.models.generate import generate_ids, stop_ids_of
    from longmix.models.loading import load_checkpoint

    torch.set_num_threads(args.threads)
    loaded = load_checkpoint(args.model, device="cpu")
    prompts = prompts_of(loaded, args.model, args.corpus, args.prompts, args.prompt_tokens)
    stops = stop_ids_of(loaded)
    best = {"baseline": 0.0, "longmix": 0.0}
    tokens = {}
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        tokens["baseline"] = baseline(loaded, prompts, args.new_tokens, stops)
        best["baseline"] = max(best["baseline"], tokens["baseline"] / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        out = generate_ids(loaded, prompts, args.new_tokens, batch_size=args.batch_size, stop_ids=stops)
        tokens["longmix"] = sum(map(len, out))
        best["longmix"] = max(best["longmix"], tokens["longmix"] / (time.perf_counter() - t0))
    result = {"model": args.model.name, "prompts": len(prompts), "prompt_tokens": [len(p) for p in prompts],
              "new_tokens_max": args.new_tokens, "threads": args.threads, "batch_size": args.batch_size,
              "tokens": tokens, "tokens_per_s": {k: round(v, 2) for k, v in best.items()},
              "ratio_longmix_over_baseline": round(best["longmix"] / best["baseline"], 3)}
    print(f"baseline (transformers generate, one prompt at a time): {best['baseline']:.1f} new tokens/s "
          f"({tokens['baseline']} tokens)")
    print(f"longmix.models.generate (batch {args.batch_size}): {best['longmix']:.1f} new tokens/s "
          f"({tokens['longmix']} tokens)")
    print(f"ratio: {result['ratio_longmix_over_baseline']}x  ({args.threads} threads, {len(prompts)} prompts of "
          f"{min(result['prompt_tokens'])}-{max(result['prompt_tokens'])} tokens, up to {args.new_tokens} new)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
