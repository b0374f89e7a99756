"""Ingest: raw files -> normalized document shards, with every bad record quarantined."""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from longmix.core.errors import UserError
from longmix.core.storage import file_info, is_uri
from longmix.data.ingest.mds import check_mds
from longmix.data.ingest.normalize import content_hash, normalize_text
from longmix.data.ingest.readers import Bad, Good, expand_input, input_files, read_records
from longmix.data.ingest.settings import SourceConfig
from longmix.data.recipe import Recipe
from longmix.formats.documents import ShardWriter, write_quarantine
from longmix.pipeline.report import StageReport
from longmix.pipeline.stage import Stage, StageJob
from longmix.pipeline.stats import Counts
from longmix.pipeline.tasks import Task


def ingest_task(*, source: str, fmt: str, path: str, files: list[str] | None, text_field: str,
                id_field: str | None, max_doc_bytes: int, shard_bytes: int, out_dir: str, rel_stem: str,
                quarantine_path: str, compression: str = "zstd", split: str = "train",
                detokenizer: str | None = None) -> dict[str, Any]:
    """One input file (or one group of text files, one data file of a datasets folder, one MDS shard) ->
    document shard parts + a quarantine file."""
    counts = Counts()
    writer = ShardWriter(Path(out_dir), rel_stem, shard_bytes, compression=compression)
    bad_rows: list[dict[str, Any]] = []

    def quarantine(bad: Bad) -> None:
        counts.quarantine(source, bad.reason)
        bad_rows.append({"source": source, "origin_file": bad.origin_file, "origin_pos": bad.origin_pos,
                         "reason": bad.reason, "detail": bad.detail, "raw": bad.raw})

    for rec in read_records(path if is_uri(path) else Path(path), fmt, text_field, id_field, max_doc_bytes, files,
                            split, detokenizer):
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
    return [pair for path in recipe.source_files(source) for pair in expand_input(path, source.format, source.split)]


def detokenizer_path(recipe: Recipe, source: SourceConfig) -> str | None:
    return None if source.detokenizer is None else str(recipe.resolve(source.detokenizer))


def check_source(index: int, recipe: Recipe, source: SourceConfig, inputs: list[tuple[Path, str]]) -> None:
    """What is known before reading a record: the detokenizer exists, and every MDS input either has the text
    column or token ids with a detokenizer to decode them."""
    detok = detokenizer_path(recipe, source)
    if detok is not None and not Path(detok).is_file():
        raise UserError(f"sources[{index}] ({source.name}): detokenizer {detok} not found")
    for path, fmt in inputs:
        if fmt == "mds":
            try:
                check_mds(Path(path), source.text_field, detok)
            except UserError as exc:
                raise UserError(f"sources[{index}] ({source.name}): {exc}") from None


def check_readable(index: int, source: SourceConfig, inputs: list[tuple[Path, str]], cap: int,
                   detokenizer: str | None = None) -> None:
    """Fail fast unless the first records of the source's first files hold at least one usable document: a
    wrong text field, a JSON array, a .gz that is not gzip or empty files show here, not after the build."""
    seen: list[tuple[Path, list[Good | Bad]]] = []
    for path, fmt in inputs[:SAMPLE_FILES]:
        records = list(islice(read_records(path, fmt, source.text_field, source.id_field, cap, split=source.split,
                                           detokenizer=detokenizer), SAMPLE_RECORDS))
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


@dataclass(frozen=True)
class SourceInput:
    """One input of a source: its path and format, the files of a folder (None: a single file) and the
    fingerprint (files, bytes, newest mtime) that enters the settings hash."""

    path: Path | str
    fmt: str
    names: list[str] | None
    fingerprint: dict[str, Any]


@dataclass(frozen=True)
class IngestPlan:
    """Every source's inputs, listed and fingerprinted once per run (prepare)."""

    inputs: list[list[SourceInput]]  # per source, in recipe order

    @property
    def fingerprint(self) -> list[dict[str, Any]]:
        return [i.fingerprint for per_source in self.inputs for i in per_source]


