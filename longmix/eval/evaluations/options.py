"""What the `longmix eval` commands share: model-loading options, the consoles, number lists."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from longmix.core.errors import UserError

console = Console(stderr=True)
out_console = Console(width=160)  # tables stay whole in logs and pipes

Device = Annotated[str, typer.Option(help="auto (cuda if available), cpu, cuda, cuda:N")]
Dtype = Annotated[str, typer.Option(help="auto (fp32 on CPU, bf16 on GPU), float32, bfloat16, float16")]
TrustCode = Annotated[bool, typer.Option("--trust-remote-code", help="allow a checkpoint folder's own model code "
                                        "(auto_map) to run")]
AttnImpl = Annotated[str, typer.Option(help="auto (sdpa, or eager for models that softcap attention logits), "
                                       "sdpa, eager, flash_attention_2, flex_attention")]


def floats(values: str, what: str) -> list[float]:
    try:
        return [float(v) for v in values.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{what} must be comma-separated numbers, got {values!r}") from None


def num(x: float | None) -> str:
    return "?" if x is None else f"{x:.3f}"
