"""Train several recipes one after another inside ONE launch (`python -m longmix.ablate.worker JOBS.json`
under torchrun): start-up (DeepSpeed import, process group, op builds) is paid once per suite, not once
per arm, which is most of the time of a quick suite on CPU. Exports happen afterwards in the runner: here
the trainer's ZeRO-3 context is still live and would build the exported model on the meta device."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(jobs_path: str) -> None:
    import torch.distributed as dist

    from longmix.train.recipe import load_train_recipe
    from longmix.train.trainer import end_rank, train

    for job in json.loads(Path(jobs_path).read_text()):
        rec = load_train_recipe(job["recipe"])
        train(rec)
        dist.barrier()
    end_rank()


if __name__ == "__main__":
    main(sys.argv[1])
