"""Sources in other tools' formats: Hugging Face `datasets` folders (`format: hf`) and MosaicML streaming
folders (`format: mds`), written by those libraries themselves, build what the same records as JSONL build;
their bad records are quarantined with reasons and counted; their mistakes are one line, before any work."""

from __future__ import annotations

import json
import tempfile
from itertools import islice
from pathlib import Path

import datasets  # the dev extra; mosaicml-streaming comes from the Makefile (see pyproject.toml)
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tokenizers
import yaml
from conftest import write_jsonl
from helpers_cli import cli, one_line_error

from longmix.core.errors import UserError
from longmix.data.flow import build
from longmix.data.ingest.readers import Good, expand_input, read_records
from longmix.data.recipe import load_recipe


def _streaming_format():
    from longmix.core.streaming_import import import_streaming_module

    return import_streaming_module("streaming.base.format")


COLUMNS = ["id", "source", "text", "n_chars", "content_hash"]  # what ingest keeps; meta differs only by origin


@pytest.fixture(scope="module")
def records(demo_corpus) -> list[dict]:
    """100 real documents (ASCII, so decode(encode(text)) round-trips for the pre-tokenized case)."""
    out = [json.loads(x) for x in (demo_corpus / "docs" / "part-00001.jsonl").read_text().splitlines()]
    assert len(out) == 100 and all(r["text"].isascii() for r in out)
    return [{"id": r["id"], "kind": r["kind"], "text": r["text"]} for r in out]


def _recipe(root: Path, name: str, source: dict, tokenizer: Path | None, until_ingest: bool = False) -> Path:
    recipe = {"output": str(root / f"out-{name}"), "seed": 5, "executor": {"workers": 1},
              "sources": [{"name": "web", **source}] if "name" not in source else [source],
              "stages": {"near_dedup": {"enabled": False}, "pack": {"rows_per_shard": 16}}}
    if tokenizer is not None and not until_ingest:
        recipe.update({"tokenizer": {"path": str(tokenizer)}, "seq_len": 256})
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _build(root: Path, name: str, source: dict, tokenizer: Path | None = None, until: str | None = None):
    rec = load_recipe(_recipe(root, name, source, tokenizer))
    return rec, build(rec, until=until, progress=False)


def _documents(rec) -> pa.Table:
    files = sorted((rec.output_dir / "ingest" / "shards").rglob("*.parquet"))
    return pa.concat_tables([pq.read_table(p, columns=COLUMNS) for p in files])


def _packed(rec) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((rec.output_dir / "pack" / "shards").iterdir())}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, records, docs_tokenizer):
    """The JSONL source every other format is compared with, built to the manifest once."""
    root = tmp_path_factory.mktemp("jsonl")
    write_jsonl(root / "docs.jsonl", records)
    rec, reports = _build(root, "jsonl", {"paths": [str(root / "docs.jsonl")]}, docs_tokenizer)
    return rec, reports


def _write_hf(kind: str, root: Path, records: list[dict]) -> dict:
    """The source entry of an HF dataset written by the `datasets` library itself."""
    cols = {k: [r[k] for r in records] for k in records[0]}
    ds = datasets.Dataset.from_dict(cols)
    other = datasets.Dataset.from_dict({k: [f"held out {v}" for v in vs[:5]] for k, vs in cols.items()})
    if kind == "dataset":  # two Arrow files: two ingest tasks
        ds.save_to_disk(str(root / "ds"), num_shards=2)
        return {"paths": [str(root / "ds")]}  # format auto: state.json says hf
    if kind == "datasetdict":
        datasets.DatasetDict({"test": other, "train": ds}).save_to_disk(str(root / "dd"))
        return {"paths": [str(root / "dd")]}  # split: train by default
    tree = root / "hub"  # the Hub / cache layout: Parquet files named by split, beside repo files
    ds.select(range(50)).to_parquet(str(tree / "data" / "train-00000-of-00002.parquet"))
    ds.select(range(50, 100)).to_parquet(str(tree / "data" / "train-00001-of-00002.parquet"))
    other.to_parquet(str(tree / "data" / "test-00000-of-00001.parquet"))
    (tree / "README.md").write_text("---\nconfigs:\n- config_name: default\n---\n# a dataset card\n")
    (tree / ".gitattributes").write_text("*.parquet filter=lfs diff=lfs merge=lfs -text\n")
    return {"paths": [str(tree)], "format": "hf"}


def _write_mds_text(root: Path, records: list[dict]) -> dict:
    fmt = _streaming_format()
    with fmt.MDSWriter(out=str(root / "mds"), columns={"id": "str", "kind": "str", "text": "str"},
                       compression="zstd", size_limit=20_000) as writer:
        for r in records:
            writer.write(r)
    return {"paths": [str(root / "mds")]}  # format auto: index.json says mds


