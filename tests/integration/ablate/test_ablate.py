"""`longmix ablate`: a quick data-mix suite runs end to end on a tiny corpus built here (base model
pretrained once inside the suite), writes every report artifact, skips cached arms on a rerun, and its arms
differ only in what they override; the shipped suites validate and build the arms they describe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from longmix.ablate.runner import AblationRunner, dotted_diff
from longmix.ablate.suite import arm_data_dict, arm_seq_lens, arm_train_dict, load_suite
from longmix.data.synthetic_longdep import write_longdep_corpus
from longmix.data.tokenize.encode import train_bpe
from tests.helpers_train import REPO, TINY_LLAMA

SUITES = REPO / "pipelines" / "ablations"


@pytest.fixture(scope="module")
def tiny_suite(tmp_path_factory: pytest.TempPathFactory, demo_corpus: Path) -> Path:
    """The data-mix suite's shape on a slice of the demo corpus: seq_len 512, a from-scratch base at 128."""
    tmp = tmp_path_factory.mktemp("ablate")
    texts = [json.loads(x)["text"] for x in (demo_corpus / "docs" / "part-00000.jsonl").read_text().splitlines()]
    train_bpe(texts, 512, tmp / "tokenizer.json")
    code, docs, tests = (str(demo_corpus / s / "part-00000.jsonl") for s in ("code", "docs", "tests"))
    base = {"name": "tiny-base", "output": "unused", "seed": 5, "executor": {"workers": 1},
            "sources": [{"name": "code", "paths": [code]}, {"name": "docs", "paths": [docs]}],
            "tokenizer": {"path": str(tmp / "tokenizer.json")}, "seq_len": 512,
            "stages": {"near_dedup": {"enabled": False},
                       "mix": {"total_tokens": 40_000, "long_min_tokens": 256, "max_epochs": 8,
                               "sources": {"code": {"share": 0.4}, "docs": {"share": 0.6}}},
                       "pack": {"rows_per_shard": 64}}}
    (tmp / "base.yaml").write_text(yaml.safe_dump(base))
    write_longdep_corpus(tmp / "longdep", tmp / "tokenizer.json", [Path(code)], [Path(docs)], docs=1, heldout_docs=2,
                         slot=16, n_slots=16, distances=(16, 64, 160), files=1)
    train = {"data": {"holdout_sequences": 2}, "batch": {"tokens_per_step": 1024, "micro_batch_tokens": 512},
             "optim": {"lr": 3e-3}, "schedule": {"warmup_steps": 1},
             "deepspeed": str(REPO / "train" / "ds_zero3.json"), "checkpoint": {"every_steps": 100}}
    suite = {
        "name": "tiny-mix", "output": str(tmp / "out"), "seeds": [1], "train_tokens": 4096,
        "base": {"data": "base.yaml",
                 "pretrain": {"seq_len": 128, "tokens": 2048, "train": {
                     **train, "model": {"config": {**TINY_LLAMA, "max_position_embeddings": 128},
                                        "attn_implementation": "sdpa"}}},
                 "train": {**train, "model": {"rope": {"kind": "abf", "theta": 100000},
                                              "max_position_embeddings": 512}}},
        "eval": {"data": [tests], "max_len": 256, "max_docs": 2, "table_contexts": [32, 128, 256],
                 "ruler": {"tasks": ["niah_single_2", "fwe"], "lengths": [512]},
                 "probes": {"tasks": ["passkey"], "lengths": [256]}, "context_gain": {"window": 64},
                 "dependency": {"data": [str(tmp / "longdep" / "heldout.jsonl")]}},
        "reference": "natural",
        "findings": [{"finding": "upsampling lowers long loss", "paper": "22.15 vs 18.23", "metric": "loss@128-256",
                      "arm": "upsample-long", "versus": "natural", "expect": "lower"},
                     {"finding": "copies are cheaper than their sources", "paper": "-",
                      "metric": "dep_source@0-256 - dep@0-256", "arm": "natural", "expect": "higher"}],
        "quick": {"train_tokens": 2048, "max_len": 256, "max_docs": 2, "table_contexts": [32, 128, 256],
                  "task_lengths": [512], "task_samples": 1},  # RULER keeps 128 tokens for the answer
        "arms": [
            {"name": "natural"},
            {"name": "remove-long", "data": {"stages": {"mix": {"sources": {
                "code": {"share": 0.4, "remove_buckets": ["<512", ">=512"]},
                "docs": {"share": 0.6, "remove_buckets": ["<512", ">=512"]}}}}}},
            {"name": "upsample-long", "data": {"stages": {"mix": {"sources": {"docs": {"share": 0.6,
                                                                                        "long_share": 0.5}}}}}},
            {"name": "long-rich", "data": {
                "sources": [*base["sources"], {"name": "tests", "paths": [str(demo_corpus / "tests" /
                                                                              "part-00001.jsonl")]}],
                "stages": {"mix": {"sources": {"code": {"share": 0.3}, "docs": {"share": 0.4},
                                               "tests": {"share": 0.3}}}}}},
        ],
    }
    (tmp / "tasks").mkdir()  # an lm-eval task over local data: short-task retention, offline
    (tmp / "ab.jsonl").write_text("".join(json.dumps({"question": f"Is {i} even?", "answer": i % 2}) + "\n"
                                          for i in range(4)))
    (tmp / "tasks" / "ab.yaml").write_text(
        "task: tiny_ab\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: " + str(tmp / "ab.jsonl") +
        "\ntest_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{question}}'\n"
        "doc_to_choice: ['yes', 'no']\ndoc_to_target: '{{answer}}'\nmetric_list:\n  - metric: acc\n")
    suite["eval"]["harness"] = {"tasks": ["tiny_ab"], "include_path": ["tasks"]}
    path = tmp / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


