"""What the data commands' fast exit (`os._exit` after a finished run, longmix/cli/app.py `_exit_now`) saves.

A process that has loaded what a build loads (polars, pyarrow, scipy, numba, tokenizers and the data flow)
exits the normal way (the baseline: every module and thread pool torn down) or through `os._exit`, as the
CLI does after a finished data command. Each exit is timed from the process's last line to its end, as seen
by the parent. Prints both medians and their ratio; the trick is kept only while it saves a visible share.

    .venv/bin/python tests/bench/bench_cli_exit.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

_LOADED = ("import os, sys, time\n"
           "import numba, polars, pyarrow.parquet, scipy.stats, tokenizers\n"
           "import longmix.data.flow\n"
           "print(time.time(), flush=True)\n")


def exit_seconds(fast: bool) -> float:
    code = _LOADED + ("os._exit(0)\n" if fast else "")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    last_line = float(proc.stdout.readline())
    proc.wait()
    return time.time() - last_line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    normal, fast = [], []
    for _ in range(args.repeat):  # interleaved, so a busy moment of the machine hits both alike
        normal.append(exit_seconds(fast=False))
        fast.append(exit_seconds(fast=True))
    n, f = statistics.median(normal), statistics.median(fast)
    print(f"normal exit (baseline): median {n:.3f} s  (min {min(normal):.3f}, max {max(normal):.3f})")
    print(f"os._exit:               median {f:.3f} s  (min {min(fast):.3f}, max {max(fast):.3f})")
    print(f"saved per command: {n - f:.3f} s; fast / normal = {f / n:.3f}")


if __name__ == "__main__":
    main()
