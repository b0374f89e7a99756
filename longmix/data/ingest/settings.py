"""Recipe settings of the inputs (`sources`) and of the ingest stage (`stages.ingest`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from longmix.core.recipe_io import Strict


class SourceConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="label carried by every document")
    paths: list[str] = Field(min_length=1, description="files, globs or folders (relative to the recipe)")
    format: Literal["auto", "jsonl", "parquet", "text", "hf", "mds"] = "auto"
    text_field: str = "text"
    id_field: str | None = "id"
    split: str = Field("train", min_length=1, description="hf: the split of a DatasetDict folder or of Hub-style "
                                                          "Parquet files named by split")
    detokenizer: str | None = Field(None, description="mds: the tokenizer.json that made pre-tokenized shards' "
                                                      "input_ids, to decode them (relative to the recipe)")


class IngestConfig(Strict):
    max_doc_bytes: int = Field(32 << 20, gt=0, description="larger documents go to quarantine")
    shard_bytes: int = Field(256 << 20, gt=0, description="roll to a new document shard past this much text")
    files_per_task: int = Field(512, gt=0, description="text-folder files grouped into one task")
