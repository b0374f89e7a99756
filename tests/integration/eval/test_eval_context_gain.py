"""Context gain: exact at stride 1, zero when the window covers the document, and large on a real model
where the second half of a document repeats its first half (the distant context holds the answer)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from longmix.models.token_loss import document_gain, short_context_losses, token_losses


@pytest.fixture(scope="module")
def tiny():
    from helpers_train import TINY_LLAMA
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = {k: v for k, v in TINY_LLAMA.items() if k != "model_type"}
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(AutoConfig.for_model("llama", **fields)).eval()


def test_stride_one_is_exact_truncation(tiny) -> None:
    ids = np.random.default_rng(0).integers(3, 512, size=90)
    W = 20
    short = short_context_losses(tiny, ids, W, 1, "cpu")
    for j in (W + 1, 37, 64, 89):  # target token j, predicted from tokens j-W..j-1 alone
        alone = token_losses(tiny, ids[None, j - W:j + 1], "cpu")[0, -1]
        assert short[j - 1] == pytest.approx(alone, abs=1e-5)
    assert np.isnan(short[:W]).all() and not np.isnan(short[W:]).any()


def test_default_stride_gives_w_to_w_plus_s_tokens_of_context(tiny) -> None:
    ids = np.random.default_rng(1).integers(3, 512, size=100)
    W, S = 16, 8
    short = short_context_losses(tiny, ids, W, S, "cpu")
    for j in range(W + 1, 100):
        s = (j - W) // S * S
        alone = token_losses(tiny, ids[None, s:j + 1], "cpu")[0, -1]
        assert W <= j - s < W + S and short[j - 1] == pytest.approx(alone, abs=1e-5)


def test_gain_is_zero_when_the_window_covers_the_document(tiny) -> None:
    ids = np.random.default_rng(2).integers(3, 512, size=64)
    g = document_gain(tiny, ids, window=64)
    assert np.array_equal(g["gain"], np.zeros(63)) and np.array_equal(g["short"], g["full"])


def test_repeated_text_gains_on_a_real_model(smollm2) -> None:
    """SmolLM2 on real text whose second half repeats its first: with the whole context the repeat is nearly
    free, with only the last 32 tokens it is not."""
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    tok = Tokenizer.from_file(str(smollm2 / "tokenizer.json"))
    model = AutoModelForCausalLM.from_pretrained(smollm2, attn_implementation="sdpa").eval()
    import argparse

    half = tok.encode(open(argparse.__file__).read()[20000:24000], add_special_tokens=False).ids[:160]
    ids = np.asarray(half + half)
    g = document_gain(model, ids, window=32, stride=16)
    second = g["gain"][len(half):]  # tokens of the repeat (context > 160 tokens)
    first = g["gain"][40:len(half) - 1]  # past the window, but nothing to copy yet
    assert second.mean() > 1.0 and g["full"][len(half):].mean() < 0.5
    assert abs(first.mean()) < second.mean() / 4
