"""RULER-style synthetic long-context tasks (Hsieh et al. 2024, NVIDIA RULER), generated offline from a seed.

Every prompt is built in token ids to exactly the requested length: instruction + context + question with
an answer prefix (completion style, so base models answer too). Tasks, as RULER defines them:

- ``niah_single_1`` / ``_2`` / ``_3``: one needle "One of the special magic {numbers|words|uuids} for KEY is:
  VALUE." at a stated depth; haystack: noise sentences (1) or real text (2, 3).
- ``niah_multikey``: the needle plus three distractor needles with other keys, real-text haystack.
- ``niah_multivalue``: four needles with the same key and different values; all four are asked for.
- ``niah_multiquery``: four needles with different keys; all four keys are asked at once.
- ``vt`` (variable tracking): a chain ``VAR A = 12345``, ``VAR B = VAR A``, ... spread through noise; name every
  variable bound to the value.
- ``cwe`` (common words): a numbered list where 10 words recur often and the rest rarely; name the 10.
- ``fwe`` (frequent words): coded words with Zipf(2) frequencies; name the three most frequent.

Scoring is RULER's ``string_match_all``: the share of expected strings that occur in the output
(case-insensitive), times 100. The effective length is the longest length up to which every length's mean
over tasks stays above a threshold (RULER uses 85.6, Llama-2-7B's score at 4K).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from longmix.core.errors import UserError

NIAH_TASKS = ("niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey", "niah_multivalue",
              "niah_multiquery")
TASKS = (*NIAH_TASKS, "vt", "cwe", "fwe")
DEFAULT_THRESHOLD = 85.6
NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
MAX_NEW_TOKENS = {"niah_single_1": 16, "niah_single_2": 16, "niah_single_3": 40, "niah_multikey": 16,
                  "niah_multivalue": 64, "niah_multiquery": 64, "vt": 32, "cwe": 96, "fwe": 32}

_KIND = {"niah_single_1": "number", "niah_single_2": "number", "niah_single_3": "uuid", "niah_multikey": "number",
         "niah_multivalue": "number", "niah_multiquery": "number"}
_ADJECTIVES = ("ancient", "bitter", "brave", "calm", "clever", "crimson", "curious", "damp", "eager", "fancy",
               "fierce", "gentle", "golden", "grumpy", "hollow", "humble", "icy", "jolly", "kind", "lively",
               "lonely", "lucky", "mellow", "misty", "noisy", "odd", "pale", "proud", "quiet", "rapid", "rusty",
               "shy", "silent", "silver", "sleepy", "smooth", "sour", "steep", "sticky", "swift", "tame", "tidy",
               "tiny", "vast", "wary", "wicked", "wild", "witty", "young", "zealous")
_NOUNS = ("anchor", "apple", "badge", "basket", "beacon", "blanket", "bottle", "bridge", "bucket", "button",
          "candle", "canyon", "carpet", "castle", "cherry", "cloud", "compass", "cookie", "crystal", "desert",
          "dragon", "engine", "falcon", "feather", "forest", "garden", "glacier", "hammer", "harbor", "helmet",
          "island", "jacket", "kettle", "ladder", "lantern", "meadow", "mirror", "needle", "orchard", "pebble",
          "pepper", "pillow", "planet", "rabbit", "ribbon", "saddle", "tunnel", "violin", "wagon", "window")


@dataclass
class RulerSample:
    task: str
    length: int
    depth: float | None  # the target needle's relative depth (NIAH tasks), else None
    prompt: list[int]
    answers: list[str]
    max_new_tokens: int


@dataclass
class RulerResult:
    task: str
    length: int
    depth: float | None
    sample: int
    answers: list[str]
    output: str
    score: float


def string_match_all(output: str, answers: Sequence[str]) -> float:
    """RULER's metric for NIAH, VT, CWE and FWE: 100 x the share of answers found in the output, ignoring case."""
    out = output.lower()
    return 100.0 * sum(a.lower() in out for a in answers) / len(answers)


def effective_length(per_length: dict[int, float], threshold: float = DEFAULT_THRESHOLD) -> int | None:
    """The longest length L such that the score at every length <= L is above ``threshold``; None if the
    shortest already falls short."""
    best = None
    for L in sorted(per_length):
        if per_length[L] <= threshold:
            break
        best = L
    return best


