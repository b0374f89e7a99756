"""The packed-data manifest (``manifest.json``): schema, writing and verification.

The manifest is the one file the trainer reads: sequence length, tokenizer, source names (the index
space of ``doc_sources``), shards with their sha256, totals, the mix report and the lineage. Training
refuses a manifest that fails ``verify_manifest``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from longmix.core.atomic import atomic_path
from longmix.core.errors import UserError
from longmix.formats.packed_shards import ShardInfo, check_rows, read_rows, sha256_file, shard_schema

FORMAT = "longmix.manifest/1"
KEY_LIBRARIES = ("longmix", "numpy", "pyarrow", "tokenizers", "pydantic", "polars")


class ManifestError(UserError, ValueError):
    """A manifest or one of its shards is missing, malformed or does not match its recorded hash."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TokenizerEntry(_Model):
    path: str
    sha256: str
    vocab_size: int = Field(gt=0)
    bos_id: int | None
    eos_id: int | None
    pad_id: int


class ShardEntry(_Model):
    path: str  # relative to the manifest's folder
    rows: int = Field(ge=0)
    tokens: int = Field(ge=0)  # non-padding tokens
    sha256: str


class Totals(_Model):
    tokens: int = Field(ge=0)  # non-padding tokens over all shards
    sequences: int = Field(ge=0)
    padding: int = Field(ge=0)  # padding tokens over all shards
    truncated_documents: int = Field(ge=0)


class Lineage(_Model):
    recipe: dict[str, Any]
    recipe_sha256: str
    inputs: dict[str, str]  # input path -> fingerprint
    versions: dict[str, str]
    seed: int
    created: str


class SftInfo(_Model):
    """What makes a manifest an SFT manifest: every shard has a loss_mask column, written under this loss mode
    with this chat template (a copy of it sits in the manifest's folder, so its hash can be checked)."""

    loss_mode: Literal["output", "input_and_output", "all"]
    template: str = Field(description="the chat template file, relative to the manifest's folder")
    template_sha256: str
    packing: str = Field(description="how examples share rows, e.g. 'short: best_fit, long: pad'")
    examples: int = Field(ge=0)
    loss_tokens: int = Field(ge=0, description="tokens whose prediction the loss counts, over all shards")


class Manifest(_Model):
    format: Literal["longmix.manifest/1"] = FORMAT
    seq_len: int = Field(gt=0)
    tokenizer: TokenizerEntry
    sources: list[str]
    shards: list[ShardEntry]
    totals: Totals
    packing: dict[str, Any]  # strategy and its statistics (PackStats.to_dict())
    mix: dict[str, Any]  # target vs achieved per source x bucket, repetitions (MixReport.to_dict())
    lineage: Lineage
    sft: SftInfo | None = None


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")  # the second one only where the source has it


def tokenizer_entry(source: str | Path, manifest_dir: str | Path, bos: str = "<s>", eos: str = "</s>",
                    pad: str | None = "<pad>") -> TokenizerEntry:
    """Copy a tokenizer.json (and the tokenizer_config.json beside it, an imported model's special-token settings)
    into the manifest's folder and describe it: its sha256, vocabulary size and special ids. The manifest then
    names only files inside its own folder, so a manifest can never point export or training at another file."""
    import shutil

    from longmix.formats.tokenizer_files import load_tokenizer, special_ids

    source, folder = Path(source), Path(manifest_dir)
    tok = load_tokenizer(source)
    ids = special_ids(tok, bos, eos, pad)
    if ids.pad_id is None:
        raise ManifestError(f"tokenizer {source} has neither {pad!r} nor {eos!r}; name a pad token")
    for name, src in zip(TOKENIZER_FILES, (source, source.parent / TOKENIZER_FILES[1]), strict=True):
        target = folder / name
        if src.is_file() and src.resolve() != target.resolve():
            with atomic_path(target) as tmp:
                shutil.copyfile(src, tmp)
    return TokenizerEntry(
        path=TOKENIZER_FILES[0],
        sha256=sha256_file(folder / TOKENIZER_FILES[0]),
        vocab_size=tok.get_vocab_size(with_added_tokens=True),
        bos_id=ids.bos_id,
        eos_id=ids.eos_id,
        pad_id=ids.pad_id,
    )


