"""Training test fixtures: real tokenized text (Python stdlib sources) packed into shards + manifest,
a tiny Llama config, and recipe/launch helpers."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import yaml

from longmix.data.pack.packing import PackStats, TokenBatch, pack
from longmix.data.tokenize.encode import encode_table, train_bpe
from longmix.formats.manifest import Manifest, make_lineage, shard_entries, tokenizer_entry, totals_from, write_manifest
from longmix.formats.packed_shards import write_shards

REPO = Path(__file__).resolve().parents[1]
STDLIB = Path(sysconfig.get_paths()["stdlib"])
VOCAB = 512
SOURCES = ["code", "docs"]

TINY_LLAMA: dict[str, Any] = {
    "model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": VOCAB, "max_position_embeddings": 1024,
    "tie_word_embeddings": False, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2,
}


def stdlib_texts(max_chars: int, skip: int = 0) -> list[str]:
    """Python sources (code) and their docstring-rich modules, in a fixed order, up to ``max_chars``."""
    files = sorted(STDLIB.glob("*.py"), key=lambda f: f.name)[skip:]
    texts, total = [], 0
    for f in files:
        t = f.read_text(encoding="utf-8", errors="replace")[:6000]
        if len(t) < 200:
            continue
        texts.append(t)
        total += len(t)
        if total >= max_chars:
            break
    return texts


def make_tokenizer(out: Path) -> Path:
    path = out / "tokenizer.json"
    if not path.is_file():
        out.mkdir(parents=True, exist_ok=True)
        train_bpe(stdlib_texts(400_000), vocab_size=VOCAB, out_path=path)
    return path


def make_manifest(out: Path, tok_path: Path, seq_len: int, max_chars: int, rows_per_shard: int = 40,
                  skip: int = 0, doc_chars: int | None = None) -> Path:
    """Tokenize stdlib text, pack best-fit with EOS into ``seq_len`` rows, write shards + manifest.json.

    ``doc_chars`` cuts the files into documents of 1/4..1x that many characters (short documents, so
    rows hold several of them)."""
    from longmix.formats.tokenizer_files import load_tokenizer

    out.mkdir(parents=True, exist_ok=True)
    texts = stdlib_texts(max_chars, skip)
    if doc_chars:
        rng = np.random.default_rng(0)
        pieces = []
        for t in texts:
            while t:
                n = int(rng.integers(doc_chars // 4, doc_chars + 1))
                pieces.append(t[:n])
                t = t[n:]
        texts = pieces
    sources = [i % 2 for i in range(len(texts))]
    table = encode_table(load_tokenizer(tok_path), pa.table(
        {"id": [str(i) for i in range(len(texts))], "source": [SOURCES[s] for s in sources], "text": texts}))
    docs = TokenBatch.from_arrow(table.column("input_ids"), np.asarray(sources, np.int16))
    stats = PackStats(strategy="best_fit", seq_len=seq_len)
    rows = list(pack([docs], seq_len, "best_fit", pad_id=2, eos_id=1, window=256, stats=stats))
    infos = write_shards(rows, out, seq_len, rows_per_shard=rows_per_shard)
    manifest = Manifest(
        seq_len=seq_len, tokenizer=tokenizer_entry(tok_path, out), sources=SOURCES,
        shards=shard_entries(infos, out), totals=totals_from(infos, stats.docs_truncated),
        packing=stats.to_dict(), mix={}, lineage=make_lineage({"seq_len": seq_len}, {"stdlib": "test"}, 0))
    write_manifest(manifest, out / "manifest.json")
    return out / "manifest.json"


def real_mix_recipe(root: Path, corpus: Path, model: Path, seq_len: int = 256, total_tokens: int = 8000) -> Path:
    """A data recipe: the demo corpus mixed with a real model's folder as the tokenizer (its own BOS/EOS)."""
    recipe = {
        "name": "real", "output": str(root / "mix"), "seed": 5, "executor": {"kind": "local", "workers": 2},
        "sources": [{"name": n, "paths": [str(corpus / n / "*.jsonl")]} for n in ("code", "docs")],
        "tokenizer": {"path": str(model)}, "seq_len": seq_len,
        "stages": {"mix": {"total_tokens": total_tokens, "sources": {"code": {"share": 0.5}, "docs": {"share": 0.5}}},
                   "pack": {"rows_per_shard": 8}},
    }
    path = root / "mix.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def write_train_recipe(path: Path, **fields: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(fields, sort_keys=False))
    return path


