"""`longmix sft-data` with the real SmolLM2-135M-Instruct on three short documents: the same seed gives the same
bytes, a resumed run (final files deleted, one shard redone) gives the same bytes, and the counts reconcile."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from longmix.cli.sft import sft_data

app = typer.Typer()  # the command alone, as app.py mounts it: app.command("sft-data")(sft.sft_data)
app.command()(sft_data)

TOPICS = [("Harbor Town", "lighthouse", "fishermen", "the old pier"),
          ("Maple Valley", "orchard", "farmers", "the cider mill"),
          ("Stone Ridge", "observatory", "astronomers", "the north tower")]


def document(name: str, thing: str, people: str, place: str) -> str:
    lines = [f"{name} is a small place known for its {thing}."]
    for k in range(12):
        lines.append(f"In year {1900 + 7 * k}, the {people} of {name} built a new road to {place}, "
                     f"and the {thing} was repaired for the {k + 1}th time by a team of {3 + k} workers.")
    return " ".join(lines)


def run(out: Path, docs: Path, generator: Path) -> dict:
    res = CliRunner().invoke(app, ["-i", str(docs), "--generator", str(generator), "-o", str(out), "--seed", "5",
                                   "--min-tokens", "50", "--target-tokens", "200", "--chunk-tokens", "80",
                                   "--max-new-tokens", "64", "--docs-per-shard", "1", "--heldout-fraction", "0.4",
                                   "--batch-size", "4", "--device", "cpu"])
    assert res.exit_code == 0, (res.exception, res.output)
    return json.loads((out / "report.json").read_text())


def outputs(out: Path) -> dict[str, bytes]:
    files = [out / "longqa.jsonl", out / "heldout.jsonl", *sorted((out / "shards").glob("*.jsonl"))]
    return {f.relative_to(out).as_posix(): f.read_bytes() for f in files}


def test_sft_data_deterministic_resumable_reconciled(tmp_path: Path, smollm2: Path) -> None:
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": f"doc{i}", "text": document(*t)}) + "\n"
                            for i, t in enumerate(TOPICS)))
    first = run(tmp_path / "a", docs, smollm2)
    assert first["in"] == 3 and first["in"] == first["kept"] + sum(first["dropped"].values())
    assert first["this_run"]["tokens_generated"] > 0 and first["generator"]["config_sha256"]
    assert first["kept"] >= 1  # (seed 5 keeps 2 of 3 on CPU), so the record checks below are not vacuous
    kept = [json.loads(x) for x in (tmp_path / "a" / "longqa.jsonl").read_text().splitlines()]
    kept += [json.loads(x) for x in (tmp_path / "a" / "heldout.jsonl").read_text().splitlines()]
    assert len(kept) == first["kept"]
    for r in kept:  # the chunk sits inside the cut document, and the cut document is the user message's start
        p = r["provenance"]
        user = r["messages"][0]["content"]
        assert user[:p["doc_chars"]] in document(*TOPICS[int(p["doc_id"][3:])])
        assert 0 <= p["chunk_chars"][0] < p["chunk_chars"][1] <= p["doc_chars"]
        assert p["check"]["support"] >= 0.5 and p["check"]["passed"]

    again = run(tmp_path / "b", docs, smollm2)
    assert outputs(tmp_path / "a") == outputs(tmp_path / "b")
    assert {k: again[k] for k in ("in", "kept", "dropped")} == {k: first[k] for k in ("in", "kept", "dropped")}

    before = outputs(tmp_path / "a")
    (tmp_path / "a" / "longqa.jsonl").unlink()
    for f in (tmp_path / "a" / "shards").glob("part-00001.*"):
        f.unlink()
    resumed = run(tmp_path / "a", docs, smollm2)
    assert outputs(tmp_path / "a") == before
    shard1 = json.loads((tmp_path / "b" / "shards" / "part-00001.counts.json").read_text())
    assert resumed["this_run"]["tokens_generated"] == shard1["tokens_generated"]  # only the missing shard ran

