"""`longmix check RECIPE`: every check `build`, `train` or `ablate` makes before starting, and nothing else.

The kind of recipe is told by its keys: a data recipe has `sources:`, a training recipe `model:` and
`deepspeed:`, an ablation suite `arms:`, an sft-pack recipe `sources:` and `loss_mode:` (or `model:`), an
sft-data recipe `generator:`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from longmix.core.errors import UserError
from longmix.core.recipe_io import load_with_extends


def recipe_kind(path: Path, data: dict[str, Any]) -> str:
    if "arms" in data:
        return "suite"
    if "generator" in data:
        return "sft-data"
    if "sources" in data and ("loss_mode" in data or "model" in data):
        return "sft-pack"
    if "sources" in data:
        return "data"
    if "model" in data and "deepspeed" in data:
        return "train"
    raise UserError(f"{path}: cannot tell what this recipe is: a data recipe has `sources:`, a training recipe "
                    "`model:` and `deepspeed:`, an ablation suite `arms:`, an sft-pack recipe `sources:` and "
                    "`loss_mode:`, an sft-data recipe `generator:`")


def check(
    recipe: Annotated[Path, typer.Argument(help="data, training, sft-data or sft-pack recipe, or ablation suite "
                                              "(YAML)")],
    nproc: Annotated[int, typer.Option(min=1, help="training ranks to check the layout for")] = 1,
    plot: Annotated[Path | None, typer.Option(help="training recipe: write its learning-rate schedule as this "
                                              "PNG")] = None,
) -> None:
    """Check a recipe without running anything: sources, tokenizer, mix, manifests, model, DeepSpeed JSON."""
    kind = recipe_kind(recipe, load_with_extends(recipe))
    if kind == "data":
        from longmix.data.flow import FLOW
        from longmix.data.recipe import load_recipe
        from longmix.pipeline.runner import check_flow

        rec = load_recipe(recipe)
        stages = check_flow(FLOW, rec, where=str(recipe))
        files = sum(len(rec.source_files(s)) for s in rec.sources)
        typer.echo(f"ok: data recipe {recipe}: {len(rec.sources)} sources ({files} inputs); stages "
                   f"{', '.join(s.name for s in stages)}")
    elif kind == "sft-pack":
        from longmix.data.sft.sft_build import check_sft
        from longmix.data.sft.sft_settings import load_sft_recipe

        rec = load_sft_recipe(recipe)
        _, tpl, per_source = check_sft(rec)
        typer.echo(f"ok: sft-pack recipe {recipe}: {sum(map(len, per_source))} examples in {len(per_source)} "
                   f"sources, loss mode {rec.loss_mode}, chat template {tpl.sha256[:12]}")
    elif kind == "sft-data":
        from longmix.cli.sft import settings_of
        from longmix.data.sft.run import prepare

        plan = prepare(settings_of(recipe))
        typer.echo(f"ok: sft-data recipe {recipe}: {len(plan.docs)} documents in {len(plan.shards)} shards, "
                   f"generator {plan.settings.generator}")
    elif kind == "train":
        from longmix.train.preflight import preflight
        from longmix.train.recipe import load_train_recipe
        from longmix.train.run_plan import plan_lines, plot_schedule

        rec = load_train_recipe(recipe)
        plan = preflight(rec, nproc, str(recipe))
        typer.echo(f"ok: training recipe {recipe}: {len(rec.data.phases)} phase(s) on {nproc} rank(s)")
        for line in plan_lines(plan):
            typer.echo(line)
        if plot:
            typer.echo(f"  learning-rate schedule: {plot_schedule(plan, rec, plot)}")
    else:
        from longmix.ablate.runner import AblationRunner
        from longmix.ablate.suite import load_suite

        suite = load_suite(recipe)
        AblationRunner(suite).check()
        typer.echo(f"ok: ablation suite {recipe}: {len(suite.arms)} arms x {len(suite.seeds)} seeds")
