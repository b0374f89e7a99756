"""Export throughput: `longmix export-data` to each format (MDS, Megatron, HF datasets, OLMo) in tokens/s,
against a plain copy of the mix's Arrow shards (the baseline: the floor any export pays to read and write the
same tokens), same machine, same process, one after the other; the median of --repeat runs each.

    .venv/bin/python tests/bench/bench_export.py [--manifest build/demo/out/manifest.json] [--repeat 3]

Needs a built mix (`make demo`, or the `longmix build` lines of the Makefile).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from longmix.formats.export.run import FORMATS, export_mix
from longmix.formats.manifest import verify_manifest

REPO = Path(__file__).resolve().parents[2]


def timed(fn) -> float:  # noqa: ANN001
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--manifest", type=Path, default=REPO / "build" / "demo" / "out" / "manifest.json")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    m = verify_manifest(args.manifest)
    tokens = m.totals.tokens
    with tempfile.TemporaryDirectory() as tmp:
        def copy(k: int) -> None:
            dst = Path(tmp) / f"copy{k}"
            dst.mkdir()
            for entry in m.shards:
                shutil.copyfile(args.manifest.parent / entry.path, dst / Path(entry.path).name)

        base = statistics.median(timed(lambda k=k: copy(k)) for k in range(args.repeat))
        print(f"mix: {args.manifest} ({len(m.shards)} shards, {tokens:,} tokens, seq_len {m.seq_len})")
        print(f"| format | tokens/s | ratio to the plain Arrow copy ({tokens / base:,.0f} tokens/s) |")
        print("|---|---|---|")
        for fmt in FORMATS:
            runs = [timed(lambda k=k, fmt=fmt: export_mix(args.manifest, m, fmt, str(Path(tmp) / f"{fmt}{k}")))
                    for k in range(args.repeat)]
            secs = statistics.median(runs)
            print(f"| {fmt} | {tokens / secs:,.0f} | {base / secs:.3f} |")


if __name__ == "__main__":
    main()