def tiny_recipe(out: Path, phases: list[dict], **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "tiny", "seed": 3, "output": str(out),
        "model": {"config": TINY_LLAMA, "attn_implementation": "sdpa"},
        "data": {"phases": phases, "holdout_sequences": 4},
        "batch": {"tokens_per_step": 1024, "micro_batch_tokens": 256},
        "optim": {"lr": 3e-3},
        "schedule": {"warmup_steps": 2, "min_lr_ratio": 0.1},
        "deepspeed": str(REPO / "train" / "ds_zero3.json"),
        "checkpoint": {"every_steps": 3, "keep_last": 2},
    }
    for k, v in over.items():
        base[k] = {**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return base


HANG_GUARD_S = 3600  # only a hung process reaches this: never a limit a slow (loaded) machine can hit


def run_group(cmd: list[str], env: dict[str, str] | None = None,
              timeout: int = HANG_GUARD_S) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own process group, one OpenMP thread per rank (CI has two cores for two ranks); the
    whole group (torchrun's ranks too) is killed if the test is interrupted or the process hangs."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO), **(env or {})}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None or _group_alive(proc.pid):
            import signal

            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def run_longmix(*args: str, timeout: int = HANG_GUARD_S,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``longmix ...`` in a subprocess (see ``run_group``)."""
    return run_group([sys.executable, "-m", "longmix.cli", *args], env, timeout)


def torchrun_script(script: Path, *args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    """A test worker script on ``nproc`` CPU ranks under torchrun (see ``run_group``)."""
    return run_group([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                      str(script), *args])


def documents_loss_sum(model: Any, ids: np.ndarray, pos: np.ndarray, tgt: np.ndarray) -> tuple[float, int]:
    """(Σ token loss, predicted tokens) of packed rows in plain transformers with every document run alone
    (no packing, no position ids): the model exactly as its family defines it, windows included."""
    import torch

    from longmix.train.masking import IGNORE

    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(len(ids)):
            restarts = np.flatnonzero(pos[i][1:] != pos[i][:-1] + 1) + 1
            for s, e in zip([0, *restarts.tolist()], [*restarts.tolist(), len(pos[i])], strict=True):
                t = torch.from_numpy(tgt[i, s:e])
                if not (t != IGNORE).any():
                    continue
                logits = model(input_ids=torch.from_numpy(ids[i : i + 1, s:e]), use_cache=False).logits[0]
                total += torch.nn.functional.cross_entropy(logits, t, ignore_index=IGNORE, reduction="sum").item()
                count += int((t != IGNORE).sum())
    return total, count


def rows_loss_sum(model: Any, ids: np.ndarray, pos: np.ndarray, tgt: np.ndarray) -> tuple[float, int]:
    """(Σ token loss, predicted tokens) of packed rows in plain transformers, one row per forward (what the
    trainer's held-out evaluation must equal)."""
    import torch

    from longmix.train.masking import IGNORE

    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(len(ids)):
            logits = model(input_ids=torch.from_numpy(ids[i : i + 1]), position_ids=torch.from_numpy(pos[i : i + 1]),
                           use_cache=False).logits
            t = torch.from_numpy(tgt[i : i + 1])
            total += torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), t.view(-1),
                                                       ignore_index=IGNORE, reduction="sum").item()
            count += int((t != IGNORE).sum())
    return total, count


def make_sft_manifest(out: Path, tok_path: Path, seq_len: int, max_chars: int, doc_chars: int,
                      rows_per_shard: int = 40, seed: int = 0) -> Path:
    """An SFT manifest from the stdlib rows of ``make_manifest``: each document's tokens are counted with a
    seeded probability of 0.5 (a stand-in for assistant spans of uneven length), never a document's first
    token nor padding, so rows count very different numbers of targets."""
    import hashlib

    from longmix.formats.manifest import SftInfo, load_manifest
    from longmix.formats.packed_shards import read_rows

    plain = make_manifest(out / "plain", tok_path, seq_len, max_chars, rows_per_shard, doc_chars=doc_chars)
    manifest = load_manifest(plain)
    rows = [read_rows(plain.parent / s.path, seq_len) for s in manifest.shards]
    rng = np.random.default_rng(seed)
    masked = []
    for block in rows:
        mask = (rng.random(block.input_ids.shape) < rng.random((len(block), 1))).astype(np.uint8)
        for r in range(len(block)):
            starts = np.concatenate([[0], np.cumsum(block.row(r)["doc_lens"])[:-1]])
            mask[r, starts] = 0
            mask[r, seq_len - int(block.pad[r]):] = 0
            mask[r, starts[0] + 1] = 1  # every row counts something
        block.loss_mask = mask
        masked.append(block)
    infos = write_shards(masked, out, seq_len, rows_per_shard=rows_per_shard)
    template = out / "chat_template.jinja"
    template.write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    sft = SftInfo(loss_mode="output", template=template.name,
                  template_sha256=hashlib.sha256(template.read_bytes()).hexdigest(), packing="test",
                  examples=int(sum(np.count_nonzero(b.seg_sources >= 0) for b in masked)),
                  loss_tokens=int(sum(int(b.loss_mask.sum()) for b in masked)))
    sft_manifest = manifest.model_copy(update={
        "tokenizer": tokenizer_entry(tok_path, out), "shards": shard_entries(infos, out),
        "totals": totals_from(infos, manifest.totals.truncated_documents), "sft": sft})
    write_manifest(sft_manifest, out / "manifest.json")
    return out / "manifest.json"
