"""Ingest: raw files -> normalized document shards, with every bad record quarantined."""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path
from typing import Any

from longmix.core.errors import UserError
from longmix.core.storage import file_info, is_uri
from longmix.data.ingest.normalize import content_hash, normalize_text
from longmix.data.ingest.readers import Bad, Good, expand_input, list_text_files, read_records
from longmix.data.ingest.settings import SourceConfig
from longmix.data.recipe import Recipe
from longmix.formats.documents import ShardWriter, write_quarantine
from longmix.pipeline.stage import Stage, StageJob
from longmix.pipeline.stats import Counts
from longmix.pipeline.tasks import Task


def ingest_task(*, source: str, fmt: str, path: str, files: list[str] | None, text_field: str,
                id_field: str | None, max_doc_bytes: int, shard_bytes: int, out_dir: str, rel_stem: str,
                quarantine_path: str, compression: str = "zstd") -> dict[str, Any]:
    """One input file (or one group of text files) -> document shard parts + a quarantine file."""
    counts = Counts()
    writer = ShardWriter(Path(out_dir), rel_stem, shard_bytes, compression=compression)
    bad_rows: list[dict[str, Any]] = []

    def quarantine(bad: Bad) -> None:
        counts.quarantine(source, bad.reason)
        bad_rows.append({"source": source, "origin_file": bad.origin_file, "origin_pos": bad.origin_pos,
                         "reason": bad.reason, "detail": bad.detail, "raw": bad.raw})

    for rec in read_records(path if is_uri(path) else Path(path), fmt, text_field, id_field, max_doc_bytes, files):
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
        digest = content_hash(encoded)
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


SAMPLE_FILES, SAMPLE_RECORDS = 3, 20


def source_inputs(recipe: Recipe, source: SourceConfig) -> list[tuple[Path, str]]:
    """The source's inputs as (path, format): its patterns' matches, folders expanded (readers.expand_input)."""
    return [pair for path in recipe.source_files(source) for pair in expand_input(path, source.format)]


def check_readable(index: int, source: SourceConfig, inputs: list[tuple[Path, str]], cap: int) -> None:
    """Fail fast unless the first records of the source's first files hold at least one usable document: a
    wrong text field, a JSON array, a .gz that is not gzip or empty files show here, not after the build."""
    seen: list[tuple[Path, list[Good | Bad]]] = []
    for path, fmt in inputs[:SAMPLE_FILES]:
        records = list(islice(read_records(path, fmt, source.text_field, source.id_field, cap), SAMPLE_RECORDS))
        if any(isinstance(r, Good) and r.text.strip() for r in records):
            return
        seen.append((path, records))
    where = f"sources[{index}] ({source.name})"
    with_records = [(p, r) for p, r in seen if r]
    if not with_records:
        raise UserError(f"{where}: {', '.join(str(p) for p, _ in seen)} hold{'s' if len(seen) == 1 else ''} no "
                        "records")
    path, records = with_records[0]
    bad = next((r for r in records if isinstance(r, Bad)), None)
    if bad is None:
        first = "the first record" if len(records) == 1 else f"the first {len(records)} records"
        raise UserError(f"{where}: {first} of {path} {'has' if len(records) == 1 else 'have'} empty text")
    first = "the first record" if len(records) == 1 else f"none of the first {len(records)} records"
    raise UserError(f"{where}: {first} of {path} {'is not' if len(records) == 1 else 'is'} usable: {bad.reason} "
                    f"({bad.detail}){_hint(index, source, bad)}")


def _hint(index: int, source: SourceConfig, bad: Bad) -> str:
    if bad.reason == "missing_text":
        try:
            fields = sorted(json.loads(bad.raw))
        except (ValueError, TypeError):
            fields = []
        shown = f"the records' fields are {', '.join(fields[:8])}; " if fields else ""
        return f"; {shown}set sources[{index}].text_field"
    if bad.reason == "not_an_object":
        return "; JSONL holds one JSON object per line"
    if bad.reason in ("truncated_file", "unreadable_file"):
        return f"; is {Path(bad.origin_file).name} really what its name says?"
    return ""


def plan_tasks(recipe: Recipe, out_dir: Path) -> tuple[list[Task], list[dict[str, Any]]]:
    """One task per input file (text folders: per group of files); also the input fingerprint."""
    cfg = recipe.stages.ingest
    tasks: list[Task] = []
    fingerprint: list[dict[str, Any]] = []
    for source in recipe.sources:
        k = 0
        for path, fmt in source_inputs(recipe, source):
            if fmt == "text" and not is_uri(path) and Path(path).is_dir():
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
                    "compression": recipe.documents.compression,
                }, marker=str(out_dir / "_tasks" / f"{tid}.json"),
                    cost=fingerprint[-1]["bytes"] // len(groups)))
                k += 1
    return tasks, fingerprint


def _fingerprint(path: Path | str, names: list[str] | None) -> dict[str, Any]:
    if is_uri(path):
        info = file_info(path)
        if info is None:
            raise UserError(f"input '{path}' not found in the store")
        return {"path": path, "files": 1, "bytes": info[0], "mtime_ns": info[1]}
    files = [path / n for n in names] if names is not None else [path]
    st = [f.stat() for f in files]
    return {"path": str(path), "files": len(files), "bytes": sum(s.st_size for s in st),
            "mtime_ns": max((s.st_mtime_ns for s in st), default=0)}


class Ingest(Stage):
    """Raw files -> normalized document shards; one task per input file (text folders: per group of files)."""

    name = "ingest"

    def check(self, recipe: Recipe) -> None:
        # Every pattern matches, every format is known, and each source's first records are usable.
        for i, source in enumerate(recipe.sources):
            check_readable(i, source, source_inputs(recipe, source), recipe.stages.ingest.max_doc_bytes)

    def check_output(self, recipe: Recipe, report: dict[str, Any]) -> None:
        """A source that kept nothing is an error, not a source that silently vanishes from the mix."""
        empty = [n for n in recipe.source_names if not report["sources"].get(n, {}).get("kept")]
        if empty:
            reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(report["quarantined"].items(), key=lambda kv: -kv[1]))
            raise UserError(f"source(s) {', '.join(empty)} kept no documents at ingest (quarantined: "
                            f"{reasons or 'none'}); see the quarantine files under ingest/quarantine")

    def settings(self, recipe: Recipe) -> list[Any]:
        # The inputs' fingerprint (sizes, mtimes) is part of the settings: changed inputs rerun the flow. So is
        # the shards' compression, which every later stage writes with too (the hash chain reruns them).
        _, fingerprint = plan_tasks(recipe, Path("."))
        return [recipe.stages.ingest, [s.model_dump() for s in recipe.sources], fingerprint, recipe.documents]

    def run(self, job: StageJob) -> dict[str, Any]:
        tasks, fingerprint = plan_tasks(job.recipe, job.dir)
        job.run_tasks(tasks)
        return {"inputs": fingerprint}
