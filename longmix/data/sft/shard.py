"""One shard of `longmix sft-data`: its documents filtered by length, a question planned per (document, k), all
first-step prompts generated in batches, the replies parsed, then all check prompts (the model re-answering from
the chunk alone) in batches, and every question kept or dropped with a reason.

Generation comes in as a function (prompts of token ids -> new token ids), so the bookkeeping is tested without
a model and the model's batching stays in `longmix.models.generate`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from longmix.data.sft.check import clean_reanswer, support, token_f1, verdict
from longmix.data.sft.longqa import (
    GEN_PREFILL,
    Cut,
    Document,
    check_messages,
    complete_sentences,
    cut_document,
    generation_messages,
    parse_reply,
    record,
    style_for,
)
from longmix.data.sft.settings import SftDataSettings
from longmix.models.chat_template import ChatTemplate

DROP_REASONS = ("too_short", "too_long", "unparsable", "unsupported", "disagrees")
Generate = Callable[[list[list[int]]], list[list[int]]]


@dataclass
class _Question:
    doc: Document
    k: int
    style: str
    cut: Cut
    question: str = ""
    answer: str = ""
    support: float = 0.0
    agreement: float = 0.0
    dropped: str | None = None


class Prompter:
    """Conversations -> prompt token ids, the way the generator was tuned (its chat template, then a prefill)."""

    def __init__(self, tok: Any, template: ChatTemplate, bos_id: int | None):
        self.tok, self.template, self.bos_id = tok, template, bos_id

    def ids(self, messages: list[dict[str, str]], prefill: str = "") -> list[int]:
        text = self.template.prompt(messages) + prefill
        ids = self.tok.encode(text, add_special_tokens=False).ids
        # a template that does not write BOS itself gets it the way the model saw it in training
        if self.bos_id is not None and (not ids or ids[0] != self.bos_id):
            ids = [self.bos_id, *ids]
        return ids

    def text(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)


def empty_counts(styles: list[str]) -> dict[str, Any]:
    return {"documents": 0, "in": 0, "kept": 0, "dropped": dict.fromkeys(DROP_REASONS, 0),
            "by_style": {s: {"generated": 0, "kept": 0} for s in styles}, "tokens_generated": 0}


def run_shard(docs: list[Document], settings: SftDataSettings, tok: Any, prompter: Prompter, generate: Generate,
              generator_name: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(records of the kept questions, in document then question order; the shard's counts)."""
    s = settings
    counts = empty_counts(list(s.styles))
    counts["documents"] = len(docs)
    counts["in"] = len(docs) * s.questions_per_doc
    questions: list[_Question] = []
    for doc in docs:
        n = len(tok.encode(doc.text, add_special_tokens=False).ids)
        if n < s.min_tokens or n > s.max_tokens:
            counts["dropped"]["too_short" if n < s.min_tokens else "too_long"] += s.questions_per_doc
            continue
        for k in range(s.questions_per_doc):
            style = style_for(list(s.styles), s.seed, doc.id, k)
            cut = cut_document(tok, doc, s.target_tokens, s.chunk_tokens, s.seed, k)
            questions.append(_Question(doc, k, style, cut))

    replies = generate([prompter.ids(generation_messages(q.style, q.cut.chunk), GEN_PREFILL[q.style])
                        for q in questions])
    to_check: list[_Question] = []
    for q, reply in zip(questions, replies, strict=True):
        counts["tokens_generated"] += len(reply)
        counts["by_style"][q.style]["generated"] += 1
        parsed = parse_reply(q.style, prompter.text(reply))
        if parsed is not None and len(reply) >= s.max_new_tokens:  # no stop token: the limit cut it off
            parsed = (parsed[0], complete_sentences(parsed[1]))
        if parsed is None or not parsed[1]:
            q.dropped = "unparsable"
            continue
        q.question, q.answer = parsed
        q.support = support(q.answer, q.cut.chunk)
        if q.support < s.min_support:
            q.dropped = "unsupported"  # no re-answer needed to drop it
            continue
        to_check.append(q)

    reanswers = generate([prompter.ids(check_messages(q.cut.chunk, q.question)) for q in to_check])
    for q, reply in zip(to_check, reanswers, strict=True):
        counts["tokens_generated"] += len(reply)
        q.agreement = token_f1(q.answer, clean_reanswer(prompter.text(reply)))
        q.dropped = verdict(q.support, q.agreement, s.min_support, s.min_agreement)

    records = []
    for q in questions:
        if q.dropped is not None:
            counts["dropped"][q.dropped] += 1
            continue
        counts["kept"] += 1
        counts["by_style"][q.style]["kept"] += 1
        records.append(record(q.doc, q.k, q.style, q.cut, q.question, q.answer, q.support, q.agreement,
                              generator_name, s.seed))
    return records, counts


def add_counts(total: dict[str, Any], part: dict[str, Any]) -> None:
    for key in ("documents", "in", "kept", "tokens_generated"):
        total[key] += part[key]
    for reason, n in part["dropped"].items():
        total["dropped"][reason] += n
    for style, c in part["by_style"].items():
        for key, n in c.items():
            total["by_style"][style][key] += n
