"""The family matrix: every family longmix supports is trained exactly as transformers defines it.

Tiny configs of nine families (tests/helpers_families.py). In-process, per family: a packed row through the
trainer's core equals each document run alone in transformers' own eager attention (windows, softcapping,
partial rotary and all), a core that drops the window or the softcap is caught by the same comparison, and
masking off is caught too. One torchrun launch (2 CPU ranks, ZeRO-3) then trains every family: an
uninterrupted run, the same run stopped at step 2 and resumed, and Gemma 3 with Ulysses SP 2. After it,
per family: resume is bit-identical, the trainer's held-out loss equals plain transformers' per-document
loss on the exported model, the export keeps the RoPE parameters and windows, and `longmix eval` reads the
mix's packed rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers_families import FAMILIES, SOFTCAPPED, WINDOW, WINDOWED, family_config
from helpers_train import (
    REPO,
    documents_loss_sum,
    make_manifest,
    make_tokenizer,
    run_longmix,
    tiny_recipe,
    torchrun_script,
    write_train_recipe,
)

from longmix.core.errors import UserError
from longmix.formats.manifest import load_manifest
from longmix.formats.packed_shards import read_rows
from longmix.train import attention
from longmix.train.masking import IGNORE, build_arrays
from longmix.train.model import load_config
from longmix.train.recipe import TrainRecipe
from longmix.train.trainer import read_metrics

STEPS = 4
# A control must move the mean loss by 50x the equality tolerance (rel 2e-6 of a loss near ln 512 = 6.2).
CONTROL_GAP = 2e-4


def _recipe(cfg: dict, attn: str = "auto", rope: dict | None = None, sp: int = 1) -> TrainRecipe:
    return TrainRecipe.model_validate({
        "name": "t", "output": "x", "deepspeed": "x.json",
        "model": {"config": cfg, "attn_implementation": attn, **({"rope": rope} if rope else {})},
        "parallel": {"sequence_parallel_size": sp},
        "data": {"phases": [{"manifest": "m.json", "steps": 1}]},
        "batch": {"tokens_per_step": 256, "micro_batch_tokens": 128}})


def _model(name: str):
    """The family built as the trainer builds it (longmix's config path, the default core on CPU), with its
    query and key projections scaled up: random-init attention is nearly uniform, which would hide what a
    window or a softcap changes (a trained model's attention is sharp)."""
    from transformers import AutoModelForCausalLM

    recipe = _recipe(family_config(name))
    config = load_config(recipe.model, recipe)
    assert config._attn_implementation == attention.DOC_SDPA
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith(("q_proj.weight", "k_proj.weight", "qkv_proj.weight")):
                p.mul_(4.0)
    return model


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("families")
    tok = make_tokenizer(root / "tok")
    man = make_manifest(root / "d128", tok, 128, 60_000, doc_chars=300)
    rows = [read_rows(man.parent / s.path, 128) for s in load_manifest(man).shards]
    picked = []  # rows with several documents, at least one longer than the window
    for block in rows:
        for r in range(len(block)):
            row = block.row(r)
            if len(row["doc_lens"]) >= 3 and row["doc_lens"].max() > 3 * WINDOW:
                picked.append(row)
    assert len(picked) >= 2
    ids, pos, tgt = build_arrays(np.stack([r["input_ids"] for r in picked[:2]]), [r["doc_lens"] for r in picked[:2]],
                                 np.array([r["pad"] for r in picked[:2]]), True)
    return {"root": root, "tok": tok, "manifest": man, "ids": ids, "pos": pos, "tgt": tgt}


def _packed_loss(model, ids, pos, tgt) -> tuple[float, int]:
    with torch.no_grad():
        logits = model(input_ids=torch.from_numpy(ids), position_ids=torch.from_numpy(pos), use_cache=False).logits
    t = torch.from_numpy(tgt)
    loss = F.cross_entropy(logits.flatten(0, 1), t.flatten(), ignore_index=IGNORE, reduction="sum").item()
    return loss, int((t != IGNORE).sum())


def _dropping(*names: str) -> str:
    """A broken core that ignores the given arguments (what longmix's core did before windows were honoured)."""
    from transformers import AttentionInterface

    def broken(*args, **kwargs):
        for n in names:
            kwargs.pop(n, None)
        return attention.doc_causal_attention(*args, **kwargs)

    key = "test_dropping_" + "_".join(names)
    AttentionInterface.register(key, broken)
    return key


@pytest.mark.parametrize("family", list(FAMILIES))
def test_packed_rows_equal_documents_alone_in_eager(family: str, data: dict) -> None:
    model = _model(family)
    ids, pos, tgt = data["ids"], data["pos"], data["tgt"]
    packed, n = _packed_loss(model, ids, pos, tgt)
    model.set_attn_implementation("eager")  # transformers' own definition: windows, softcap, scaling
    alone, m = documents_loss_sum(model, ids, pos, tgt)
    assert n == m
    assert packed / n == pytest.approx(alone / m, rel=2e-6, abs=0)
    # Controls: a leak across documents, a dropped window or a dropped softcap would all show.
    model.set_attn_implementation(attention.DOC_SDPA)
    flat = np.broadcast_to(np.arange(ids.shape[1]), ids.shape).copy()
    assert abs(_packed_loss(model, ids, flat, tgt)[0] / n - alone / m) > CONTROL_GAP
    if family in WINDOWED:
        model.set_attn_implementation(_dropping("sliding_window"))
        assert abs(_packed_loss(model, ids, pos, tgt)[0] / n - alone / m) > CONTROL_GAP
    if family in SOFTCAPPED:
        model.set_attn_implementation(_dropping("softcap"))
        assert abs(_packed_loss(model, ids, pos, tgt)[0] / n - alone / m) > CONTROL_GAP


def test_window_blocks_are_exact_on_a_long_document() -> None:
    """A document many windows long goes through the blocked path: equal to a full masked softmax."""
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 4, 300, 8), torch.randn(1, 2, 300, 8), torch.randn(1, 2, 300, 8)
    for window, softcap in ((7, None), (64, 2.0), (None, 2.0), (1, None)):
        got = attention.document_attention(q, k, v, scale=None, dropout=0.0, window=window, softcap=softcap)
        kk, vv = k.repeat_interleave(2, 1), v.repeat_interleave(2, 1)
        scores = q @ kk.transpose(-1, -2) / 8**0.5
        if softcap:
            scores = torch.tanh(scores / softcap) * softcap
        i, j = torch.arange(300)[:, None], torch.arange(300)[None]
        allowed = (j <= i) & ((i - j < window) if window else True)
        want = torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1) @ vv
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_unsupported_arguments_are_refused() -> None:
    q = torch.zeros(1, 4, 5, 8)
    with pytest.raises(ValueError, match="s_aux"):
        attention.doc_causal_attention(torch.nn.Module(), q, q, q, None, s_aux=torch.zeros(4))
    with pytest.raises(ValueError, match="is_causal=False"):
        attention.doc_causal_attention(torch.nn.Module(), q, q, q, None, is_causal=False)