def prepare_inputs(recipe: Recipe) -> IngestPlan:
    inputs = []
    for source in recipe.sources:
        listed = []
        for path, fmt in source_inputs(recipe, source):
            names = input_files(path, fmt, source.split)
            listed.append(SourceInput(path, fmt, names, _fingerprint(path, names)))
        inputs.append(listed)
    return IngestPlan(inputs)


def plan_tasks(job: StageJob) -> list[Task]:
    """One task per input file (text folders: per group of files)."""
    recipe, plan = job.recipe, job.plan
    cfg = recipe.stages.ingest
    tasks: list[Task] = []
    for source, listed in zip(recipe.sources, plan.inputs, strict=True):
        k = 0
        for inp in listed:
            path, fmt, names = inp.path, inp.fmt, inp.names
            if names is not None:  # a folder: text files in groups, a dataset's data files or shards one by one
                per_task = cfg.files_per_task if fmt == "text" else 1
                groups = [names[i: i + per_task] for i in range(0, len(names), per_task)]
            else:
                groups = [None]
            for files in groups:
                tid = f"{source.name}-{k:05d}"
                tasks.append(job.task(
                    tid, ingest_task, cost=inp.fingerprint["bytes"] // len(groups),
                    source=source.name, fmt=fmt, path=str(path), files=files,
                    text_field=source.text_field, id_field=source.id_field,
                    max_doc_bytes=cfg.max_doc_bytes, shard_bytes=cfg.shard_bytes,
                    out_dir=job.path(), rel_stem=f"shards/{source.name}/{k:05d}",
                    quarantine_path=job.path("quarantine", f"{tid}.parquet"),
                    compression=recipe.documents.compression,
                    split=source.split, detokenizer=detokenizer_path(recipe, source)))
                k += 1
    return tasks


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
    exports = ("inputs",)  # the input fingerprints: the manifest's lineage

    def prepare(self, recipe: Recipe) -> IngestPlan:
        return prepare_inputs(recipe)

    def check(self, recipe: Recipe, plan: IngestPlan) -> None:
        # Every pattern matches, every format is known, and each source's first records are usable.
        for i, (source, listed) in enumerate(zip(recipe.sources, plan.inputs, strict=True)):
            inputs = [(inp.path, inp.fmt) for inp in listed]
            check_source(i, recipe, source, inputs)
            check_readable(i, source, inputs, recipe.stages.ingest.max_doc_bytes, detokenizer_path(recipe, source))

    def check_output(self, recipe: Recipe, report: StageReport) -> None:
        """A source that kept nothing is an error, not a source that silently vanishes from the mix."""
        empty = [n for n in recipe.source_names if not report["sources"].get(n, {}).get("kept")]
        if empty:
            reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(report["quarantined"].items(), key=lambda kv: -kv[1]))
            raise UserError(f"source(s) {', '.join(empty)} kept no documents at ingest (quarantined: "
                            f"{reasons or 'none'}); see the quarantine files under ingest/quarantine")

    def settings(self, recipe: Recipe, plan: IngestPlan) -> list[Any]:
        # The inputs' fingerprint (sizes, mtimes) is part of the settings: changed inputs rerun the flow. So is
        # the shards' compression, which every later stage writes with too (the hash chain reruns them).
        fingerprint = plan.fingerprint
        # `split` and `detokenizer` enter only when set (a recipe written before they existed keeps its hash);
        # a detokenizer's file is fingerprinted like an input, since the documents are what it decodes.
        sources = [s.model_dump(exclude={k for k in ("split", "detokenizer") if k not in s.model_fields_set})
                   for s in recipe.sources]
        detoks = [_fingerprint(Path(d), None) for s in recipe.sources if (d := detokenizer_path(recipe, s))]
        return [recipe.stages.ingest, sources, fingerprint, recipe.documents, *([detoks] if detoks else [])]

    def run(self, job: StageJob) -> dict[str, Any]:
        job.run_tasks(plan_tasks(job))
        return {"inputs": job.plan.fingerprint}
