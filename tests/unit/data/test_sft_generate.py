"""`longmix.models.generate` on a tiny random Llama: batched left-padded greedy equals one prompt at a time, the
order of the prompts is kept, continuations stop at a stop token, and sampling is the same for the same seed
without touching the caller's RNG."""

from __future__ import annotations

import pytest
import torch

from longmix.core.errors import UserError
from longmix.models.generate import generate_ids
from longmix.models.loading import Loaded


@pytest.fixture(scope="module")
def tiny() -> Loaded:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=64, max_position_embeddings=128)
    model = LlamaForCausalLM(config).eval()
    return Loaded(model, None, "cpu", None, 63)


PROMPTS = [[5, 9, 11, 2, 40], [7, 8], [30, 31, 32, 33, 34, 35, 36, 37, 38], [12, 13, 14]]


def test_batched_greedy_equals_one_at_a_time(tiny: Loaded) -> None:
    batched = generate_ids(tiny, PROMPTS, 12, batch_size=4, stop_ids=[])
    alone = [generate_ids(tiny, [p], 12, batch_size=1, stop_ids=[])[0] for p in PROMPTS]
    assert batched == alone and all(len(r) == 12 for r in batched)
    assert generate_ids(tiny, PROMPTS, 12, batch_size=3, stop_ids=[]) == alone


def test_stops_at_a_stop_token(tiny: Loaded) -> None:
    full = generate_ids(tiny, PROMPTS[:1], 12, stop_ids=[])[0]
    stop = full[4]
    cut = generate_ids(tiny, PROMPTS[:1], 12, stop_ids=[stop])[0]
    assert cut == full[:full.index(stop)]


def test_sampling_is_seeded_and_leaves_the_global_rng_alone(tiny: Loaded) -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = generate_ids(tiny, PROMPTS, 16, seed=1, temperature=1.0, top_p=0.95, batch_size=2, stop_ids=[])
    assert torch.rand(1) == expected_next
    assert generate_ids(tiny, PROMPTS, 16, seed=1, temperature=1.0, top_p=0.95, batch_size=2, stop_ids=[]) == a
    assert generate_ids(tiny, PROMPTS, 16, seed=2, temperature=1.0, top_p=0.95, batch_size=2, stop_ids=[]) != a
    with pytest.raises(UserError, match="needs a seed"):
        generate_ids(tiny, PROMPTS, 4, temperature=1.0)