def test_cores_that_cannot_compute_the_family_are_refused() -> None:
    recipe = _recipe(family_config("gemma2"), attn="sdpa")
    with pytest.raises(UserError, match="attn_logit_softcapping=1.0.*SDPA cannot.*doc_sdpa"):
        load_config(recipe.model, recipe)
    for attn in ("eager", "doc_sdpa"):  # both honour softcapping
        recipe = _recipe(family_config("gemma2"), attn=attn)
        load_config(recipe.model, recipe)
    recipe = _recipe({**family_config("llama"), "model_type": "llama4_text", "attention_chunk_size": 64})
    with pytest.raises(UserError, match="chunked attention"):
        load_config(recipe.model, recipe)


def test_rope_change_lands_on_the_chosen_layer_types() -> None:
    from transformers import AutoModelForCausalLM

    def inv(model, layer_type):
        return getattr(model.model.rotary_emb, f"{layer_type}_inv_freq")

    head = family_config("gemma3_text")["head_dim"]

    def expected(theta: float) -> torch.Tensor:
        return 1.0 / theta ** (torch.arange(0, head, 2, dtype=torch.float32) / head)

    for rope, full, local in (({"kind": "abf", "theta": 8e6}, 8e6, 1e4),
                              ({"kind": "abf", "theta": 5e5, "layer_types": ["sliding_attention"]}, 1e6, 5e5)):
        recipe = _recipe(family_config("gemma3_text"), rope=rope)
        config = load_config(recipe.model, recipe)
        model = AutoModelForCausalLM.from_config(config)
        torch.testing.assert_close(inv(model, "full_attention"), expected(full))
        torch.testing.assert_close(inv(model, "sliding_attention"), expected(local))
    recipe = _recipe(family_config("gemma3_text"), rope={"kind": "yarn", "factor": 4.0})
    params = load_config(recipe.model, recipe).rope_parameters
    assert params["full_attention"]["rope_type"] == "yarn" and params["sliding_attention"]["rope_type"] == "default"
    assert params["full_attention"]["original_max_position_embeddings"] == 1024
    # Phi-3's partial rotary survives a change
    recipe = _recipe(family_config("phi3"), rope={"kind": "abf", "theta": 5e5})
    assert load_config(recipe.model, recipe).rope_parameters["partial_rotary_factor"] == 0.5
    for bad, match in (({"kind": "abf", "theta": 5e5, "layer_types": ["global"]}, "global not among"),):
        recipe = _recipe(family_config("gemma3_text"), rope=bad)
        with pytest.raises(UserError, match=match):
            load_config(recipe.model, recipe)
    recipe = _recipe(family_config("llama"), rope={"kind": "abf", "theta": 5e5, "layer_types": ["full_attention"]})
    with pytest.raises(UserError, match="one RoPE for every layer"):
        load_config(recipe.model, recipe)


