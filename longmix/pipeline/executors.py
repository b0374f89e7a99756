"""Executors run tasks: `local` on a process pool, `ray` on a Ray cluster. Same tasks, same outputs."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager
from typing import Any, Protocol

from longmix.core.errors import UserError
from longmix.pipeline.tasks import Task, run_task

log = logging.getLogger("longmix")


class Executor(Protocol):
    workers: int

    def run(self, tasks: list[Task]) -> Iterator[tuple[int, dict[str, Any]]]:
        """Yield (index into tasks, stats) as tasks finish, in any order."""
        ...

    def close(self, interrupted: bool = False) -> None: ...


def _worker_init() -> None:
    # Each worker is one core's worth of work: keep numpy/arrow/polars/numba from oversubscribing.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "POLARS_MAX_THREADS",
                "RAYON_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    # The libraries every stage's tasks use, imported once per worker while the driver checks the recipe.
    import polars  # noqa: F401
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
        self._busy = False  # a task may still be running (a run left early)
        self._workers: list[mp.process.BaseProcess] = []
        if workers > 1:
            before = set(mp.active_children())
            self._pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"),
                                             initializer=_worker_init)
            for _ in range(workers):
                self._pool.submit(_warm)
            # A spawn pool starts all its workers at the first submit: they are this process's new children.
            self._workers = [p for p in mp.active_children() if p not in before]

    def run(self, tasks: list[Task]) -> Iterator[tuple[int, dict[str, Any]]]:
        if self.workers == 1:
            for i in longest_first(tasks):
                yield i, run_task(tasks[i])
            return
        assert self._pool is not None
        pending = {self._pool.submit(run_task, tasks[i]): i for i in longest_first(tasks)}
        self._busy = True
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield pending.pop(fut), fut.result()
        finally:
            for fut in pending:
                fut.cancel()
            self._busy = any(not fut.done() for fut in pending)

    def close(self, interrupted: bool = False) -> None:
        """Stop the workers. Idle ones (every task finished) are ended rather than left to unload their
        libraries one module at a time (0.4 s): they hold no state, as every output is written atomically,
        markers last. On an interrupt (Ctrl-C, SIGTERM from Slurm, Kubernetes or `timeout`) running tasks are
        ended too: a rerun redoes them. With tasks still running after an error elsewhere, they finish first."""
        if self._pool is None:
            return
        if self._busy and not interrupted:
            self._pool.shutdown(cancel_futures=True)
        else:  # futures are left uncancelled: the pool marks them broken, which a cancelled one cannot be
            if interrupted:  # the pool's manager thread reports the workers it sees ended; we are exiting
                import threading

                threading.excepthook = lambda args: None
            for proc in self._workers:
                proc.terminate()
            for proc in self._workers:
                proc.join()
            self._pool.shutdown()
        self._pool, self._workers = None, []


class RayExecutor:
    """Submits the same tasks to Ray, each with the resources its stage declared. `address` (or RAY_ADDRESS)
    joins a running cluster; neither starts a local one with `workers` CPUs."""

    def __init__(self, workers: int, address: str | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise UserError("the ray executor needs Ray: pip install 'longmix[ray]'") from None
        self._ray = ray
        self.workers = workers
        address = address or os.environ.get("RAY_ADDRESS") or None
        if address is not None and not ray.is_initialized():
            _check_reachable(address)
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"address": address, "include_dashboard": False,
                                      "log_to_driver": False, "configure_logging": False}
            if address is None:
                kwargs["num_cpus"] = workers
            try:
                ray.init(**kwargs)
            except ConnectionError as exc:
                raise UserError(f"cannot join the Ray cluster at '{address}': {str(exc).splitlines()[0]}; "
                                f"check --address / RAY_ADDRESS (ray status shows it)") from None
        self.nodes = [n for n in ray.nodes() if n.get("Alive")]
        joined = f"the Ray cluster at {address}" if address else "a local Ray runtime"
        log.info("ray: joined %s: %d node(s), %g CPUs", joined, len(self.nodes),
                 sum(n["Resources"].get("CPU", 0) for n in self.nodes))
        self._remote = ray.remote(run_task)

    def check_fits(self, resources: dict[str, float]) -> None:
        """A task no node can hold would wait forever in Ray's queue: refuse it up front instead."""
        need_cpu, need_mem = resources.get("num_cpus", 1), resources.get("memory", 0)
        if not any(n["Resources"].get("CPU", 0) >= need_cpu and n["Resources"].get("memory", 0) >= need_mem
                   for n in self.nodes):
            biggest = max(self.nodes, key=lambda n: n["Resources"].get("memory", 0))["Resources"]
            raise UserError(
                f"no node of the Ray cluster can run a task needing {need_cpu:g} CPUs and "
                f"{need_mem / 2**30:.1f} GiB (largest node: {biggest.get('CPU', 0):g} CPUs, "
                f"{biggest.get('memory', 0) / 2**30:.1f} GiB); lower executor.resources in the recipe")

    def run(self, tasks: list[Task]) -> Iterator[tuple[int, dict[str, Any]]]:
        ray = self._ray
        for res in {tuple(sorted(t.resources.items())) for t in tasks}:
            self.check_fits(dict(res))
        refs = {}
        for i in longest_first(tasks):
            res = tasks[i].resources
            opts = {"num_cpus": res.get("num_cpus", 1), **({"memory": res["memory"]} if res.get("memory") else {})}
            refs[self._remote.options(**opts).remote(tasks[i])] = i
        try:
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1)
                for ref in done:
                    i = refs.pop(ref)
                    try:
                        yield i, ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        if isinstance(exc, ray.exceptions.RayTaskError):
                            raise exc.as_instanceof_cause() from None  # the task's own error, as raised
                        raise UserError(f"Ray lost task {tasks[i].task_id}: {str(exc).splitlines()[0]}; "
                                        f"finished tasks are kept, run the same command again to resume"
                                        ) from None
        finally:
            for ref in refs:
                ray.cancel(ref)

    def close(self, interrupted: bool = False) -> None:
        pass  # the Ray runtime is shared by the process; shut down by the caller if it started it


def _check_reachable(address: str) -> None:
    """Ray keeps retrying an address nobody answers at for minutes; a plain connect says it in seconds."""
    import socket

    hostport = address.removeprefix("ray://")
    if hostport in ("auto", "local") or ":" not in hostport:
        return
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except (OSError, ValueError) as exc:
        raise UserError(f"no Ray cluster answers at '{address}' ({exc}); check --address / RAY_ADDRESS "
                        f"(`ray status` on the head node prints it)") from None


def make_executor(kind: str, workers: int, ray_address: str | None = None) -> Executor:
    if kind == "local":
        return LocalExecutor(workers)
    if kind == "ray":
        return RayExecutor(workers, ray_address)
    raise UserError(f"unknown executor '{kind}': use local or ray")


@contextmanager
def open_executor(kind: str, workers: int, ray_address: str | None = None) -> Iterator[Executor]:
    """The one owner of an executor's life: started on entry, closed on exit; on Ctrl-C or SIGTERM its
    running tasks are ended too (a rerun redoes them), after any other error they finish first."""
    ex = make_executor(kind, workers, ray_address)
    try:
        yield ex
    except KeyboardInterrupt:
        ex.close(interrupted=True)
        raise
    finally:
        ex.close()
