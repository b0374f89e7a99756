"""The GPU check: one script, one device call (at most 8 minutes), each part in its own process so a crash or
an out-of-memory in one is recorded and the next still runs.

    python3 tests/gpu/gpu_check.py --out $OUT            # on the GPU machine (see tests/gpu/README.md)
    .venv/bin/python tests/gpu/gpu_check.py --cpu-dry-run --out build/gpu-dry-run   # here; CI runs it too

Parts:
  correctness  flex vs per-document SDPA vs transformers' masked sdpa on packed rows with several documents:
               loss and every parameter's gradient (bf16 on GPU; fp32 forward-only for flex on CPU)
  throughput   a ~1B Llama from a config (16 layers, hidden 2,048, 16 heads / 8 KV heads, 32K vocabulary),
               bf16, through `longmix train`'s own Trainer with ZeRO-3 on one GPU at 8K and 32K tokens of
               packed documents: tokens/s, MFU (attention FLOPs from Σ doc_len²), peak memory; against a
               bare transformers + torch AdamW loop on the same model shape and the same batch
  reach        the longest sequence that trains with tiled loss, activation checkpointing and offload
               (64K, 128K, 256K tokens; stops at the first failure)
  real         SmolLM2-135M's shape (its config; the weights cannot travel) training tokens/s at 8K
Writes gpu_check.json and gpu_check.md to --out. Exit code 0 when every part passed.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

BILLION = {"model_type": "llama", "hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 16,
           "num_attention_heads": 16, "num_key_value_heads": 8, "vocab_size": 32000,
           "max_position_embeddings": 1 << 20, "tie_word_embeddings": False, "rope_theta": 500000.0,
           "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
TINY = {**BILLION, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 512}
SMOLLM2 = {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
           "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64, "vocab_size": 49152,
           "max_position_embeddings": 8192, "tie_word_embeddings": True, "rope_theta": 100000.0,
           "rms_norm_eps": 1e-5, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}

# (gpu, cpu dry run)
THROUGHPUT_LENS = ((8192, 32768), (256, 512))
REACH_LENS = ((65536, 131072, 262144), (1024, 2048))
REAL_LEN = (8192, 256)
STEPS = (6, 3)  # steps per timed run; the first ones warm up (compile, allocator)
# seconds each part may take on the GPU: 480 in all, so one device call of 8 minutes holds the whole check
PART_TIMEOUT = {"correctness": 60, "throughput": 100, "reach": 160, "real": 60}
TOLERANCE = {"bf16": {"loss_abs": 2e-2, "grad_rel": 5e-2}, "fp32": {"loss_abs": 1e-5, "grad_rel": 1e-4}}


# ----------------------------------------------------------------------------------------------- data

def synthetic_manifest(out: Path, seq_len: int, rows: int, vocab: int, seed: int = 0) -> Path:
    """Packed shards of random tokens with realistic document lengths (log-normal around seq_len / 8, so a
    row holds several documents and some span most of it) plus a manifest, as `longmix build` writes them."""
    import numpy as np
    from tokenizers import Tokenizer, models

    from longmix.formats.manifest import (
        Manifest,
        make_lineage,
        shard_entries,
        tokenizer_entry,
        totals_from,
        write_manifest,
    )
    from longmix.formats.packed_rows import PackedRows
    from longmix.formats.packed_shards import write_shards

    out.mkdir(parents=True, exist_ok=True)
    tok_path = out / "tokenizer.json"  # a stand-in: the ids are random, only the special tokens matter
    Tokenizer(models.WordLevel({"<pad>": 0, "<s>": 1, "</s>": 2, "x": 3}, unk_token="x")).save(str(tok_path))
    rng = np.random.default_rng(seed)
    seg_lens: list[int] = []
    offsets = [0]
    for _ in range(rows):
        left = seq_len
        while left > 0:
            n = int(min(left, max(16, rng.lognormal(np.log(seq_len / 8), 1.0))))
            seg_lens.append(n)
            left -= n
        offsets.append(len(seg_lens))
    block = PackedRows(input_ids=rng.integers(3, vocab, size=(rows, seq_len), dtype=np.uint32),
                       seg_lens=np.asarray(seg_lens, np.int32), seg_sources=np.zeros(len(seg_lens), np.int16),
                       seg_offsets=np.asarray(offsets, np.int64), pad=np.zeros(rows, np.int32))
    infos = write_shards([block], out, seq_len, rows_per_shard=max(rows, 1))
    manifest = Manifest(seq_len=seq_len, tokenizer=tokenizer_entry(tok_path, out), sources=["synthetic"],
                        shards=shard_entries(infos, out), totals=totals_from(infos, 0), packing={}, mix={},
                        lineage=make_lineage({"seq_len": seq_len}, {"synthetic": f"seed {seed}"}, seed))
    write_manifest(manifest, out / "manifest.json")
    return out / "manifest.json"


def train_recipe(out: Path, manifest: Path, config: dict, seq_len: int, steps: int, **model: Any) -> Path:
    import yaml

    rec = {"name": out.name, "seed": 0, "output": str(out), "model": {"config": config, **model},
           "data": {"phases": [{"manifest": str(manifest), "steps": steps}], "verify": False},
           "batch": {"tokens_per_step": seq_len, "micro_batch_tokens": seq_len},
           "optim": {"lr": 1e-5}, "schedule": {"warmup_steps": 1},
           "deepspeed": str(REPO / "train" / "ds_zero3.json"),
           "checkpoint": {"every_steps": 1 << 30, "keep_last": 1}}
    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(rec, sort_keys=False))
    return path


# ----------------------------------------------------------------------------------------------- parts

def part_correctness(dry: bool) -> dict[str, Any]:
    """Loss and gradients of one tiny-to-small Llama with each core on the same packed rows."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from transformers import AutoConfig, AutoModelForCausalLM

    from longmix.train import attention, flex_attention
    from longmix.train.masking import IGNORE, build_arrays

    device = "cpu" if dry else "cuda"
    dtype = torch.float32 if dry else torch.bfloat16
    seq = 320 if dry else 4096
    cfg = dict(TINY if dry else {**BILLION, "num_hidden_layers": 4, "hidden_size": 1024, "intermediate_size": 2816,
                                 "num_attention_heads": 8, "num_key_value_heads": 4})
    model_type = cfg.pop("model_type")
    rng = np.random.default_rng(0)
    lens = [np.array([seq // 3, seq // 5, seq - seq // 3 - seq // 5]),
            np.array([7, seq // 2, seq // 4, seq - 7 - seq // 2 - seq // 4 - 13, 13])]
    arrays = build_arrays(rng.integers(3, cfg["vocab_size"], size=(2, seq)), lens, np.array([0, 13]), True)
    ids, pos, tgt = (torch.from_numpy(a).to(device) for a in arrays)
    cores = {"doc_sdpa": attention.resolve("doc_sdpa"), "sdpa": "sdpa"}
    if flex_attention.available():
        flex_attention.register()
        cores["flex"] = flex_attention.FLEX
    results: dict[str, Any] = {}
    for name, impl in cores.items():
        config = AutoConfig.for_model(model_type, **cfg)
        config._attn_implementation = impl
        config.use_cache = False
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype).to(device).train()
        backward = not (dry and name == "flex")  # FlexAttention has no CPU backward
        with torch.set_grad_enabled(backward):
            if name == "flex":
                with flex_attention.use_documents(pos):
                    logits = model(input_ids=ids, position_ids=pos, use_cache=False).logits
            else:
                logits = model(input_ids=ids, position_ids=pos, use_cache=False).logits
            loss = F.cross_entropy(logits.float().flatten(0, 1), tgt.flatten(), ignore_index=IGNORE)
        grads = None
        if backward:
            loss.backward()
            grads = {n: p.grad.float().cpu() for n, p in model.named_parameters()}
        results[name] = (float(loss), grads)
        del model, logits
    ref_loss, ref_grads = results["doc_sdpa"]
    tol = TOLERANCE["fp32" if dry else "bf16"]
    out: dict[str, Any] = {"dtype": str(dtype), "seq_len": seq, "documents": [len(x) for x in lens],
                           "tolerance": tol, "loss": {"doc_sdpa": ref_loss}, "ok": True}
    for name, (loss, grads) in results.items():
        if name == "doc_sdpa":
            continue
        diff = abs(loss - ref_loss)
        out["loss"][name] = loss
        out[f"{name}_loss_abs_diff"] = diff
        ok = diff <= tol["loss_abs"]
        if grads is not None:
            worst = max(float((grads[n] - g).norm() / g.norm().clamp_min(1e-12)) for n, g in ref_grads.items())
            out[f"{name}_grad_max_rel_diff"] = worst
            ok = ok and worst <= tol["grad_rel"]
        out["ok"] = out["ok"] and ok
    return out


def _run_trainer(recipe_path: Path) -> dict[str, Any]:
    """`longmix train`'s own Trainer on this single rank; steady-state figures from its metrics."""
    import torch

    from longmix.train.recipe import load_train_recipe
    from longmix.train.trainer import Trainer, read_metrics

    rec = load_train_recipe(recipe_path)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer = Trainer(rec)
    attn = trainer.hf_config._attn_implementation
    trainer.run()
    rows = [r for r in read_metrics(rec.output_dir / "metrics.jsonl") if "loss" in r]
    steady = rows[2:] or rows[-1:]
    out = {"attn": attn, "steps": len(rows), "loss_first": rows[0]["loss"], "loss_last": rows[-1]["loss"],
           "tokens_per_s": statistics.median(r["tokens_per_s"] for r in steady),
           "tflops_per_device": statistics.median(r["tflops_per_device"] for r in steady),
           "mfu": statistics.median(r["mfu"] for r in steady) if steady[0]["mfu"] is not None else None}
    if torch.cuda.is_available():
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    del trainer
    return out


def _bare_loop(recipe_path: Path, steps: int) -> dict[str, Any]:
    """The floor: the same model shape and the trainer's first batch in plain transformers, torch AdamW
    (fused on GPU), the same attention core with its block mask built once per step."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoConfig, AutoModelForCausalLM

    from longmix.train import flex_attention
    from longmix.train.flops import matmul_params, peak_flops_per_device, step_flops
    from longmix.train.loader import Loader, PhaseData, plan_phases
    from longmix.train.model import load_config
    from longmix.train.recipe import load_train_recipe

    rec = load_train_recipe(recipe_path)
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    phases = [PhaseData(rec.resolve(p.manifest), verify=False) for p in rec.data.phases]
    loader = Loader(rec, phases, plan_phases(rec, phases, 1), 0, 1)
    batch = loader.step(0)
    mb = batch.micro[0]
    ids, pos, tgt = (torch.from_numpy(a).to(device) for a in (mb.input_ids, mb.position_ids, mb.targets))
    config = load_config(rec.model, rec)
    fields = {k: v for k, v in rec.model.config.items() if k != "model_type"}
    plain = AutoConfig.for_model(rec.model.config["model_type"], **fields)
    plain.rope_parameters, plain._attn_implementation, plain.use_cache = \
        config.rope_parameters, config._attn_implementation, False
    dtype = torch.bfloat16 if cuda else torch.float32
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()  # a plain, whole model even if a ZeRO-3 run happened in this process
    model = AutoModelForCausalLM.from_config(plain, dtype=dtype).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=cuda)
    flex = plain._attn_implementation == flex_attention.FLEX
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        if flex:
            with flex_attention.use_documents(pos):
                logits = model(input_ids=ids, position_ids=pos, use_cache=False).logits
        else:
            logits = model(input_ids=ids, position_ids=pos, use_cache=False).logits
        F.cross_entropy(logits.float().flatten(0, 1), tgt.flatten(), ignore_index=-100).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    dt = statistics.median(times[2:] or times[-1:])
    flops = step_flops(matmul_params(model), plain, batch.global_tokens, batch.global_attn_pairs)
    peak, source = peak_flops_per_device(None, next(model.parameters()).dtype)  # as the trainer computes it
    out = {"attn": plain._attn_implementation, "tokens_per_s": ids.numel() / dt, "tflops_per_device": flops / dt / 1e12,
           "mfu": flops / dt / peak, "peak_source": source}
    if cuda:
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def part_throughput(dry: bool, seq_len: int, work: Path) -> dict[str, Any]:
    steps = STEPS[dry]
    cfg = TINY if dry else BILLION
    manifest = synthetic_manifest(work / f"data-{seq_len}", seq_len, steps + 2, cfg["vocab_size"])
    rec = train_recipe(work / f"longmix-{seq_len}", manifest, cfg, seq_len, steps)
    bare = _bare_loop(rec, steps)  # first: once a ZeRO-3 engine exists, transformers builds models partitioned
    _free()
    ours = _run_trainer(rec)
    return {"seq_len": seq_len, "longmix": ours, "bare": bare, "ratio": ours["tokens_per_s"] / bare["tokens_per_s"],
            "ok": True}


def part_reach(dry: bool, work: Path) -> dict[str, Any]:
    cfg = TINY if dry else BILLION
    tried: list[dict[str, Any]] = []
    for seq_len in REACH_LENS[dry]:
        manifest = synthetic_manifest(work / f"reach-data-{seq_len}", seq_len, 2, cfg["vocab_size"])
        rec = train_recipe(work / f"reach-{seq_len}", manifest, cfg, seq_len, 2, tiled_loss=True,
                           loss_tile_tokens=8192, activation_checkpointing=True, activation_offload=True)
        try:
            r = _run_trainer(rec)
            tried.append({"seq_len": seq_len, "ok": True, **{k: r.get(k) for k in ("tokens_per_s", "peak_memory_gib",
                                                                                   "mfu")}})
        except Exception as exc:  # an OOM ends the climb; it is the finding, not a failure of the check
            tried.append({"seq_len": seq_len, "ok": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
            break
        finally:
            _free()
    reached = [t["seq_len"] for t in tried if t["ok"]]
    return {"tried": tried, "longest": max(reached) if reached else None, "ok": bool(reached)}


def part_real(dry: bool, work: Path) -> dict[str, Any]:
    seq_len = REAL_LEN[dry]
    cfg = {**SMOLLM2, "num_hidden_layers": 2} if dry else SMOLLM2
    manifest = synthetic_manifest(work / "real-data", seq_len, STEPS[dry] + 1, cfg["vocab_size"])
    rec = train_recipe(work / "real", manifest, cfg, seq_len, STEPS[dry], tiled_loss=True, loss_tile_tokens=4096)
    out = _run_trainer(rec)
    return {"seq_len": seq_len, "model": "SmolLM2-135M shape, random weights", **out, "ok": True}


def _free() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------------- driver

def _single_rank_env() -> None:
    """The Trainer joins a process group: one rank, on a free local port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


def run_part(name: str, arg: str | None, dry: bool, work: Path) -> dict[str, Any]:
    _single_rank_env()
    if dry:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if name == "correctness":
        return part_correctness(dry)
    if name == "throughput":
        return part_throughput(dry, int(arg), work)
    if name == "reach":
        return part_reach(dry, work)
    if name == "real":
        return part_real(dry, work)
    raise SystemExit(f"unknown part {name}")


def plan(dry: bool, parts: list[str]) -> list[tuple[str, str | None]]:
    jobs: list[tuple[str, str | None]] = []
    for p in parts:
        if p == "throughput":
            jobs += [("throughput", str(L)) for L in THROUGHPUT_LENS[dry]]
        else:
            jobs.append((p, None))
    return jobs


def markdown(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [f"# GPU check ({meta['device']}, {meta['date']})", "",
             f"torch {meta['torch']}, transformers {meta['transformers']}, deepspeed {meta['deepspeed']}", ""]
    for r in results:
        head = f"## {r['part']}" + (f" {r['arg']}" if r.get("arg") else "") + f": {'ok' if r.get('ok') else 'FAILED'}"
        lines += [head, "", f"({r.get('seconds', 0):.0f} s)", ""]
        if "error" in r:
            lines += ["```", r["error"][-2000:], "```", ""]
            continue
        if r["part"] == "throughput":
            lines += ["| loop | attention | tokens/s | TFLOP/s | MFU | peak GiB |", "|---|---|---|---|---|---|"]
            for k in ("longmix", "bare"):
                v = r[k]
                mfu = f"{v['mfu']:.1%}" if v.get("mfu") is not None else "-"
                mem = f"{v['peak_memory_gib']:.1f}" if v.get("peak_memory_gib") is not None else "-"
                lines.append(f"| {k} | {v['attn']} | {v['tokens_per_s']:,.0f} | {v['tflops_per_device']:.1f} | {mfu} "
                             f"| {mem} |")
            lines += ["", f"ratio longmix / bare: {r['ratio']:.3f}", ""]
        else:
            lines += ["```json", json.dumps({k: v for k, v in r.items() if k not in ("part", "arg")}, indent=1),
                      "```", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu-dry-run", action="store_true", help="tiny shapes on CPU (what CI runs)")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "build/gpu-check")))
    ap.add_argument("--parts", default="correctness,throughput,reach,real")
    ap.add_argument("--part-timeout", type=int, help="seconds before any part is killed (default: per part, 480 "
                    "in all on a GPU; none in a dry run)")
    ap.add_argument("--part", help=argparse.SUPPRESS)
    ap.add_argument("--arg", help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    dry = args.cpu_dry_run
    if args.part:  # a child: one part, its JSON on the last line of stdout
        try:
            result = run_part(args.part, args.arg, dry, args.work)
        except Exception:
            result = {"ok": False, "error": traceback.format_exc()}
        print("\nRESULT " + json.dumps(result), flush=True)
        return
    import torch

    if not dry and not torch.cuda.is_available():
        sys.exit("error: no CUDA device; use --cpu-dry-run on a machine without a GPU")
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        import deepspeed
        ds_version = deepspeed.__version__
    except ImportError:
        ds_version = "missing"
    import transformers

    meta = {"device": torch.cuda.get_device_name() if not dry else "cpu dry run", "torch": torch.__version__,
            "transformers": transformers.__version__, "deepspeed": ds_version, "date": time.strftime("%Y-%m-%d"),
            "dry_run": dry}
    results: list[dict[str, Any]] = []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "PYTHONUNBUFFERED": "1"}
    if dry:
        env.update(DS_ACCELERATOR="cpu", OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "2"))
    with tempfile.TemporaryDirectory() as tmp:
        for part, arg in plan(dry, args.parts.split(",")):
            t0 = time.perf_counter()
            print(f"== {part}{' ' + arg if arg else ''}", flush=True)
            cmd = [sys.executable, __file__, "--part", part, "--work", tmp] + (["--arg", arg] if arg else []) + \
                (["--cpu-dry-run"] if dry else [])
            limit = args.part_timeout or (None if dry else PART_TIMEOUT[part])  # a slow CI machine: no limit
            try:
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=limit)
                found = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
                result = json.loads(found[-1][7:]) if found else \
                    {"ok": False, "error": f"exit {proc.returncode}\n{proc.stdout[-1500:]}\n{proc.stderr[-3000:]}"}
            except subprocess.TimeoutExpired:
                result = {"ok": False, "error": f"timed out after {limit} s"}
            result.update(part=part, arg=arg, seconds=time.perf_counter() - t0)
            results.append(result)
            print(json.dumps(result)[:1500] if result.get("ok") else result.get("error", "")[-3000:], flush=True)
            (args.out / "gpu_check.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
            (args.out / "gpu_check.md").write_text(markdown(results, meta))
    failed = [f"{r['part']} {r['arg'] or ''}".strip() for r in results if not r.get("ok")]
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed" + (f": {', '.join(failed)}" if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