HAYSTACK_CHARS = 8_000_000  # the same haystack whatever lengths are asked for (up to this much real text)


def haystack_texts(paths: list[Any], seed: int, lengths: Sequence[int]) -> list[str]:
    """Real-text haystack documents in a seeded order, a fixed amount of them (all of a corpus smaller than
    ``HAYSTACK_CHARS``): the lengths asked for must not change which text a cell's prompts draw from."""
    from longmix.eval.loading import iter_records

    texts = [t for _, t in iter_records(paths) if isinstance(t, str) and t.strip()]
    random.Random(seed).shuffle(texts)
    out, total = [], 0
    for t in texts:
        if total >= HAYSTACK_CHARS:
            break
        out.append(t)
        total += len(t)
    need = max(lengths) * 12
    if total < need:
        raise UserError(f"filler corpus has {total:,} characters; {max(lengths):,}-token prompts need about "
                        f"{need:,}; pass more --haystack files")
    return out


class Generator:
    """Builds token-exact prompts from a tokenizer (``tokenizers.Tokenizer``), an optional BOS id and real
    haystack texts."""

    def __init__(self, tokenizer: Any, bos_id: int | None, haystack: list[str]):
        self.tok = tokenizer
        self.bos = [bos_id] if bos_id is not None else []
        self.essay = np.asarray(self.ids("\n\n".join(haystack)), dtype=np.int64) if haystack else np.zeros(0, int)
        self.noise = np.asarray(self.ids(NOISE), dtype=np.int64)
        self.pad = self.ids("\n")[-1:]  # fills the last few tokens a whole list item would not fit in

    def ids(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    # -- haystacks and values
    def _haystack(self, kind: str, n: int, rng: random.Random) -> list[int]:
        if kind == "noise":
            reps = -(-n // len(self.noise))
            return np.tile(self.noise, reps)[:n].tolist()
        if n > len(self.essay):
            raise UserError(f"haystack too small: {len(self.essay):,} tokens for a {n:,}-token context; pass more "
                            "--haystack files")
        start = rng.randrange(0, len(self.essay) - n + 1)
        return self.essay[start:start + n].tolist()

    @staticmethod
    def _key(rng: random.Random, taken: set[str]) -> str:
        while True:
            k = f"{rng.choice(_ADJECTIVES)}-{rng.choice(_NOUNS)}"
            if k not in taken:
                taken.add(k)
                return k

    @staticmethod
    def _value(kind: str, rng: random.Random) -> str:
        if kind == "uuid":
            return str(uuid.UUID(int=rng.getrandbits(128), version=4))
        return str(rng.randrange(1_000_000, 10_000_000))

    def _fit(self, head: list[int], question: list[int], length: int, what: str) -> int:
        n = length - len(self.bos) - len(head) - len(question)
        if n < 1:
            raise UserError(f"length {length} is too short for the {what} prompt")
        return n

    # -- tasks
    def niah(self, task: str, length: int, depth: float, rng: random.Random) -> RulerSample:
        kind = _KIND[task]
        noun = {"number": "numbers", "uuid": "uuids"}[kind]
        taken: set[str] = set()
        keys = [self._key(rng, taken)]
        if task == "niah_multikey":
            keys += [self._key(rng, taken) for _ in range(3)]  # distractors
        elif task == "niah_multiquery":
            keys += [self._key(rng, taken) for _ in range(3)]
        n_values = 4 if task == "niah_multivalue" else 1
        needles: list[tuple[str, str]] = []  # (key, value), the target (first) one at `depth`
        for i, k in enumerate(keys):
            for _ in range(n_values if i == 0 else 1):
                needles.append((k, self._value(kind, rng)))
        asked = keys if task == "niah_multiquery" else keys[:1]
        answers = [v for k, v in needles if k in asked]
        head = self.ids(f"Some special magic {noun} are hidden within the following text. Make sure to memorize "
                        f"it. I will quiz you about the {noun} afterwards.\n")
        what = ", ".join(asked)
        if len(answers) == 1:  # RULER's wording: singular for one value, plural otherwise
            one = noun[:-1]
            question = self.ids(f"\nWhat is the special magic {one} for {what} mentioned in the provided text? "
                                f"The special magic {one} for {what} mentioned in the provided text is")
        else:
            question = self.ids(f"\nWhat are all the special magic {noun} for {what} mentioned in the provided "
                                f"text? The special magic {noun} for {what} mentioned in the provided text are")
        needle_ids = [self.ids(f"\nOne of the special magic {noun} for {k} is: {v}.\n") for k, v in needles]
        n = self._fit(head, question, length, task) - sum(len(x) for x in needle_ids)
        if n < 1:
            raise UserError(f"length {length} is too short for {task}")
        hay = self._haystack("noise" if task == "niah_single_1" else "essay", n, rng)
        depths = [depth] + [rng.random() for _ in needle_ids[1:]]
        order = sorted(range(len(needle_ids)), key=lambda i: (depths[i], i))
        context: list[int] = []
        last = 0
        for i in order:
            cut = int(round(depths[i] * n))
            context += hay[last:cut] + needle_ids[i]
            last = cut
        context += hay[last:]
        return RulerSample(task, length, depth, self.bos + head + context + question, answers, MAX_NEW_TOKENS[task])

    def vt(self, length: int, rng: random.Random, hops: int = 4) -> RulerSample:
        value = str(rng.randrange(10_000, 100_000))
        names: list[str] = []
        while len(names) < hops + 1:
            v = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(5))
            if v not in names:
                names.append(v)
        lines = [f"VAR {names[0]} = {value}"] + [f"VAR {names[i]} = VAR {names[i - 1]}" for i in range(1, hops + 1)]
        head = self.ids("Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n")
        question = self.ids(f"\nQuestion: Find all variables that are assigned the value {value} in the text above. "
                            f"Answer: According to the chain(s) of variable assignment in the text above, "
                            f"{len(names)} variables are assigned the value {value}, they are:")
        line_ids = [self.ids(f" {ln}.") for ln in lines]
        n = self._fit(head, question, length, "vt") - sum(len(x) for x in line_ids)
        if n < 1:
            raise UserError(f"length {length} is too short for vt")
        hay = self._haystack("noise", n, rng)
        cuts = [int(round(n * (i + 1) / (len(line_ids) + 1))) for i in range(len(line_ids))]  # in chain order
        context, last = [], 0
        for cut, ids in zip(cuts, line_ids, strict=True):
            context += hay[last:cut] + ids
            last = cut
        context += hay[last:]
        return RulerSample("vt", length, None, self.bos + head + context + question, names, MAX_NEW_TOKENS["vt"])

    def _list_prompt(self, task: str, length: int, head_text: str, question_text: str,
                     items: Callable[[int], list[str]], answers: list[str]) -> RulerSample:
        """A context made of as many list items as fit (``items(n)`` gives n in their final order), the rest
        filled with newline tokens before the question."""
        head, question = self.ids(head_text), self.ids(question_text)
        budget = self._fit(head, question, length, task)
        lo, hi = 1, max(2, budget)  # items per prompt: the most whose encoding fits
        best: list[int] | None = None
        while lo <= hi:
            mid = (lo + hi) // 2
            ids = self.ids(" ".join(items(mid)))
            if len(ids) <= budget:
                best, lo = ids, mid + 1
            else:
                hi = mid - 1
        if best is None:
            raise UserError(f"length {length} is too short for {task}")
        context = best + self.pad * (budget - len(best))
        return RulerSample(task, length, None, self.bos + head + context + question, answers, MAX_NEW_TOKENS[task])

    def cwe(self, length: int, rng: random.Random, n_common: int = 10) -> RulerSample:
        pool = [f"{a}{b}" for a in ("", "re", "un") for b in _NOUNS + _ADJECTIVES]
        rng.shuffle(pool)
        common, rare = pool[:n_common], pool[n_common:]
        seed = rng.randrange(1 << 30)

        def items(n: int) -> list[str]:
            # about a third of the items are the common words, each at least 3x as often as any rare word
            r = random.Random(seed)
            per_common = max(3, n // (3 * n_common))
            words = [w for w in common for _ in range(per_common)]
            rare_n = max(0, n - len(words))
            per_rare = max(1, min(per_common // 3, rare_n // len(rare) + 1))
            words += [rare[i // per_rare % len(rare)] for i in range(rare_n)]
            r.shuffle(words)
            return [f"{i + 1}. {w}" for i, w in enumerate(words)]

        return self._list_prompt(
            "cwe", length, "Below is a numbered list of words. In these words, some appear more often than others. "
            "Memorize the ones that appear most often.\n",
            f"\nQuestion: What are the {n_common} most common words in the above list? Answer: The top "
            f"{n_common} words that appear most often in the list are:", items, common)

    def fwe(self, length: int, rng: random.Random) -> RulerSample:
        vocab: list[str] = []
        while len(vocab) < 60:
            w = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(4, 6)))
            if w not in vocab:
                vocab.append(w)
        seed = rng.randrange(1 << 30)

        def items(n: int) -> list[str]:
            # Zipf(2) counts, kept strictly decreasing over the top four so the answer is unambiguous
            weights = np.array([1 / (k + 1) ** 2 for k in range(len(vocab))])
            counts = np.maximum(1, np.floor(weights / weights.sum() * n)).astype(int)
            for k in range(3, 0, -1):
                counts[k - 1] = max(counts[k - 1], counts[k] + 1)
            words = [w for w, c in zip(vocab, counts, strict=True) for _ in range(c)][:max(n, 4)]
            random.Random(seed).shuffle(words)
            return words

        return self._list_prompt(
            "fwe", length, "Read the following coded text and track the frequency of each coded word. Find the "
            "three most frequently appeared coded words.\n",
            "\nQuestion: What are the three most frequently appeared words in the above coded text? Answer: "
            "According to the coded text above, the three most frequently appeared words are:", items, vocab[:3])

    def sample(self, task: str, length: int, depth: float | None, rng: random.Random) -> RulerSample:
        if task in NIAH_TASKS:
            return self.niah(task, length, 0.5 if depth is None else depth, rng)
        return {"vt": self.vt, "cwe": self.cwe, "fwe": self.fwe}[task](length, rng)


def build_samples(gen: Generator, tasks: Sequence[str], lengths: Sequence[int], depths: Sequence[float],
                  samples: int, seed: int) -> list[RulerSample]:
    """Every (task, length[, depth]) cell's prompts, each cell from its own seeded stream (a cell's prompts do
    not depend on which other cells are asked for)."""
    if bad := sorted(set(tasks) - set(TASKS)):
        raise UserError(f"unknown RULER task(s) {', '.join(bad)}; choose from {', '.join(TASKS)}")
    out = []
    for task in tasks:
        for L in lengths:
            for d in (depths if task in NIAH_TASKS else [None]):
                rng = random.Random(f"{seed}:{task}:{L}:{d}")
                out += [gen.sample(task, L, d, rng) for _ in range(samples)]
    return out


def score_samples(samples: list[RulerSample], outputs: list[str]) -> list[RulerResult]:
    results, seen = [], {}
    for s, out in zip(samples, outputs, strict=True):
        k = (s.task, s.length, s.depth)
        seen[k] = seen.get(k, -1) + 1
        results.append(RulerResult(s.task, s.length, s.depth, seen[k], s.answers, out,
                                   string_match_all(out, s.answers)))
    return results


def summarize(results: list[RulerResult], threshold: float = DEFAULT_THRESHOLD) -> dict[str, Any]:
    """Task x length means, the mean over tasks per length, the effective length, and depth x length grids
    for the NIAH tasks."""
    tasks = [t for t in TASKS if any(r.task == t for r in results)]
    lengths = sorted({r.length for r in results})
    table = {t: [float(np.mean([r.score for r in results if r.task == t and r.length == L])) for L in lengths]
             for t in tasks}
    mean = [float(np.mean([table[t][i] for t in tasks])) for i in range(len(lengths))]
    depth_grids = {}
    for t in tasks:
        if t in NIAH_TASKS:
            depths = sorted({r.depth for r in results if r.task == t})
            depth_grids[t] = {"depths": depths, "score": [
                [float(np.mean([r.score for r in results if r.task == t and r.length == L and r.depth == d]))
                 for L in lengths] for d in depths]}
    return {"tasks": tasks, "lengths": lengths, "table": table, "mean": mean, "threshold": threshold,
            "effective_length": effective_length(dict(zip(lengths, mean, strict=True)), threshold),
            "depth_grids": depth_grids}


def results_json(results: list[RulerResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]