def test_ulysses_refuses_heads_that_do_not_split() -> None:
    from longmix.train import sequence_parallel as sp

    recipe = _recipe({**family_config("gemma3_text"), "num_attention_heads": 6, "num_key_value_heads": 6,
                      "hidden_size": 96}, sp=4)
    config = load_config(recipe.model, recipe)
    with pytest.raises(UserError, match="6 attention heads do not split over sequence_parallel_size=4"):
        sp.check(4, 4, config, [128], config._attn_implementation)
    # one KV head (Gemma 3 270M) is replicated across the SP ranks: allowed
    recipe = _recipe({**family_config("gemma3_text"), "num_key_value_heads": 1}, sp=2)
    config = load_config(recipe.model, recipe)
    sp.check(2, 2, config, [128], config._attn_implementation)


# ---------------------------------------------------------------------------------------- trained on 2 ranks

@pytest.fixture(scope="module")
def trained(data: dict) -> dict:
    root = data["root"]
    phases = [{"manifest": str(data["manifest"]), "steps": STEPS}]
    plan, runs = [], {}
    for name in FAMILIES:
        for run, stop in (("A", None), ("B", 2), ("B", None)):
            rec = tiny_recipe(root / name / run, phases, checkpoint={"every_steps": 2, "keep_last": 2},
                              model={"config": family_config(name), "attn_implementation": "auto"})
            path = write_train_recipe(root / name / f"{run}.yaml", **rec)
            plan.append({"recipe": str(path), "stop_at_step": stop})
            runs[(name, run)] = root / name / run
    rec = tiny_recipe(root / "gemma3_text" / "SP", phases, parallel={"sequence_parallel_size": 2},
                      model={"config": family_config("gemma3_text"), "attn_implementation": "auto"})
    plan.append({"recipe": str(write_train_recipe(root / "gemma3_text" / "SP.yaml", **rec)), "stop_at_step": None})
    runs[("gemma3_text", "SP")] = root / "gemma3_text" / "SP"
    (root / "plan.json").write_text(json.dumps(plan))
    proc = torchrun_script(REPO / "tests" / "workers" / "family_runs.py", str(root / "plan.json"))
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return runs


