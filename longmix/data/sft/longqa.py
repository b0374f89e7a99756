"""Self-instruct long QA, the pure part: long documents read and measured in generator tokens, each cut to
``target_tokens`` around a chunk the generator can see, the prompts of each question style, the parsing of the
generator's replies, and the Long-QA JSONL record (the contract the SFT shard builder and the long-QA eval read).

Every random choice is seeded by (seed, document id), never by position, so a document gets the same cut, chunk
and style whatever else is in the input and however the run is sharded."""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longmix.core.errors import UserError

STYLES = ("factual", "summary", "where")

_PASSAGE = "Here is a passage from a longer document.\n\n{chunk}\n\n"
GEN_INSTRUCTION = {
    "factual": _PASSAGE + "Write one question about a specific fact stated in the passage, and its short answer "
                          "taken from the passage. Reply in exactly this format:\nQuestion: <the question>\n"
                          "Answer: <the answer>",
    "summary": _PASSAGE + "Summarize the passage in one or two sentences. Reply in exactly this format:\n"
                          "Summary: <the summary>",
}
GEN_INSTRUCTION["where"] = GEN_INSTRUCTION["factual"]  # a factual QA; where it sits is added from the chunk's depth
# the reply is started for the model (prefilled after the generation prompt), so it only has to go on in format
GEN_PREFILL = {"factual": "Question:", "summary": "Summary:", "where": "Question:"}
CHECK_INSTRUCTION = "Here is a passage.\n\n{chunk}\n\nAnswer the question using only the passage, briefly.\n{question}"
SUMMARY_QUESTION = "Summarize the passage in one or two sentences."

# a question may wrap over lines (the model copies the passage's line breaks); a second "Question:" after the
# answer starts another pair, and only the first is taken
_QA = re.compile(r"\AQuestion:\s*(?P<q>\S.*?)\s*\n\s*Answer:[ \t]*(?P<a>\S.*?)\s*(?:\n\s*Question:.*)?\Z", re.DOTALL)
_SUMMARY = re.compile(r"\ASummary:[ \t]*(?P<a>\S.*?)\s*\Z", re.DOTALL)


@dataclass(frozen=True)
class Document:
    id: str
    source: str
    text: str


def read_documents(paths: list[Path], text_field: str = "text", id_field: str | None = "id",
                   section_separator: str | None = None) -> list[Document]:
    """Every record of ``paths`` (JSONL/Parquet files or folders, read as ingest reads them), in order, with
    sections joined into their documents when ``section_separator`` is set (``join_sections``). No input
    files, an empty document or a repeated id is a UserError: all are found before any generation."""
    from longmix.data.ingest.texts import read_texts

    docs: list[Document] = []
    seen: set[str] = set()
    for path in paths:
        if not path.exists():
            raise UserError(f"sft-data: input '{path}' not found")
        if path.is_dir() and not any(f.is_file() and not f.name.startswith(".") for f in path.rglob("*")):
            raise UserError(f"sft-data: no input files in '{path}'")
        for doc_id, text in read_texts([path], text_field, id_field):
            if not text.strip():
                raise UserError(f"sft-data: document '{doc_id}' in '{path}' is empty; remove it from the input")
            if doc_id in seen:
                raise UserError(f"sft-data: document id '{doc_id}' appears twice; ids name documents in the "
                                "held-out split and the seeds, so they must be unique")
            seen.add(doc_id)
            docs.append(Document(doc_id, path.name, text))
    if not docs:
        raise UserError(f"sft-data: no readable documents in {', '.join(map(str, paths))} (text field "
                        f"'{text_field}')")
    return join_sections(docs, section_separator) if section_separator else docs


def join_sections(docs: list[Document], separator: str) -> list[Document]:
    """Records that are sections of one document, named ``<document id><separator><section>`` (a book's
    chapters, a module's docstrings), joined in input order into that document, sections apart by a blank
    line; a record whose id lacks the separator is a document of its own. Long documents often come cut."""
    groups: dict[str, list[Document]] = {}
    for d in docs:
        groups.setdefault(d.id.split(separator, 1)[0], []).append(d)
    return [Document(key, parts[0].source, "\n\n".join(p.text for p in parts)) for key, parts in groups.items()]


def rng_for(seed: int, doc_id: str, what: str) -> random.Random:
    return random.Random(f"{seed}:{doc_id}:{what}")


@dataclass(frozen=True)
class Cut:
    """The document as the long-QA example shows it, and one chunk of it (spans in the cut text)."""

    text: str
    n_tokens: int
    chunk_chars: tuple[int, int]
    chunk_tokens: tuple[int, int]

    @property
    def chunk(self) -> str:
        return self.text[self.chunk_chars[0]:self.chunk_chars[1]]

    @property
    def depth(self) -> float:
        return (self.chunk_tokens[0] + self.chunk_tokens[1]) / 2 / self.n_tokens


