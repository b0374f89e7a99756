"""Compare two `longmix build` output folders: every data file byte for byte, every report and the manifest
as JSON with timings, timestamps, versions and the output folder's own path left out.

    python tests/tools/compare_builds.py OUT_A OUT_B     # exit 0: identical, 1: differences listed

Used to show that a refactor changed no output (`make demo` before vs after).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

_VOLATILE = {"created", "versions", "seconds", "global_seconds", "step_seconds", "task_seconds",
             "filter_seconds", "edge_seconds", "verify_seconds", "cluster_seconds"}


def _scrub(value: Any, root: str) -> Any:
    if isinstance(value, dict):
        return {k: _scrub(v, root) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, list):
        return [_scrub(v, root) for v in value]
    if isinstance(value, str):
        return value.replace(root, "<out>")
    return value


def differences(a: Path, b: Path) -> list[str]:
    # Completion markers hold per-task timings and are bookkeeping, not outputs.
    files_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file() and "_tasks" not in p.relative_to(a).parts}
    files_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file() and "_tasks" not in p.relative_to(b).parts}
    out = [f"only in {a}: {p}" for p in sorted(files_a - files_b)]
    out += [f"only in {b}: {p}" for p in sorted(files_b - files_a)]
    for rel in sorted(files_a & files_b):
        pa_, pb = a / rel, b / rel
        if rel.suffix == ".json":
            ja = _scrub(json.loads(pa_.read_text()), str(a))
            jb = _scrub(json.loads(pb.read_text()), str(b))
            if rel.name == "manifest.json":
                for j in (ja, jb):  # the output folder is part of the recipe, and so of its hash
                    j["lineage"]["recipe"].pop("output", None)
                    j["lineage"].pop("recipe_sha256", None)
            if ja != jb:
                out.append(f"differs (JSON): {rel}")
        elif pa_.read_bytes() != pb.read_bytes():
            out.append(f"differs (bytes): {rel}")
    return out


def main() -> int:
    a, b = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    diffs = differences(a, b)
    n = sum(1 for p in a.rglob("*") if p.is_file())
    for line in diffs:
        print(line)
    print(f"{n} files compared: {'identical' if not diffs else f'{len(diffs)} differences'}")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