def _token_rows(records: list[dict], tokenizer: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """Two documents per row, as ProLong stores them: input_ids and their (start, end) spans."""
    tok = tokenizers.Tokenizer.from_file(str(tokenizer))
    ids = [tok.encode(r["text"], add_special_tokens=False).ids for r in records]
    assert [tok.decode(i, skip_special_tokens=False) for i in ids] == [r["text"] for r in records]  # round trip
    rows = []
    for a, b in zip(ids[0::2], ids[1::2], strict=True):
        rows.append((np.array(a + b, np.uint32), np.array([[0, len(a)], [len(a), len(a) + len(b)]], np.uint32)))
    return rows


def _write_mds_tokens(root: Path, rows: list[tuple[np.ndarray, np.ndarray]], tokenizer: Path) -> dict:
    fmt = _streaming_format()
    with fmt.MDSWriter(out=str(root / "tok"), columns={"input_ids": "ndarray:uint32", "indices": "ndarray:uint32"}
                       ) as writer:
        for ids, spans in rows:
            writer.write({"input_ids": ids, "indices": spans})
    return {"paths": [str(root / "tok")], "detokenizer": str(tokenizer)}


@pytest.mark.parametrize("kind", ["dataset", "datasetdict", "hub-parquet", "mds-text", "mds-tokens"])
def test_same_build_as_jsonl(tmp_path, kind, records, baseline, docs_tokenizer):
    """The strongest comparison that holds: a full build to the manifest. The ingest documents are equal row for
    row in (id, source, text, n_chars, content_hash) (their meta differs only in `origin`, the file they came
    from), and the packed shards, which hold no origin, are byte-identical to the JSONL build's. Pre-tokenized
    MDS: the same texts and bytes, ids `shard:row:span`."""
    base_rec, base_reports = baseline
    if kind.startswith("mds-tokens"):
        source = _write_mds_tokens(tmp_path, _token_rows(records, docs_tokenizer), docs_tokenizer)
    elif kind == "mds-text":
        source = _write_mds_text(tmp_path, records)
    else:
        source = _write_hf(kind, tmp_path, records)
    rec, reports = _build(tmp_path, kind, source, docs_tokenizer)
    got, want = _documents(rec), _documents(base_rec)
    if kind == "mds-tokens":
        assert got.column("id").to_pylist() == [f"shard.00000.mds:{i // 2}:{i % 2}" for i in range(100)]
        got, want = got.drop_columns(["id"]), want.drop_columns(["id"])
    assert got.equals(want)
    assert _packed(rec) == _packed(base_rec) and len(_packed(rec)) >= 2
    for stage in ("ingest", "tokenize", "pack"):
        assert reports[stage]["kept"] == base_reports[stage]["kept"], stage
    manifest, base = (json.loads((r.output_dir / "manifest.json").read_text()) for r in (rec, base_rec))
    assert manifest["totals"] == base["totals"] and manifest["packing"] == base["packing"]
    if kind.startswith("mds"):
        assert list(rec.output_dir.glob("**/*.mds")) == []  # shards were decompressed elsewhere, not copied


def test_compressed_shards_go_through_a_temp_folder_that_is_removed(tmp_path, monkeypatch, records):
    """A compressed shard is decompressed into a temporary folder, not beside the data, and the folder goes when
    the shard is read or the reading stops early (the check reads 20 records)."""
    source = _write_mds_text(tmp_path, records)
    before = sorted(p.name for p in (tmp_path / "mds").iterdir())
    assert all(n.endswith(".zstd") for n in before if n != "index.json") and len(before) >= 3
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    (path, fmt), = expand_input(Path(source["paths"][0]))
    assert fmt == "mds"
    docs = list(read_records(path, fmt, "text", "id"))
    assert [(d.id, d.text, d.meta) for d in docs] == [(r["id"], r["text"], {"kind": r["kind"]}) for r in records]
    assert all(isinstance(d, Good) and d.raw_bytes == len(d.text.encode()) for d in docs)
    assert docs[0].origin == f"{path}/shard.00000.mds.zstd:0"
    first = list(islice(read_records(path, fmt, "text", "id"), 3))
    assert len(first) == 3
    assert list(scratch.iterdir()) == [] and sorted(p.name for p in (tmp_path / "mds").iterdir()) == before


def test_nested_mds_folders(tmp_path, records):
    """Partitions written one per subfolder: without a root index.json their own index files are read in folder
    order; after streaming's merge_index, the root index.json (shards named part0/shard.00000.mds) is read."""
    from longmix.core.streaming_import import import_streaming_module

    fmt = _streaming_format()
    for part, chunk in (("part0", records[:40]), ("part1", records[40:])):
        with fmt.MDSWriter(out=str(tmp_path / part), columns={"id": "str", "text": "str"}, size_limit=10_000) as w:
            for r in chunk:
                w.write({"id": r["id"], "text": r["text"]})
    want = [(r["id"], r["text"]) for r in records]
    (path, kind), = expand_input(tmp_path, "mds")
    assert [(d.id, d.text) for d in read_records(path, kind, "text", "id")] == want
    import_streaming_module("streaming.base.util").merge_index(str(tmp_path), keep_local=True)
    index = json.loads((tmp_path / "index.json").read_text())
    assert all(s["raw_data"]["basename"].startswith(("part0/", "part1/")) for s in index["shards"])
    (path, kind), = expand_input(tmp_path)  # auto: the root index.json says mds
    docs = list(read_records(path, kind, "text", "id"))
    assert kind == "mds" and sorted((d.id, d.text) for d in docs) == sorted(want)
    assert {Path(d.origin_file).parent.name for d in docs} == {"part0", "part1"}


def test_hub_cache_reads_the_snapshot_refs_main_names(tmp_path):
    """The Hub cache keeps every downloaded revision (snapshots/<commit>/ of links into blobs/): only the one
    refs/main names is read, and of it the requested split's files."""
    cache = tmp_path / "datasets--org--name"
    (cache / "blobs").mkdir(parents=True)
    for commit, words in (("aaa", "old"), ("bbb", "new")):
        for split in ("train", "test"):
            blob = cache / "blobs" / f"{commit}-{split}"
            datasets.Dataset.from_dict({"text": [f"{words} {split} {i}" for i in range(3)]}).to_parquet(str(blob))
            link = cache / "snapshots" / commit / "data" / f"{split}-00000-of-00001.parquet"
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(Path("../../../blobs") / blob.name)
        (cache / "snapshots" / commit / "README.md").write_text("# card\n")
    (cache / "refs").mkdir()
    (cache / "refs" / "main").write_text("bbb")
    (path, fmt), = expand_input(cache, "hf", "test")
    assert [r.text for r in read_records(path, fmt, split="test")] == ["new test 0", "new test 1", "new test 2"]
    with pytest.raises(UserError, match=r"no split 'dev' among its Parquet files \(splits: test, train\)"):
        expand_input(cache, "hf", "dev")


def test_bad_records_are_quarantined_and_counted(tmp_path, docs_tokenizer):
    """A null text and undecodable bytes (save_to_disk, binary text column), a non-string text (a Hub Parquet file
    whose text column is numbers), and a span outside its row (pre-tokenized MDS): each quarantined with its
    reason and origin, every record counted: in = kept + dropped + quarantined, per source too."""
    texts = [f"record {i}: the quick brown fox jumps over the lazy dog, again and again." for i in range(6)]
    feats = datasets.Features({"id": datasets.Value("string"), "text": datasets.Value("binary")})
    datasets.Dataset.from_dict({"id": ["a", "b", "c", "d"],
                                "text": [texts[0].encode(), None, b"caf\xe9", texts[1].encode()]},
                               features=feats).save_to_disk(str(tmp_path / "disk"))
    hub = tmp_path / "hub" / "data"
    hub.mkdir(parents=True)
    pq.write_table(pa.table({"id": ["e", "f"], "text": texts[2:4]}), hub / "train-00000-of-00002.parquet")
    pq.write_table(pa.table({"id": ["g"], "text": [42]}), hub / "train-00001-of-00002.parquet")
    (tmp_path / "hub" / "README.md").write_text("# card\n")
    rows = _token_rows([{"text": t} for t in texts[4:6]], docs_tokenizer)
    ids, spans = rows[0]
    rows[0] = (ids, np.array([[0, 3], [3, len(ids) + 7]], np.uint32))  # the second span runs past the row
    tok = _write_mds_tokens(tmp_path, rows, docs_tokenizer)
    sources = [{"name": "disk", "paths": [str(tmp_path / "disk")]},
               {"name": "hub", "paths": [str(tmp_path / "hub")], "format": "hf"},
               {"name": "tok", **tok}]
    recipe = {"output": str(tmp_path / "out"), "executor": {"workers": 1}, "sources": sources}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    rec = load_recipe(tmp_path / "r.yaml")
    report = build(rec, until="ingest", progress=False)["ingest"]
    assert report["quarantined"] == {"missing_text": 1, "invalid_utf8": 1, "text_not_string": 1, "bad_span": 1}
    assert report["in"] == 4 + 3 + 2 == report["kept"] + sum(report["dropped"].values()) + \
        sum(report["quarantined"].values())
    for name, counts in report["sources"].items():
        assert counts["in"] == counts["kept"] + counts["dropped"] + counts["quarantined"], name
    assert {n: c["kept"] for n, c in report["sources"].items()} == {"disk": 2, "hub": 2, "tok": 1}
    q = pa.concat_tables([pq.read_table(p) for p in sorted((rec.output_dir / "ingest" / "quarantine").glob("*"))])
    by_reason = {r["reason"]: r for r in q.to_pylist()}
    assert by_reason["missing_text"]["origin_pos"] == 1 and by_reason["invalid_utf8"]["raw"] == b"caf\xe9"
    assert by_reason["text_not_string"]["origin_file"].endswith("train-00001-of-00002.parquet")
    assert by_reason["bad_span"]["origin_file"].endswith("shard.00000.mds")
    assert "outside the row's" in by_reason["bad_span"]["detail"]
    tok_docs = [d for d in _documents(rec).to_pylist() if d["source"] == "tok"]
    assert [(d["id"], d["text"]) for d in tok_docs] == [("shard.00000.mds:0:0", tokenizers.Tokenizer.from_file(
        str(docs_tokenizer)).decode(ids[:3].tolist(), skip_special_tokens=False))]


def _mistake(kind: str, root: Path) -> tuple[dict, str]:
    """A source with one mistake, and what the one-line error must say."""
    records = [{"id": str(i), "text": f"document {i} " * 20} for i in range(5)]
    if kind == "missing split":
        datasets.DatasetDict({"train": datasets.Dataset.from_list(records),
                              "test": datasets.Dataset.from_list(records)}).save_to_disk(str(root / "dd"))
        return {"paths": [str(root / "dd")], "split": "validation"}, "no split 'validation' (splits: train, test)"
    if kind == "path escape":
        datasets.Dataset.from_list(records).save_to_disk(str(root / "ds"))
        state = json.loads((root / "ds" / "state.json").read_text())
        (root / "ds" / "data-00000-of-00001.arrow").rename(root / "x.arrow")  # a readable file, one level up
        state["_data_files"] = [{"filename": "../x.arrow"}]
        (root / "ds" / "state.json").write_text(json.dumps(state))
        return {"paths": [str(root / "ds")]}, "names the file '../x.arrow' outside the folder"
    if kind == "mds path escape":
        fmt = _streaming_format()
        with fmt.MDSWriter(out=str(root / "mds"), columns={"text": "str"}) as writer:
            writer.write({"text": "a document"})
        index = json.loads((root / "mds" / "index.json").read_text())
        (root / "mds" / "shard.00000.mds").rename(root / "x.mds")
        index["shards"][0]["raw_data"]["basename"] = "../x.mds"
        (root / "mds" / "index.json").write_text(json.dumps(index))
        return {"paths": [str(root / "mds")]}, "names the file '../x.mds' outside the folder"
    if kind == "tokens without detokenizer":
        fmt = _streaming_format()
        with fmt.MDSWriter(out=str(root / "tok"), columns={"input_ids": "ndarray:uint32"}) as writer:
            writer.write({"input_ids": np.arange(10, dtype=np.uint32)})
        return {"paths": [str(root / "tok")], "format": "mds"}, "pre-tokenized MDS (input_ids, no 'text' column)"
    (root / "odd").mkdir()
    (root / "odd" / "README.md").write_text("# not a dataset\n")
    (root / "odd" / "notes.txt").write_text("nothing here\n")
    return {"paths": [str(root / "odd")], "format": "hf"}, "is no Hugging Face dataset folder: expected state.json"


MISTAKES = ["missing split", "path escape", "mds path escape", "tokens without detokenizer", "no known layout"]


@pytest.mark.parametrize("kind", MISTAKES)
def test_mistakes_are_one_line_before_any_work(tmp_path, kind):
    source, says = _mistake(kind, tmp_path)
    rec = load_recipe(_recipe(tmp_path, "m", source, None))
    with pytest.raises(UserError) as err:
        build(rec, progress=False)
    assert says in str(err.value) and "\n" not in str(err.value), str(err.value)
    assert not (tmp_path / "out-m" / "ingest").exists()  # found by the checks, before any stage ran


def test_a_mistake_through_the_cli_is_one_line(tmp_path):
    """`longmix check` raises the UserError that `longmix`'s main turns into one line and exit 2."""
    source, says = _mistake("missing split", tmp_path)
    one_line_error(cli("check", _recipe(tmp_path, "m", source, None)), says)
