"""`longmix sft-pack recipe.yaml`: chat data packed into SFT shards with a loss mask (see data/sft/sft_build.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def sft_pack(
    recipe: Annotated[Path, typer.Argument(help="sft-pack recipe (YAML)")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="output folder (overrides the recipe's)")]
    = None,
) -> None:
    """Tokenize chat examples with the model's chat template and pack them into SFT shards + manifest."""
    from longmix.data.sft.sft_build import build_sft
    from longmix.data.sft.sft_settings import load_sft_recipe

    cfg = load_sft_recipe(recipe, output.resolve() if output is not None else None)
    report = build_sft(cfg)
    out = cfg.resolve(cfg.output)
    typer.echo(f"{report['kept']:,} examples ({sum(report['dropped'].values()):,} dropped) in {report['rows']:,} rows "
               f"of {report['seq_len']:,} tokens, padding {report['padding_share']:.1%}, "
               f"{report['loss_tokens']:,} loss tokens ({report['loss_mode']}): {out / 'manifest.json'}")
