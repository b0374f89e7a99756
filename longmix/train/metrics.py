"""Per-step metrics: one JSON object per line in ``<run>/metrics.jsonl`` and a console line (rank 0 only).

Console lines are plain text (no markup): this is library code, run on every rank under any launcher."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)  # one line per record, also in a log file


class MetricsLog:
    """Where every record goes: metrics.jsonl (the source of truth, read by `longmix report`), the console, and
    the recipe's experiment trackers."""

    def __init__(self, path: Path, enabled: bool, resume_step: int, trackers: Any = None) -> None:
        self.path, self.enabled, self.trackers = path, enabled, trackers
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
        if self.trackers is not None:
            self.trackers.log(record)
        if console:
            _say(_format(record))

    def warn(self, record: dict[str, Any]) -> None:
        """A warning about a step (a loss spike, a non-finite step): in metrics.jsonl and on the console."""
        if self.enabled:
            self.write(record, console=False)
            _say(f"warning: step {record['step']}: {record['detail']}")

    def info(self, text: str) -> None:
        if self.enabled:
            _say(text)

    def flush(self) -> None:
        if self.trackers is not None:
            self.trackers.flush()

    def close(self) -> None:
        if self.trackers is not None:
            self.trackers.close()


def _format(r: dict[str, Any]) -> str:
    if "eval_loss" in r:
        line = f"step {r['step']:>6}  eval_loss {r['eval_loss']:.4f}  ({r['eval_tokens']:,} tokens, phase {r['phase']})"
        for key, what in (("eval_loss_by_source", "by source"), ("eval_loss_by_bucket", "by document length"),
                          ("eval_loss_by_band", "by position")):
            if r.get(key):
                line += f"\n         {what}: " + "  ".join(f"{k} {v:.4f}" for k, v in r[key].items())
        return line
    mfu = f"  mfu {r['mfu'] * 100:.1f}%" if r.get("mfu") is not None else ""
    gnorm = f"{r['grad_norm']:.3f}" if r.get("grad_norm") is not None else "n/a"
    eta = f"  eta {_clock(r['eta_s'])}" if r.get("eta_s") is not None else ""
    return (f"step {r['step']:>6}/{r['total_steps']}  phase {r['phase']}  loss {r['loss']:.4f}  lr {r['lr']:.2e}  "
            f"gnorm {gnorm}  {r['tokens_per_s']:,.0f} tok/s{mfu}{eta}")


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
