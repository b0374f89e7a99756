"""Checks before any rank is launched, so a bad training recipe fails with one line, not N rank logs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from longmix.core.errors import UserError
from longmix.train.run_plan import RunPlan, make_plan
from longmix.train.sequence_parallel import check as sp_check


@dataclass(frozen=True)
class _PhaseSize:
    """What the batch planner needs of a phase, read from its manifest (no shard is opened)."""

    seq_len: int
    sequences: int

    def __len__(self) -> int:
        return self.sequences


def preflight(recipe: Any, world: int, where: str = "") -> RunPlan:
    """The DeepSpeed JSON, the model, every phase's manifest, the tokenizer's agreement with the model, the
    batch layout on `world` ranks and the sequence-parallel limits; errors name `where` (the recipe file).
    Returns the run plan those checks worked out."""
    try:
        return _preflight(recipe, world)
    except UserError as exc:
        if where:
            raise UserError(f"{where}: {exc}") from None
        raise


def _preflight(recipe: Any, world: int) -> RunPlan:
    from longmix.formats.manifest import check_shard_layout, load_manifest
    from longmix.train.dsconfig import read_ds_json
    from longmix.train.loader import plan_phases
    from longmix.train.model import check_tokenizer_agrees, load_config, match_tokenizer
    from longmix.train.trackers import check_installed

    check_installed(recipe.logging.report_to)
    read_ds_json(recipe)
    config = load_config(recipe.model, recipe)
    manifests = []
    for p in recipe.data.phases:
        path = recipe.resolve_manifest(p.manifest)
        manifests.append(load_manifest(path))
        check_shard_layout(path, manifests[-1])  # before any rank starts, from the files' footers
        t = manifests[-1].tokenizer
        check_tokenizer_agrees(recipe.model, recipe, t, str(path))
        match_tokenizer(config, recipe.model, t.vocab_size, t.bos_id, t.eos_id, t.pad_id, str(path))
    if recipe.data.loss_weighting == "example" and recipe.model.tiled_loss:
        raise UserError("data.loss_weighting: example needs per-token weights, which model.tiled_loss does not "
                        "take; set model.tiled_loss: false")
    sp = recipe.parallel.sequence_parallel_size
    if sp > 1:
        sp_check(sp, world, config, [m.seq_len for m in manifests], config._attn_implementation)
    plans = plan_phases(recipe, [_PhaseSize(m.seq_len, m.totals.sequences) for m in manifests], world // sp)
    return make_plan(recipe, world, config, plans)
