"""Recipe models: YAML in, validated by pydantic, every mistake reported as one clear line."""

from __future__ import annotations

import glob
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from longmix.data.filters.settings import FilterConfig
from longmix.data.mix_settings import MixConfig, PackConfig, TokenizeConfig, TokenizerConfig
from longmix.errors import UserError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="label carried by every document")
    paths: list[str] = Field(min_length=1, description="files, globs or folders (relative to the recipe)")
    format: Literal["auto", "jsonl", "parquet", "text"] = "auto"
    text_field: str = "text"
    id_field: str | None = "id"


class IngestConfig(Strict):
    max_doc_bytes: int = Field(32 << 20, gt=0, description="larger documents go to quarantine")
    shard_bytes: int = Field(256 << 20, gt=0, description="roll to a new document shard past this much text")
    files_per_task: int = Field(512, gt=0, description="text-folder files grouped into one task")


class ExactDedupConfig(Strict):
    enabled: bool = True


class NearDedupConfig(Strict):
    enabled: bool = True
    threshold: float = Field(0.8, gt=0.0, lt=1.0, description="Jaccard similarity of word n-gram sets")
    num_perm: int = Field(128, ge=8, le=1024)
    ngram: int = Field(5, ge=1, le=32)
    bands: int | None = Field(None, ge=1, description="override datasketch's optimal bands")
    rows: int | None = Field(None, ge=1, description="override datasketch's optimal rows per band")
    keep: Literal["longest", "source_priority"] = "longest"
    batch_docs: int = Field(2048, gt=0, description="documents hashed per vectorized batch")

    @model_validator(mode="after")
    def _bands_rows_together(self) -> NearDedupConfig:
        if (self.bands is None) != (self.rows is None):
            raise ValueError("set both bands and rows, or neither")
        if self.bands and self.rows and self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands*rows={self.bands * self.rows} exceeds num_perm={self.num_perm}")
        return self


class StagesConfig(Strict):
    ingest: IngestConfig = IngestConfig()
    exact_dedup: ExactDedupConfig = ExactDedupConfig()
    near_dedup: NearDedupConfig = NearDedupConfig()
    filter: FilterConfig = FilterConfig()
    tokenize: TokenizeConfig = TokenizeConfig()
    mix: MixConfig = MixConfig()
    pack: PackConfig = PackConfig()


class ExecutorConfig(Strict):
    kind: Literal["local", "ray"] = "local"
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    ray_address: str | None = Field(None, description="Ray cluster address; none starts a local Ray")


class Recipe(Strict):
    name: str = "recipe"
    output: str
    seed: int = 0
    executor: ExecutorConfig = ExecutorConfig()
    sources: list[SourceConfig] = Field(min_length=1)
    tokenizer: TokenizerConfig | None = Field(None, description="set it to tokenize, mix and pack")
    seq_len: int | None = Field(None, ge=16, description="training sequence length of the packed shards")
    stages: StagesConfig = StagesConfig()
    base_dir: str = Field(".", exclude=True, description="folder relative paths are resolved from")

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, sources: list[SourceConfig]) -> list[SourceConfig]:
        names = [s.name for s in sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique; repeated: {', '.join(dupes)}")
        return sources

    def resolve(self, path: str) -> Path:
        p = Path(os.path.expanduser(path))
        return p if p.is_absolute() else (Path(self.base_dir) / p).resolve()

    @property
    def output_dir(self) -> Path:
        return self.resolve(self.output)

    def source_files(self, source: SourceConfig) -> list[Path]:
        """The source's inputs in a stable order; a pattern that matches nothing is an error."""
        out: list[Path] = []
        for pattern in source.paths:
            full = self.resolve(pattern)
            matches = sorted(Path(m) for m in glob.glob(str(full), recursive=True))
            if not matches:
                raise UserError(f"source '{source.name}': '{pattern}' matches no file (looked for {full})")
            out.extend(matches)
        seen: set[Path] = set()
        return [p for p in out if not (p in seen or seen.add(p))]

    def stage_hash(self, *parts: Any) -> str:
        blob = json.dumps([p.model_dump() if isinstance(p, BaseModel) else p for p in parts],
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _format_error(where: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown key '{loc}'")
        elif e["type"] == "missing":
            lines.append(f"{where}: missing required key '{loc}'")
        else:
            lines.append(f"{where}: {loc}: {e['msg']}" if loc else f"{where}: {e['msg']}")
    return "; ".join(lines)


def parse_model(model: type[BaseModel], data: Any, where: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise UserError(_format_error(where, err)) from None


def load_yaml(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"recipe '{path}' not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}: not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a recipe is a YAML mapping, got {type(data).__name__}")
    return data


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key; anything else (lists included) in `override` replaces the base's."""
    out = dict(base)
    for key, value in override.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else value
    return out


def load_with_extends(path: str | Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A recipe may start from another: `extends: base.yaml` (relative to it), then override keys."""
    path = Path(path).resolve()
    if path in seen:
        raise UserError(f"{path}: `extends` loops back to itself")
    data = load_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise UserError(f"{path}: `extends` takes one file name")
    return deep_merge(load_with_extends(path.parent / parent, (*seen, path)), data)


def load_recipe(path: str | Path, overrides: dict[str, Any] | None = None) -> Recipe:
    data = load_with_extends(path)
    data.update(overrides or {})
    data["base_dir"] = str(Path(path).resolve().parent)
    return parse_model(Recipe, data, str(path))
