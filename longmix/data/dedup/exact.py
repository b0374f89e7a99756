"""Exact dedup: one copy per normalized-text hash, global across shards and sources.

The global step reads only (source, id, content_hash) per document, never texts. The first
occurrence in input order (recipe source order, then file, then row) is kept. Among the survivors,
a repeated id within one source with different text is quarantined as `duplicate_id`.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl


def decide(shards: list[Path]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(decisions for rows that do not survive, removed list with the kept copy's id)."""
    frames = [
        pl.read_parquet(p, columns=["source", "id", "content_hash"]).with_columns(
            shard=pl.lit(i, pl.Int32), row=pl.int_range(pl.len(), dtype=pl.Int64))
        for i, p in enumerate(shards)
    ]
    docs = pl.concat(frames) if frames else pl.DataFrame(
        schema={"source": pl.String, "id": pl.String, "content_hash": pl.String, "shard": pl.Int32,
                "row": pl.Int64})
    docs = docs.with_columns(
        first=pl.col("content_hash").is_first_distinct(),
        kept_id=pl.col("id").first().over("content_hash"),
        kept_source=pl.col("source").first().over("content_hash"),
    )
    dups = docs.filter(~pl.col("first"))
    survivors = docs.filter(pl.col("first"))
    id_clash = survivors.filter(~pl.struct("source", "id").is_first_distinct())
    decisions = pl.concat([
        dups.select("shard", "row", action=pl.lit("drop"), reason=pl.lit("exact_duplicate"),
                    detail=pl.format("same text as {} ({})", "kept_id", "kept_source")),
        id_clash.select("shard", "row", action=pl.lit("quarantine"), reason=pl.lit("duplicate_id"),
                        detail=pl.format("id '{}' already used in source '{}' by other text", "id", "source")),
    ]).sort("shard", "row")
    removed = dups.select("id", "source", "content_hash", "kept_id", "kept_source")
    return decisions, removed
