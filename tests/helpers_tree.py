"""Compare pipeline output trees: data files byte for byte, JSON with timings left out."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def _strip_timing(obj: Any) -> Any:
    if isinstance(obj, dict):
        # timings and the node each task ran on are run metadata, not results
        return {k: _strip_timing(v) for k, v in obj.items() if "seconds" not in k and k not in ("node", "nodes")}
    if isinstance(obj, list):
        return [_strip_timing(v) for v in obj]
    return obj


def tree_digest(root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        rel = str(p.relative_to(root))
        if p.suffix == ".json":
            out[rel] = _strip_timing(json.loads(p.read_text()))
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def assert_same_tree(a: Path, b: Path) -> None:
    da, db = tree_digest(a), tree_digest(b)
    assert sorted(da) == sorted(db), set(da) ^ set(db)
    diff = [k for k in da if da[k] != db[k]]
    assert not diff, f"differing files: {diff[:10]}"
