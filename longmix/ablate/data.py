"""Per-arm data with shared upstream stages: ingest...tokenize run once per distinct upstream recipe, and each
arm's folder links those finished stage folders, so only its own mix + pack run.

Linking is safe because every stage folder carries stage.json with the settings hash of its whole upstream
chain: if an arm's recipe changed anything before mix, the hash check in `StageContext.finished_report`
refuses the folder instead of reusing it silently (and such an arm gets its own upstream build anyway)."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

from longmix.core.recipe_io import parse_model
from longmix.data.flow import STAGES, build
from longmix.data.recipe import Recipe

log = logging.getLogger("longmix")

UPSTREAM = STAGES[:STAGES.index("tokenize") + 1]  # ingest ... tokenize: independent of longdep, mix, pack, seq_len


def upstream_key(recipe: dict[str, Any]) -> dict[str, Any]:
    """The part of a data recipe that decides ingest...tokenize: everything but name, output, seq_len,
    stages.longdep, stages.mix and stages.pack (an arm's longdep scores run in its own folder)."""
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
    up = parse_model(Recipe, {**recipe, "output": str(shared), "name": "shared-upstream"}, f"upstream of {output}")
    build(up, until="tokenize", progress=progress)  # a no-op once finished
    output.mkdir(parents=True, exist_ok=True)
    for stage in UPSTREAM:
        link, target = output / stage, shared / stage
        if target.is_dir() and not link.exists():
            link.symlink_to(target.resolve(), target_is_directory=True)
    rec = parse_model(Recipe, {**recipe, "output": str(output)}, str(output))
    reports = build(rec, progress=progress)
    ran = [s for s in ("longdep", "mix", "pack") if s in reports]
    log.info("%s: upstream shared from %s; %s built here", output.name, shared.name, "+".join(ran))
    return output / "manifest.json"
