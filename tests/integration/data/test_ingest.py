"""Ingest: every bad-record kind goes to quarantine with its origin and raw bytes; counts reconcile."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from conftest import write_jsonl, write_recipe

from longmix.data.flow import build
from longmix.data.recipe import load_recipe


def _run(tmp_path, sources, stages=None):
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "out", sources, stages or {})
    rec = load_recipe(recipe)
    return rec, build(rec, until="ingest", progress=False)["ingest"]


def _quarantine(rec, stage="ingest"):
    folder = rec.output_dir / stage / "quarantine"
    return pa.concat_tables([pq.read_table(p) for p in sorted(folder.glob("*.parquet"))]).to_pylist()


def _docs(rec, stage="ingest"):
    return pa.concat_tables([pq.read_table(p) for p in sorted((rec.output_dir / stage).rglob("shards/**/*.parquet"))])


GOOD = [{"id": f"g{i}", "text": f"good document number {i}", "lang": "en"} for i in range(3)]


def test_every_bad_jsonl_record_is_quarantined(tmp_path):
    bad_utf8 = b'{"id": "u", "text": "caf\xe9"}'
    lines = [
        GOOD[0],
        bad_utf8,
        "{not json",
        "[1, 2]",
        {"id": "m", "body": "no text field"},
        {"id": "n", "text": None},
        {"id": "i", "text": 42},
        {"id": "e", "text": " \n\x00 "},
        '{"id": "s", "text": "lone \\ud800 surrogate"}',
        {"id": "big", "text": "x" * 500},
        "",
        GOOD[1],
    ]
    write_jsonl(tmp_path / "in" / "a.jsonl", lines)
    rec, report = _run(tmp_path, [{"name": "web", "paths": ["in/*.jsonl"]}], {"ingest": {"max_doc_bytes": 300}})
    assert report["kept"] == 2
    assert report["quarantined"] == {
        "empty_text": 1, "invalid_json": 1, "invalid_unicode": 1, "invalid_utf8": 1, "missing_text": 2,
        "not_an_object": 1, "text_not_string": 1, "too_large": 1,
    }
    # The blank line is not a record; everything else is accounted for.
    assert report["in"] == 11 == report["kept"] + sum(report["quarantined"].values())
    q = {r["reason"]: r for r in _quarantine(rec)}
    assert q["invalid_utf8"]["raw"] == bad_utf8
    assert q["invalid_utf8"]["origin_pos"] == 2 and q["invalid_utf8"]["origin_file"].endswith("a.jsonl")
    assert q["invalid_json"]["raw"] == b"{not json" and q["invalid_json"]["origin_pos"] == 3
    assert q["too_large"]["origin_pos"] == 10 and len(q["too_large"]["raw"]) == 300
    docs = _docs(rec).to_pylist()
    assert [d["id"] for d in docs] == ["g0", "g1"]
    assert json.loads(docs[0]["meta"]) == {"lang": "en", "origin": str(tmp_path / "in" / "a.jsonl") + ":1"}


@pytest.mark.parametrize("codec", ["gz", "zst"])
def test_truncated_compressed_file_keeps_what_was_readable(tmp_path, codec):
    records = [{"id": f"d{i}", "text": f"document {i} " + "lorem ipsum " * 20} for i in range(2000)]
    blob = b"".join(json.dumps(r).encode() + b"\n" for r in records)
    packed = gzip.compress(blob) if codec == "gz" else zstandard.ZstdCompressor().compress(blob)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / f"a.jsonl.{codec}").write_bytes(packed[: len(packed) // 2])
    (tmp_path / "in" / f"whole.jsonl.{codec}").write_bytes(packed)
    rec, report = _run(tmp_path, [{"name": "web", "paths": [f"in/*.jsonl.{codec}"]}])
    assert report["quarantined"] == {"truncated_file": 1}
    cut_kept = report["kept"] - 2000
    assert 0 < cut_kept < 2000  # the readable part of the cut file is kept
    q = _quarantine(rec)[0]
    assert q["origin_pos"] == cut_kept + 1 and q["origin_file"].endswith(f"a.jsonl.{codec}")
    assert blob.split(b"\n")[cut_kept].startswith(q["raw"])  # the partial line's bytes are kept


def test_multi_frame_zstd_reads_every_frame(tmp_path):
    c = zstandard.ZstdCompressor()
    frames = [c.compress(json.dumps({"id": f"f{i}", "text": f"frame {i}"}).encode() + b"\n") for i in range(3)]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "m.jsonl.zst").write_bytes(b"".join(frames))
    _, report = _run(tmp_path, [{"name": "s", "paths": ["in/m.jsonl.zst"]}])
    assert report["kept"] == 3 and report["quarantined"] == {}


def test_parquet_and_text_folders(tmp_path):
    (tmp_path / "in" / "txt" / "sub").mkdir(parents=True)
    table = pa.table({"doc_id": ["p0", "p1", "p2"], "content": ["first parquet doc", None, "third doc"],
                      "score": [0.5, 0.1, 0.9]})
    pq.write_table(table, tmp_path / "in" / "a.parquet")
    (tmp_path / "in" / "bad.parquet").write_bytes(b"PAR1 this is not a parquet file")
    (tmp_path / "in" / "txt" / "one.txt").write_text("text file one")
    (tmp_path / "in" / "txt" / "sub" / "two.txt").write_bytes(b"\xff\xfe broken")
    sources = [
        {"name": "pq", "paths": ["in/*.parquet"], "text_field": "content", "id_field": "doc_id"},
        {"name": "txt", "paths": ["in/txt"], "format": "text"},
    ]
    rec, report = _run(tmp_path, sources)
    assert report["sources"]["pq"] == {"in": 4, "kept": 2, "dropped": 0, "quarantined": 2}
    assert report["sources"]["txt"] == {"in": 2, "kept": 1, "dropped": 0, "quarantined": 1}
    reasons = sorted(r["reason"] for r in _quarantine(rec))
    assert reasons == ["invalid_utf8", "missing_text", "unreadable_file"]
    docs = _docs(rec).to_pylist()
    assert {d["id"] for d in docs} == {"p0", "p2", "one.txt"}
    assert json.loads(next(d for d in docs if d["id"] == "p2")["meta"])["score"] == 0.9


def test_single_text_files_and_globs_of_them(tmp_path):
    """A text file named on its own (or by a glob) is one document, not silently nothing."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("first text file")
    (tmp_path / "in" / "b.md").write_text("second text file")
    rec, report = _run(tmp_path, [{"name": "t", "paths": ["in/a.txt", "in/*.md"]}])
    assert report["sources"]["t"] == {"in": 2, "kept": 2, "dropped": 0, "quarantined": 0}
    assert sorted(d["text"] for d in _docs(rec).to_pylist()) == ["first text file", "second text file"]


