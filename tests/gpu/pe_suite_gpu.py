"""The real-model positional-encoding suite with continued pretraining (the paper's design), as one device call:
each method continues SmolLM2-135M at 16,384 tokens for the same budget, arms one after another, then every
finished arm is evaluated to 32K and the suite's own results.json, report and verdicts are written, exactly as
`longmix ablate pipelines/ablations/positional-encoding-real-continued.yaml` writes them.

    bash tests/gpu/prepare_pe.sh          # here: the mix, eval data and SmolLM2's GGUF in two parts (.gpu-pe/)
    python3 tests/gpu/pe_suite_gpu.py --inputs .gpu-pe/b/inputs \\
        --gguf .gpu-keep/smollm2.gguf.part1 .gpu-pe/b/smollm2.gguf.part2 --out $OUT   # on the GPU (README.md)
    .venv/bin/python tests/gpu/pe_suite_gpu.py --cpu-dry-run --out build/pe-gpu-dry-run   # here; CI runs it

Each arm is its own `longmix ablate` process over a one-arm suite in the shared suite folder (a crash or an
out-of-memory in one arm is recorded and the next still runs); on the GPU the arms share a budget of
``--budget`` seconds and an arm that would start with less than ``--min-arm`` seconds left is recorded as not
run. A last `longmix ablate` over the finished arms trains nothing (their results are cached) and writes the
report. The dry run builds its own tiny inputs (a random 2-layer Llama with a BPE tokenizer of the demo corpus,
a 512-token mix) and has no time limits: it proves the plumbing, not a finding.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

SUITE = REPO / "pipelines" / "ablations" / "positional-encoding-real-continued.yaml"
# the order arms run in on the GPU: the paper's comparison first, so a short budget still judges it
ORDER = ["rope", "abf-x4", "pi-x2", "yarn-x2", "abf-x10", "pi-x4", "yarn-x4", "ntk-dynamic"]
DRY_ARMS = ["rope", "abf-x4"]
TINY = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
        "tie_word_embeddings": True, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}}


# ----------------------------------------------------------------------------------------------- inputs

def dry_inputs(work: Path) -> dict[str, Path]:
    """Tiny stand-ins for what prepare_pe.sh carries: a base model, a built mix, held-out long documents,
    haystack text and planted dependencies, all made here from the demo corpus."""
    import yaml
    from transformers import AutoConfig, AutoModelForCausalLM

    from longmix.core.recipe_io import load_with_extends
    from longmix.data.demo_corpus import write_demo_corpus
    from longmix.data.flow import build
    from longmix.data.recipe import load_recipe
    from longmix.data.synthetic_longdep import write_longdep_corpus
    from longmix.data.tokenize.encode import train_bpe
    from longmix.formats.tokenizer_files import load_tokenizer

    corpus = work / "corpus"
    if not (corpus / "docs").is_dir():
        write_demo_corpus(corpus)
    base = work / "base"
    if not (base / "config.json").is_file():
        texts = [json.loads(x)["text"] for f in sorted((corpus / "docs").glob("*.jsonl"))[:4]
                 for x in f.read_text().splitlines()]
        base.mkdir(parents=True, exist_ok=True)
        train_bpe(texts, 1024, base / "tokenizer.json")
        import torch

        torch.manual_seed(0)
        fields = dict(TINY)
        config = AutoConfig.for_model(fields.pop("model_type"), **fields,
                                      vocab_size=load_tokenizer(base / "tokenizer.json").get_vocab_size())
        AutoModelForCausalLM.from_config(config).save_pretrained(base)
    mix = work / "mix"
    if not (mix / "manifest.json").is_file():
        recipe = load_with_extends(SUITE.parent / "positional-encoding-real" / "data.yaml")
        recipe.update(output=str(mix), seq_len=512,
                      sources=[{"name": n, "paths": [str(corpus / n / "part-0000[01].jsonl")]}
                               for n in ("code", "docs", "legal")],
                      tokenizer={**recipe["tokenizer"], "path": str(base)})
        recipe["stages"]["mix"]["total_tokens"] = 40000
        (work / "data.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
        build(load_recipe(work / "data.yaml"))
    longdep = work / "longdep"
    if not (longdep / "heldout.jsonl").is_file():
        write_longdep_corpus(longdep, base / "tokenizer.json", [corpus / "docs"],
                             [corpus / "tests" / "part-00010.jsonl"], docs=1, heldout_docs=2, slot=32, n_slots=48,
                             distances=(256, 512, 1024, 1472), files=1)
    return {"base": base, "manifest": mix / "manifest.json", "tests": corpus / "tests", "haystack": corpus / "docs",
            "longdep": longdep / "heldout.jsonl"}


def device_inputs(inputs: Path, gguf_parts: list[Path], work: Path) -> dict[str, Path]:
    """What prepare_pe.sh carried: the GGUF (assembled from its parts, imported once) and the built data."""
    from longmix.train.importer import import_model

    base = work / "base"
    if not (base / "config.json").is_file():
        gguf = work / "smollm2.gguf"
        with open(gguf, "wb") as out:
            for part in gguf_parts:
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out)
        import_model(str(gguf), base)
    return {"base": base, "manifest": inputs / "mix" / "manifest.json", "tests": inputs / "eval" / "tests",
            "haystack": inputs / "eval" / "docs", "longdep": inputs / "longdep" / "heldout.jsonl"}


# ----------------------------------------------------------------------------------------------- suite

def suite_dict(paths: dict[str, Path], out: Path, arms: list[str], dry: bool) -> dict[str, Any]:
    """The continued suite with this machine's paths, the built mix instead of the data recipe, and (dry run)
    tiny lengths; findings that name an arm not in ``arms`` are left out."""
    from longmix.core.recipe_io import load_with_extends

    s = load_with_extends(SUITE)
    s["output"] = str(out)
    s["base"]["model"] = str(paths["base"])
    s["base"].pop("data", None)
    s["base"]["manifest"] = str(paths["manifest"])
    s["base"]["train"]["deepspeed"] = str(REPO / "train" / "ds_zero3.json")
    e = s["eval"]
    e["data"] = [str(paths["tests"])]
    e["dependency"]["data"] = [str(paths["longdep"])]
    e["ruler"]["haystack"] = [str(paths["haystack"])]
    s["arms"] = [a for a in s["arms"] if a["name"] in arms]
    s["findings"] = [f for f in s.get("findings", [])
                     if all(a in arms for a in [f.get("arm"), f.get("versus"), *(f.get("arms") or [])] if a)]
    if dry:
        s["train_tokens"] = 1024
        s["base"]["train"]["batch"] = {"tokens_per_step": 512, "micro_batch_tokens": 512}
        s["base"]["train"]["model"].update(max_position_embeddings=2048, loss_tile_tokens=256)
        s["base"]["train"]["data"] = {"holdout_sequences": 1}
        e.update(max_len=1536, table_contexts=[256, 1024, 1536])
        e["ruler"].update(tasks=["niah_single_1", "vt"], lengths=[1024], samples=1)
        for a in s["arms"]:
            for key in ("original_max_position_embeddings",):
                if key in a.get("train", {}).get("model", {}).get("rope", {}):
                    a["train"]["model"]["rope"][key] = TINY["max_position_embeddings"]
    return s


def run_arm(suite: dict[str, Any], arm: str, folder: Path, env: dict[str, str], limit: float | None) -> dict[str, Any]:
    """One arm: its own `longmix ablate` process over a one-arm suite (trains, exports, evaluates, caches)."""
    import yaml

    one = {**suite, "arms": [a for a in suite["arms"] if a["name"] == arm], "findings": [], "reference": arm}
    path = folder / f"suite-{arm}.yaml"
    path.write_text(yaml.safe_dump(one, sort_keys=False))
    t0 = time.perf_counter()
    log = folder / f"arm-{arm}.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "longmix.cli", "ablate", str(path), "--nproc", "1"],
                                stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            rc = proc.wait(timeout=limit)
            status = "done" if rc == 0 else f"failed (exit {rc})"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the whole group: torchrun and its rank too
            proc.wait()
            status = f"stopped at the budget ({limit:.0f} s)"
    tail = log.read_text()[-2000:]
    return {"arm": arm, "status": status, "seconds": round(time.perf_counter() - t0, 1),
            **({} if status == "done" else {"log_tail": tail})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu-dry-run", action="store_true", help="tiny model and lengths on CPU (what CI runs)")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "build/pe-gpu")))
    ap.add_argument("--inputs", type=Path, help="the carried data folder (prepare_pe.sh: .gpu-pe/b/inputs)")
    ap.add_argument("--gguf", type=Path, nargs="+", help="SmolLM2's GGUF parts, in order")
    ap.add_argument("--arms", help="comma-separated (default: all, in the order of ORDER; dry run: rope,abf-x4)")
    ap.add_argument("--budget", type=float, default=420.0, help="seconds for all arms on the GPU")
    ap.add_argument("--min-arm", type=float, default=50.0, help="an arm needs this many seconds left to start")
    args = ap.parse_args()
    dry = args.cpu_dry_run
    import torch

    if not dry and not torch.cuda.is_available():
        sys.exit("error: no CUDA device; use --cpu-dry-run on a machine without a GPU")
    if not dry and (args.inputs is None or not args.gguf):
        sys.exit("error: --inputs and --gguf are needed on the GPU (see tests/gpu/README.md)")
    t_start = time.perf_counter()
    out = args.out.resolve()
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    paths = dry_inputs(work) if dry else device_inputs(args.inputs.resolve(), [p.resolve() for p in args.gguf], work)
    arms = args.arms.split(",") if args.arms else (DRY_ARMS if dry else ORDER)
    suite = suite_dict(paths, out / "suite", arms, dry)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "PYTHONUNBUFFERED": "1"}
    if dry:
        env.update(DS_ACCELERATOR="cpu", OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "2"))
    runs: list[dict[str, Any]] = []
    t_arms = time.perf_counter()
    for arm in arms:
        left = None if dry else args.budget - (time.perf_counter() - t_arms)
        if left is not None and left < args.min_arm:
            runs.append({"arm": arm, "status": f"not run: {left:.0f} s of the budget left", "seconds": 0})
        else:
            runs.append(run_arm(suite, arm, work, env, left))
        print(json.dumps(runs[-1])[:600], flush=True)
    done = [r["arm"] for r in runs if r["status"] == "done"]
    meta = {"device": "cpu dry run" if dry else torch.cuda.get_device_name(), "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d"), "dry_run": dry, "arms": runs}
    if done:  # every finished arm is cached: this trains and evaluates nothing, it writes results and report
        import yaml

        final = suite_dict(paths, out / "suite", done, dry)
        final["reference"] = "rope" if "rope" in done else done[0]
        (work / "suite.yaml").write_text(yaml.safe_dump(final, sort_keys=False))
        proc = subprocess.run([sys.executable, "-m", "longmix.cli", "ablate", str(work / "suite.yaml")], env=env,
                              capture_output=True, text=True)
        meta["report"] = "written" if proc.returncode == 0 else f"failed: {proc.stderr[-1500:]}"
        if proc.returncode == 0:
            shutil.copytree(out / "suite" / "report", out / "report", dirs_exist_ok=True)
    meta["seconds"] = round(time.perf_counter() - t_start, 1)
    (out / "pe_suite_gpu.json").write_text(json.dumps(meta, indent=1))
    print(f"{len(done)} of {len(arms)} arms finished; report: {meta.get('report', 'none')}; {out}")
    sys.exit(0 if done and meta.get("report") == "written" else 1)


if __name__ == "__main__":
    main()
