"""What a built mix holds: per source, the tokens it will train on (documents x their repeat count), the share
from documents of at least --long tokens, and the share from documents whose id starts with --prefix (the
data-mix ablation's low-quality documents are `lowq-...`).

    python tests/tools/mix_composition.py build/ablations/suites/data-mix/data/mix-*/manifest.json
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import pyarrow.ipc as ipc


def composition(manifest: Path, prefix: str, long_min: int) -> dict:
    folder = manifest.parent
    mix = json.loads((folder / "mix" / "report.json").read_text())
    tok = json.loads((folder / "tokenize" / "report.json").read_text())
    shards = [folder / "tokenize" / o["path"] for o in tok["outputs"]]
    plan = ipc.open_file(folder / "mix" / "plan.arrow").read_all().to_pydict()
    ids: dict[int, list[str]] = {}
    out: dict[str, dict[str, float]] = defaultdict(lambda: {"tokens": 0, "long": 0, "prefixed": 0})
    names = mix["mix"]["sources"] if isinstance(mix["mix"].get("sources"), list) else sorted(mix["sources"])
    for shard, row, src, n, count in zip(plan["shard"], plan["row"], plan["source"], plan["n_tokens"],
                                         plan["count"], strict=True):
        if not count:
            continue
        if shard not in ids:
            ids[shard] = ipc.open_file(shards[shard]).read_all().column("id").to_pylist()
        c = out[names[src]]
        c["tokens"] += n * count
        c["long"] += n * count if n >= long_min else 0
        c["prefixed"] += n * count if str(ids[shard][row]).startswith(prefix) else 0
    total = {k: sum(c[k] for c in out.values()) for k in ("tokens", "long", "prefixed")}
    return {"sources": dict(out), "total": total}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("manifests", nargs="+", type=Path)
    ap.add_argument("--prefix", default="lowq-")
    ap.add_argument("--long", type=int, default=1024)
    a = ap.parse_args()
    for m in a.manifests:
        c = composition(m, a.prefix, a.long)
        t = c["total"]
        rec = json.loads(m.read_text())["lineage"]["recipe"]
        print(f"{rec['name']}: {t['tokens']:,} tokens, long {t['long'] / t['tokens']:.1%}, "
              f"'{a.prefix}' {t['prefixed'] / t['tokens']:.1%} ({m.parent.name}); " +
              "; ".join(f"{s} {v['tokens']:,} (long {v['long'] / max(v['tokens'], 1):.0%}, "
                        f"'{a.prefix}' {v['prefixed'] / max(v['tokens'], 1):.0%})" for s, v in c["sources"].items()))


if __name__ == "__main__":
    main()
