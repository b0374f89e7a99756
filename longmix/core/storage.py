"""Object storage: inputs, stage outputs, manifests and training data as URIs (`s3://bucket/key`, or anything
pyarrow.fs opens), beside plain local paths.

A store has no rename, so nothing is written there in pieces: every object is put once, whole (one PUT, or a
multipart upload that only appears when it completes), and a reader never sees a partial object. Order gives
the atomicity a rename gives on disk: a task's outputs are put before its completion marker, and a stage's
`report.json` after everything else of the stage (pipeline/folder.py `MirroredFolder`, whose hooks the runner
calls). Each node keeps a local cache of what it reads or writes (`$LONGMIX_CACHE`, default ~/.cache/longmix),
which may lie at another path on each node: tasks name files relative to the output folder, resolved under the
cache of the node that runs them. The store stays the truth, and a fresh machine pulls what it needs from it.
Credentials come from the usual environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_PROFILE,
AWS_ENDPOINT_URL for S3-compatible servers).
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from longmix.core.errors import UserError

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_CHUNK = 8 << 20


def is_uri(path: Any) -> bool:
    """True for `scheme://...` strings other than file://, which are plain local paths."""
    return isinstance(path, str) and bool(_SCHEME.match(path)) and not path.startswith("file://")


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


# How a store's refusal is told apart. pyarrow.fs gives no type for it: a missing bucket, denied access and an
# unreachable endpoint all raise a plain OSError, errno None, no error-code attribute, whose message names the
# AWS error ("... AWS Error NO_SUCH_BUCKET during CreateMultipartUpload operation: ...", "AWS Error
# ACCESS_DENIED during HeadObject ...", "AWS Error NETWORK_CONNECTION ...: Could not connect to server";
# checked with pyarrow 26 against moto's S3 server). Only a missing object is typed (FileNotFoundError), and
# that is not a refusal. So the message is what classifies, in this table and nowhere else: kind -> the words
# that mark it (the SDK's names, S3's error codes, the HTTP status), matched in the whole message.
_REFUSALS: dict[str, tuple[str, ...]] = {
    "no_bucket": ("NO_SUCH_BUCKET", "NoSuchBucket"),
    "denied": ("ACCESS_DENIED", "AccessDenied", "Forbidden", "403"),
}
# An unreachable endpoint: matched (in any case) in the message's first line only, the line that is shown.
_UNREACHABLE = "connect"


def refusal_kind(exc: BaseException) -> str | None:
    """The kind of a store's refusal (a key of _REFUSALS), None for any other error."""
    msg = str(exc)
    return next((kind for kind, words in _REFUSALS.items() if any(w in msg for w in words)), None)


def storage_error(uri: str, exc: BaseException, doing: str = "reading") -> UserError:
    """One line for a store's refusal: missing bucket, denied access, unreachable endpoint."""
    bucket = uri.split("://", 1)[-1].split("/", 1)[0]
    kind = refusal_kind(exc)
    if kind == "no_bucket":
        return UserError(f"bucket '{bucket}' does not exist ({uri}): create it or fix the URI")
    if kind == "denied":
        return UserError(f"access denied {doing} {uri}: check the credentials (AWS_ACCESS_KEY_ID/"
                         f"AWS_SECRET_ACCESS_KEY or AWS_PROFILE) and the bucket's policy")
    msg = str(exc)
    first = msg.splitlines()[0] if msg else type(exc).__name__
    hint = "; is AWS_ENDPOINT_URL right?" if _UNREACHABLE in first.lower() else ""
    return UserError(f"failed {doing} {uri}: {first}{hint}")


def filesystem(uri: str) -> tuple[Any, str]:
    """(pyarrow FileSystem, path inside it) for a URI."""
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for unknown schemes and bad URIs
        raise storage_error(uri, exc, "opening") from None


def file_info(uri: str) -> tuple[int, int] | None:
    """(bytes, mtime in ns) of an object, None when there is none."""
    import pyarrow.fs as pafs

    fs, path = filesystem(uri)
    try:
        info = fs.get_file_info(path)
    except OSError as exc:
        raise storage_error(uri, exc) from None
    if info.type != pafs.FileType.File:
        return None
    mtime = info.mtime_ns if info.mtime_ns is not None else 0
    return int(info.size or 0), int(mtime)


def glob_uri(pattern: str) -> list[str]:
    """The objects matching a glob pattern (`*`, `?`, `[...]`; `**` crosses folders), sorted."""
    import pyarrow.fs as pafs

    fs, path = filesystem(pattern)
    scheme = pattern.split("://", 1)[0]
    if not any(ch in path for ch in "*?["):
        return [pattern] if file_info(pattern) else []
    fixed = re.split(r"[*?\[]", path, maxsplit=1)[0].rsplit("/", 1)[0]
    try:
        infos = fs.get_file_info(pafs.FileSelector(fixed, recursive=True, allow_not_found=True))
    except OSError as exc:
        raise storage_error(pattern, exc, "listing") from None
    rx = re.compile(fnmatch.translate(path).replace(".*", "[^/]*").replace("[^/]*[^/]*", ".*"))
    return sorted(f"{scheme}://{i.path}" for i in infos if i.type == pafs.FileType.File and rx.match(i.path))


