"""A hand-off to lm-evaluation-harness for the standard benchmarks (MMLU, HellaSwag, ARC ...) and the long
tasks it ships: its HF backend runs on an exported checkpoint, and its results come back as longmix's eval
JSON (one metric table per task, with standard errors), so short-task retention sits beside the
long-context numbers in reports and ablation suites, as the paper reports it.

lm-eval downloads most task data from the Hugging Face Hub. Offline, the tasks that run are those whose data
is local: a task YAML of your own over a local JSONL (`include_path`), or a Hub dataset already in the HF
cache (with HF_DATASETS_OFFLINE=1). Task code named by a task YAML (`!function`) runs: only the include paths
the user names are read.
"""

from __future__ import annotations

import difflib
import math
import os
from pathlib import Path
from typing import Any

from longmix.core.errors import UserError


def _task_manager(include_path: list[Path] | None) -> Any:
    try:
        from lm_eval.tasks import TaskManager
    except ModuleNotFoundError:
        raise UserError("the harness hand-off needs lm-evaluation-harness: pip install 'lm_eval[ruler]'") from None
    for p in include_path or []:
        if not Path(p).is_dir():
            raise UserError(f"--include-path {p} is not a folder of task YAML files")
    return TaskManager(include_path=[str(p) for p in include_path] if include_path else None)


def check_tasks(tasks: list[str], include_path: list[Path] | None = None) -> Any:
    """Every task name known to lm-eval (its own, or from the include paths): a typo is one line, before any
    model loads."""
    if not tasks:
        raise UserError("name at least one lm-eval task (--tasks)")
    manager = _task_manager(include_path)
    known = set(manager.all_tasks)
    for name in tasks:
        if name not in known:
            near = difflib.get_close_matches(name, sorted(known), n=3)
            raise UserError(f"lm-eval knows no task '{name}'" + (f"; did you mean {', '.join(near)}?" if near else
                                                                   "; list them with `lm_eval --tasks list`"))
    return manager


def run_harness(checkpoint: Path, tasks: list[str], *, include_path: list[Path] | None = None,
                limit: int | None = None, num_fewshot: int | None = None, batch_size: int = 1,
                device: str = "cpu", dtype: str = "float32", seed: int = 0,
                trust_remote_code: bool = False) -> dict[str, Any]:
    """lm-eval's results for one HF checkpoint folder: per task its metrics, their standard errors and the
    number of documents scored."""
    manager = check_tasks(tasks, include_path)
    import lm_eval

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    res = lm_eval.simple_evaluate(
        model="hf", model_args={"pretrained": str(checkpoint), "dtype": dtype, "device": device,
                                "trust_remote_code": trust_remote_code},
        tasks=tasks, num_fewshot=num_fewshot, limit=limit, batch_size=batch_size, task_manager=manager,
        random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed,
        log_samples=False)
    out: dict[str, Any] = {}
    for task, metrics in res["results"].items():
        values, errors = {}, {}
        for key, value in metrics.items():
            if not isinstance(value, (int, float)) or "," not in key:
                continue
            name, kind = key.split(",", 1)
            if value == -1 and metrics.get(f"{name}_stderr,{kind}") == "N/A":
                continue  # lm-eval's RULER tasks list every default length, -1 where none ran
            if name.endswith("_stderr"):
                errors[name[:-len("_stderr")]] = float(value)
            elif not (isinstance(value, float) and math.isnan(value)):
                values[name] = float(value)
        out[task] = {"metrics": values, "stderr": errors,
                     "n": int(res.get("n-samples", {}).get(task, {}).get("effective", 0))}
    return {"checkpoint": str(checkpoint), "tasks": out, "lm_eval_version": lm_eval.__version__,
            "limit": limit, "num_fewshot": num_fewshot, "seed": seed}
