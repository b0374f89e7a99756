"""The built-in demo corpus: text that ships with Python itself, so it needs no download.

- `code`: the standard library's .py sources (test suites left out);
- `docs`: `pydoc_data` help topics and the stdlib's module docstrings;
- `legal`: the license texts of Python and of the wheels bundled with `ensurepip`.
Deterministic for a given Python version, which the corpus records in `corpus.json`.
"""

from __future__ import annotations

import ast
import json
import platform
import sysconfig
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from longmix.atomic import atomic_path, write_json

_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
_LICENSE_NAMES = ("LICENSE", "COPYING", "NOTICE", "AUTHORS")


def _stdlib() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _stdlib_sources() -> list[Path]:
    root = _stdlib()
    return sorted(p for p in root.rglob("*.py")
                  if not _SKIP_DIRS.intersection(p.relative_to(root).parts[:-1]))


def code_docs() -> Iterator[dict[str, Any]]:
    root = _stdlib()
    for path in _stdlib_sources():
        text = path.read_text(encoding="utf-8", errors="replace")
        if text.strip():
            rel = str(path.relative_to(root))
            yield {"id": f"stdlib/{rel}", "text": text, "path": rel}


def docs_docs() -> Iterator[dict[str, Any]]:
    from pydoc_data.topics import topics

    for name in sorted(topics):
        yield {"id": f"topic/{name}", "text": topics[name], "kind": "pydoc-topic"}
    root = _stdlib()
    for path in _stdlib_sources():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except (SyntaxError, ValueError):
            continue
        doc = ast.get_docstring(tree)
        if doc and len(doc) >= 200:
            rel = str(path.relative_to(root))
            yield {"id": f"docstring/{rel}", "text": doc, "kind": "module-docstring", "path": rel}


def legal_docs() -> Iterator[dict[str, Any]]:
    root = _stdlib()
    lic = root / "LICENSE.txt"
    if lic.is_file():
        yield {"id": "python/LICENSE.txt", "text": lic.read_text(encoding="utf-8", errors="replace")}
    for wheel in sorted((root / "ensurepip" / "_bundled").glob("*.whl")):
        with zipfile.ZipFile(wheel) as zf:
            for name in sorted(zf.namelist()):
                base = name.rsplit("/", 1)[-1]
                if base.upper().startswith(_LICENSE_NAMES) and not name.endswith("/"):
                    text = zf.read(name).decode("utf-8", errors="replace")
                    if text.strip():
                        yield {"id": f"{wheel.name}/{name}", "text": text, "path": name}


SOURCES = {"code": code_docs, "docs": docs_docs, "legal": legal_docs}


def write_demo_corpus(out: Path, docs_per_file: int = 100) -> dict[str, Any]:
    """Write <out>/<source>/part-NNNNN.jsonl and corpus.json; returns the summary."""
    summary: dict[str, Any] = {"python": platform.python_version(), "sources": {}}
    for source, gen in SOURCES.items():
        docs = list(gen())
        files = []
        for k in range(0, max(len(docs), 1), docs_per_file):
            path = out / source / f"part-{k // docs_per_file:05d}.jsonl"
            with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
                for d in docs[k: k + docs_per_file]:
                    fh.write(json.dumps(d, ensure_ascii=False, sort_keys=True) + "\n")
            files.append(str(path.relative_to(out)))
        summary["sources"][source] = {"docs": len(docs), "chars": sum(len(d["text"]) for d in docs),
                                      "files": files}
    write_json(out / "corpus.json", summary)
    return summary