@contextmanager
def open_input_stream(path: str | Path) -> Iterator[IO[bytes]]:
    """A local file or an object, read sequentially as raw bytes (no decompression by extension)."""
    if not is_uri(path):
        with open(path, "rb") as fh:
            yield fh
        return
    fs, key = filesystem(str(path))
    try:
        stream = fs.open_input_stream(key, compression=None)
    except OSError as exc:
        raise storage_error(str(path), exc) from None
    with stream:
        yield stream


def open_input_file(path: str | Path) -> Any:
    """A seekable handle (for Parquet): the path itself when local, a random-access object reader else."""
    if not is_uri(path):
        return path
    fs, key = filesystem(str(path))
    try:
        return fs.open_input_file(key)
    except OSError as exc:
        raise storage_error(str(path), exc) from None


def cache_root() -> Path:
    return Path(os.environ.get("LONGMIX_CACHE") or Path.home() / ".cache" / "longmix")


def cache_dir(uri: str) -> Path:
    """The local mirror of a store prefix: the same path on every node that shares LONGMIX_CACHE's value."""
    tail = re.sub(r"[^A-Za-z0-9._-]+", "-", uri.split("://", 1)[-1]).strip("-")[-60:]
    return cache_root() / "objects" / f"{hashlib.sha256(uri.rstrip('/').encode()).hexdigest()[:12]}-{tail}"


def _is_temp(rel: str) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return name.startswith(".") and name.endswith(".tmp")


class Mirror:
    """A store prefix (`uri`) and its local cache (`local`): pull objects down, push finished files up."""

    def __init__(self, uri: str) -> None:
        self.uri = uri.rstrip("/")
        self.fs, self.root = filesystem(self.uri)
        self.root = self.root.rstrip("/")
        self.local = cache_dir(self.uri)

    def listing(self, rel_dir: str = "", recursive: bool = True) -> dict[str, int]:
        """Every object under rel_dir (directly in it, unless recursive): path relative to the mirror -> bytes."""
        import pyarrow.fs as pafs

        base = f"{self.root}/{rel_dir}".rstrip("/")
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=recursive, allow_not_found=True))
        except OSError as exc:
            raise storage_error(join(self.uri, rel_dir), exc, "listing") from None
        return {i.path[len(self.root) + 1:]: int(i.size or 0) for i in infos if i.type == pafs.FileType.File}

    def pull(self, rel: str) -> Path:
        """Download one object into the cache (whole, then renamed into place)."""
        target = self.local / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            with self.fs.open_input_stream(f"{self.root}/{rel}", compression=None) as src, open(tmp, "wb") as dst:
                while chunk := src.read(_CHUNK):
                    dst.write(chunk)
            os.replace(tmp, target)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise storage_error(join(self.uri, rel), exc) from None
        return target

    def push(self, rel: str) -> None:
        """Upload one local file as one object: it appears whole or not at all."""
        try:
            with open(self.local / rel, "rb") as src, self.fs.open_output_stream(
                    f"{self.root}/{rel}", compression=None) as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
        except OSError as exc:
            raise storage_error(join(self.uri, rel), exc, "writing") from None

    def pull_missing(self, rel_dir: str, remote: dict[str, int] | None = None, exact: bool = False) -> None:
        """Bring rel_dir's objects into the cache (those missing or of another size). exact: also delete
        cached files the store does not hold, so the cache says no more than the store does."""
        remote = self.listing(rel_dir) if remote is None else remote
        for rel, size in sorted(remote.items()):
            p = self.local / rel
            if not p.is_file() or p.stat().st_size != size:
                self.pull(rel)
        if exact and (self.local / rel_dir).is_dir():
            for p in sorted((self.local / rel_dir).rglob("*")):
                rel = p.relative_to(self.local).as_posix()
                if p.is_file() and rel not in remote:
                    p.unlink()

    def push_missing(self, rel_dir: str, last: tuple[str, ...] = (), since: float | None = None,
                     skip: str | None = None) -> None:
        """Upload rel_dir's finished local files the store lacks (or holds at another size); `since`: only
        files modified after that time; `last` (paths relative to rel_dir) go up after all the others;
        `skip`: a subfolder of rel_dir left alone."""
        folder = self.local / rel_dir
        if not folder.is_dir():
            return
        remote = self.listing(rel_dir)
        late = {f"{rel_dir}/{name}".lstrip("/") for name in last}
        todo = []
        for p in sorted(folder.rglob("*")):
            rel = p.relative_to(self.local).as_posix()
            if not p.is_file() or _is_temp(rel) or (since is not None and p.stat().st_mtime < since):
                continue
            if skip and p.relative_to(folder).parts[0] == skip:
                continue
            if remote.get(rel) != p.stat().st_size:
                todo.append(rel)
        for rel in sorted(todo, key=lambda r: r in late):
            self.push(rel)

    def check_writable(self) -> None:
        """Fail fast, before any work: the bucket exists and this identity may write under the prefix."""
        import pyarrow.fs as pafs

        bucket = self.root.split("/", 1)[0]
        try:
            if self.fs.get_file_info(bucket).type == pafs.FileType.NotFound:
                raise UserError(f"bucket '{bucket}' does not exist ({self.uri}): create it or fix the URI")
        except OSError as exc:
            raise storage_error(self.uri, exc) from None
        probe = f"{self.root}/.longmix-write-check"
        try:
            with self.fs.open_output_stream(probe, compression=None) as out:
                out.write(b"ok\n")
            self.fs.delete_file(probe)
        except OSError as exc:
            raise storage_error(self.uri, exc, "writing to") from None
