"""The two dedup stages. Each makes one global decision on compact data (hashes, signatures), written
as a decisions file, then applies it per shard with the shared apply step (apply.py)."""

from __future__ import annotations

import json
import time
from typing import Any

from longmix.core.atomic import atomic_path, write_json
from longmix.data.dedup.apply import apply_decisions
from longmix.data.dedup.bands import band_task, task_parts
from longmix.data.dedup.clusters import cluster_with_tasks
from longmix.data.dedup.exact import decide
from longmix.data.dedup.minhash import SHINGLE_VERSION, lsh_params, rensa_version
from longmix.data.dedup.near import edge_task, key_ranges
from longmix.data.recipe import Recipe
from longmix.formats.decisions import write_decisions
from longmix.pipeline.report import StageReport
from longmix.pipeline.stage import Stage, StageJob


class ExactDedup(Stage):
    """One copy per normalized-text hash, across shards and sources (exact.py)."""

    name = "exact_dedup"
    label = "exact dedup"

    def enabled(self, recipe: Recipe) -> bool:
        return recipe.stages.exact_dedup.enabled

    def settings(self, recipe: Recipe, plan: None) -> list[Any]:
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
        apply_decisions(job, decisions_path)
        return {"global_seconds": round(global_seconds, 3)}


class NearDedup(Stage):
    """MinHash LSH near-dedup: signatures per shard, clustering on compact data, apply per shard (near.py)."""

    name = "near_dedup"
    task_memory_gb = 2.0  # a task's shingle-hash workspace (bounded per document) and its signatures
    label = "near dedup"

    def enabled(self, recipe: Recipe) -> bool:
        return recipe.stages.near_dedup.enabled

    def settings(self, recipe: Recipe, plan: None) -> list[Any]:
        # rensa's algorithm version and the shingle hash's: a signature change must not mix with bands
        # written before it.
        return [recipe.stages.near_dedup, recipe.seed, recipe.source_names, rensa_version(), SHINGLE_VERSION]

    def run(self, job: StageJob) -> dict[str, Any]:
        started = time.time()
        cfg, recipe = job.recipe.stages.near_dedup, job.recipe
        params = lsh_params(cfg.threshold, cfg.num_perm, cfg.ngram, recipe.seed, cfg.bands, cfg.rows, cfg.recall)
        inputs, sizes = job.upstream.files(), job.upstream.sizes()
        tasks, band_files, set_files = [], [], []
        for i, path in enumerate(inputs):
            parts = task_parts(path, cfg.task_bytes)
            for k, groups in enumerate(parts):
                name = f"{i:05d}" if len(parts) == 1 else f"{i:05d}-{k:04d}"
                band_files.append(job.dir / "bands" / f"{name}.parquet")
                set_files.append(job.dir / "sets" / f"{name}.arrow")
                tasks.append(job.task(f"bands-{name}", band_task, cost=sizes[i] // len(parts),
                                      in_path=job.reads(path), row_groups=groups,
                                      out_path=job.path("bands", f"{name}.parquet"),
                                      sets_path=job.path("sets", f"{name}.arrow"),
                                      num_perm=params.num_perm, bands=params.bands, rows=params.rows,
                                      ngram=params.ngram, seed=params.seed, batch_docs=cfg.batch_docs))
        decisions_path = job.dir / "decisions.parquet"
        sig_stats = job.run_tasks(tasks, "minhash signatures", counted=False)
        t_sig = time.time() - started

        t1 = time.time()
        cluster_stats = job.dir / "_tasks" / "cluster.json"
        if not decisions_path.is_file():  # written last: a killed clustering resumes from its finished tasks
            docs = sum(s["docs"] for s in sig_stats)
            edge_files, edge_stats = self._edges(job, band_files, params.bands, docs)
            t_edges = time.time() - t1
            cstats = cluster_with_tasks(job, inputs, edge_files, edge_stats["edges_found"], set_files, docs,
                                        cfg.threshold, cfg.keep, recipe.source_names,
                                        self.resources(job.recipe)["memory"])
            write_json(cluster_stats, {**cstats, **edge_stats, "edge_seconds": round(t_edges, 3)})
        cstats = json.loads(cluster_stats.read_text())
        t_cluster = time.time() - t1
        apply_decisions(job, decisions_path)
        return {"lsh": {"threshold": cfg.threshold, "num_perm": params.num_perm, "bands": params.bands,
                        "rows": params.rows, "ngram": params.ngram, "keep": cfg.keep, "recall": cfg.recall,
                        "signatures": f"rensa RMinHash (algorithm {rensa_version()})"},
                "signature_tasks": len(tasks),
                "clustering": cstats, "shingles": int(sum(s["shingles"] for s in sig_stats)),
                "step_seconds": {"signatures": round(t_sig, 3), "cluster": round(t_cluster, 3)}}

    def _edges(self, job: StageJob, band_files: list[Any], bands: int, docs: int) -> tuple[list[Any], dict[str, Any]]:
        """Candidate pairs as tasks, one per band and key range: as many ranges as keep one task within the
        stage's task memory (`executor.resources.near_dedup.memory_gb`), so the driver never reads band keys."""
        parts = key_ranges(docs, self.resources(job.recipe)["memory"])
        reads = [job.reads(f) for f in band_files]
        names = [(j, k, f"b{j:03d}-{k:05d}of{parts:05d}") for j in range(bands) for k in range(parts)]
        tasks = [job.task(f"edges-{name}", edge_task, cost=docs // parts, band_files=reads, band=j, part=k,
                          parts=parts, out_path=job.path("edges", f"{name}.arrow")) for j, k, name in names]
        stats = job.run_tasks(tasks, "lsh candidate pairs", counted=False)
        files = [job.dir / "edges" / f"{name}.arrow" for _, _, name in names]
        per_task = [s["edges"] for s in stats]
        return files, {"edge_tasks": len(tasks), "key_ranges_per_band": parts, "edges_found": sum(per_task),
                       "edges_per_task_max": max(per_task, default=0),
                       "edges_per_task_mean": round(sum(per_task) / max(len(per_task), 1), 1)}

    def summary(self, report: StageReport) -> list[str]:
        c, lsh = report.extra("clustering"), report.extra("lsh")
        return [f"near-dedup: {c['clusters']:,} clusters over {c['docs_in_clusters']:,} documents "
                f"(largest {c['largest_cluster']}), bands x rows = {lsh['bands']} x {lsh['rows']}, "
                f"threshold {lsh['threshold']}"]
