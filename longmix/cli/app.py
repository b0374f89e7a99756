"""The `longmix` command line: one subcommand per step of the flow, all mounted here."""

from __future__ import annotations

import errno
import logging
import os
import sys
from typing import Annotated

import typer
from rich.console import Console

from longmix.cli import ablate, check, data, eval, filters, manifest, model, sft, sft_pack, tokenizer, train
from longmix.core.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="longmix: long-context data mixes, training and evaluation.")
console = Console(stderr=True)


@app.callback()
def _root(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        stream=sys.stderr)


app.command("check")(check.check)
app.command("build")(data.build)
app.command("dedup")(data.dedup)
app.command("demo-corpus")(data.demo_corpus)
app.command("demo-longdep")(data.demo_longdep)
app.command("demo-lowq")(data.demo_lowq)
app.add_typer(filters.quality_app, name="quality")
app.add_typer(filters.langid_app, name="langid")
app.add_typer(tokenizer.tokenizer_app, name="tokenizer")
app.command("sft-data")(sft.sft_data)
app.command("sft-pack")(sft_pack.sft_pack)
app.command("verify")(manifest.verify)
app.command("export-data")(manifest.export_data)
app.command("inspect")(manifest.inspect)
app.command("train")(train.train)
app.command("export")(train.export)
app.command("report")(train.report)
app.add_typer(model.model_app, name="model")
app.add_typer(eval.eval_app, name="eval")
app.command("ablate")(ablate.ablate)


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM (Slurm, Kubernetes, `timeout`) ends the run as Ctrl-C does


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, _terminated)
    try:
        app()
    except UserError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except OSError as exc:
        message = storage_fault(exc)
        if message is None:
            raise
        console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        _interrupted()
    except SystemExit as exc:
        if exc.code == 130:  # typer turns Ctrl-C into a silent exit 130
            _interrupted()
        if exc.code in (0, None):
            _exit_now()
        raise


# Faults of the place a run writes to, the user's to fix: one line naming the path, never a traceback.
_STORAGE_FAULTS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                   errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
                   errno.ENOTDIR: "a file stands where a folder is needed", errno.EEXIST: "a file is in the way"}


def storage_fault(exc: OSError) -> str | None:
    """The one line for a write fault (disk full, read-only, not a folder), or None for any other OSError."""
    what = _STORAGE_FAULTS.get(exc.errno or -1)
    if what is None:
        return None
    where = f" at {exc.filename}" if exc.filename else ""
    return (f"{what}{where}; finished tasks are kept: fix it and rerun the same command to resume"
            if exc.errno in (errno.ENOSPC, errno.EDQUOT) else f"{what}{where}: choose another output folder or fix it")


def _exit_now() -> None:
    """A finished data command has written and closed everything: skip unloading polars, pyarrow, scipy
    and numba one module at a time (0.6 s of every command, tests/bench/bench_cli_exit.py). Not where Ray or
    torch run (their exit hooks stop clusters and process groups), nor while a child process lives."""
    import multiprocessing

    if "ray" in sys.modules or "torch" in sys.modules or multiprocessing.active_children():
        return
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _interrupted() -> None:
    console.print("interrupted; finished tasks are kept: rerun the same command to resume")
    sys.exit(130)

