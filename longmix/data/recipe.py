"""The data recipe: YAML in, validated by pydantic, every mistake reported as one clear line.

Each capability owns its settings model (`ingest/settings.py`, `dedup/settings.py`, ...); this module only
assembles them into one recipe."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from longmix.core.errors import UserError
from longmix.core.recipe_io import Strict, load_with_extends, parse_model, unique_names
from longmix.core.storage import cache_dir, glob_uri, is_uri
from longmix.data.dedup.settings import ExactDedupConfig, NearDedupConfig
from longmix.data.filters.settings import FilterConfig
from longmix.data.ingest.settings import IngestConfig, SourceConfig
from longmix.data.longdep.settings import LongdepConfig
from longmix.data.mix.settings import MixConfig
from longmix.data.pack.settings import PackConfig
from longmix.data.sample.settings import SampleConfig
from longmix.data.tokenize.settings import TokenizeConfig, TokenizerConfig
from longmix.pipeline.folder import OutputFolder, output_folder


class StagesConfig(Strict):
    ingest: IngestConfig = IngestConfig()
    sample: SampleConfig = SampleConfig()
    exact_dedup: ExactDedupConfig = ExactDedupConfig()
    near_dedup: NearDedupConfig = NearDedupConfig()
    filter: FilterConfig = FilterConfig()
    tokenize: TokenizeConfig = TokenizeConfig()
    longdep: LongdepConfig = LongdepConfig()
    mix: MixConfig = MixConfig()
    pack: PackConfig = PackConfig()


class TaskResources(Strict):
    cpus: float = Field(1, gt=0, description="CPUs one task of the stage needs")
    memory_gb: float = Field(1.0, gt=0, description="memory one task of the stage needs (GiB)")


class ExecutorConfig(Strict):
    kind: Literal["local", "ray"] = "local"
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    ray_address: str | None = Field(None, description="Ray cluster address (or RAY_ADDRESS); none starts a "
                                                      "local Ray")
    resources: dict[str, TaskResources] = Field(
        default_factory=dict, description="per stage: what one task needs; Ray schedules by it, and near dedup "
                                          "splits each LSH band into key ranges so one task fits memory_gb")

    @field_validator("resources")
    @classmethod
    def _known_stages(cls, resources: dict[str, TaskResources]) -> dict[str, TaskResources]:
        unknown = sorted(set(resources) - set(StagesConfig.model_fields))
        if unknown:
            raise ValueError(f"unknown stage {unknown[0]!r}: choose from {', '.join(StagesConfig.model_fields)}")
        return resources


class DocumentsConfig(Strict):
    compression: Literal["zstd", "lz4", "none"] = Field(
        "zstd", description="of every document shard the stages write: zstd is a third of the size, none "
                            "writes 4x and reads 2x faster")


class Recipe(Strict):
    name: str = "recipe"
    output: str
    seed: int = Field(0, ge=0, lt=2**32, description="one seed for every random choice (numpy takes 32 bits)")
    executor: ExecutorConfig = ExecutorConfig()
    sources: list[SourceConfig] = Field(min_length=1)
    tokenizer: TokenizerConfig | None = Field(None, description="set it to tokenize, mix and pack")
    seq_len: int | None = Field(None, ge=16, description="training sequence length of the packed shards")
    stages: StagesConfig = StagesConfig()
    documents: DocumentsConfig = DocumentsConfig()
    base_dir: str = Field(".", exclude=True, description="folder relative paths are resolved from")
    recipe_file: str = Field("", exclude=True, description="set by the loader: named in check errors")

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, sources: list[SourceConfig]) -> list[SourceConfig]:
        return unique_names(sources)

    def resolve(self, path: str) -> Path:
        p = Path(os.path.expanduser(path))
        return p if p.is_absolute() else (Path(self.base_dir) / p).resolve()

    @property
    def output_dir(self) -> Path:
        """Where the stages write: the output folder, or for a store URI (s3://...) its local cache, which
        the runner mirrors to the store (core/storage.py)."""
        return cache_dir(self.output) if is_uri(self.output) else self.resolve(self.output)

    @property
    def output_folder(self) -> OutputFolder:
        """The output as the runner works with it: a plain folder, or a store prefix mirrored through this
        node's cache (pipeline/folder.py)."""
        return output_folder(self.output, self.output_dir)

    @property
    def source_names(self) -> list[str]:
        return [s.name for s in self.sources]

    def source_files(self, source: SourceConfig) -> list[Path | str]:
        """The source's inputs in a stable order (object-store URIs stay strings); a pattern that matches
        nothing is an error."""
        out: list[Path | str] = []
        for pattern in source.paths:
            full: Path | str = pattern if is_uri(pattern) else self.resolve(pattern)
            matches: list[Path | str] = (glob_uri(pattern) if is_uri(pattern) else
                                         sorted(Path(m) for m in glob.glob(str(full), recursive=True)))
            if not matches:
                raise UserError(f"source '{source.name}': '{pattern}' matches no file (looked for {full})")
            out.extend(matches)
        seen: set[Path | str] = set()
        return [p for p in out if not (p in seen or seen.add(p))]

def load_recipe(path: str | Path, overrides: dict[str, Any] | None = None) -> Recipe:
    data = load_with_extends(path)
    data.update(overrides or {})
    data["base_dir"] = str(Path(path).resolve().parent)
    data["recipe_file"] = str(path)
    return parse_model(Recipe, data, str(path))
