"""Per-step metrics: one JSON object per line in ``<run>/metrics.jsonl`` and a console line (rank 0 only)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console


class MetricsLog:
    def __init__(self, path: Path, enabled: bool, resume_step: int) -> None:
        self.path, self.enabled = path, enabled
        self.console = Console(stderr=True)
        if enabled:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._truncate_after(resume_step)

    def _truncate_after(self, step: int) -> None:
        """Drop records past the resumed step: they came from work lost after the last checkpoint,
        and the resumed run logs those steps again."""
        if not self.path.is_file():
            return
        keep = [ln for ln in self.path.read_text().splitlines() if ln and json.loads(ln).get("step", 0) <= step]
        self.path.write_text("".join(ln + "\n" for ln in keep))

    def write(self, record: dict[str, Any], console: bool = True) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as fh:  # json writes floats with repr: they read back bit-exact
            fh.write(json.dumps(record) + "\n")
        if console:
            self.console.print(_format(record), highlight=False)

    def info(self, text: str) -> None:
        if self.enabled:
            self.console.print(text, highlight=False)


def _format(r: dict[str, Any]) -> str:
    if "eval_loss" in r:
        return f"step {r['step']:>6}  eval_loss {r['eval_loss']:.4f}  ({r['eval_tokens']:,} tokens, phase {r['phase']})"
    mfu = f"  mfu {r['mfu'] * 100:.1f}%" if r.get("mfu") is not None else ""
    return (f"step {r['step']:>6}/{r['total_steps']}  phase {r['phase']}  loss {r['loss']:.4f}  lr {r['lr']:.2e}  "
            f"gnorm {r['grad_norm']:.3f}  {r['tokens_per_s']:,.0f} tok/s{mfu}")
