"""Tiny configs of the model families longmix is tested on (the family matrix, docs/training.md).

Each keeps what makes its family different: sliding windows (mistral on every layer, qwen2 on the layers
past ``max_window_layers``, gemma2 and gemma3_text on their local layers), Gemma 2's logit softcapping
(small caps, so random-init scores reach them), Gemma 3's RoPE keyed by layer type, Phi-3's partial rotary,
and a ``head_dim`` other than hidden / heads (qwen3, gemma). Windows of 16 tokens are shorter than most
documents of the 128-token test rows, so a dropped window changes the loss.
"""

from __future__ import annotations

from typing import Any

from helpers_train import VOCAB

WINDOW = 16
_COMMON: dict[str, Any] = {
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "vocab_size": VOCAB, "max_position_embeddings": 1024, "tie_word_embeddings": False,
    "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2,
}

FAMILIES: dict[str, dict[str, Any]] = {
    "llama": {"model_type": "llama"},
    "qwen2": {"model_type": "qwen2", "use_sliding_window": True, "sliding_window": WINDOW, "max_window_layers": 1},
    "qwen3": {"model_type": "qwen3", "head_dim": 32},
    "mistral": {"model_type": "mistral", "sliding_window": WINDOW, "head_dim": 16},
    "gemma2": {"model_type": "gemma2", "sliding_window": WINDOW, "head_dim": 16, "query_pre_attn_scalar": 16,
               "attn_logit_softcapping": 1.0, "final_logit_softcapping": 5.0,
               "layer_types": ["sliding_attention", "full_attention"]},
    "gemma3_text": {"model_type": "gemma3_text", "sliding_window": WINDOW, "head_dim": 32, "query_pre_attn_scalar": 32,
                    "num_hidden_layers": 3, "layer_types": ["sliding_attention", "sliding_attention", "full_attention"],
                    "rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
                                        "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0}}},
    "phi3": {"model_type": "phi3", "partial_rotary_factor": 0.5},
    "olmo2": {"model_type": "olmo2"},
    "granite": {"model_type": "granite", "attention_multiplier": 0.25, "embedding_multiplier": 2.0,
                "residual_multiplier": 0.5, "logits_scaling": 2.0},
}
WINDOWED = ("qwen2", "mistral", "gemma2", "gemma3_text")
SOFTCAPPED = ("gemma2",)


def family_config(name: str) -> dict[str, Any]:
    return {**_COMMON, **FAMILIES[name]}
