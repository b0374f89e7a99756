"""Text normalization for ingest and the content hash that identifies a document."""

from __future__ import annotations

import re
import unicodedata

import xxhash

# Work on UTF-8 bytes: bytes.translate and literal-prefixed byte patterns run at memory speed, while
# character-class regexes over str cost ~20 ns per character.
# ASCII: \x0b and \x0c become "\n"; other C0 controls (tab and newline kept) and DEL are dropped.
_ASCII_TABLE = bytes(range(256)).replace(b"\x0b", b"\n").replace(b"\x0c", b"\n")
_ASCII_DROP = bytes(c for c in range(0x20) if c not in (0x09, 0x0A, 0x0B, 0x0C, 0x0D)) + b"\x7f"
# Non-ASCII: U+2028/U+2029 and NEL (U+0085) become "\n"; the other C1 controls (U+0080..U+009F) go.
_UNICODE_LINE = re.compile(rb"\xe2\x80[\xa8\xa9]")
_C1 = re.compile(rb"\xc2[\x80-\x9f]")


def _c1(match: re.Match[bytes]) -> bytes:
    return b"\n" if match.group() == b"\xc2\x85" else b""


def normalize_text(text: str) -> str:
    """NFC, stray control characters and NUL removed, newlines unified to '\\n'."""
    ascii_only = text.isascii()
    if not ascii_only:
        text = unicodedata.normalize("NFC", text)
    raw = text.encode("utf-8", "surrogatepass")  # lone surrogates survive here; ingest quarantines them
    out = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n") if b"\r" in raw else raw
    out = out.translate(_ASCII_TABLE, _ASCII_DROP)
    if not ascii_only:
        out = _C1.sub(_c1, _UNICODE_LINE.sub(b"\n", out))
    return text if out == raw else out.decode("utf-8", "surrogatepass")


def content_hash(text: str | bytes) -> str:
    """Stable 128-bit hash of normalized text (or its UTF-8 bytes), hex: the same on every run and machine."""
    return xxhash.xxh3_128_hexdigest(text.encode("utf-8") if isinstance(text, str) else text)
