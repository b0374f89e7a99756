"""The real-model positional-encoding suite (pipelines/ablations/positional-encoding-real.yaml) on SmolLM2-135M:
its arms differ from the shipped checkpoint only in the RoPE keys, its planted dependencies sit at the stated
distances in SmolLM2's own tokens, and its `--quick` form runs end to end (every arm, report, verdicts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from helpers_cli import cli

from longmix.ablate.load_time import write_load_time_checkpoint
from longmix.ablate.suite import load_suite
from longmix.data.synthetic_longdep import write_longdep_corpus
from longmix.formats.tokenizer_files import load_tokenizer

REPO = Path(__file__).resolve().parents[3]
SUITE = REPO / "pipelines" / "ablations" / "positional-encoding-real.yaml"
DISTANCES = (1024, 2048, 4096, 8192, 10240, 12032)  # as `make pe-real-data` writes them


@pytest.fixture(scope="module")
def longdep(smollm2: Path, demo_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Planted dependencies at 1K-12K SmolLM2 tokens, written as `make pe-real-data` does (fewer documents)."""
    out = tmp_path_factory.mktemp("pe-real") / "longdep"
    write_longdep_corpus(out, smollm2 / "tokenizer.json", [demo_corpus / "docs"],
                         [demo_corpus / "tests" / "part-00010.jsonl"], docs=1, heldout_docs=2, slot=256,
                         n_slots=48, distances=DISTANCES, files=1)
    write_longdep_corpus(out.parent / "longdep-quick", smollm2 / "tokenizer.json", [demo_corpus / "docs"],
                         [demo_corpus / "tests" / "part-00010.jsonl"], docs=1, heldout_docs=1, slot=32, n_slots=48,
                         distances=(256, 512, 1024, 1472), files=1)
    return out


def test_planted_dependencies_sit_at_their_distances_in_smollm2_tokens(smollm2: Path, longdep: Path) -> None:
    tok = load_tokenizer(smollm2 / "tokenizer.json")
    records = [json.loads(x) for x in (longdep / "heldout.jsonl").read_text().splitlines()]
    assert len(records) == 2
    for rec in records:
        enc = tok.encode(rec["text"], add_special_tokens=False)
        assert len(enc.ids) == rec["n_tokens"] <= 48 * 256
        assert sorted(d["planned"] for d in rec["deps"]) == list(DISTANCES)
        for d in rec["deps"]:
            first = next(i for i, (_, b) in enumerate(enc.offsets) if b > d["src"][0])
            line = rec["text"].rfind("\n", 0, d["target"][0]) + 1
            second = next(i for i, (_, b) in enumerate(enc.offsets) if b > line)
            assert second - first == d["distance"] == d["planned"]  # measured in SmolLM2's tokens
            target = rec["text"][d["target"][0]:d["target"][1]]
            assert target in rec["text"][d["src"][0]:d["src"][1]]


def _config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def test_arms_differ_only_in_their_rope_keys(smollm2: Path, tmp_path: Path) -> None:
    suite = load_suite(SUITE)
    assert all(a.load_time for a in suite.arms) and len(suite.arms) == 8
    base = _config(smollm2)
    seen = []
    for arm in suite.arms:
        out = write_load_time_checkpoint(smollm2, tmp_path / arm.name, arm.rope, arm.max_position_embeddings)
        got = _config(out)
        changed = {k for k in set(got) | set(base) if got.get(k) != base.get(k)} - {"transformers_version"}
        assert changed <= {"rope_parameters", "max_position_embeddings"}, arm.name
        assert (out / "model.safetensors").stat().st_ino == (smollm2 / "model.safetensors").stat().st_ino
        seen.append((got["rope_parameters"]["rope_type"], got["rope_parameters"]["rope_theta"],
                     got["rope_parameters"].get("factor"), got["max_position_embeddings"]))
    theta = base["rope_parameters"]["rope_theta"]
    assert theta == 100000.0
    assert seen == [("default", theta, None, 8192), ("linear", theta, 2.0, 16384), ("linear", theta, 4.0, 32768),
                    ("default", 400000.0, None, 8192), ("default", 1000000.0, None, 8192),
                    ("yarn", theta, 2.0, 16384), ("yarn", theta, 4.0, 32768),
                    ("dynamic", theta, 2.0, 8192)]  # dynamic NTK rescales past the limit it keeps


