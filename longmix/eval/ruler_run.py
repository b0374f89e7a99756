"""Running RULER prompts through a model: greedy continuations, batched per (task, length) cell."""

from __future__ import annotations

from longmix.eval.probes import greedy
from longmix.eval.ruler import RulerSample
from longmix.models.loading import Loaded
from longmix.pipeline.progress import progress


def generate_all(loaded: Loaded, samples: list[RulerSample], batch_size: int, label: str = "ruler") -> list[str]:
    """One output per sample, in order; prompts of one (task, length) cell batch together."""
    outputs: list[str] = [""] * len(samples)
    with progress(label, len(samples)) as advance:
        i = 0
        while i < len(samples):
            j = i
            while j < len(samples) and j - i < batch_size and samples[j].length == samples[i].length and \
                    samples[j].task == samples[i].task:
                j += 1
            part = samples[i:j]
            for k, out in enumerate(greedy(loaded, [s.prompt for s in part], max(s.max_new_tokens for s in part))):
                outputs[i + k] = out
            advance(len(part))
            i = j
    return outputs
