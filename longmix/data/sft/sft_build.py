"""`longmix sft-pack`: chat sources, weighted and tokenized with the model's chat template, packed into SFT shards.

The output folder holds ``shard-XXXXX.arrow`` (with a loss_mask column), ``manifest.json`` (an SFT manifest:
``longmix verify`` checks it, ``longmix train`` trains on it), the model's ``tokenizer.json`` (+ its config),
``chat_template.jinja`` (the template the masks were made with; the manifest records its sha256) and
``report.json`` (examples read, used, kept and dropped by reason, per source; the counts reconcile).

Weights: a source's weight is the expected number of times each of its examples is used. The integer part
repeats every example that many times; the fractional part f adds one more use to round(f * n) of its n examples,
drawn without replacement with the seed (0.5 = a seeded half, 1.5 = all once and a seeded half twice). This is how
the paper upsamples its long-QA data against a short instruction set. All uses are then put in one seeded order.

Everything that can be wrong with the recipe or the data is found before any tokenization; same recipe and
seed, same bytes (the manifest's creation time aside).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from longmix.core.atomic import atomic_path, write_json
from longmix.data.sft.chat import ChatExample, chat_files, read_chat_files
from longmix.data.sft.sft_pack import SftExample, SftPackStats, layout_name, pack_sft
from longmix.data.sft.sft_settings import SftRecipe
from longmix.data.sft.template import (
    TEMPLATE_FILE,
    ChatTemplate,
    encode_chats,
    load_chat_template,
)
from longmix.formats.manifest import (
    Manifest,
    SftInfo,
    make_lineage,
    shard_entries,
    tokenizer_entry,
    totals_from,
    write_manifest,
)
from longmix.formats.packed_shards import SHARD_SUFFIX, write_shards
from longmix.formats.tokenizer_files import own_settings
from longmix.pipeline.progress import progress

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
REPORT = "report.json"
DROP_REASONS = ("max_examples", "too_long", "empty_after_template")


@dataclass
class SourceCounts:
    weight: float
    read: int = 0  # examples in the source's files
    used: int = 0  # uses after weighting (repeats counted)
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    tokens: int = 0
    loss_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"weight": self.weight, "examples_read": self.read, "uses": self.used, "kept": self.kept,
                "dropped": dict(self.dropped), "achieved_weight": self.kept / self.read if self.read else 0.0,
                "tokens": self.tokens, "loss_tokens": self.loss_tokens}


def weighted_uses(n: int, weight: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of a source's examples, each repeated int(weight) times plus one more use for a seeded
    round(frac(weight) * n) of them (sorted: the global order is drawn afterwards)."""
    whole = int(np.floor(weight))
    extra = int(round((weight - whole) * n))
    picked = np.sort(rng.permutation(n)[:extra])
    return np.concatenate([np.tile(np.arange(n, dtype=np.int64), whole), picked]).astype(np.int64)


def plan_uses(recipe: SftRecipe, per_source: list[list[ChatExample]], counts: list[SourceCounts]
              ) -> list[tuple[int, int]]:
    """(source, example) uses in the seeded training order, cut to max_examples."""
    uses = []
    for s, examples in enumerate(per_source):
        idx = weighted_uses(len(examples), recipe.sources[s].weight, np.random.default_rng([recipe.seed, s, 0x5357]))
        counts[s].used = len(idx)
        uses.extend((s, int(i)) for i in idx.tolist())
    order = np.random.default_rng([recipe.seed, 0x4F52]).permutation(len(uses))
    ordered = [uses[i] for i in order.tolist()]
    if recipe.max_examples is not None and len(ordered) > recipe.max_examples:
        for s, _ in ordered[recipe.max_examples:]:
            counts[s].dropped["max_examples"] += 1
        ordered = ordered[: recipe.max_examples]
    return ordered


def check_sft(recipe: SftRecipe) -> tuple[list[list[Path]], ChatTemplate, list[list[ChatExample]]]:
    """Everything that can be wrong before tokenization (files, the model's chat template, every data line), as
    one-line errors; returns what it read: each source's files, the template and each source's examples."""
    files = [chat_files(src.paths, Path(recipe.base_dir) if recipe.base_dir else None) for src in recipe.sources]
    tpl = load_chat_template(recipe.resolve(recipe.model))
    per_source = [read_chat_files(f, src.name) for f, src in zip(files, recipe.sources, strict=True)]
    return files, tpl, per_source


