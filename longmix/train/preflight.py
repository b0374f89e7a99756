"""Checks before any rank is launched, so a bad training recipe fails with one line, not N rank logs."""

from __future__ import annotations

from typing import Any

from longmix.train.sequence_parallel import check as sp_check


def preflight(recipe: Any, world: int) -> None:
    """Every phase's manifest, the tokenizer's agreement with the model, and the sequence-parallel limits."""
    from longmix.formats.manifest import load_manifest
    from longmix.train.model import check_tokenizer_agrees, load_config, match_tokenizer

    config = load_config(recipe.model, recipe)
    manifests = []
    for p in recipe.data.phases:
        path = recipe.resolve(p.manifest)
        manifests.append(load_manifest(path))
        t = manifests[-1].tokenizer
        check_tokenizer_agrees(recipe.model, recipe, t, str(path))
        match_tokenizer(config, recipe.model, t.vocab_size, t.bos_id, t.eos_id, t.pad_id, str(path))
    sp = recipe.parallel.sequence_parallel_size
    if sp > 1:
        sp_check(sp, world, config, [m.seq_len for m in manifests], config._attn_implementation)