def cut_text(tok: Any, text: str, target_tokens: int, rng: random.Random) -> str:
    """A seeded window of ``target_tokens`` tokens of ``text`` (the whole text when it is no longer)."""
    enc = tok.encode(text, add_special_tokens=False)
    n = len(enc.ids)
    if n <= target_tokens:
        return text
    start = rng.randrange(n - target_tokens + 1)
    return text[enc.offsets[start][0]:enc.offsets[start + target_tokens - 1][1]]


def pick_chunk(tok: Any, cut: str, chunk_tokens: int, rng: random.Random) -> Cut:
    """A seeded chunk of ``chunk_tokens`` tokens of the cut text, tokenized as the cut text itself is."""
    enc = tok.encode(cut, add_special_tokens=False)
    m = len(enc.ids)
    if m == 0:
        raise ValueError("pick_chunk: the cut document has no tokens")
    c = min(chunk_tokens, m)
    start = rng.randrange(m - c + 1)
    chars = (enc.offsets[start][0], enc.offsets[start + c - 1][1])
    return Cut(cut, m, chars, (start, start + c))


def cut_document(tok: Any, doc: Document, target_tokens: int, chunk_tokens: int, seed: int, question: int) -> Cut:
    """The document's cut (one per document) and the chunk of its ``question``-th question."""
    cut = cut_text(tok, doc.text, target_tokens, rng_for(seed, doc.id, "cut"))
    return pick_chunk(tok, cut, chunk_tokens, rng_for(seed, doc.id, f"chunk{question}"))


def style_for(styles: list[str], seed: int, doc_id: str, question: int) -> str:
    """Styles take turns over a document's questions, from a seeded first one."""
    first = rng_for(seed, doc_id, "style").randrange(len(styles))
    return styles[(first + question) % len(styles)]


def is_heldout(seed: int, doc_id: str, fraction: float) -> bool:
    """A document-level split by a seeded hash of the id: all questions of a document go to the same side."""
    h = int.from_bytes(hashlib.sha256(f"heldout:{seed}:{doc_id}".encode()).digest()[:8], "big")
    return h / 2**64 < fraction


def generation_messages(style: str, chunk: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": GEN_INSTRUCTION[style].format(chunk=chunk)}]


def check_messages(chunk: str, question: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": CHECK_INSTRUCTION.format(chunk=chunk, question=question)}]


def parse_reply(style: str, reply: str) -> tuple[str, str] | None:
    """(question, answer) from the generator's reply (its prefill put back in front), None when it is not in
    the asked format."""
    text = GEN_PREFILL[style] + reply
    if style == "summary":
        m = _SUMMARY.match(text)
        return (SUMMARY_QUESTION, m.group("a")) if m else None
    m = _QA.match(text)
    if not m or "Answer:" in m.group("a"):
        return None
    return " ".join(m.group("q").split()), m.group("a")


_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s|\Z)")


def complete_sentences(answer: str) -> str:
    """An answer the token limit cut off, back to its last full sentence ("" when it has none): a half sentence
    taught as an answer teaches stopping mid-thought."""
    ends = [m.end() for m in _SENTENCE_END.finditer(answer)]
    return answer[:ends[-1]].strip() if ends else ""


def part_of(depth: float) -> str:
    return "beginning" if depth < 1 / 3 else "middle" if depth < 2 / 3 else "end"


def opening_words(chunk: str, n: int = 10) -> str:
    return " ".join(chunk.split()[:n])


def long_example(style: str, cut: Cut, question: str, answer: str) -> tuple[str, str]:
    """(user, assistant) of the long-QA example: the whole cut document, then the instruction."""
    if style == "summary":
        ask = (f'Summarize the passage of the document above that begins with "{opening_words(cut.chunk)}", in one '
               "or two sentences.")
        return f"{cut.text}\n\n{ask}", answer
    if style == "where":
        ask = ("Answer the question using the document above, and say in which part of the document (the "
               f"beginning, the middle or the end) the answer is.\nQuestion: {question}")
        where = {"beginning": "at the beginning", "middle": "in the middle", "end": "at the end"}[part_of(cut.depth)]
        return f"{cut.text}\n\n{ask}", f"{answer} This is {where} of the document."
    return f"{cut.text}\n\nAnswer the question using the document above.\nQuestion: {question}", answer


def record(doc: Document, k: int, style: str, cut: Cut, question: str, answer: str, support: float,
           agreement: float, generator: str, seed: int) -> dict[str, Any]:
    """One line of the Long-QA JSONL (see docs/sft-data.md)."""
    user, assistant = long_example(style, cut, question, answer)
    return {"id": f"{doc.id}-q{k}",
            "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}],
            "provenance": {"doc_id": doc.id, "source": doc.source, "generator": generator, "style": style,
                           "question": question, "answer": answer, "chunk_chars": list(cut.chunk_chars),
                           "chunk_tokens": list(cut.chunk_tokens), "doc_chars": len(cut.text),
                           "doc_tokens": cut.n_tokens, "depth": round(cut.depth, 6),
                           "check": {"support": round(support, 6), "agreement": round(agreement, 6),
                                     "passed": True},
                           "seed": seed}}
