"""`longmix build RECIPE --until filter --report-only`: what each filter would drop, per source, without
writing anything (no shards, no markers, no report file), so thresholds can be tuned cheaply.

Every filter is evaluated on every document. Per source and filter it shows how many documents trip
that filter (on its own) and how many it would actually drop (the first filter tripped, as in a real
run), with the share of the source's characters each represents, plus sample dropped documents.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from longmix.data.filters.evaluate import Models, evaluate
from longmix.data.filters.recipe_view import resolved_config, source_params, text_bytes
from longmix.data.filters.settings import FilterConfig
from longmix.pipeline.stage import StageJob
from longmix.pipeline.stats import Counts, merge
from longmix.pipeline.tasks import Task

_SNIPPET = 160


def _zero() -> dict[str, int]:
    return {"trips": 0, "trips_chars": 0, "drops": 0, "drops_chars": 0}


def report_only_task(*, in_path: str, cfg: dict[str, Any], params: dict[str, dict[str, Any]]) -> dict[str, Any]:
    config = FilterConfig.model_validate(cfg)
    models = Models.load(config)
    counts = Counts()
    chars: dict[str, int] = defaultdict(int)
    filters: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(_zero))
    samples: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for batch in pq.ParquetFile(in_path).iter_batches(batch_size=config.batch_docs):
        v = evaluate(batch, config, params, models, score_all=True)
        sources = np.asarray(batch.column("source").to_pylist(), dtype=object)
        n_chars = batch.column("n_chars").to_numpy().astype(np.int64)
        ids = batch.column("id").to_pylist()
        counts.add(sources, text_bytes(batch), v.reason)
        for src in dict.fromkeys(sources.tolist()):  # first-seen order
            chars[src] += int(n_chars[sources == src].sum())
        for i in np.flatnonzero(~v.kept).tolist():
            reason = v.reason[i]
            src = sources[i]
            if len(samples[reason]) < config.samples_per_reason:
                text = batch.column("text")[i].as_py()
                samples[reason].append({"id": ids[i], "source": src, "value": float(v.value[i]),
                                        "n_chars": int(n_chars[i]), "snippet": text[:_SNIPPET]})
        for name, hit in v.tripped.items():
            first = np.equal(v.reason, name)
            for src in np.unique(sources):
                here = sources == src
                f = filters[src][name]
                f["trips"] += int((hit & here).sum())
                f["trips_chars"] += int(n_chars[hit & here].sum())
                f["drops"] += int((first & here).sum())
                f["drops_chars"] += int(n_chars[first & here].sum())
    return counts.to_dict(chars=dict(chars), filters={s: dict(f) for s, f in filters.items()},
                          samples=dict(samples))


def _merge_details(stats: list[dict[str, Any]], k: int) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    per_source: dict[str, dict[str, Any]] = {}
    samples: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in stats:
        for src, c in s["chars"].items():
            entry = per_source.setdefault(src, {"chars": 0, "filters": {}})
            entry["chars"] += c
        for src, fs in s["filters"].items():
            for name, f in fs.items():
                acc = per_source[src]["filters"].setdefault(name, _zero())
                for key, val in f.items():
                    acc[key] += val
        for reason, rows in s["samples"].items():
            samples[reason].extend(rows[: k - len(samples[reason])])
    for entry in per_source.values():
        for f in entry["filters"].values():
            f["trips_share"] = round(f["trips_chars"] / entry["chars"], 4) if entry["chars"] else 0.0
            f["drops_share"] = round(f["drops_chars"] / entry["chars"], 4) if entry["chars"] else 0.0
    return dict(sorted(per_source.items())), dict(sorted(samples.items()))


def report_only(job: StageJob) -> dict[str, Any]:
    """The would-be report of the filter stage; it touches nothing under the stage's folder (tasks without
    completion markers)."""
    started = time.time()
    recipe = job.recipe
    cfg, params = resolved_config(recipe).model_dump(), source_params(recipe)
    tasks = [Task(f"report-{i:05d}", report_only_task, {"in_path": job.reads(path), "cfg": cfg, "params": params})
             for i, path in enumerate(job.upstream.files())]
    stats = job.run_tasks(tasks, "filters (report only)")
    per_source, samples = _merge_details(stats, recipe.stages.filter.samples_per_reason)
    report = {"stage": job.stage.name, "report_only": True, **merge(stats), "filters": per_source,
              "samples": samples}
    report["seconds"] = round(time.time() - started, 3)
    return report
