"""The built-in demo corpus: text that ships with Python itself, so it needs no download.

- `code`: the standard library's .py sources (test suites left out);
- `docs`: `pydoc_data` help topics and the stdlib's module, class and function docstrings (mostly
  short prose);
- `legal`: the license texts of Python and of the wheels bundled with `ensurepip`;
- `tests`: the standard library's own test suites: long documents, the "long-rich" extra source of
  the data-mix ablation (recipes that don't list it ignore it).
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

from longmix.core.atomic import atomic_path, write_json

_LICENSE_NAMES = ("LICENSE", "COPYING", "NOTICE", "AUTHORS")


def _stdlib() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _stdlib_sources(tests: bool = False) -> list[Path]:
    """Library sources, or (tests=True) only the files of its test suites."""
    root = _stdlib()
    out = []
    for p in root.rglob("*.py"):
        parts = set(p.relative_to(root).parts[:-1])
        if parts & {"site-packages", "dist-packages", "__pycache__"}:
            continue
        in_tests = bool(parts & {"test", "tests", "idle_test"})
        if in_tests == tests:
            out.append(p)
    return sorted(out)


def code_docs(tests: bool = False) -> Iterator[dict[str, Any]]:
    root = _stdlib()
    for path in _stdlib_sources(tests):
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
        rel = str(path.relative_to(root))
        doc = ast.get_docstring(tree)
        if doc and len(doc) >= 200:
            yield {"id": f"docstring/{rel}", "text": doc, "kind": "module-docstring", "path": rel}
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= 200:
                    yield {"id": f"docstring/{rel}:{node.lineno}:{node.name}", "text": doc,
                           "kind": "docstring", "path": rel}


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


def test_suite_docs() -> Iterator[dict[str, Any]]:
    yield from code_docs(tests=True)


SOURCES = {"code": code_docs, "docs": docs_docs, "legal": legal_docs, "tests": test_suite_docs}


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
