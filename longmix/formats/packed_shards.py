"""Packed shards: Arrow IPC files (uncompressed, one record batch each) that memory-map for training.

Schema per DESIGN.md: input_ids fixed_size_list<uint32>[seq_len], doc_lens list<int32>,
doc_sources list<int16>, pad int32; SFT shards add loss_mask fixed_size_list<uint8>[seq_len].
The padding segment, when present, is the last one and has source
-1. Files are written to a temp name in the target folder and renamed into place, so a reader never
sees a half-written shard. The global shuffle permutes rows across all shards with a seeded permutation,
gathering from memory-mapped inputs, so it needs memory for one output shard plus the permutation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from longmix.core.atomic import atomic_path
from longmix.formats.packed_rows import PAD_SOURCE, PackedRows

SHARD_SUFFIX = ".arrow"


@dataclass(frozen=True)
class ShardInfo:
    path: Path
    rows: int
    tokens: int  # non-padding tokens
    pad_tokens: int
    sha256: str


def shard_schema(seq_len: int, loss_mask: bool = False) -> pa.Schema:
    fields = [
        pa.field("input_ids", pa.list_(pa.uint32(), seq_len), nullable=False),
        pa.field("doc_lens", pa.list_(pa.int32()), nullable=False),
        pa.field("doc_sources", pa.list_(pa.int16()), nullable=False),
        pa.field("pad", pa.int32(), nullable=False),
    ]
    if loss_mask:
        fields.append(pa.field("loss_mask", pa.list_(pa.uint8(), seq_len), nullable=False))
    return pa.schema(fields)


def to_record_batch(rows: PackedRows, seq_len: int) -> pa.RecordBatch:
    """Zero-copy view of packed rows as a record batch with the shard schema."""
    if rows.input_ids.shape[1:] != (seq_len,):
        raise ValueError(f"rows have length {rows.input_ids.shape[1:]}, expected ({seq_len},)")
    seg_offsets = pa.array(rows.seg_offsets.astype(np.int32))
    columns = [
        pa.FixedSizeListArray.from_arrays(pa.array(rows.input_ids.reshape(-1)), seq_len),
        pa.ListArray.from_arrays(seg_offsets, pa.array(rows.seg_lens.astype(np.int32))),
        pa.ListArray.from_arrays(seg_offsets, pa.array(rows.seg_sources.astype(np.int16))),
        pa.array(rows.pad.astype(np.int32)),
    ]
    if rows.loss_mask is not None:
        if rows.loss_mask.shape != rows.input_ids.shape:
            raise ValueError(f"loss_mask has shape {rows.loss_mask.shape}, input_ids {rows.input_ids.shape}")
        columns.append(pa.FixedSizeListArray.from_arrays(pa.array(rows.loss_mask.astype(np.uint8).reshape(-1)),
                                                         seq_len))
    return pa.RecordBatch.from_arrays(columns, schema=shard_schema(seq_len, rows.loss_mask is not None))


def write_shard(path: str | Path, rows: PackedRows, seq_len: int) -> ShardInfo:
    """Write one shard atomically and return its row/token counts and sha256."""
    path = Path(path)
    batch = to_record_batch(rows, seq_len)
    with atomic_path(path) as tmp:
        with pa.OSFile(str(tmp), "wb") as sink, ipc.new_file(sink, batch.schema) as writer:
            writer.write_batch(batch)
        digest = sha256_file(tmp)
    pad = int(rows.pad.sum())
    tokens = len(rows) * seq_len - pad
    return ShardInfo(path=path, rows=len(rows), tokens=tokens, pad_tokens=pad, sha256=digest)


def write_shards(
    blocks: Iterable[PackedRows],
    out_dir: str | Path,
    seq_len: int,
    rows_per_shard: int,
    prefix: str = "shard",
) -> list[ShardInfo]:
    """Write rows in order into shards of ``rows_per_shard`` rows (the last may be smaller)."""
    if rows_per_shard < 1:
        raise ValueError(f"rows_per_shard must be at least 1, got {rows_per_shard}")
    out_dir = Path(out_dir)
    infos: list[ShardInfo] = []
    buffered: list[PackedRows] = []
    n_buffered = 0
    for block in blocks:
        buffered.append(block)
        n_buffered += len(block)
        while n_buffered >= rows_per_shard:
            rows = PackedRows.concat(buffered, seq_len)
            head = rows.take(np.arange(rows_per_shard))
            infos.append(write_shard(out_dir / _shard_name(prefix, len(infos)), head, seq_len))
            buffered = [rows.take(np.arange(rows_per_shard, len(rows)))]
            n_buffered = len(rows) - rows_per_shard
    if n_buffered:
        rows = PackedRows.concat(buffered, seq_len)
        infos.append(write_shard(out_dir / _shard_name(prefix, len(infos)), rows, seq_len))
    return infos


def shuffle_shards(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    seq_len: int,
    rows_per_shard: int,
    seed: int,
    prefix: str = "shard",
) -> list[ShardInfo]:
    """Rewrite the rows of ``inputs`` (in that order) as new shards in a seeded global random order."""
    if rows_per_shard < 1:
        raise ValueError(f"rows_per_shard must be at least 1, got {rows_per_shard}")
    sources = [read_rows(p, seq_len) for p in inputs]
    counts = np.array([len(r) for r in sources], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)])
    perm = np.random.default_rng([seed, 0x5348]).permutation(int(starts[-1]))
    out_dir = Path(out_dir)
    infos = []
    for k, a in enumerate(range(0, len(perm), rows_per_shard)):
        idx = perm[a : a + rows_per_shard]
        infos.append(write_shard(out_dir / _shard_name(prefix, k), _gather(sources, starts, idx), seq_len))
    return infos


def _gather(sources: list[PackedRows], starts: np.ndarray, idx: np.ndarray) -> PackedRows:
    """Rows at global positions ``idx`` from several blocks, in the order of ``idx``."""
    which = np.searchsorted(starts, idx, side="right") - 1
    parts, positions = [], []
    for f in np.unique(which).tolist():
        sel = np.flatnonzero(which == f)
        parts.append(sources[f].take(idx[sel] - starts[f]))
        positions.append(sel)
    merged = PackedRows.concat(parts, sources[0].input_ids.shape[1])
    # merged row j belongs at output position pos[j]; argsort inverts that.
    return merged.take(np.argsort(np.concatenate(positions), kind="stable"))


def open_shard(path: str | Path) -> pa.Table:
    """Memory-map a shard: the table's buffers point into the page cache, nothing is read up front."""
    return ipc.open_file(pa.memory_map(str(path), "r")).read_all()


