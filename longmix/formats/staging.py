"""Manifests in object storage: staged into the node's local cache for training (packed shards are
memory-mapped, which needs local files), or verified against the store itself.

Staging pulls the manifest, then each shard the cache lacks or holds with another sha256, checks every pulled
shard against the manifest's sha256, and stamps the staged set; a later start (every rank of every node
calls it) finds the stamp and only compares sizes. One lock per manifest: ranks of one node wait for the one
that stages, instead of all downloading.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import tempfile
from pathlib import Path

from longmix.core.atomic import write_json
from longmix.core.storage import Mirror, file_info, join
from longmix.formats.manifest import (
    TOKENIZER_FILES,
    Manifest,
    ManifestError,
    load_manifest,
    sha256_file,
    verify_manifest,
)


def _split(uri: str) -> tuple[str, str]:
    base, _, name = uri.rstrip("/").rpartition("/")
    return base, name


def stage_manifest(uri: str) -> Path:
    """The local path of a store manifest with all its shards beside it, downloaded where needed."""
    base, name = _split(uri)
    mirror = Mirror(base)
    mirror.local.mkdir(parents=True, exist_ok=True)
    with open(mirror.local / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        local = mirror.pull(name)
        manifest = load_manifest(local)
        digest = hashlib.sha256(local.read_bytes()).hexdigest()
        stamp = mirror.local / f".{name}.staged.json"
        sizes = {s.path: (mirror.local / s.path).stat().st_size if (mirror.local / s.path).is_file() else -1
                 for s in manifest.shards}
        tokenizer = mirror.local / manifest.tokenizer.path
        if tokenizer.is_file() and stamp.is_file() and \
                json.loads(stamp.read_text()) == {"manifest_sha256": digest, "sizes": sizes}:
            return local
        for shard in manifest.shards:
            path = mirror.local / shard.path
            if not (path.is_file() and sha256_file(path) == shard.sha256):
                mirror.pull(shard.path)
                if sha256_file(path) != shard.sha256:
                    raise ManifestError(f"{uri}: shard {shard.path} in the store does not match its sha256; "
                                        "re-run the pack stage")
        _pull_tokenizer(mirror, manifest, uri)
        sizes = {s.path: (mirror.local / s.path).stat().st_size for s in manifest.shards}
        write_json(stamp, {"manifest_sha256": digest, "sizes": sizes})
    return local


def _pull_tokenizer(mirror: Mirror, manifest: Manifest, uri: str) -> None:
    """The manifest's tokenizer (and the tokenizer_config.json pack copied beside it, where the store has one),
    pulled unless the cache holds the recorded one; the readers check its sha256 again before use."""
    path = mirror.local / manifest.tokenizer.path
    if path.is_file() and sha256_file(path) == manifest.tokenizer.sha256:
        return
    if file_info(join(mirror.uri, manifest.tokenizer.path)) is None:
        raise ManifestError(f"{uri}: tokenizer {manifest.tokenizer.path}: object is missing; restore it or re-run "
                            "the pack stage")
    mirror.pull(manifest.tokenizer.path)
    if file_info(join(mirror.uri, TOKENIZER_FILES[1])) is not None:
        mirror.pull(TOKENIZER_FILES[1])


def verify_store_manifest(uri: str, check_content: bool = True) -> Manifest:
    """verify_manifest on what the store holds now: a fresh download to a temporary folder, never the cache."""
    base, name = _split(uri)
    mirror = Mirror(base)
    with tempfile.TemporaryDirectory(prefix="longmix-verify-") as tmp:
        mirror.local = Path(tmp)
        local = mirror.pull(name)
        try:
            manifest = load_manifest(local)
            _pull_tokenizer(mirror, manifest, uri)
            for shard in manifest.shards:
                if file_info(join(base, shard.path)) is None:
                    raise ManifestError(f"{local}: shard {shard.path}: object is missing; restore it or re-run "
                                        "the pack stage")
                mirror.pull(shard.path)
            return verify_manifest(local, check_content)
        except ManifestError as exc:  # name the store, not the temporary folder
            raise ManifestError(str(exc).replace(str(local), uri)) from None
