"""The self-check of a generated QA pair: (a) lexical support, the share of the answer's content words that the
chunk contains (an answer made of words the chunk never says was made up); (b) agreement, the token F1 between
the answer and the generator's own answer to the question from the chunk alone (a question the model answers
differently on a second look is ambiguous or the first answer was off)."""

from __future__ import annotations

import re
from collections import Counter

_WORD = re.compile(r"[a-z0-9_]+")
STOPWORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between both but
by can could did do does doing down during each few for from further had has have having he her here hers herself
him himself his how i if in into is it its itself just me more most my myself no nor not now of off on once only or
other our ours ourselves out over own same she should so some such than that the their theirs them themselves then
there these they this those through to too under until up very was we were what when where which while who whom
why will with would you your yours yourself yourselves also may might must shall
passage document text
""".split())  # (the last line: words an answer uses to speak of its source, not of what the source says)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def content_words(text: str) -> list[str]:
    return [w for w in words(text) if w not in STOPWORDS]


def support(answer: str, chunk: str) -> float:
    """Fraction of the answer's content words (lowercased, stopwords out) found in the chunk; 0 when the answer
    has none (an answer of only stopwords supports nothing)."""
    ws = content_words(answer)
    if not ws:
        return 0.0
    present = set(words(chunk))
    return sum(w in present for w in ws) / len(ws)


def token_f1(a: str, b: str) -> float:
    """SQuAD-style token F1 over lowercased words, stopwords out (two answers sharing only "the" agree on
    nothing)."""
    return overlap_f1(content_words(a), content_words(b))


def overlap_f1(x: list[str], y: list[str]) -> float:
    """F1 of two token lists' multiset overlap (SQuAD's); two empty lists agree (1.0), one empty scores 0."""
    if not x or not y:
        return float(x == y)
    common = sum((Counter(x) & Counter(y)).values())
    if common == 0:
        return 0.0
    p, r = common / len(x), common / len(y)
    return 2 * p * r / (p + r)


def clean_reanswer(reply: str) -> str:
    """The re-answer without a leading "Answer:" the model may write."""
    text = reply.strip()
    return re.sub(r"\A(?:Answer|A)\s*:\s*", "", text).strip()


def verdict(support_value: float, agreement: float, min_support: float, min_agreement: float) -> str | None:
    """None when kept, else the drop reason (support is judged first: it needs no second generation)."""
    if support_value < min_support:
        return "unsupported"
    if agreement < min_agreement:
        return "disagrees"
    return None