def manifest_tokenizer(path: str | Path, manifest: Manifest) -> Path:
    """The manifest's tokenizer.json, checked against its recorded sha256 before anything uses or copies it."""
    path = Path(path)
    tok = path.parent / manifest.tokenizer.path
    if not tok.is_file():
        raise ManifestError(f"{path}: tokenizer {manifest.tokenizer.path} is missing; restore it or re-run the "
                            "pack stage")
    digest = sha256_file(tok)
    if digest != manifest.tokenizer.sha256:
        raise ManifestError(f"{path}: tokenizer {manifest.tokenizer.path}: sha256 mismatch (manifest "
                            f"{manifest.tokenizer.sha256[:16]}..., file {digest[:16]}...); re-run the pack stage")
    return tok


def shard_entries(infos: list[ShardInfo], manifest_dir: str | Path) -> list[ShardEntry]:
    """Shard entries with paths relative to the manifest's folder (so the folder can move)."""
    base = Path(manifest_dir).resolve()
    return [
        ShardEntry(
            path=Path(i.path).resolve().relative_to(base).as_posix(),
            rows=i.rows,
            tokens=i.tokens,
            sha256=i.sha256,
        )
        for i in infos
    ]


def totals_from(infos: list[ShardInfo], truncated_documents: int) -> Totals:
    return Totals(
        tokens=sum(i.tokens for i in infos),
        sequences=sum(i.rows for i in infos),
        padding=sum(i.pad_tokens for i in infos),
        truncated_documents=truncated_documents,
    )


