"""The stage report: the engine's record of a finished stage (its `report.json`) and the contract between stages.

Three parts, each with one owner: the counts (in/kept/dropped/quarantined, bytes, per source), merged by the
engine from the stage's counted tasks (or given by a stage without tasks); the declared outputs (the files
the stage wrote, in order, and its quarantine files); and the extras the stage's `run` adds (its own findings,
e.g. the mix's plan report). Extras may not reuse a key the engine owns: a stage that returned `"in"` would
otherwise overwrite the counts silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Report keys of the counts, in the order report.json holds them.
COUNT_KEYS = ("in", "kept", "dropped", "quarantined", "bytes_in", "bytes_out", "sources")
# Every key the engine writes itself; a stage's extras may use any other.
ENGINE_KEYS = frozenset(("stage", *COUNT_KEYS, "outputs", "quarantine_files", "settings_hash", "nodes", "seconds"))


@dataclass(frozen=True)
class StageReport:
    """One stage's report. `to_json()` is report.json's content; `from_json` reads it back."""

    stage: str
    counts: dict[str, Any]
    outputs: list[dict[str, Any]]
    quarantine_files: list[str]
    settings_hash: str
    extras: dict[str, Any] = field(default_factory=dict)
    nodes: dict[str, int] | None = None  # where the tasks ran (absent for a stage without tasks)
    seconds: float | None = None

    def __post_init__(self) -> None:
        clash = sorted(ENGINE_KEYS & set(self.extras))
        if clash:  # a bug in the stage, never the recipe's fault
            raise ValueError(f"stage {self.stage}: its extras reuse report keys the engine owns: {', '.join(clash)}")
        missing = [k for k in COUNT_KEYS if k not in self.counts]
        if missing or set(self.counts) - set(COUNT_KEYS):
            raise ValueError(f"stage {self.stage}: counts must hold exactly {', '.join(COUNT_KEYS)}; "
                             f"got {', '.join(self.counts)}")

    @classmethod
    def from_merged(cls, stage: str, merged: dict[str, Any], extras: dict[str, Any], settings_hash: str,
                    nodes: dict[str, int] | None = None) -> StageReport:
        """From `stats.merge`'s result (counts + outputs + quarantine files) and the stage's extras."""
        return cls(stage=stage, counts={k: merged[k] for k in COUNT_KEYS}, outputs=merged["outputs"],
                   quarantine_files=merged["quarantine_files"], settings_hash=settings_hash, extras=extras,
                   nodes=nodes)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StageReport:
        """A report.json read back: the engine's keys to their fields, every other key an extra."""
        return cls(stage=data["stage"], counts={k: data[k] for k in COUNT_KEYS}, outputs=data["outputs"],
                   quarantine_files=data.get("quarantine_files", []), settings_hash=data["settings_hash"],
                   extras={k: v for k, v in data.items() if k not in ENGINE_KEYS}, nodes=data.get("nodes"),
                   seconds=data.get("seconds"))

    def to_json(self) -> dict[str, Any]:
        out = {"stage": self.stage, **self.counts, "outputs": self.outputs, "quarantine_files": self.quarantine_files,
               **self.extras, "settings_hash": self.settings_hash}
        if self.nodes is not None:
            out["nodes"] = self.nodes
        if self.seconds is not None:
            out["seconds"] = self.seconds
        return out

    def __getitem__(self, key: str) -> Any:
        """A count by name (`report["kept"]`); extras are read through `extra`, outputs through StageOutput."""
        if key not in self.counts:
            raise KeyError(f"{key!r} is not a count of the stage report; extras: report.extra({key!r})")
        return self.counts[key]

    def extra(self, key: str) -> Any:
        """One of the extras the stage's `run` returned (KeyError naming the stage if it did not)."""
        if key not in self.extras:
            raise KeyError(f"stage {self.stage}'s report has no {key!r}; it has {', '.join(self.extras) or 'none'}")
        return self.extras[key]