def read_rows(path: str | Path, seq_len: int) -> PackedRows:
    """A shard as PackedRows whose arrays are zero-copy views of the memory map."""
    table = open_shard(path)
    masked = "loss_mask" in table.schema.names
    if not table.schema.equals(shard_schema(seq_len, masked)):
        raise ValueError(f"{path}: schema does not match the packed-shard schema for seq_len={seq_len}")
    if table.num_rows == 0:
        return PackedRows(
            np.zeros((0, seq_len), np.uint32),
            np.zeros(0, np.int32),
            np.zeros(0, np.int16),
            np.zeros(1, np.int64),
            np.zeros(0, np.int32),
            np.zeros((0, seq_len), np.uint8) if masked else None,
        )
    table = table.combine_chunks()  # a no-op for our one-batch shards
    ids = table.column("input_ids").chunk(0)
    lens = table.column("doc_lens").chunk(0)
    srcs = table.column("doc_sources").chunk(0)
    offsets = lens.offsets.to_numpy().astype(np.int64)
    return PackedRows(
        input_ids=ids.values.to_numpy()[ids.offset * seq_len : (ids.offset + len(ids)) * seq_len].reshape(-1, seq_len),
        seg_lens=lens.values.to_numpy()[offsets[0] : offsets[-1]],
        seg_sources=srcs.values.to_numpy()[offsets[0] : offsets[-1]],
        seg_offsets=offsets - offsets[0],
        pad=table.column("pad").chunk(0).to_numpy(),
        loss_mask=_fixed_rows(table.column("loss_mask").chunk(0), seq_len) if masked else None,
    )


