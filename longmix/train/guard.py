"""The divergence guard: what a step's loss and gradient norm say about the run, decided the same on every rank.

Both numbers are global (the loss is all-reduced, the norm is ZeRO's global norm), so every rank reaches the
same verdict at the same step and they stop together. Pure: no torch, no I/O, testable on a list of numbers.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass, field

from longmix.core.errors import UserError


class Diverged(UserError):
    """The run stopped itself: its loss or weights are no longer finite. Not a recipe mistake, yet the user's to
    act on (a lower learning rate, a resume from the last finite checkpoint)."""

    exit_code = 3


@dataclass(frozen=True)
class Verdict:
    bad: bool  # the loss or the gradient norm is not finite: the step says nothing good about the weights
    stop: bool  # max_bad_steps bad steps in a row: the run has diverged
    spike: str | None = None  # a finite loss far above its recent median: worth a warning, not a stop


@dataclass
class DivergenceGuard:
    max_bad_steps: int
    spike_factor: float
    spike_window: int
    bad_in_a_row: int = 0
    first_bad_step: int | None = None  # kept across resumes: the checkpoint before it is never rotated out
    _recent: deque[float] = field(default_factory=deque)

    def observe(self, step: int, loss: float, grad_norm: float | None) -> Verdict:
        if not math.isfinite(loss) or (grad_norm is not None and not math.isfinite(grad_norm)):
            self.bad_in_a_row += 1
            if self.first_bad_step is None:
                self.first_bad_step = step
            return Verdict(bad=True, stop=self.bad_in_a_row >= self.max_bad_steps)
        self.bad_in_a_row = 0
        spike = None
        if len(self._recent) >= min(self.spike_window, 10):  # a median of a handful of steps says little
            median = statistics.median(self._recent)
            if median > 0 and loss > self.spike_factor * median:
                spike = f"loss {loss:.4g} is {loss / median:.1f}x the median {median:.4g} of the last " \
                        f"{len(self._recent)} steps"
        self._recent.append(loss)
        if len(self._recent) > self.spike_window:
            self._recent.popleft()
        return Verdict(bad=False, stop=False, spike=spike)


def describe(loss: float, grad_norm: float | None) -> str:
    norm = "n/a" if grad_norm is None else f"{grad_norm:.4g}"
    return f"loss {loss:.4g}, grad norm {norm}"