@pytest.mark.slow
def test_quick_suite_reports_caches_and_arms_differ_only_in_overrides(tiny_suite: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the harness task's data is local
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    suite = load_suite(tiny_suite, quick=True)
    summary = AblationRunner(suite).run()
    out = Path(summary["output"])
    report = out / "report"
    for name in ("report.md", "results.json", "context_loss.png", "training_curves.png"):
        assert (report / name).is_file() and (report / name).stat().st_size > 0, name
    md = (report / "report.md").read_text()
    assert "| natural |" in md and "| long-rich |" in md and "base (no continued training)" in md
    arms = {r["arm"]: r for r in summary["arms"]}
    assert set(arms) == {"natural", "remove-long", "upsample-long", "long-rich"}
    for r in arms.values():
        assert not r["cached"]
        assert r["training"]["steps"] == 2 and r["training"]["flops_per_rank"] > 0
        assert r["eval"]["n_docs"] == 2 and all(v is not None for v in r["eval"]["context_ranges"].values())
        # the task evaluations named in the suite, shrunk by --quick to one length and one sample
        assert r["eval"]["ruler"]["tasks"] == ["niah_single_2", "fwe"] and r["eval"]["ruler"]["lengths"] == [512]
        assert r["eval"]["probes"]["passkey"]["lengths"] == [512]
        assert r["eval"]["context_gain"]["window"] == 64 and r["eval"]["context_gain"]["n_docs"] == 2
        assert r["eval"]["harness"]["tasks"]["tiny_ab"]["n"] == 4  # lm-eval's numbers beside longmix's
    for section in ("## RULER tasks", "## Retrieval probes", "## Context gain", "effective length",
                    "## Standard tasks (lm-evaluation-harness)"):
        assert section in md, section
    assert (report / "ruler_0.png").is_file()
    # dependency loss by distance, and the verdicts computed from the runs (one seed: the sign only)
    dep = arms["natural"]["eval"]["dependency"]
    assert [r["distance"] for r in dep["by_distance"]] == [16, 64, 160] and dep["n_docs"] == 2
    assert "## Loss on long-range dependencies" in md and (report / "dependency_loss.png").is_file()
    assert "## Verdicts" in md and "## Paired differences against natural" in md
    results = json.loads((report / "results.json").read_text())
    assert [v["finding"] for v in results["verdicts"]] == ["upsampling lowers long loss",
                                                           "copies are cheaper than their sources"]
    assert all(v["verdict"] in ("reproduced", "not shown", "contradicted") and "no interval" in v["why"]
               for v in results["verdicts"])
    # Lineage: what each manifest says it was built from differs from the base only where the arm says.
    diffs = {a: {k for lin in r["lineage"] for k in lin["differs_from_base"]} for a, r in arms.items()}
    assert diffs["natural"] == set()
    assert diffs["remove-long"] == {"stages.mix.sources.code.remove_buckets", "stages.mix.sources.docs.remove_buckets"}
    assert diffs["upsample-long"] == {"stages.mix.sources.docs.long_share"}
    assert diffs["long-rich"] == {"sources", "stages.mix.sources.code.share", "stages.mix.sources.docs.share",
                                  "stages.mix.sources.tests"}
    # Shared stages: the three same-source arms link one upstream (ingest...tokenize ran once for them).
    ups = {a: Path(r["lineage"][0]["manifest"]).parent.joinpath("tokenize").resolve() for a, r in arms.items()}
    assert ups["natural"] == ups["remove-long"] == ups["upsample-long"] != ups["long-rich"]
    # Cache: a rerun trains nothing and returns the same numbers.
    monkeypatch.setattr(AblationRunner, "_launch", lambda self, jobs: pytest.fail(f"retrained {jobs}"))
    again = AblationRunner(load_suite(tiny_suite, quick=True)).run()
    assert all(r["cached"] for r in again["arms"])
    assert [r["eval"]["mean_loss"] for r in again["arms"]] == [r["eval"]["mean_loss"] for r in summary["arms"]]


def test_dotted_diff() -> None:
    a = {"x": 1, "s": {"m": {"a": 1, "b": [1]}}, "l": [1, 2]}
    b = {"x": 1, "s": {"m": {"a": 2, "b": [1]}}, "l": [1, 3], "n": None}
    assert dotted_diff(a, b) == ["l", "s.m.a"]


def _arm_trains(path: Path) -> dict[str, dict]:
    suite = load_suite(path)
    out = {}
    for arm in suite.arms:
        lens = arm_seq_lens(suite, arm)
        manifests = [Path(f"/m/{sl}/manifest.json") for sl in lens]
        out[arm.name] = arm_train_dict(suite, arm, suite.seeds[0], Path("/base"), manifests, Path("/o"))
        arm_data_dict(suite, arm, lens[-1])
    return out


def _strip(train: dict) -> dict:
    return {k: v for k, v in train.items() if k != "name"}


def test_shipped_suites_validate_in_both_modes() -> None:
    for name in ("data-mix", "positional-encoding", "curriculum", "power-law"):
        full, quick = load_suite(SUITES / f"{name}.yaml"), load_suite(SUITES / f"{name}.yaml", quick=True)
        assert quick.train_tokens < full.train_tokens and len(quick.seeds) == 1
        assert quick.output.endswith("-quick")


def test_positional_encoding_arms_differ_only_in_rope() -> None:
    suite = load_suite(SUITES / "positional-encoding.yaml")
    trains = _arm_trains(SUITES / "positional-encoding.yaml")
    ref = _strip(trains["rope"])
    diffs = {name: dotted_diff(ref, _strip(t)) for name, t in trains.items()}
    # the extrapolation arms also train at 1,024 (their phase's manifest), nothing else
    assert diffs == {"rope": [], "pi": ["model.rope"], "abf": ["model.rope"], "yarn": ["model.rope"],
                     "rope-1024": ["data.phases"], "abf-1024": ["data.phases", "model.rope"]}
    kinds = {n: t["model"].get("rope", {}).get("kind", "keep") for n, t in trains.items()}
    assert kinds == {"rope": "keep", "pi": "linear", "abf": "abf", "yarn": "yarn", "rope-1024": "keep",
                     "abf-1024": "abf"}
    assert {n: arm_seq_lens(suite, a) for n, a in zip(trains, suite.arms, strict=True)} == {
        "rope": [2048], "pi": [2048], "abf": [2048], "yarn": [2048], "rope-1024": [1024], "abf-1024": [1024]}
    assert trains["abf"]["model"]["rope"]["theta"] == 50 * 500  # the base's RoPE base x50
    assert len(suite.seeds) >= 3


def test_data_mix_arms_differ_only_in_mix_and_filter() -> None:
    suite = load_suite(SUITES / "data-mix.yaml")
    base = arm_data_dict(suite, suite.arms[0], 2048)
    diffs = {a.name: set(dotted_diff(base, arm_data_dict(suite, a, 2048))) - {"name"} for a in suite.arms}
    assert diffs["natural"] == set()
    assert diffs["remove-long"] == {"stages.mix.sources.code.remove_buckets", "stages.mix.sources.web.remove_buckets"}
    assert diffs["upsample-long"] == {"stages.mix.sources.web.long_share"}
    assert diffs["filtered"] == {"stages.filter.enabled", "stages.filter.quality"}
    assert diffs["filtered-upsample"] == diffs["filtered"] | diffs["upsample-long"]
    assert len(suite.seeds) >= 3


def test_power_law_arms_differ_only_in_size() -> None:
    trains = _arm_trains(SUITES / "power-law.yaml")
    ref = _strip(trains["medium"])
    for name in ("small", "large"):
        assert {k.rsplit(".", 1)[0] for k in dotted_diff(ref, _strip(trains[name]))} == {"model.config"}, name


def test_curriculum_arms_share_the_budget_and_switch_where_they_say() -> None:
    suite = load_suite(SUITES / "curriculum.yaml")
    trains = _arm_trains(SUITES / "curriculum.yaml")
    for name, t in trains.items():
        phases = t["data"]["phases"]
        assert sum(p["tokens"] for p in phases) == pytest.approx(suite.train_tokens, abs=t["batch"]["tokens_per_step"])
        assert "config" in t["model"] and "path" not in t["model"], name  # every arm starts from scratch
    short = {n: t["data"]["phases"][0]["tokens"] / suite.train_tokens for n, t in trains.items()
             if len(t["data"]["phases"]) == 2}
    assert sorted(round(v, 1) for v in short.values()) == [0.2, 0.4, 0.8]


def test_arm_folder_trained_with_other_settings_is_wiped(tmp_path: Path) -> None:
    folder = tmp_path / "arm-s1"
    AblationRunner._claim(folder, "k1")
    (folder / "hf").mkdir()
    AblationRunner._claim(folder, "k1")  # same settings: the export is kept (only eval may rerun)
    assert (folder / "hf").is_dir()
    AblationRunner._claim(folder, "k2")  # other settings: nothing of the old run may be resumed or reused
    assert not (folder / "hf").exists() and (folder / "train_key").read_text().strip() == "k2"