def _fixed_rows(arr: pa.FixedSizeListArray, seq_len: int) -> np.ndarray:
    """A fixed-size list column as a zero-copy (rows, seq_len) view."""
    return arr.values.to_numpy()[arr.offset * seq_len : (arr.offset + len(arr)) * seq_len].reshape(-1, seq_len)


def check_rows(rows: PackedRows, seq_len: int, n_sources: int) -> str | None:
    """None if the rows keep the packed-shard invariants, else what is wrong (first problem)."""
    counts = np.diff(rows.seg_offsets)
    if len(rows) and counts.min() < 1:
        return "a row has no segments"
    if len(rows) == 0:
        return None
    if np.any(rows.seg_lens <= 0):
        return "a segment has non-positive length"
    sums = np.add.reduceat(rows.seg_lens.astype(np.int64), rows.seg_offsets[:-1])
    if np.any(sums != seq_len):
        r = int(np.flatnonzero(sums != seq_len)[0])
        return f"row {r}: doc_lens sum to {int(sums[r])}, not seq_len={seq_len}"
    last = rows.seg_offsets[1:] - 1
    padded = rows.pad > 0
    if np.any(rows.pad < 0) or np.any(rows.pad >= seq_len):
        return "pad out of range"
    pad_last = last[padded]
    bad_pad = np.any(rows.seg_lens[pad_last] != rows.pad[padded])
    if bad_pad or np.any(rows.seg_sources[pad_last] != PAD_SOURCE):
        return "a padded row does not end with a padding segment of length pad and source -1"
    is_pad_seg = np.zeros(len(rows.seg_lens), dtype=bool)
    is_pad_seg[last[padded]] = True
    doc_src = rows.seg_sources[~is_pad_seg]
    if len(doc_src) and (doc_src.min() < 0 or doc_src.max() >= n_sources):
        return f"a document segment has a source index outside 0..{n_sources - 1}"
    if rows.loss_mask is not None:
        return _check_loss_mask(rows, seq_len)
    return None


def _check_loss_mask(rows: PackedRows, seq_len: int) -> str | None:
    """The loss mask is 0/1, never on padding, never on a segment's first token (nothing predicts it), and each
    row has at least one target (a row without one would train nothing yet count as a sequence)."""
    mask = rows.loss_mask
    if mask.shape != (len(rows), seq_len) or (len(rows) and mask.max() > 1):
        return "loss_mask is not a 0/1 array of shape (rows, seq_len)"
    # Rows already sum to seq_len here, so a segment's offset in the flat token stream is row * seq_len + start.
    flat_start = np.concatenate([[0], np.cumsum(rows.seg_lens.astype(np.int64))[:-1]])
    starts = np.zeros((len(rows), seq_len), dtype=bool)
    row_of_seg, seg_start = flat_start // seq_len, flat_start % seq_len
    starts[row_of_seg, seg_start] = True
    if np.any(mask.astype(bool) & starts):
        return f"row {int(np.flatnonzero((mask.astype(bool) & starts).any(axis=1))[0])}: loss_mask set on a " \
               "segment's first token"
    tail = np.arange(seq_len)[None, :] >= (seq_len - rows.pad)[:, None]
    if np.any(mask.astype(bool) & tail):
        return f"row {int(np.flatnonzero((mask.astype(bool) & tail).any(axis=1))[0])}: loss_mask set on padding"
    if np.any(mask.sum(axis=1) == 0):
        return f"row {int(np.flatnonzero(mask.sum(axis=1) == 0)[0])}: loss_mask counts no token"
    return None


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _shard_name(prefix: str, k: int) -> str:
    return f"{prefix}-{k:05d}{SHARD_SUFFIX}"
