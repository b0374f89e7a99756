"""Documents with long-range dependencies at known distances (the positional-encoding ablation's data).

Real filler text (lines of the demo corpus) is cut into slots of ``slot`` tokens. Some slots open with a
planted passage whose later tokens can only be predicted from far back:

- ``repeat``: a passage of words drawn uniformly from the filler's vocabulary, copied verbatim ``distance``
  tokens later;
- ``fact``: "Note: the code of <name> is <digits>." stated early, and "Recall: the code of <name> is" used
  late, where only the digits (the scored part) need the earlier slot.

Each pair's distance is a whole number of slots, so dependencies sit at the distances asked for (up to the
few tokens a slot boundary can shift by; the measured distance is recorded). Every record carries
``deps``: per pair its kind, the planned and measured distance in tokens, and the character spans of the
source and of the scored target, so an evaluation can score exactly the tokens that need the far context.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from longmix.core.atomic import atomic_path, write_json

_SHORT = ["the", "a", "of", "to", "and", "in", "is", "it"]
# dense at short range, where a base trained at 256 tokens can learn to copy; one each further out
DEFAULT_DISTANCES = (32, 32, 64, 64, 96, 128, 160, 224, 384, 768, 1152, 1536, 1920)


def _word(rng: random.Random, vocab: list[str]) -> str:
    return rng.choice(vocab)


def word_vocab(lines: list[str], min_len: int = 4) -> list[str]:
    """Distinct alphabetic words of the filler, drawn uniformly for passages: each is rare, so the earlier copy
    can be found from its first tokens (passages of a small syllable alphabet repeat their tokens everywhere,
    so the token before a copied one does not point to the copy)."""
    words = {w.lower() for ln in lines for w in ln.split() if w.isalpha() and w.isascii() and len(w) >= min_len}
    return sorted(words)


def _filler_words(lines: list[str], rng: random.Random) -> Iterator[str]:
    """Words of real text, from random starting lines onwards (the slots read them in order)."""
    while True:
        start = rng.randrange(len(lines))
        for line in lines[start:start + 200]:
            yield from line.split()


class _Slots:
    def __init__(self, tok: Any, lines: list[str], slot: int, rng: random.Random) -> None:
        self.tok, self.slot, self.rng = tok, slot, rng
        self.words = _filler_words(lines, rng)

    def n_tokens(self, text: str) -> int:
        return len(self.tok.encode(text, add_special_tokens=False).ids)

    def fill(self, head: str) -> str:
        """``head`` then filler words, to ``slot`` tokens (one line; the newline joining slots is its own)."""
        out, n, misses = head, self.n_tokens(head), 0
        while n < self.slot - 1 and misses < 50:  # a word that overflows is skipped: shorter ones fill the rest
            w = next(self.words)
            cand = f"{out} {w}" if out else w
            m = self.n_tokens(cand)
            if m > self.slot - 1:
                misses += 1
                continue
            out, n = cand, m
        for w in _SHORT * self.slot:  # filler of long code words can leave a gap: close it with short words
            if n >= self.slot - 1:
                break
            cand = f"{out} {w}" if out else w
            m = self.n_tokens(cand)
            if m <= self.slot - 1:
                out, n = cand, m
        return out


def _plan(n_slots: int, distances: list[int], rng: random.Random) -> list[tuple[int, int, int]]:
    """(source slot, target slot, distance in slots) pairs on distinct slots; each distance once when it fits."""
    free = set(range(n_slots))
    pairs = []
    for d in sorted(distances, reverse=True):  # the long ones first: they have the fewest places
        starts = [s for s in range(n_slots - d) if s in free and s + d in free]
        if starts:
            s = rng.choice(starts)
            free -= {s, s + d}
            pairs.append((s, s + d, d))
    return pairs


def make_document(tok: Any, lines: list[str], rng: random.Random, n_slots: int, slot: int,
                  distances: tuple[int, ...], passage_words: int = 6,
                  vocab: list[str] | None = None) -> dict[str, Any]:
    """One document of about ``n_slots * slot`` tokens with a planted pair per distance."""
    slots = _Slots(tok, lines, slot, rng)
    vocab = vocab or word_vocab(lines)
    plan = _plan(n_slots, [max(1, round(d / slot)) for d in distances], rng)
    heads: dict[int, tuple[str, str]] = {}  # slot -> (head text, role)
    pairs = []
    for src, dst, _ in plan:
        kind = "repeat" if rng.random() < 0.5 else "fact"
        # a head that does not fit its slot would shift every later slot: long words are redrawn or dropped
        code = str(rng.randrange(10 ** 5, 10 ** 6))
        name = next((n for n in (_word(rng, vocab).capitalize() for _ in range(20))
                     if slots.n_tokens(f"Recall: the code of {n} is {code}.") <= slot - 1), None)
        if name is None:
            kind = "repeat"
        if kind == "repeat":
            words = [_word(rng, vocab) for _ in range(passage_words)]
            while len(words) > 1 and slots.n_tokens(" ".join(words)) > slot - 1:
                words.pop(rng.randrange(len(words)))
            passage = " ".join(words)
            heads[src], heads[dst] = (passage, "src"), (passage, "dst")
            pairs.append({"kind": kind, "src_slot": src, "dst_slot": dst, "target": passage, "prefix": ""})
        else:
            heads[src] = (f"Note: the code of {name} is {code}.", "src")
            heads[dst] = (f"Recall: the code of {name} is {code}.", "dst")
            pairs.append({"kind": kind, "src_slot": src, "dst_slot": dst, "target": code,
                          "prefix": f"Recall: the code of {name} is "})
    texts = [slots.fill(heads[i][0] if i in heads else "") for i in range(n_slots)]
    starts, pos = [], 0
    for t in texts:
        starts.append(pos)
        pos += len(t) + 1
    text = "\n".join(texts)
    enc = tok.encode(text, add_special_tokens=False)
    char_to_token = _char_to_token(enc.offsets, len(text))
    deps = []
    for p in pairs:
        s0 = starts[p["src_slot"]]
        t0 = starts[p["dst_slot"]] + len(p["prefix"])
        t1 = t0 + len(p["target"])
        src_tok, dst_tok = char_to_token[s0], char_to_token[starts[p["dst_slot"]]]
        deps.append({"kind": p["kind"], "planned": (p["dst_slot"] - p["src_slot"]) * slot,
                     "distance": dst_tok - src_tok, "src": [s0, s0 + len(texts[p["src_slot"]])],
                     "target": [t0, t1]})
    deps.sort(key=lambda d: d["planned"])
    return {"text": text, "n_tokens": len(enc.ids), "deps": deps}


def _char_to_token(offsets: list[tuple[int, int]], n_chars: int) -> list[int]:
    """The index of the token that covers (or follows) each character."""
    out = [len(offsets)] * (n_chars + 1)
    for i in range(len(offsets) - 1, -1, -1):
        a, b = offsets[i]
        for c in range(a, max(b, a + 1)):
            if c <= n_chars:
                out[c] = i
    for c in range(n_chars - 1, -1, -1):  # characters no token covers (none in byte-level BPE): the next one
        if out[c] == len(offsets):
            out[c] = out[c + 1]
    return out


def filler_lines(paths: list[Path]) -> list[str]:
    from longmix.data.ingest.texts import read_texts

    files = [f for p in paths for f in (sorted(p.rglob("*.jsonl")) if p.is_dir() else [p])]
    lines = [ln for _, t in read_texts(files, "text", "id", 256 << 20, fmt="jsonl")
             for ln in t.splitlines() if len(ln.split()) >= 3]
    if not lines:
        from longmix.core.errors import UserError

        raise UserError(f"no filler text in {', '.join(map(str, paths))}")
    return lines


def write_longdep_corpus(out: Path, tokenizer: Path, filler: list[Path], heldout_filler: list[Path], docs: int,
                         heldout_docs: int, seed: int = 0, slot: int = 32, n_slots: int = 62,
                         distances: tuple[int, ...] = DEFAULT_DISTANCES, files: int = 4,
                         passage_words: int = 6) -> dict[str, Any]:
    """``train/part-*.jsonl`` from ``filler`` and ``heldout.jsonl`` from ``heldout_filler`` (other text, other
    seed), plus ``corpus.json`` with the settings and the measured distances."""
    from longmix.formats.tokenizer_files import load_tokenizer

    tok = load_tokenizer(tokenizer)
    if max(distances) > (n_slots - 1) * slot:
        from longmix.core.errors import UserError

        raise UserError(f"distance {max(distances)} does not fit {n_slots} slots of {slot} tokens")
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"slot": slot, "n_slots": n_slots, "distances": list(distances), "seed": seed,
                               "passage_words": passage_words, "files": {}}
    jobs = [(f"train/part-{i:05d}.jsonl", filler, docs // files + (i < docs % files), seed * 1000 + i)
            for i in range(files)] + [("heldout.jsonl", heldout_filler, heldout_docs, seed * 1000 + 999)]
    for name, paths, n, s in jobs:
        rng, lines = random.Random(s), filler_lines(paths)
        vocab = word_vocab(lines)
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        errors = []
        with atomic_path(path) as tmp, open(tmp, "w") as f:
            for k in range(n):
                doc = make_document(tok, lines, rng, n_slots, slot, distances, passage_words, vocab)
                errors += [d["distance"] - d["planned"] for d in doc["deps"]]
                f.write(json.dumps({"id": f"{Path(name).stem}-{k}", **doc}) + "\n")
        summary["files"][name] = {"docs": n, "max_distance_error": max(map(abs, errors), default=0)}
    write_json(out / "corpus.json", summary)
    return summary
