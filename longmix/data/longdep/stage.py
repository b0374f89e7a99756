"""Long-dependency stage: score every long document by how much its later tokens gain from distant context
(score.py), with a scorer model; off by default. One task per tokenized shard; the documents are read
again as text (the scorer has its own tokenizer) from the shards tokenize read, so rows stay aligned with
the tokenized shards, and `scores/<shard>.parquet` holds one row per tokenized document."""

from __future__ import annotations

import hashlib
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from longmix.core.atomic import atomic_path
from longmix.core.errors import UserError
from longmix.data.longdep.score import score_document
from longmix.data.recipe import Recipe
from longmix.pipeline.report import StageReport
from longmix.pipeline.stage import Stage, StageJob
from longmix.pipeline.stats import Counts

HIST_EDGES = [-1.0, -0.25, 0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0]


@lru_cache(maxsize=4)
def scorer_digest(folder: str) -> str:
    """sha256 over the scorer's config and weight files: a changed model rescores."""
    h = hashlib.sha256()
    root = Path(folder)
    for p in sorted(root.iterdir()):
        if p.suffix in (".json", ".safetensors", ".bin", ".gguf") and p.is_file():
            h.update(p.name.encode())
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    h.update(block)
    return h.hexdigest()


@lru_cache(maxsize=1)
def _scorer(folder: str, digest: str, device: str, dtype: str) -> Any:
    from longmix.models.loading import load_checkpoint

    return load_checkpoint(Path(folder), device=device, dtype=dtype)


def longdep_task(*, in_path: str, out_dir: str, rel_path: str, scorer: str, digest: str, device: str, dtype: str,
                 window: int, stride: int, max_len: int, max_windows: int, min_tokens: int, margin: float,
                 batch_size: int, sources: list[str] | None) -> dict[str, Any]:
    started = time.time()
    loaded = _scorer(scorer, digest, device, dtype)
    docs = pq.read_table(in_path, columns=["id", "source", "text"])  # the text shard of a tokenized shard
    counts = Counts()
    n_tok, scores, shares, windows = [], [], [], []
    forward = scored = 0
    bos = [loaded.bos_id] if loaded.bos_id is not None else []
    for src, text in zip(docs.column("source").to_pylist(), docs.column("text").to_pylist(), strict=True):
        if sources is not None and src not in sources:
            ids = np.zeros(0, dtype=np.int64)  # not asked for: left unscored, like a short document
        else:
            ids = np.asarray(bos + loaded.tokenizer.encode(text, add_special_tokens=False).ids, dtype=np.int64)
        s = score_document(loaded.model, ids, window=window, stride=stride, max_len=max_len,
                           max_windows=max_windows, min_tokens=min_tokens, margin=margin, device=loaded.device,
                           batch_size=batch_size)
        n_tok.append(len(ids))
        scores.append(s.score)
        shares.append(s.share)
        windows.append(s.windows)
        forward += s.forward_tokens
        scored += s.scored_tokens
    counts.add(docs.column("source").to_pylist(),
               pc.binary_length(docs.column("text").cast(pa.large_binary())).to_numpy())
    table = pa.table({"id": docs.column("id"), "source": docs.column("source"),
                      "n_scorer_tokens": pa.array(n_tok, pa.int32()),
                      "longdep_score": pa.array(scores, pa.float64()),
                      "longdep_share": pa.array(shares, pa.float64()),
                      "windows": pa.array(windows, pa.int16())})
    out = Path(out_dir) / rel_path
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    stats = counts.to_dict(outputs=[{"path": rel_path, "rows": table.num_rows, "bytes": out.stat().st_size}])
    stats["scorer"] = {"forward_tokens": forward, "scored_tokens": scored, "seconds": round(time.time() - started, 3)}
    return stats


