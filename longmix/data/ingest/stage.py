"""Ingest: raw files -> normalized document shards, with every bad record quarantined."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from longmix.data.ingest.normalize import content_hash, normalize_text
from longmix.data.ingest.readers import Bad, Good, detect_format, list_text_files, read_records
from longmix.data.recipe import Recipe
from longmix.formats.documents import ShardWriter, write_quarantine
from longmix.pipeline.stage import Stage, StageJob
from longmix.pipeline.stats import Counts
from longmix.pipeline.tasks import Task


def ingest_task(*, source: str, fmt: str, path: str, files: list[str] | None, text_field: str,
                id_field: str | None, max_doc_bytes: int, shard_bytes: int, out_dir: str, rel_stem: str,
                quarantine_path: str) -> dict[str, Any]:
    """One input file (or one group of text files) -> document shard parts + a quarantine file."""
    counts = Counts()
    writer = ShardWriter(Path(out_dir), rel_stem, shard_bytes)
    bad_rows: list[dict[str, Any]] = []

    def quarantine(bad: Bad) -> None:
        counts.quarantine(source, bad.reason)
        bad_rows.append({"source": source, "origin_file": bad.origin_file, "origin_pos": bad.origin_pos,
                         "reason": bad.reason, "detail": bad.detail, "raw": bad.raw})

    for rec in read_records(Path(path), fmt, text_field, id_field, max_doc_bytes, files):
        counts.saw(source, rec.raw_bytes if isinstance(rec, Good) else len(rec.raw))
        if isinstance(rec, Bad):
            quarantine(rec)
            continue
        text = normalize_text(rec.text)
        try:
            encoded = text.encode("utf-8")
        except UnicodeEncodeError as exc:  # lone surrogates from JSON escapes such as "\ud800"
            quarantine(Bad("invalid_unicode", str(exc), rec.origin_file, rec.origin_pos,
                           rec.text.encode("utf-8", "surrogatepass")))
            continue
        if not text.strip():
            quarantine(Bad("empty_text", "no text after normalization", rec.origin_file, rec.origin_pos,
                           rec.text.encode("utf-8", "surrogatepass")))
            continue
        digest = content_hash(text)
        meta = dict(rec.meta)
        meta["origin"] = rec.origin
        writer.add({"id": rec.id if rec.id is not None else digest, "source": source, "text": text,
                    "n_chars": len(text), "meta": json.dumps(meta, ensure_ascii=False, sort_keys=True),
                    "content_hash": digest}, len(encoded))
        counts.keep(source, len(encoded))
    writer.flush()
    n_bad = write_quarantine(Path(quarantine_path), bad_rows)
    qfiles = [str(Path(quarantine_path).relative_to(Path(out_dir)))] if n_bad else []
    return counts.to_dict(outputs=writer.outputs, quarantine_files=qfiles)


def plan_tasks(recipe: Recipe, out_dir: Path) -> tuple[list[Task], list[dict[str, Any]]]:
    """One task per input file (text folders: per group of files); also the input fingerprint."""
    cfg = recipe.stages.ingest
    tasks: list[Task] = []
    fingerprint: list[dict[str, Any]] = []
    for source in recipe.sources:
        k = 0
        for path in recipe.source_files(source):
            fmt = source.format if source.format != "auto" else detect_format(path)
            if fmt == "text" and path.is_dir():
                names = list_text_files(path)
                groups = [names[i: i + cfg.files_per_task] for i in range(0, len(names), cfg.files_per_task)]
                fingerprint.append(_fingerprint(path, names))
            else:
                groups = [None]
                fingerprint.append(_fingerprint(path, None))
            for files in groups:
                tid = f"{source.name}-{k:05d}"
                tasks.append(Task(tid, ingest_task, {
                    "source": source.name, "fmt": fmt, "path": str(path), "files": files,
                    "text_field": source.text_field, "id_field": source.id_field,
                    "max_doc_bytes": cfg.max_doc_bytes, "shard_bytes": cfg.shard_bytes,
                    "out_dir": str(out_dir), "rel_stem": f"shards/{source.name}/{k:05d}",
                    "quarantine_path": str(out_dir / "quarantine" / f"{tid}.parquet"),
                }, marker=str(out_dir / "_tasks" / f"{tid}.json")))
                k += 1
    return tasks, fingerprint


def _fingerprint(path: Path, names: list[str] | None) -> dict[str, Any]:
    files = [path / n for n in names] if names is not None else [path]
    st = [f.stat() for f in files]
    return {"path": str(path), "files": len(files), "bytes": sum(s.st_size for s in st),
            "mtime_ns": max((s.st_mtime_ns for s in st), default=0)}


class Ingest(Stage):
    """Raw files -> normalized document shards; one task per input file (text folders: per group of files)."""

    name = "ingest"

    def check(self, recipe: Recipe) -> None:
        for source in recipe.sources:  # every pattern matches, every format is known
            for path in recipe.source_files(source):
                if source.format == "auto":
                    detect_format(path)

    def settings(self, recipe: Recipe) -> list[Any]:
        # The inputs' fingerprint (sizes, mtimes) is part of the settings: changed inputs rerun the flow.
        _, fingerprint = plan_tasks(recipe, Path("."))
        return [recipe.stages.ingest, [s.model_dump() for s in recipe.sources], fingerprint]

    def run(self, job: StageJob) -> dict[str, Any]:
        tasks, fingerprint = plan_tasks(job.recipe, job.dir)
        job.run_tasks(tasks)
        return {"inputs": fingerprint}
