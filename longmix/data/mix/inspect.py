"""`longmix inspect`: the mix table of a manifest and its summary as plain rows and lines (the CLI renders them),
and PNG plots (matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from longmix.formats.ipc import read_ipc
from longmix.formats.manifest import Manifest
from longmix.formats.packed_shards import open_shard

MIX_COLUMNS = ["source", "bucket", "available", "docs", "target", "achieved", "used docs", "epochs"]


def mix_rows(manifest: Manifest) -> tuple[str, list[list[str]]]:
    """The mix table's title and rows (columns: MIX_COLUMNS), formatted."""
    mix = manifest.mix
    rows = [[c["source"], c["bucket"], f"{c['available_tokens']:,}", f"{c['available_docs']:,}",
             f"{c['target_tokens']:,}", f"{c['achieved_tokens']:,}", f"{c['used_docs']:,}", f"{c['epochs']:.2f}"]
            for c in mix["cells"]]
    return f"mix: {mix['achieved_tokens']:,} of {mix['target_tokens']:,} target tokens", rows


def summary_lines(manifest: Manifest) -> list[str]:
    t, p = manifest.totals, manifest.packing
    lines = [f"{t.sequences:,} sequences of {manifest.seq_len:,} tokens in {len(manifest.shards)} shards: "
             f"{t.tokens:,} tokens, {t.padding:,} padding ({p['padding_share']:.2%}), packing {p['strategy']}, "
             f"{p['docs_split']:,} documents split, {p['docs_truncated']:,} truncated"]
    for ls in manifest.mix.get("long_share", []):
        target = "natural" if ls["target"] is None else f"{ls['target']:.1%}"
        lines.append(f"long-document share of {ls['source']}: {ls['achieved']:.1%} (target {target})")
    return lines


def shortfall_lines(manifest: Manifest) -> list[str]:
    """One warning line per target the mix could not meet."""
    return [f"SHORTFALL {sf['message']}" for sf in manifest.mix.get("shortfalls", [])]


def _lengths_plot(plan: dict[str, np.ndarray], manifest: Manifest, path: Path) -> None:
    """Token-weighted document-length histogram per source, before vs after the mix."""
    n = len(manifest.sources)
    fig, axes = plt.subplots(1, n, figsize=(4.5 * n, 3.6), squeeze=False)
    lens = plan["n_tokens"].astype(np.float64)
    top = max(lens.max() if len(lens) else 1, 2)
    bins = np.logspace(0, np.log10(top) + 0.01, 40)
    for i, (ax, name) in enumerate(zip(axes[0], manifest.sources, strict=True)):
        mine = plan["source"] == i
        ax.hist(lens[mine], bins=bins, weights=lens[mine], alpha=0.5, label="corpus")
        ax.hist(lens[mine], bins=bins, weights=lens[mine] * plan["count"][mine], histtype="step", lw=2,
                label="mix")
        ax.set_xscale("log")
        ax.set_title(name)
        ax.set_xlabel("document length (tokens)")
        for edge in _edges(manifest):
            ax.axvline(edge, color="grey", ls=":", lw=1)
    axes[0][0].set_ylabel("tokens")
    axes[0][0].legend()
    fig.suptitle("token-weighted document lengths, before vs after the mix")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _edges(manifest: Manifest) -> list[int]:
    out = []
    for b in manifest.mix["buckets"]:
        digits = "".join(ch for ch in b if ch.isdigit())
        if b.startswith("<") and digits:
            out.append(int(digits))
    return out


def _targets_plot(manifest: Manifest, path: Path) -> None:
    cells = manifest.mix["cells"]
    labels = [f"{c['source']}\n{c['bucket']}" for c in cells]
    x = np.arange(len(cells))
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(cells)), 4))
    ax.bar(x - 0.2, [c["available_tokens"] for c in cells], 0.2, label="available", color="#bbbbbb")
    ax.bar(x, [c["target_tokens"] for c in cells], 0.2, label="target")
    ax.bar(x + 0.2, [c["achieved_tokens"] for c in cells], 0.2, label="achieved")
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("tokens (log)")
    ax.set_title("tokens per source x length bucket")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _packing_plot(manifest: Manifest, base: Path, path: Path) -> None:
    pads, segs = [], []
    for entry in manifest.shards:
        t = open_shard(base / entry.path)
        pads.append(t.column("pad").to_numpy())
        n = np.diff(t.column("doc_lens").combine_chunks().offsets.to_numpy())
        segs.append(n - (t.column("pad").to_numpy() > 0))
    pad = np.concatenate(pads) if pads else np.zeros(0)
    seg = np.concatenate(segs) if segs else np.zeros(0)
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6))
    a.hist(pad / manifest.seq_len, bins=40, log=True)
    a.set_xlabel("padding share of the row")
    a.set_ylabel("rows (log)")
    a.set_title(f"packing waste ({manifest.packing['padding_share']:.2%} overall)")
    b.hist(seg, bins=np.arange(0, max(seg.max() if len(seg) else 1, 1) + 2) - 0.5)
    b.set_xlabel("documents (segments) per row")
    b.set_title(f"{manifest.packing['strategy']}: {manifest.packing['docs_split']:,} docs split")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_plots(manifest: Manifest, manifest_path: Path, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    plan_path = manifest_path.parent / "mix" / "plan.arrow"
    if plan_path.is_file():
        t = read_ipc(plan_path)
        plan: dict[str, Any] = {k: t.column(k).to_numpy() for k in ("source", "n_tokens", "count")}
        written.append(out / "lengths_before_after.png")
        _lengths_plot(plan, manifest, written[-1])
    written.append(out / "tokens_per_bucket.png")
    _targets_plot(manifest, written[-1])
    written.append(out / "packing.png")
    _packing_plot(manifest, manifest_path.parent, written[-1])
    return written