class Longdep(Stage):
    """Scores long documents by their long-range dependencies (score.py); the mix can select by it."""

    name = "longdep"
    task_memory_gb = 3.0  # the scorer model and its activations per worker
    label = "long-dependency scores"
    requires = ("tokenize",)  # its upstream: the text shards its tokenized shards came from

    def enabled(self, recipe: Recipe) -> bool:
        return recipe.tokenizer is not None and recipe.stages.longdep.enabled

    def prepare(self, recipe: Recipe) -> str:
        """The scorer's folder, resolved."""
        return str(recipe.resolve(str(recipe.stages.longdep.scorer)))

    def check(self, recipe: Recipe, folder: str) -> None:
        cfg = recipe.stages.longdep
        unknown = sorted(set(cfg.sources or []) - set(recipe.source_names))
        if unknown:
            raise UserError(f"stages.longdep.sources names unknown source(s) {', '.join(unknown)}; "
                            f"sources: {', '.join(recipe.source_names)}")
        if not (Path(folder) / "config.json").is_file():
            raise UserError(f"stages.longdep.scorer: '{folder}' is not an HF model folder (no config.json)")
        try:
            _scorer(folder, scorer_digest(folder), cfg.device, cfg.dtype)
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - any load failure is the recipe's problem, said in one line
            raise UserError(f"stages.longdep.scorer: cannot load '{folder}': {type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}") from None

    def settings(self, recipe: Recipe, folder: str) -> list[Any]:
        from longmix.models.loading import pick_device

        cfg = recipe.stages.longdep
        # The model's bytes, not its path; the device kind, since GPU and CPU scores differ in the last digits.
        return [cfg.model_dump(exclude={"scorer", "device"}), scorer_digest(folder),
                pick_device(cfg.device).split(":")[0]]

    def run(self, job: StageJob) -> dict[str, Any]:
        cfg, folder = job.recipe.stages.longdep, job.plan
        tokenized = job.output_of("tokenize")  # also its upstream: one task per tokenized shard
        if "inputs" not in tokenized.report.extras:
            raise UserError(f"{tokenized.dir}: this tokenize output predates the longdep stage; delete the folder "
                            "to rebuild it")
        texts = tokenized.export("inputs")
        stride = cfg.stride or max(1, cfg.window // 2)
        stats = job.map_shards(
            "score", longdep_task, rel_path=lambda rel: str(Path("scores") / Path(rel).with_suffix(".parquet")),
            per_shard=lambda i, _: {"in_path": job.reads(job.ctx.output / texts[i])},  # the text shard, row-aligned
            scorer=folder, digest=scorer_digest(folder), device=cfg.device, dtype=cfg.dtype,
            window=cfg.window, stride=stride, max_len=cfg.max_len, max_windows=cfg.max_windows,
            min_tokens=cfg.min_tokens, margin=cfg.margin, batch_size=cfg.batch_size, sources=cfg.sources)
        return {"scorer": {"path": folder, "sha256": scorer_digest(folder), **_cost(stats)},
                "histograms": _histograms([job.dir / o["path"] for s in stats for o in s["outputs"]]),
                "settings": {"window": cfg.window, "stride": stride, "max_len": cfg.max_len,
                             "max_windows": cfg.max_windows, "min_tokens": cfg.min_tokens, "margin": cfg.margin}}

    def summary(self, report: StageReport) -> list[str]:
        c = report.extra("scorer")
        lines = [f"longdep: scorer ran over {c['forward_tokens']:,} tokens in {c['seconds']:.1f} s "
                 f"({c['tokens_per_second']:,.0f} tokens/s), {c['scored_tokens']:,} tokens scored"]
        for src, h in report.extra("histograms").items():
            lines.append(f"  {src}: {h['scored']:,} of {h['documents']:,} documents scored, "
                         f"median score {h['median']:.3f} nats" if h["scored"] else
                         f"  {src}: none of {h['documents']:,} documents long enough to score")
        return lines


def _cost(stats: list[dict[str, Any]]) -> dict[str, Any]:
    forward = sum(s["scorer"]["forward_tokens"] for s in stats)
    seconds = sum(s["scorer"]["seconds"] for s in stats)
    return {"forward_tokens": forward, "scored_tokens": sum(s["scorer"]["scored_tokens"] for s in stats),
            "seconds": round(seconds, 3), "tokens_per_second": forward / seconds if seconds else 0.0}


def _histograms(files: list[Path]) -> dict[str, Any]:
    if not files:
        return {}
    table = pa.concat_tables([pq.read_table(f, columns=["source", "longdep_score"]) for f in files])
    src = np.asarray(table.column("source").to_pylist())
    score = table.column("longdep_score").to_numpy(zero_copy_only=False)
    out = {}
    for name in sorted(set(src.tolist())):
        s = score[src == name]
        ok = s[~np.isnan(s)]
        counts, _ = np.histogram(np.clip(ok, HIST_EDGES[0], HIST_EDGES[-1]), bins=HIST_EDGES)
        out[name] = {"documents": int(len(s)), "scored": int(len(ok)), "edges": HIST_EDGES,
                     "counts": counts.tolist(), "median": float(np.median(ok)) if len(ok) else None,
                     "mean": float(ok.mean()) if len(ok) else None}
    return out