def test_json_values_read_as_the_standard_library_reads_them(tmp_path):
    # orjson reads the lines first; what it would read differently (an integer beyond 64 bits becomes a
    # float there, NaN is refused) comes out exactly as json.loads gives it.
    big = 123456789012345678901234567890
    lines = ['{"id": %d, "text": "big id", "n": [1, {"deep": %d}]}' % (big, -big),  # noqa: UP031
             '{"id": 7, "text": "nan", "x": NaN}', '{"id": "u", "text": "caf\\u00e9 \\u2603", "score": 0.5}']
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text("\n".join(lines) + "\n")
    rec, report = _run(tmp_path, [{"name": "s", "paths": ["in/a.jsonl"]}])
    assert report["kept"] == 3
    docs = _docs(rec).to_pylist()
    assert [d["id"] for d in docs] == [str(big), "7", "u"]
    assert json.loads(docs[0]["meta"])["n"] == [1, {"deep": -big}]
    assert docs[1]["meta"].startswith('{"origin"') and "NaN" in docs[1]["meta"]
    assert docs[2]["text"] == "café ☃" and json.loads(docs[2]["meta"])["score"] == 0.5


def test_ids_fall_back_to_content_hash(tmp_path):
    write_jsonl(tmp_path / "in" / "a.jsonl", [{"text": "no id here"}])
    rec, _ = _run(tmp_path, [{"name": "s", "paths": ["in/a.jsonl"]}])
    doc = _docs(rec).to_pylist()[0]
    assert doc["id"] == doc["content_hash"] and len(doc["id"]) == 32


def test_shards_roll_at_size(tmp_path):
    write_jsonl(tmp_path / "in" / "a.jsonl", [{"id": str(i), "text": "word " * 100} for i in range(50)])
    rec, report = _run(tmp_path, [{"name": "s", "paths": ["in/a.jsonl"]}], {"ingest": {"shard_bytes": 2000}})
    assert len(report["outputs"]) == 13  # 4 docs of 500 bytes per part
    assert sum(o["rows"] for o in report["outputs"]) == 50


_PEAK_RSS = """
import sys
from pathlib import Path
from longmix.data.flow import build
from longmix.data.recipe import load_recipe
report = build(load_recipe(sys.argv[1]), until="ingest", progress=False)["ingest"]
# VmHWM: this process's own peak (ru_maxrss would carry over the forking test process's)
peak = next(int(x.split()[1]) for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM"))
print(json.dumps({"kept": report["kept"], "quarantined": report["quarantined"], "peak_mib": peak // 1024}))
"""


@pytest.mark.parametrize("suffix", [".gz", ".zst"])
def test_an_oversized_line_is_read_in_bounded_memory(tmp_path, suffix):
    """A 1 MB compressed file holding one 1 GiB line: the recipe check and the ingest worker read it a bounded
    piece at a time, so memory follows max_doc_bytes (32 MiB) and not the line. Before, the whole line was
    held first (2.2 GB peak); now the peak of the build process and its workers stays under 640 MiB, far
    below the line itself, which must therefore never have been held whole. One worker: check and ingest run in the
    process whose peak is read."""
    import subprocess
    import sys
    import zlib

    path = tmp_path / "in" / f"big.jsonl{suffix}"
    path.parent.mkdir()
    comp = zlib.compressobj(9, zlib.DEFLATED, 31) if suffix == ".gz" else zstandard.ZstdCompressor().compressobj()
    block = b"a" * (1 << 20)
    with open(path, "wb") as f:
        f.write(comp.compress(b'{"id": "huge", "text": "'))
        for _ in range(1024):
            f.write(comp.compress(block))
        f.write(comp.compress(b'"}\n{"id": "ok", "text": "a fine document"}\n'))
        f.write(comp.flush())
    assert path.stat().st_size < 2 << 20
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "out", [{"name": "web", "paths": [str(path)]}],
                          {"ingest": {"max_doc_bytes": 32 << 20}})
    proc = subprocess.run([sys.executable, "-c", "import json" + _PEAK_RSS, str(recipe)], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["kept"] == 1 and result["quarantined"] == {"too_large": 1}
    assert result["peak_mib"] < 640, result
