"""Text normalization for ingest and the content hash that identifies a document."""

from __future__ import annotations

import re
import unicodedata

import xxhash

# Control characters are dropped except tab and newline; every newline flavour becomes "\n".
_NEWLINES = {"\r\n": "\n", "\r": "\n", "\u2028": "\n", "\u2029": "\n", "\x85": "\n", "\x0b": "\n", "\x0c": "\n"}
_DROP = {c: None for c in range(0x20) if c not in (0x09, 0x0A, 0x0B, 0x0C, 0x0D)}
_DROP.update({0x7F: None})
_DROP.update({c: None for c in range(0x80, 0xA0) if c != 0x85})
_NEWLINE_RE = re.compile("\r\n|[\r\u2028\u2029\x85\x0b\x0c]")


def normalize_text(text: str) -> str:
    """NFC, stray control characters and NUL removed, newlines unified to '\\n'."""
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    text = _NEWLINE_RE.sub("\n", text)
    return text.translate(_DROP)


def content_hash(text: str) -> str:
    """Stable 128-bit hash of normalized text, hex: the same on every run and machine."""
    return xxhash.xxh3_128_hexdigest(text.encode("utf-8"))
