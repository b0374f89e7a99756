"""torchrun worker: several training runs, one after another, in the same ranks (one launch instead of one
per run: the family matrix trains nine families twice, and each launch costs ~45 s of imports).

Usage: python -m torch.distributed.run --nproc_per_node 2 family_runs.py PLAN.json

PLAN.json is a list of {"recipe": path, "stop_at_step": int | null}; each entry is the real trainer
(``Trainer(recipe).run(stop_at_step)``), so a second entry with the same recipe resumes from the newest
complete checkpoint the first left, exactly as a rerun of ``longmix train`` does.
"""

from __future__ import annotations

import gc
import json
import sys

from longmix.train.recipe import load_train_recipe
from longmix.train.trainer import Trainer


def main(plan_path: str) -> None:
    for entry in json.loads(open(plan_path).read()):
        trainer = Trainer(load_train_recipe(entry["recipe"]))
        trainer.run(entry.get("stop_at_step"))
        del trainer
        gc.collect()


if __name__ == "__main__":
    main(sys.argv[1])
