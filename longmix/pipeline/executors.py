"""Executors run tasks: `local` on a process pool, `ray` on a Ray cluster. Same tasks, same outputs."""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Protocol

from longmix.core.errors import UserError
from longmix.pipeline.tasks import Task, run_task


class Executor(Protocol):
    workers: int

    def run(self, tasks: list[Task]) -> Iterator[tuple[int, dict[str, Any]]]:
        """Yield (index into tasks, stats) as tasks finish, in any order."""
        ...

    def close(self) -> None: ...


def _worker_init() -> None:
    # Each worker is one core's worth of work: keep numpy/arrow/polars from oversubscribing.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "POLARS_MAX_THREADS",
                "RAYON_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    # The libraries every stage's tasks use, imported once per worker while the driver checks the recipe.
    import pyarrow.parquet  # noqa: F401
    import tokenizers  # noqa: F401


def _warm() -> None:
    """A no-op task: submitting one per worker starts the pool now instead of inside the first stage."""


def longest_first(tasks: list[Task]) -> list[int]:
    """Task indices by decreasing cost (stable): the biggest tasks start first, so no worker is left with a
    big one at the end while the others idle (LPT scheduling). Output does not depend on the order."""
    return sorted(range(len(tasks)), key=lambda i: -tasks[i].cost)


class LocalExecutor:
    """A spawn-based process pool (fork is unsafe once polars/arrow thread pools exist)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        if workers > 1:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"),
                                             initializer=_worker_init)
            for _ in range(workers):
                self._pool.submit(_warm)

    def run(self, tasks: list[Task]) -> Iterator[tuple[int, dict[str, Any]]]:
        if self.workers == 1:
            for i in longest_first(tasks):
                yield i, run_task(tasks[i])
            return
        assert self._pool is not None
        pending = {self._pool.submit(run_task, tasks[i]): i for i in longest_first(tasks)}
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield pending.pop(fut), fut.result()
        finally:
            for fut in pending:
                fut.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


class RayExecutor:
    """Submits the same tasks to Ray: `ray.init(address)` joins a cluster; no address starts a local one."""

    def __init__(self, workers: int, address: str | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise UserError("the ray executor needs Ray: pip install 'longmix[ray]'") from None
        self._ray = ray
        self.workers = workers
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"address": address, "include_dashboard": False,
                                      "log_to_driver": False, "configure_logging": False}
            if address is None:
                kwargs["num_cpus"] = workers
            ray.init(**kwargs)
        self._remote = ray.remote(num_cpus=1)(run_task)

    def run(self, tasks: list[Task]) -> Iterator[tuple[int, dict[str, Any]]]:
        ray = self._ray
        refs = {self._remote.remote(tasks[i]): i for i in longest_first(tasks)}
        try:
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1)
                for ref in done:
                    yield refs.pop(ref), ray.get(ref)
        finally:
            for ref in refs:
                ray.cancel(ref)

    def close(self) -> None:
        pass  # the Ray runtime is shared by the process; shut down by the caller if it started it


def make_executor(kind: str, workers: int, ray_address: str | None = None) -> Executor:
    if kind == "local":
        return LocalExecutor(workers)
    if kind == "ray":
        return RayExecutor(workers, ray_address)
    raise UserError(f"unknown executor '{kind}': use local or ray")
