"""Per-arm data with shared upstream stages: the stages an arm runs exactly as its shared upstream recipe does
(ingest...tokenize in practice) run once per distinct upstream recipe, and each arm's folder links those
finished stage folders, so only its own stages (longdep, mix, pack) run.

Which stages are shared is the settings-hash chain's answer (pipeline/runner.py `common_stages`): a stage is
shared when its chained settings hash, which covers everything upstream of it, is the same for the arm and for
the shared recipe. Linking is safe for the same reason: every stage folder carries stage.json with that hash,
and the hash check in `StageContext.finished_report` refuses a folder built with other settings."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

from longmix.core.recipe_io import parse_model
from longmix.data.flow import FLOW, build
from longmix.data.recipe import Recipe
from longmix.pipeline.runner import common_stages

log = logging.getLogger("longmix")


def upstream_key(recipe: dict[str, Any]) -> dict[str, Any]:
    """The shared upstream recipe of an arm: everything but name, output, seq_len, stages.longdep, stages.mix
    and stages.pack, the settings arms vary (an arm's longdep scores run in its own folder)."""
    key = copy.deepcopy(recipe)
    for k in ("name", "output", "seq_len"):
        key.pop(k, None)
    stages = key.get("stages") or {}
    for k in ("longdep", "mix", "pack"):
        stages.pop(k, None)
    key["stages"] = stages
    return key


def build_data(recipe: dict[str, Any], output: Path, shared_root: Path, progress: bool = False) -> Path:
    """Build one arm's data recipe into ``output``; returns its manifest path."""
    from longmix.core.recipe_io import settings_hash

    key = upstream_key(recipe)
    shared = shared_root / f"upstream-{settings_hash(key)}"
    # The shared recipe leaves out what arms vary, so the stages it runs alike with the arm are the upstream.
    up = parse_model(Recipe, {**key, "output": str(shared), "name": "shared-upstream"}, f"upstream of {output}")
    rec = parse_model(Recipe, {**recipe, "output": str(output)}, str(output))
    common = common_stages(FLOW, rec, up)  # the stages the arm runs exactly as the shared recipe does
    if common:
        build(up, until=common[-1], progress=progress)  # a no-op once finished
    output.mkdir(parents=True, exist_ok=True)
    for stage in common:
        link, target = output / stage, shared / stage
        if target.is_dir() and not link.exists():
            link.symlink_to(target.resolve(), target_is_directory=True)
    reports = build(rec, progress=progress)
    ran = [s for s in reports if s not in common]
    log.info("%s: upstream shared from %s; %s built here", output.name, shared.name, "+".join(ran))
    return output / "manifest.json"