def test_quick_suite_end_to_end(smollm2: Path, demo_corpus: Path, longdep: Path, tmp_path: Path) -> None:
    """`longmix ablate positional-encoding-real.yaml --quick` with the suite's data paths pointed at the test
    session's model and corpus: every arm evaluated, nothing trained, the report says so."""
    suite = yaml.safe_load(SUITE.read_text())
    suite["base"]["model"] = str(smollm2)
    suite["output"] = str(tmp_path / "out")
    suite["eval"]["data"] = [str(demo_corpus / "tests")]
    suite["eval"]["dependency"]["data"] = [str(longdep / "heldout.jsonl")]
    suite["eval"]["ruler"]["haystack"] = [str(demo_corpus / "docs")]
    suite["quick"]["dependency_data"] = [str(longdep.parent / "longdep-quick" / "heldout.jsonl")]
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # as a user runs it (the test session's default is 1): about 2.5 minutes
    try:
        run = cli("ablate", str(path), "--quick")
    finally:
        torch.set_num_threads(threads)
    assert run.returncode == 0, run.stderr
    report = tmp_path / "out-quick" / "report"
    results = json.loads((report / "results.json").read_text())
    assert sorted(r["arm"] for r in results["arms"]) == sorted(a["name"] for a in suite["arms"])
    assert all(r["training"] is None and r["eval"]["ruler"]["lengths"] == [1024] for r in results["arms"])
    # the arms really differ (other RoPE parameters, other losses), except dynamic NTK, which transformers
    # rescales only past the position limit it keeps (8,192): at --quick's 1,536 tokens it is plain RoPE
    losses = {r["arm"]: r["eval"]["mean_loss"] for r in results["arms"]}
    assert losses.pop("ntk-dynamic") == losses["rope"]
    assert len(set(losses.values())) == len(losses)
    # RoPE unchanged at draw 0 is the base itself, measured once
    assert results["arms"][0]["eval"] == {**results["base"]["eval"], "name": "rope-s0"}
    md = (report / "report.md").read_text()
    assert "No training happened for" in md and "## Verdicts" in md and "## RULER tasks" in md
    assert "these verdicts judge RoPE changes applied at load time" in md  # said in the verdict table too
    assert "## Loss on long-range dependencies, by distance" in md
    assert all((report / f"ruler_{i}.png").is_file() for i in range(len(suite["arms"]) + 1))  # base + each arm
    assert (report / "ruler_arms.png").is_file()  # arms x lengths, one picture
    assert (report / "loss_by_position.png").is_file() and "loss_by_position.png" in md  # one line per arm


def test_continued_arms_differ_only_in_rope_and_quick_shrinks_the_length() -> None:
    """The paper's form (positional-encoding-real-continued.yaml): the same arms, trained; each arm's training
    recipe differs from unchanged RoPE's only in model.rope, and --quick trains every arm at 512 tokens."""
    from longmix.ablate.runner import dotted_diff
    from longmix.ablate.suite import arm_seq_lens, arm_train_dict

    path = SUITE.parent / "positional-encoding-real-continued.yaml"
    suite = load_suite(path)
    assert [a.name for a in suite.arms] == [a.name for a in load_suite(SUITE).arms]
    trains = {a.name: arm_train_dict(suite, a, 0, Path("/base"), [Path("/m/manifest.json")], Path("/o"))
              for a in suite.arms}
    ref = {k: v for k, v in trains["rope"].items() if k != "name"}
    for name, t in trains.items():
        assert dotted_diff(ref, {k: v for k, v in t.items() if k != "name"}) == ([] if name == "rope" else
                                                                               ["model.rope"]), name
        assert t["data"]["phases"][0]["tokens"] == suite.train_tokens
    assert all(arm_seq_lens(suite, a) == [16384] for a in suite.arms)
    quick = load_suite(path, quick=True)
    assert all(arm_seq_lens(quick, a) == [512] for a in quick.arms)
    assert quick.eval.dependency.data == suite.quick.dependency_data  # planted within --quick's 1,536 tokens


def test_base_manifest_mistakes_are_one_line(tmp_path: Path) -> None:
    """base.manifest (the GPU call's carried mix): one data source only, a built mix, phases at its length."""
    from longmix.ablate.suite import arm_seq_lens
    from longmix.core.errors import UserError
    from longmix.core.recipe_io import load_with_extends

    suite = load_with_extends(SUITE.parent / "positional-encoding-real-continued.yaml")
    suite["base"]["manifest"] = str(tmp_path / "mix" / "manifest.json")
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    with pytest.raises(UserError, match="set one of base.data"):
        load_suite(path)
    suite["base"].pop("data")
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    loaded = load_suite(path)
    with pytest.raises(UserError, match="is not a built mix's manifest.json"):
        arm_seq_lens(loaded, loaded.arms[0])
    (tmp_path / "mix").mkdir()
    (tmp_path / "mix" / "manifest.json").write_text(json.dumps({"seq_len": 16384}))
    assert arm_seq_lens(loaded, loaded.arms[0]) == [16384]
    quick = load_suite(path, quick=True)  # --quick trains at 512: the built mix cannot serve that
    with pytest.raises(UserError, match="packed at 16384 tokens; a phase at 512"):
        arm_seq_lens(quick, quick.arms[0])
