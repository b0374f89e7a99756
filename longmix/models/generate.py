"""Batched generation with the KV cache: the one place that turns prompts (token ids) into continuations, for the
evaluations (greedy probes, RULER) and the self-instruct data generator.

Prompts of unequal length are padded on the left and masked out, so positions count from each prompt's first
real token (transformers derives position ids from the attention mask), as generation harnesses batch them.
Sampling is seeded per batch inside a forked RNG: the same seed gives the same tokens, and the caller's global
RNG is left as it was."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from longmix.core.errors import UserError
from longmix.models.loading import Loaded


def stop_ids_of(loaded: Loaded, extra: Sequence[str] = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>")) -> list[int]:
    """The tokens that end a continuation: EOS and, when the vocabulary has one, a chat template's end-of-turn
    token (models whose EOS is not their end of turn keep writing past the answer otherwise)."""
    ids = [loaded.eos_id] if loaded.eos_id is not None else []
    for token in extra:
        tid = loaded.tokenizer.token_to_id(token)
        if tid is not None and tid not in ids:
            ids.append(tid)
    return ids


def _cut_at_stop(row: list[int], stops: set[int]) -> list[int]:
    for k, t in enumerate(row):
        if t in stops:
            return row[:k]
    return row


def generate_ids(loaded: Loaded, prompts: list[list[int]], max_new_tokens: int, *, seed: int | None = None,
                 temperature: float = 0.0, top_p: float = 1.0, batch_size: int = 8,
                 stop_ids: list[int] | None = None,
                 on_batch: Callable[[int], None] | None = None) -> list[list[int]]:
    """New token ids per prompt (in the prompts' order), without the stop token and what follows it.
    Greedy when ``temperature`` is 0, else sampling (``top_p`` nucleus) seeded by ``seed``. Prompts are batched
    longest first so a batch pads little; ``on_batch(n)`` is called after each batch of n prompts."""
    import torch

    if not prompts:
        return []
    if any(not p for p in prompts):
        raise UserError("generation: an empty prompt has nothing to continue")
    if temperature < 0 or not 0 < top_p <= 1 or max_new_tokens < 1 or batch_size < 1:
        raise UserError(f"generation: need temperature >= 0, 0 < top_p <= 1, max_new_tokens >= 1, batch_size >= 1 "
                        f"(got {temperature}, {top_p}, {max_new_tokens}, {batch_size})")
    sample = temperature > 0
    if sample and seed is None:
        raise UserError("generation: sampling (temperature > 0) needs a seed, so the same run gives the same text")
    stops = stop_ids if stop_ids is not None else stop_ids_of(loaded)
    pad = loaded.eos_id if loaded.eos_id is not None else 0
    # stable sort: equal lengths keep their order, so batches (and therefore the numbers) depend only on the prompts
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out: list[list[int]] = [[] for _ in prompts]
    for b, start in enumerate(range(0, len(order), batch_size)):
        idx = order[start:start + batch_size]
        batch = [prompts[i] for i in idx]
        width = max(len(p) for p in batch)
        ids = torch.as_tensor([[pad] * (width - len(p)) + list(p) for p in batch], device=loaded.device)
        mask = torch.as_tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=loaded.device)
        kwargs: dict[str, Any] = dict(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                      pad_token_id=pad, eos_token_id=stops or None, use_cache=True)
        if sample:
            kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
        else:
            kwargs.update(do_sample=False)
        devices = [torch.device(loaded.device)] if str(loaded.device).startswith("cuda") else []
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            if sample:
                torch.manual_seed((int(seed) * 1_000_003 + b) % (1 << 63))  # type: ignore[arg-type]
            rows = loaded.model.generate(**kwargs)
        for i, row in zip(idx, rows, strict=True):
            out[i] = _cut_at_stop(row[width:].tolist(), set(stops))
        if on_batch is not None:
            on_batch(len(idx))
    return out


def decode(loaded: Loaded, ids: list[int]) -> str:
    return loaded.tokenizer.decode(ids, skip_special_tokens=True)


def generate(loaded: Loaded, prompts: list[list[int]], max_new_tokens: int, *, seed: int | None = None,
             temperature: float = 0.0, top_p: float = 1.0, batch_size: int = 8,
             stop_ids: list[int] | None = None) -> list[str]:
    """Decoded continuations of ``prompts`` (see ``generate_ids``), special tokens left out."""
    return [decode(loaded, row) for row in generate_ids(loaded, prompts, max_new_tokens, seed=seed,
                                                        temperature=temperature, top_p=top_p,
                                                        batch_size=batch_size, stop_ids=stop_ids)]