def _losses(run: Path) -> dict[int, dict]:
    return {r["step"]: r for r in read_metrics(run / "metrics.jsonl") if "loss" in r}


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_trained_family_resumes_exports_and_matches_transformers(family: str, trained: dict, data: dict,
                                                                  tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM
    from typer.testing import CliRunner

    from longmix.cli.app import app
    from longmix.train.loader import Loader, PhaseData, plan_phases

    a, b = _losses(trained[(family, "A")]), _losses(trained[(family, "B")])
    assert sorted(a) == list(range(1, STEPS + 1)) and sorted(b) == sorted(a)
    assert [a[s]["loss"] for s in a] == [b[s]["loss"] for s in a]  # resumed at step 2, bit-identical
    assert [a[s]["grad_norm"] for s in a] == [b[s]["grad_norm"] for s in a]
    assert a[STEPS]["loss"] < a[1]["loss"]

    hf = tmp_path / "hf"
    res = CliRunner().invoke(app, ["export", str(trained[(family, "A")]), "-o", str(hf)])
    assert res.exit_code == 0, res.output
    exported = json.loads((hf / "config.json").read_text())
    trained_cfg = json.loads((trained[(family, "A")] / "checkpoints" / f"step_{STEPS:08d}" / "hf_config" /
                              "config.json").read_text())
    for key in ("rope_parameters", "sliding_window", "layer_types", "attn_logit_softcapping", "head_dim",
                "partial_rotary_factor"):
        assert exported.get(key) == trained_cfg.get(key), key
    want = family_config(family)
    if "sliding_window" in want:
        assert exported["sliding_window"] == WINDOW
    if "rope_parameters" in want:
        assert exported["rope_parameters"] == want["rope_parameters"]

    # The trainer's last held-out loss (ZeRO-3, doc core) = plain transformers on each document alone.
    recipe = TrainRecipe.model_validate(json.loads((trained[(family, "A")] / "recipe.json").read_text()))
    phases = [PhaseData(Path(p.manifest), verify=False) for p in recipe.data.phases]
    _, ids, pos, tgt = Loader(recipe, phases, plan_phases(recipe, phases, 1), 0, 1).holdout(0, 1)
    model = AutoModelForCausalLM.from_pretrained(hf, attn_implementation="eager").eval()
    total, count = documents_loss_sum(model, ids, pos, tgt)
    final = [r for r in read_metrics(trained[(family, "A")] / "metrics.jsonl") if "eval_loss" in r][-1]
    assert count == final["eval_tokens"]
    assert total / count == pytest.approx(final["eval_loss"], rel=2e-6)

    # Evaluation reads the mix's packed rows (the manifest) with the model's own attention.
    res = CliRunner().invoke(app, ["eval", "context-loss", str(hf), "--data", str(data["manifest"]), "--max-len",
                                   "64", "--min-len", "32", "--max-docs", "6", "--bins", "4", "--fit-min", "1",
                                   "-o", str(tmp_path / "eval")])
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "eval" / "context_loss.json").read_text())["results"][0]
    assert out["n_docs"] == 6 and np.isfinite(out["mean_loss"])
    if family in SOFTCAPPED:  # auto loaded it with eager; SDPA would compute another model
        res = CliRunner().invoke(app, ["eval", "context-loss", str(hf), "--data", str(data["manifest"]),
                                       "--attn-implementation", "sdpa", "-o", str(tmp_path / "eval2")])
        assert isinstance(res.exception, UserError) and "SDPA cannot" in str(res.exception), res.output


def test_check_refuses_a_core_before_launch(data: dict, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from longmix.cli.app import app

    rec = tiny_recipe(tmp_path / "out", [{"manifest": str(data["manifest"]), "steps": 2}],
                      model={"config": family_config("gemma2"), "attn_implementation": "sdpa"})
    path = write_train_recipe(tmp_path / "gemma2-sdpa.yaml", **rec)
    for cmd in (["check", str(path), "--nproc", "2"], ["train", str(path), "--nproc", "2"]):
        res = CliRunner().invoke(app, cmd)  # in-process: the UserError that `longmix` prints as one line
        assert isinstance(res.exception, UserError), res.output
        assert "softcaps its attention logits" in str(res.exception) and "\n" not in str(res.exception)
    proc = run_longmix("check", str(path), "--nproc", "2")  # and as a real process: exit 2, no traceback
    assert proc.returncode == 2 and "softcaps its attention logits" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_ulysses_trains_a_windowed_family_like_one_rank_per_sequence(trained: dict) -> None:
    sp, ref = _losses(trained[("gemma3_text", "SP")]), _losses(trained[("gemma3_text", "A")])
    for s in ref:
        assert sp[s]["loss"] == pytest.approx(ref[s]["loss"], rel=1e-5)