def recipe_sha256(recipe: dict[str, Any]) -> str:
    """Hash of the recipe as canonical JSON (sorted keys), so key order in the YAML does not matter."""
    canonical = json.dumps(recipe, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in KEY_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def make_lineage(recipe: dict[str, Any], inputs: dict[str, str], seed: int) -> Lineage:
    return Lineage(
        recipe=recipe,
        recipe_sha256=recipe_sha256(recipe),
        inputs=inputs,
        versions=library_versions(),
        seed=seed,
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )


def write_manifest(manifest: Manifest, path: str | Path) -> None:
    """Write manifest.json atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(manifest.model_dump_json(indent=2) + "\n")


def load_manifest(path: str | Path) -> Manifest:
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path} (run the pack stage to create it)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc}); re-run the pack stage") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else None
        raise ManifestError(f"{path}: format is {found!r}, expected {FORMAT!r}; is this a longmix manifest?")
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ManifestError(f"{path}: field '{where}': {err['msg']}; re-run the pack stage") from None
    named_files = [("tokenizer", manifest.tokenizer.path)] + [("shard", e.path) for e in manifest.shards]
    if manifest.sft is not None:
        named_files.append(("chat template", manifest.sft.template))
    for what, named in named_files:
        inside = Path(named)
        if inside.is_absolute() or ".." in inside.parts:
            raise ManifestError(f"{path}: {what} path {named!r} leaves the manifest's folder; a manifest only "
                                f"names files inside its own folder (to share shards, link their folder into it)")
    return manifest


def check_shard_layout(path: str | Path, manifest: Manifest) -> None:
    """Every shard is there with the packed-shard schema of the manifest's sequence length: read from the
    files' footers only (no data, no hashing), so it runs before a training launch."""
    path = Path(path)
    if not manifest.shards:
        raise ManifestError(f"{path}: lists no shards; re-run the pack stage")
    manifest_tokenizer(path, manifest)  # one small file: hashing it costs nothing next to a launch
    check_sft_template(path, manifest)
    want = shard_schema(manifest.seq_len, manifest.sft is not None)
    for entry in manifest.shards:
        shard = path.parent / entry.path
        if not shard.is_file():
            raise ManifestError(f"{path}: shard {entry.path}: file is missing; restore it or re-run the pack stage")
        try:
            schema = pa.ipc.open_file(pa.memory_map(str(shard), "r")).schema
        except (OSError, pa.ArrowException) as exc:
            raise ManifestError(f"{path}: shard {entry.path}: not an Arrow IPC file ({exc})") from None
        if not schema.equals(want):
            if ("loss_mask" in schema.names) != (manifest.sft is not None):
                raise ManifestError(f"{path}: shard {entry.path}: " + _mask_mismatch(manifest))
            ids = schema.field("input_ids").type if "input_ids" in schema.names else "no input_ids"
            raise ManifestError(f"{path}: shard {entry.path}: not a packed shard of seq_len {manifest.seq_len} "
                                f"(input_ids: {ids}); re-run the pack stage")


def verify_manifest(path: str | Path, check_content: bool = True) -> Manifest:
    """Check every shard against its sha256, the schema, its row count and (optionally) row invariants.

    Raises ManifestError with one line naming the first bad shard and what is wrong with it.
    """
    path = Path(path)
    manifest = load_manifest(path)
    if not manifest.shards:
        raise ManifestError(f"{path}: lists no shards; re-run the pack stage")
    manifest_tokenizer(path, manifest)
    check_sft_template(path, manifest)
    base = path.parent
    loss_tokens = 0
    for entry in manifest.shards:
        shard = base / entry.path
        where = f"{path}: shard {entry.path}"
        if not shard.is_file():
            raise ManifestError(f"{where}: file is missing; restore it or re-run the pack stage")
        digest = sha256_file(shard)
        if digest != entry.sha256:
            raise ManifestError(
                f"{where}: sha256 mismatch (manifest {entry.sha256[:16]}..., file {digest[:16]}...); "
                "the shard changed after packing, re-run the pack stage"
            )
        try:
            rows = read_rows(shard, manifest.seq_len)
        except (ValueError, OSError, pa.ArrowException) as exc:
            raise ManifestError(f"{where}: not a packed shard (seq_len {manifest.seq_len}): {exc}") from None
        if len(rows) != entry.rows:
            raise ManifestError(f"{where}: has {len(rows)} rows, manifest says {entry.rows}")
        if (rows.loss_mask is not None) != (manifest.sft is not None):
            raise ManifestError(f"{where}: " + _mask_mismatch(manifest))
        if rows.loss_mask is not None:
            loss_tokens += int(rows.loss_mask.sum(dtype=np.int64))
        tokens = len(rows) * manifest.seq_len - int(rows.pad.sum())
        if tokens != entry.tokens:
            raise ManifestError(f"{where}: holds {tokens} tokens, manifest says {entry.tokens}")
        if check_content:
            problem = check_rows(rows, manifest.seq_len, len(manifest.sources))
            if problem:
                raise ManifestError(f"{where}: {problem}")
    n_rows = sum(s.rows for s in manifest.shards)
    if n_rows != manifest.totals.sequences:
        raise ManifestError(f"{path}: shards hold {n_rows} sequences, totals say {manifest.totals.sequences}")
    n_tokens = sum(s.tokens for s in manifest.shards)
    if n_tokens != manifest.totals.tokens:
        raise ManifestError(f"{path}: shards hold {n_tokens} tokens, totals say {manifest.totals.tokens}")
    if manifest.sft is not None and loss_tokens != manifest.sft.loss_tokens:
        raise ManifestError(f"{path}: shards' loss masks count {loss_tokens} tokens, sft.loss_tokens says "
                            f"{manifest.sft.loss_tokens}; the masks changed after packing, re-run sft-pack")
    return manifest


def check_sft_template(path: Path, manifest: Manifest) -> None:
    """An SFT manifest's chat template is there and is the one its masks were written with."""
    if manifest.sft is None:
        return
    template = path.parent / manifest.sft.template
    if not template.is_file():
        raise ManifestError(f"{path}: chat template {manifest.sft.template} is missing; re-run sft-pack")
    digest = sha256_file(template)
    if digest != manifest.sft.template_sha256:
        raise ManifestError(f"{path}: chat template {manifest.sft.template} changed after packing (sha256 "
                            f"{digest[:16]}..., manifest {manifest.sft.template_sha256[:16]}...); re-run sft-pack")


def _mask_mismatch(manifest: Manifest) -> str:
    if manifest.sft is not None:
        return "has no loss_mask column, but the manifest is an SFT manifest (sft: ...); re-run sft-pack"
    return "has a loss_mask column, but the manifest records no sft section; re-run sft-pack"
