"""The two dedup stages. Each makes one global decision on compact data (hashes, signatures), written
as a decisions file, then applies it per shard with the shared apply step (apply.py)."""

from __future__ import annotations

import json
import time
from typing import Any

from longmix.core.atomic import atomic_path, write_json
from longmix.data.dedup.apply import apply_tasks
from longmix.data.dedup.exact import decide
from longmix.data.dedup.minhash import lsh_params
from longmix.data.dedup.near import band_task, cluster
from longmix.data.recipe import Recipe
from longmix.formats.decisions import write_decisions
from longmix.pipeline.stage import Stage, StageJob


class ExactDedup(Stage):
    """One copy per normalized-text hash, across shards and sources (exact.py)."""

    name = "exact_dedup"
    label = "exact dedup"

    def enabled(self, recipe: Recipe) -> bool:
        return recipe.stages.exact_dedup.enabled

    def settings(self, recipe: Recipe) -> list[Any]:
        return [recipe.stages.exact_dedup]

    def run(self, job: StageJob) -> dict[str, Any]:
        started = time.time()
        decisions_path = job.dir / "decisions.parquet"
        if not decisions_path.is_file():  # written last: a killed global step runs again
            decisions, removed = decide(job.upstream.files())
            with atomic_path(job.dir / "removed.parquet") as tmp:
                removed.write_parquet(tmp, compression="zstd")
            write_decisions(decisions_path, decisions.to_arrow())
        global_seconds = time.time() - started
        job.run_tasks(apply_tasks(job, decisions_path))
        return {"global_seconds": round(global_seconds, 3)}


class NearDedup(Stage):
    """MinHash LSH near-dedup: signatures per shard, clustering on compact data, apply per shard (near.py)."""

    name = "near_dedup"
    label = "near dedup"

    def enabled(self, recipe: Recipe) -> bool:
        return recipe.stages.near_dedup.enabled

    def settings(self, recipe: Recipe) -> list[Any]:
        return [recipe.stages.near_dedup, recipe.seed, recipe.source_names]

    def run(self, job: StageJob) -> dict[str, Any]:
        started = time.time()
        cfg, recipe = job.recipe.stages.near_dedup, job.recipe
        params = lsh_params(cfg.threshold, cfg.num_perm, cfg.ngram, recipe.seed, cfg.bands, cfg.rows)
        inputs, sizes = job.upstream.files(), job.upstream.sizes()
        band_files = [job.dir / "bands" / f"{i:05d}.parquet" for i in range(len(inputs))]
        sig_stats = job.run_tasks([
            job.task(f"bands-{i:05d}", band_task, cost=sizes[i], in_path=str(p), out_path=str(band_files[i]),
                     num_perm=params.num_perm, bands=params.bands, rows=params.rows, ngram=params.ngram,
                     seed=params.seed, batch_docs=cfg.batch_docs)
            for i, p in enumerate(inputs)], "minhash signatures", counted=False)
        t_sig = time.time() - started

        t1 = time.time()
        decisions_path = job.dir / "decisions.parquet"
        cluster_stats = job.dir / "_tasks" / "cluster.json"
        if not decisions_path.is_file():  # written last: a killed clustering runs again
            decisions, removed, clusters, cstats = cluster(inputs, band_files, params, cfg.threshold, cfg.keep,
                                                           recipe.source_names)
            for name, frame in (("removed.parquet", removed), ("clusters.parquet", clusters)):
                with atomic_path(job.dir / name) as tmp:
                    frame.write_parquet(tmp, compression="zstd")
            write_json(cluster_stats, cstats)
            write_decisions(decisions_path, decisions.to_arrow())
        cstats = json.loads(cluster_stats.read_text())
        t_cluster = time.time() - t1
        job.run_tasks(apply_tasks(job, decisions_path))
        return {"lsh": {"threshold": cfg.threshold, "num_perm": params.num_perm, "bands": params.bands,
                        "rows": params.rows, "ngram": params.ngram, "keep": cfg.keep},
                "clustering": cstats, "shingles": int(sum(s["shingles"] for s in sig_stats)),
                "step_seconds": {"signatures": round(t_sig, 3), "cluster": round(t_cluster, 3)}}

    def summary(self, report: dict[str, Any]) -> list[str]:
        c, lsh = report["clustering"], report["lsh"]
        return [f"near-dedup: {c['clusters']:,} clusters over {c['docs_in_clusters']:,} documents "
                f"(largest {c['largest_cluster']}), bands x rows = {lsh['bands']} x {lsh['rows']}, "
                f"threshold {lsh['threshold']}"]