def build_sft(recipe: SftRecipe) -> dict[str, Any]:
    """Write the SFT shards, manifest and report of ``recipe``; returns the report."""
    model = recipe.resolve(recipe.model)
    files, tpl, per_source = check_sft(recipe)
    counts = [SourceCounts(src.weight, read=len(ex)) for src, ex in zip(recipe.sources, per_source, strict=True)]
    ordered = plan_uses(recipe, per_source, counts)

    t0 = time.perf_counter()
    unique = sorted(set(ordered))
    encoded = {}
    with progress("sft-pack: tokenize", len(unique)) as advance:
        for lo in range(0, len(unique), 256):
            chunk = unique[lo: lo + 256]
            for key, enc in zip(chunk, encode_chats(tpl, [per_source[s][i].messages for s, i in chunk],
                                                    recipe.loss_mode), strict=True):
                encoded[key] = enc
            advance(len(chunk))
    t_tok = time.perf_counter() - t0

    examples = []
    for s, i in ordered:
        enc = encoded[s, i]
        if len(enc.ids) > recipe.seq_len:
            counts[s].dropped["too_long"] += 1
        elif not enc.loss_mask[1:].any():
            counts[s].dropped["empty_after_template"] += 1
        else:
            counts[s].kept += 1
            counts[s].tokens += len(enc.ids)
            counts[s].loss_tokens += int(enc.loss_mask[1:].sum())
            examples.append(SftExample(enc.ids, enc.loss_mask, s))

    out = recipe.resolve(recipe.output)
    out.mkdir(parents=True, exist_ok=True)
    own = own_settings(model / "tokenizer.json")
    tok_entry = tokenizer_entry(model / "tokenizer.json", out, own.bos_token or "<s>", own.eos_token or "</s>",
                                own.pad_token or "<pad>")
    t1 = time.perf_counter()
    layout = layout_name(recipe.packing.long, recipe.packing.long_threshold)
    stats = SftPackStats(recipe.seq_len, layout)
    rows = pack_sft(examples, recipe.seq_len, pad_id=tok_entry.pad_id, seed=recipe.seed, long=recipe.packing.long,
                    long_threshold=recipe.packing.long_threshold, stats=stats)
    t_pack = time.perf_counter() - t1
    if len(rows) == 0:
        from longmix.core.errors import UserError

        raise UserError(f"no example fits seq_len {recipe.seq_len} with a token to learn; nothing written "
                        f"(dropped: {_dropped_total(counts)})")
    shards = write_shards([rows], out, recipe.seq_len, recipe.rows_per_shard, prefix="shard")
    written = {Path(s.path).name for s in shards}
    for stale in out.glob(f"shard-*{SHARD_SUFFIX}"):
        if stale.name not in written:
            stale.unlink()
    with atomic_path(out / TEMPLATE_FILE) as tmp:
        tmp.write_bytes(tpl.template_bytes())

    names = [s.name for s in recipe.sources]
    sft = SftInfo(loss_mode=recipe.loss_mode, template=TEMPLATE_FILE, template_sha256=tpl.sha256, packing=layout,
                  examples=stats.examples, loss_tokens=stats.loss_tokens)
    inputs = {str(f): f"{f.stat().st_size} bytes, mtime_ns {f.stat().st_mtime_ns}" for fs in files for f in fs}
    manifest = Manifest(
        seq_len=recipe.seq_len, tokenizer=tok_entry, sources=names, shards=shard_entries(shards, out),
        totals=totals_from(shards, 0), packing=stats.to_dict(),
        mix={n: c.to_dict() for n, c in zip(names, counts, strict=True)},
        lineage=make_lineage(recipe.model_dump(mode="json"), inputs, recipe.seed), sft=sft)
    write_manifest(manifest, out / MANIFEST)
    report = make_report(recipe, names, counts, stats)
    write_json(out / REPORT, report)
    log.info("sft-pack: %d examples (%d dropped) into %d rows of %d tokens, padding %.1f%%, %d loss tokens "
             "(%s); tokenize %.1f s, pack %.2f s -> %s", stats.examples, sum(_dropped_total(counts).values()),
             stats.rows, recipe.seq_len, 100 * stats.padding_share, stats.loss_tokens, recipe.loss_mode, t_tok,
             t_pack, out / MANIFEST)
    return report


def _dropped_total(counts: list[SourceCounts]) -> dict[str, int]:
    return {r: sum(c.dropped[r] for c in counts) for r in DROP_REASONS}


def make_report(recipe: SftRecipe, names: list[str], counts: list[SourceCounts], stats: SftPackStats
                ) -> dict[str, Any]:
    """Examples read, used, kept and dropped by reason (overall and per source): uses = kept + dropped."""
    dropped = _dropped_total(counts)
    kept = sum(c.kept for c in counts)
    assert kept == stats.examples and sum(c.used for c in counts) == kept + sum(dropped.values())
    return {"seq_len": recipe.seq_len, "loss_mode": recipe.loss_mode, "seed": recipe.seed,
            "examples_read": sum(c.read for c in counts), "uses": sum(c.used for c in counts), "kept": kept,
            "dropped": dropped, "rows": stats.rows, "padding_share": stats.padding_share,
            "loss_tokens": stats.loss_tokens, "sources": {n: c.to_dict() for n, c in zip(names, counts, strict=True)}}
