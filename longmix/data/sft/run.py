"""The `longmix sft-data` run: inputs checked (all before the model loads), documents split into shards of
``docs_per_shard``, each shard generated and written atomically as ``shards/part-XXXXX.jsonl`` with its counts
(``part-XXXXX.counts.json``, written last: a shard is finished when its counts exist), a rerun skipping finished
shards, then ``longqa.jsonl`` and ``heldout.jsonl`` (the shards' records in shard order, split by document) and
``report.json``. The same settings give the same bytes, resumed or not."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longmix.core.atomic import atomic_path, remove_stale_temps, write_json
from longmix.core.errors import UserError
from longmix.core.recipe_io import settings_hash
from longmix.data.sft.longqa import Document, is_heldout, read_documents
from longmix.data.sft.settings import SftDataSettings
from longmix.data.sft.shard import Prompter, add_counts, empty_counts, run_shard
from longmix.models.chat_template import ChatTemplate, load_chat_template

log = logging.getLogger("longmix")


@dataclass
class Plan:
    settings: SftDataSettings
    docs: list[Document]
    template: ChatTemplate
    tokenizer: Any
    config_sha256: str
    settings_hash: str

    @property
    def shards(self) -> list[list[Document]]:
        n = self.settings.docs_per_shard
        return [self.docs[i:i + n] for i in range(0, len(self.docs), n)]


def shard_paths(out: Path, k: int) -> tuple[Path, Path]:
    return out / "shards" / f"part-{k:05d}.jsonl", out / "shards" / f"part-{k:05d}.counts.json"


def prepare(settings: SftDataSettings) -> Plan:
    """Everything that can be wrong with the input, found before the model loads: the generator folder (config,
    tokenizer, chat template, its own code), the ranges, the documents (none, an empty one), an output folder of
    other settings."""
    from longmix.formats.tokenizer_files import load_tokenizer
    from longmix.models.remote_code import check_custom_code

    gen = settings.generator
    config_path = gen / "config.json"
    if not config_path.is_file():
        raise UserError(f"sft-data: generator '{gen}' has no config.json; give an HF model folder")
    if not (gen / "tokenizer.json").is_file():
        raise UserError(f"sft-data: generator '{gen}' has no tokenizer.json")
    check_custom_code(gen, settings.trust_remote_code, "trust_remote_code: true (--trust-remote-code)")
    template = load_chat_template(gen, "sft-data's generator")
    raw = config_path.read_bytes()
    try:
        window = json.loads(raw).get("max_position_embeddings")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise UserError(f"sft-data: '{config_path}' is not a JSON object") from None
    settings.check(window if isinstance(window, int) else None)
    docs = read_documents(list(settings.input), settings.text_field, settings.id_field, settings.section_separator)
    config_sha = hashlib.sha256(raw).hexdigest()
    # paths as the folders they name, so another spelling of the same input is the same run
    named = {"input": [str(Path(p).resolve()) for p in settings.input], "generator": str(gen.resolve())}
    digest = settings_hash({**settings.model_dump(mode="json", exclude={"output"}), **named}, config_sha)
    plan = Plan(settings, docs, template, load_tokenizer(gen / "tokenizer.json"), config_sha, digest)
    for k in range(len(plan.shards)):
        counts = shard_paths(settings.output, k)[1]
        if counts.is_file() and json.loads(counts.read_text()).get("settings_hash") != digest:
            raise UserError(f"sft-data: '{settings.output}' holds shards of other settings or inputs; give a new "
                            "output folder or delete it")
    return plan


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _finished(out: Path, k: int, digest: str) -> dict[str, Any] | None:
    data, counts = shard_paths(out, k)
    if not (data.is_file() and counts.is_file()):
        return None
    got = json.loads(counts.read_text())
    return got if got.get("settings_hash") == digest else None


def run(plan: Plan, progress: bool = True) -> dict[str, Any]:
    """Generate every unfinished shard, then the final files; returns the report."""
    from longmix.models.generate import generate_ids
    from longmix.models.loading import load_checkpoint
    from longmix.pipeline.progress import progress as progress_of

    s, out = plan.settings, plan.settings.output
    (out / "shards").mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    shards = plan.shards
    todo = [k for k in range(len(shards)) if _finished(out, k, plan.settings_hash) is None]
    seconds = 0.0
    new_tokens = 0
    if todo:
        loaded = load_checkpoint(s.generator, device=s.device, trust_remote_code=s.trust_remote_code)
        prompter = Prompter(plan.tokenizer, plan.template, loaded.bos_id)
        per_doc = s.questions_per_doc * 2  # prompts per document: first step + check, at most
        with progress_of("sft-data", sum(len(shards[k]) for k in todo) * per_doc, progress) as advance:
            generated = [0]

            def gen(prompts: list[list[int]]) -> list[list[int]]:
                generated[0] += len(prompts)
                return generate_ids(loaded, prompts, s.max_new_tokens, seed=s.seed, temperature=s.temperature,
                                    top_p=s.top_p, batch_size=s.batch_size, on_batch=advance)

            for done, k in enumerate(todo, 1):
                t0, generated[0] = time.perf_counter(), 0
                records, counts = run_shard(shards[k], s, plan.tokenizer, prompter, gen, s.generator.name)
                advance(len(shards[k]) * per_doc - generated[0])  # prompts a dropped question never needed
                took = time.perf_counter() - t0
                seconds += took
                new_tokens += counts["tokens_generated"]
                data_path, counts_path = shard_paths(out, k)
                _write_jsonl(data_path, records)
                write_json(counts_path, {**counts, "settings_hash": plan.settings_hash, "seconds": round(took, 3)})
                eta = seconds / done * (len(todo) - done)
                log.info("sft-data: shard %d/%d (%d of %d this run) kept %d of %d, %.0f new tokens/s, ETA %.0f s",
                         k + 1, len(shards), done, len(todo), counts["kept"], counts["in"],
                         counts["tokens_generated"] / max(took, 1e-9), eta)
    return finish(plan, seconds, new_tokens)


def finish(plan: Plan, seconds: float, new_tokens: int) -> dict[str, Any]:
    """longqa.jsonl and heldout.jsonl from the finished shards, in shard order, and report.json."""
    s, out = plan.settings, plan.settings.output
    total = empty_counts(list(s.styles))
    train: list[str] = []
    heldout: list[str] = []
    heldout_docs = 0
    for k in range(len(plan.shards)):
        got = _finished(out, k, plan.settings_hash)
        if got is None:
            raise UserError(f"sft-data: shard {k} is not finished; run again to resume")
        add_counts(total, got)
        for line in shard_paths(out, k)[0].read_text().splitlines(keepends=True):
            doc_id = json.loads(line)["provenance"]["doc_id"]
            (heldout if is_heldout(s.seed, doc_id, s.heldout_fraction) else train).append(line)
    heldout_docs = sum(is_heldout(s.seed, d.id, s.heldout_fraction) for d in plan.docs)
    for name, lines in (("longqa.jsonl", train), ("heldout.jsonl", heldout)):
        with atomic_path(out / name) as tmp:
            tmp.write_text("".join(lines))
    dropped = sum(total["dropped"].values())
    if total["in"] != total["kept"] + dropped:  # every question planned is kept or dropped with a reason
        raise AssertionError(f"sft-data counts do not reconcile: {total['in']} != {total['kept']} + {dropped}")
    report = {**total, "train_examples": len(train), "heldout_examples": len(heldout),
              "heldout_documents": heldout_docs, "shards": len(plan.shards),
              "this_run": {"seconds": round(seconds, 3), "tokens_generated": new_tokens,
                           "tokens_per_second": round(new_tokens / seconds, 2) if seconds else None},
              "generator": {"folder": str(s.generator), "name": s.generator.name,
                            "config_sha256": plan.config_sha256},
              "settings": json.loads(s.model_dump_json()), "settings_hash": plan.settings_hash}
    write_json(out / "report.json", report)
    return report
