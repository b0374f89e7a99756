"""What an evaluation is (`Evaluation`), what a suite hands it (`SuiteRun`), and the per-checkpoint loop of the
CLI commands. The evaluations themselves are modules of `longmix/eval/evaluations/`, listed once in
`longmix/eval/registry.py`; `longmix eval` and the ablation suites both go through that list."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel


@dataclass(frozen=True)
class SuiteRun:
    """What an ablation suite gives an evaluation of one checkpoint besides the evaluation's own section."""

    name: str  # the arm (or "base"): legend and progress label
    data: list[Path]  # the suite's eval.data, resolved: the default documents, haystack and filler
    max_len: int  # eval.max_len
    seed: int  # eval.seed
    resolve: Callable[[str], Path]  # a path of the suite file (relative to it) made absolute
    progress: bool  # progress bars / log lines for the long steps
    draw: int = 0  # a load-time arm's seed index: evaluations that read a fixed list take its next block


@dataclass(frozen=True)
class Evaluation:
    """One evaluation. ``cli`` is its `longmix eval <command>` (typer reads the options from its signature);
    ``spec`` is its section of a suite's `eval:` (under ``key``; ``key=None``: the `eval:` section itself,
    the loss vs context every suite measures), and ``run`` measures one checkpoint for a suite, the entry
    results.json keeps. ``run`` gets the loaded model, or the checkpoint folder when ``on_folder`` (an
    evaluation that loads the model its own way, after the loaded one is freed). No ``run``: CLI only."""

    command: str
    cli: Callable[..., None]
    spec: type[BaseModel] | None = None
    key: str | None = None
    run: Callable[[Any, Any, SuiteRun], dict[str, Any]] | None = None
    on_folder: bool = False


def checkpoint_name(ckpt: Path, taken: set[str]) -> str:
    """A checkpoint's legend name, unique among ``taken`` (which it joins)."""
    name = ckpt.resolve().name
    while name in taken:  # two folders called `final` still get two legend entries
        name = f"{ckpt.resolve().parent.name}/{name}"
    taken.add(name)
    return name


def each_checkpoint(checkpoints: list[Path], run: Callable[[Any, str], dict[str, Any]], **load: Any) -> list[dict]:
    """``run(loaded, name)`` on every checkpoint, one loaded at a time (legend names unique); each result
    records its checkpoint. ``load`` goes to ``load_checkpoint`` (tokenizer, device, dtype, attention...)."""
    from longmix.models.loading import load_checkpoint

    results, taken = [], set()
    for ckpt in checkpoints:
        name = checkpoint_name(ckpt, taken)
        loaded = load_checkpoint(ckpt, **load)
        results.append({**run(loaded, name), "checkpoint": str(ckpt)})
        del loaded
    return results
