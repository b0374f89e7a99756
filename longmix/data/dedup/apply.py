"""The step both dedups share: apply a global step's per-row decisions (formats/decisions.py) to each
document shard. Dropped rows are counted by reason; quarantined rows are written with their full record
as raw bytes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from longmix.formats.decisions import read_decisions
from longmix.formats.documents import write_quarantine, write_table
from longmix.pipeline.stage import StageJob
from longmix.pipeline.stats import Counts


def apply_decisions_task(*, in_path: str, shard: int, decisions_path: str, out_dir: str, rel_path: str,
                         quarantine_path: str, compression: str = "zstd") -> dict[str, Any]:
    """Input shard -> output shard at `rel_path` under out_dir (same name; not written when empty)."""
    table = pq.read_table(in_path)
    decided = read_decisions(decisions_path, shard)
    rows = decided.column("row").to_numpy()
    actions = decided.column("action").to_pylist()
    reasons = decided.column("reason").to_pylist()
    details = decided.column("detail").to_pylist()

    counts = Counts()
    sources = table.column("source").to_pylist()
    text_bytes = pc.binary_length(table.column("text").cast(pa.large_binary())).to_numpy()
    keep = np.ones(table.num_rows, dtype=bool)
    keep[rows] = False
    why = np.full(table.num_rows, None, dtype=object)
    why[rows] = reasons
    quarantined = np.zeros(table.num_rows, dtype=bool)
    quarantined[rows] = np.asarray(actions, dtype=object) != "drop"
    counts.add(sources, text_bytes, why, quarantined)
    bad_rows = []
    for r, act, reason, detail in zip(rows, actions, reasons, details, strict=True):
        src = sources[r]
        if act != "drop":
            record = {k: table.column(k)[int(r)].as_py() for k in table.column_names}
            bad_rows.append({"source": src, "origin_file": in_path, "origin_pos": int(r), "reason": reason,
                             "detail": detail or "", "raw": json.dumps(record, ensure_ascii=False).encode()})
    outputs = []
    if keep.any():
        kept = table.filter(pa.array(keep))
        size = write_table(Path(out_dir) / rel_path, kept, compression)
        outputs.append({"path": rel_path, "rows": kept.num_rows, "bytes": size})
    qfiles = []
    if write_quarantine(Path(quarantine_path), bad_rows):
        qfiles.append(str(Path(quarantine_path).relative_to(out_dir)))
    return counts.to_dict(outputs=outputs, quarantine_files=qfiles)


def apply_decisions(job: StageJob, decisions_path: Path) -> list[dict[str, Any]]:
    """One apply task per upstream shard, writing the survivors at the same relative path (the stage's counts)."""
    return job.map_shards("apply", apply_decisions_task,
                          per_shard=lambda i, _: {"shard": i,
                                                  "quarantine_path": job.path("quarantine", f"{i:05d}.parquet")},
                          decisions_path=job.reads(decisions_path), compression=job.recipe.documents.compression)
