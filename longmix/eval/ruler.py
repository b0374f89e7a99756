"""RULER's synthetic long-context tasks (Hsieh et al. 2024; NVIDIA RULER), generated offline from a seed,
as RULER builds them (templates and word lists in `ruler_templates.py`):

- ``niah_single_1`` / ``_2`` / ``_3``: one needle "One of the special magic {numbers|uuids} for KEY is: VALUE."
  in RULER's repeated noise sentence (1) or in real text (2, 3); keys are adjective-noun pairs of English words.
- ``niah_multikey``: the needle plus three distractor needles with other keys, real-text haystack.
- ``niah_multivalue``: four needles with the same key and different values; all four are asked for.
- ``niah_multiquery``: four needles with different keys; all four keys are asked at once.
- ``vt`` (variable tracking): one worked example, then a chain ``VAR ABCDE = 12345``, ``VAR FGHIJ = VAR ABCDE``,
  ... spread through noise lines; name every variable bound to the value.
- ``cwe`` (common words): one worked example, then a numbered list of real English words where 10 recur
  (30x against 3x from 4K tokens, 6x against 1x below, as RULER counts them); name the 10.
- ``fwe`` (frequent words): coded six-letter words with Zipf(2) counts, the most frequent of them RULER's
  "..." noise; name the next three.

A prompt is the task text followed by its answer prefix (RULER's base template: completion style, no chat
template), sized so that it plus the task's answer budget (RULER's `tokens_to_generate`) fits the length.
``chat`` (a `longmix.models.chat_template.ChatTemplate`): RULER in chat form, as RULER's model templates do it: the
task text is the user turn of the model's chat template (generation prompt added) and the answer prefix follows
the generation prompt; the template's scaffolding counts toward the length (no BOS of our own: the template
carries what the model was tuned with). Without it, prompts are byte-identical to the base template's.
``style="lm-eval"`` builds lm-evaluation-harness 0.4.13's variant of the same tasks instead (its CWE prompt
omits the worked example it sizes for, its FWE prompt fills the whole length, its VT keeps RULER's old
"assgined" and other spacing), for a like-for-like comparison with that harness.

Longmix's one addition: NIAH ``depths`` place the target needle at a stated relative depth (RULER draws the
position at random, which is ``depth=None``, the default).

Scoring and the summary are in `ruler_score.py`.
"""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from longmix.core.errors import UserError
from longmix.eval import ruler_templates as T

NIAH_TASKS = ("niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey", "niah_multivalue",
              "niah_multiquery")
TASKS = (*NIAH_TASKS, "vt", "cwe", "fwe")
STYLES = ("ruler", "lm-eval")

_KIND = {"niah_single_1": "number", "niah_single_2": "number", "niah_single_3": "uuid", "niah_multikey": "number",
         "niah_multivalue": "number", "niah_multiquery": "number"}
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LOWER = "abcdefghijklmnopqrstuvwxyz"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass
class RulerSample:
    task: str
    length: int
    depth: float | None  # the target needle's relative depth (NIAH tasks), else None
    prompt: list[int]
    answers: list[str]
    max_new_tokens: int


HAYSTACK_CHARS = 8_000_000  # the same haystack whatever lengths are asked for (up to this much real text)


def haystack_texts(paths: list[Any], seed: int, lengths: Sequence[int]) -> list[str]:
    """Real-text haystack documents in a seeded order, a fixed amount of them (all of a corpus smaller than
    ``HAYSTACK_CHARS``): the lengths asked for must not change which text a cell's prompts draw from."""
    from longmix.eval.loading import seeded_texts

    out, total = seeded_texts(paths, seed, HAYSTACK_CHARS)
    need = max(lengths) * 12
    if total < need:
        raise UserError(f"filler corpus has {total:,} characters; {max(lengths):,}-token prompts need about "
                        f"{need:,}; pass more --haystack files")
    return out


class Generator:
    """Builds RULER prompts with a tokenizer (``tokenizers.Tokenizer``), an optional BOS id and real haystack
    texts (the essay haystack of ``niah_single_2/3`` and the multi-needle tasks)."""

    def __init__(self, tokenizer: Any, bos_id: int | None, haystack: list[str], style: str = "ruler",
                 chat: Any = None):
        if style not in STYLES:
            raise UserError(f"unknown RULER prompt style '{style}'; choose from {', '.join(STYLES)}")
        if chat is not None and style != "ruler":
            raise UserError("RULER in chat form uses RULER's own prompts (style ruler), not lm-eval's")
        self.chat = chat
        self._prefix = ""  # the answer prefix of the prompt text being built (set by _join)
        self.tok = tokenizer
        self.bos = [bos_id] if bos_id is not None else []
        self.style = style
        self.essay = " ".join(haystack).split()  # RULER's essay haystack: its first n words

    def ids(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def n_tokens(self, text: str) -> int:
        return len(self.ids(text))

    def prompt_ids(self, text: str) -> list[int]:
        """The prompt of a task text that ends with its answer prefix: BOS and the text (base template), or the
        text before the prefix as the chat template's user turn, then the prefix (chat form)."""
        if self.chat is None:
            return self.bos + self.ids(text)
        cut = len(text) - len(self._prefix)
        assert text.endswith(self._prefix), "a prompt text ends with the answer prefix _join put there"
        return self.ids(self.chat.user_prompt(text[:cut])) + (self.ids(self._prefix) if self._prefix else [])

    # -- sizing and assembly
    def _largest(self, task: str, length: int, build: Callable[[int], tuple[str, int]], lo: int, hi: int,
                 step: int = 1) -> tuple[int, str]:
        """The most units n (lo <= n <= hi, lo plus a multiple of `step`) whose prompt `build(n)` -> (text,
        tokens it must leave free) fits `length` tokens with the BOS, and that prompt."""
        def fits(n: int) -> tuple[bool, str]:
            text, reserve = build(n)
            return len(self.prompt_ids(text)) + reserve <= length, text

        ok, best = fits(lo)
        best_n = lo
        if not ok:
            raise UserError(f"length {length} is too short for RULER's {task} prompt and its answer budget")
        a, b = 0, (hi - lo) // step  # the largest k with fits(lo + k * step), by bisection
        while a < b:
            mid = (a + b + 1) // 2
            ok, text = fits(lo + mid * step)
            if ok:
                a, best, best_n = mid, text, lo + mid * step
            else:
                b = mid - 1
        return best_n, best

    def _join(self, task: str, body: str, answer: str) -> str:
        """RULER: the task text, then the answer prefix as it is; lm-eval: the stripped prefix after the
        task's target delimiter."""
        self._prefix = answer
        if self.style == "ruler":
            return body + answer
        return body + T.LM_EVAL_DELIMITER.get(task, " ") + answer.strip()

    def _sample(self, task: str, length: int, depth: float | None, text: str, answers: list[str]) -> RulerSample:
        return RulerSample(task, length, depth, self.prompt_ids(text), answers, T.ANSWER_TOKENS[task])

    # -- needle in a haystack
    @staticmethod
    def _keys(rng: random.Random, n: int) -> list[str]:
        adjectives, nouns = T.wonderwords("adjective"), T.wonderwords("noun")
        keys: list[str] = []
        while len(keys) < n:
            k = f"{rng.choice(adjectives)}-{rng.choice(nouns)}"
            if k not in keys:
                keys.append(k)
        return keys

    @staticmethod
    def _value(kind: str, rng: random.Random) -> str:
        if kind == "uuid":
            return str(uuid.UUID(int=rng.getrandbits(128), version=4))
        return str(rng.randint(1_000_000, 9_999_999))

    def niah(self, task: str, length: int, depth: float | None, rng: random.Random) -> RulerSample:
        kind = _KIND[task]
        type_v = {"number": "numbers", "uuid": "uuids"}[kind]
        keys = self._keys(rng, 4 if task in ("niah_multikey", "niah_multiquery") else 1)
        per_key = 4 if task == "niah_multivalue" else 1
        needles = [(k, self._value(kind, rng)) for i, k in enumerate(keys) for _ in range(per_key if i == 0 else 1)]
        asked = keys if task == "niah_multiquery" else keys[:1]
        answers = [v for k, v in needles if k in asked]
        template, answer, shown_v = T.NIAH_TEMPLATE, T.NIAH_ANSWER, type_v
        if len(answers) == 1:  # RULER's singular wording for one needle asked
            template = template.replace("Some", "A").replace("are all", "is").replace("are", "is")
            answer, shown_v = answer.replace("are", "is"), type_v[:-1]
        query = ", ".join(asked)
        needle_texts = [T.NEEDLE.format(type_needle_v=type_v, key=k, value=v) for k, v in needles]
        # Where each needle goes, as a fraction of the haystack: the target at `depth` when one is stated,
        # every other one (and the target when none is) drawn at random, as RULER does.
        where = [depth if depth is not None else rng.random()] + [rng.random() for _ in needle_texts[1:]]
        noise = task == "niah_single_1"

        def build(n: int) -> tuple[str, int]:
            if noise:  # n repeated noise lines, the needles inserted between them
                parts = [T.NOISE] * n
                sep = "\n"
            else:  # the first n words of the essays, the needles inserted between sentences
                parts = _SENTENCE_END.split(" ".join(self.essay[:n]))
                sep = " "
            for pos, text in sorted(zip((round(f * len(parts)) for f in where), needle_texts, strict=True),
                                    key=lambda p: -p[0]):
                parts.insert(pos, text)
            body = template.format(type_needle_v=shown_v, context=sep.join(parts), query=query)
            full = self._join(task, body, answer.format(type_needle_v=shown_v, query=query))
            if self.style == "lm-eval":  # it sizes the text without its answer prefix, plus the answers
                return full, T.ANSWER_TOKENS[task] + 1 + self.n_tokens(" " + " ".join(answers)) - \
                    self.n_tokens(full[len(body):])
            return full, T.ANSWER_TOKENS[task]

        if noise:
            step = 25 if self.style == "lm-eval" and length >= 4096 else 5 if self.style == "lm-eval" else 1
            _, text = self._largest(task, length, build, 1, max(1, length // 8), step)
        else:
            if len(self.essay) < length:
                raise UserError(f"haystack too small: {len(self.essay):,} words for a {length:,}-token context; "
                                "pass more --haystack files")
            _, text = self._largest(task, length, build, 1, min(len(self.essay), length * 2))
        return self._sample(task, length, depth, text, answers)

    # -- variable tracking
    @staticmethod
    def _names(rng: random.Random, n: int, size: int) -> list[str]:
        names: list[str] = []
        while len(names) < n:
            v = "".join(rng.choices(_UPPER, k=size))
            if v not in names and v != "VAR":  # never the keyword of the statements
                names.append(v)
        return names

    def _vt_text(self, names: list[str], value: str, n_noise: int, rng: random.Random) -> tuple[str, str]:
        """The task text (a chain through `n_noise` noise lines) and its answer prefix."""
        chain = [f"VAR {names[0]} = {value}"] + [f"VAR {names[j + 1]} = VAR {names[j]} "
                                                 for j in range(len(names) - 1)]
        at = sorted(rng.sample(range(max(n_noise, len(chain))), len(chain)))
        if self.style == "ruler":
            lines = [T.NOISE] * n_noise
            for j, pos in enumerate(at):
                lines.insert(pos + j, chain[j])
            context = "\n".join(lines)
        else:  # lm-eval (RULER before May 2025): lines end in a newline and are joined with spaces
            lines = [T.NOISE + "\n"] * n_noise
            for j, pos in enumerate(at):
                lines.insert(pos + j, chain[j])
            context = " ".join(lines).replace(". \n", ".\n")
        answer = T.VT_ANSWER if self.style == "ruler" else T.VT_ANSWER_LM_EVAL
        return T.VT_TEMPLATE.format(context=context, query=value), answer.format(num_v=len(names), query=value)

    def _vt_example(self, rng: random.Random) -> str:
        """RULER's worked example: three-letter names, sized to 500 tokens, answered; value 12345 (a fresh value
        per prompt in RULER; lm-eval draws one). Drawn once per cell (task, length), as RULER and lm-eval draw
        one per dataset, so the example varies with the seed and the length. Its noise grows 5, 10, 15, ...
        lines (RULER starts its search at the step) while the text, plus its answers written as a list (what
        RULER counts), fits."""
        names = self._names(rng, 5, 3)
        value = "12345" if self.style == "ruler" else str(rng.randint(10_000, 99_998))
        layout = rng.getrandbits(64)
        reserve = (0 if self.style == "ruler" else 30) + self.n_tokens(" " + str(names))
        n = 5
        while True:
            body, answer = self._vt_text(names, value, n + 5, random.Random(layout))
            if self.n_tokens(body + answer) + reserve > 500:
                break
            n += 5
        body, answer = self._vt_text(names, value, n, random.Random(layout))
        return body + answer + (" " if self.style == "lm-eval" else "") + " ".join(names)

    def vt(self, length: int, rng: random.Random, cell: dict[str, Any] | None = None, hops: int = 4) -> RulerSample:
        cell = {} if cell is None else cell
        if "vt_example" not in cell:
            cell["vt_example"] = self._vt_example(rng)
        example = cell["vt_example"]
        names = self._names(rng, hops + 1, 5)
        value = str(rng.randint(10_000, 99_998))
        # each prompt renames the example's variables (and, in RULER, gives it a value of its own)
        old = example.split("they are: ")[-1].split()
        new = dict(zip(old, self._names(rng, len(old), 3), strict=True))
        example = re.sub(r"\b(" + "|".join(old) + r")\b", lambda m: new[m.group(1)], example)  # in one pass
        if self.style == "ruler":
            example = example.replace("12345", str(rng.randint(10_000, 99_998))) + "\n\n"
        else:
            example = example + "\n\n\n\n"
        layout = rng.getrandbits(64)

        # RULER counts the answers, written as a list, beside the prompt when it sizes the noise
        reserve = T.ANSWER_TOKENS["vt"] + self.n_tokens(" " + str(names))

        def build(n: int) -> tuple[str, int]:
            body, answer = self._vt_text(names, value, n, random.Random(layout))
            return example + self._join("vt", body, answer), reserve

        # lm-eval searches 10, 20, 30, ... noise lines (its first try is the step, not 1); the NVIDIA style
        # here fills the length to the line
        lo, step = (10, 10) if self.style == "lm-eval" else (1, 1)
        _, text = self._largest("vt", length, build, lo, max(lo, length // 8), step)
        return self._sample("vt", length, None, text, names)

    # -- common words
    def cwe(self, length: int, rng: random.Random, n_common: int = 10) -> RulerSample:
        words = T.cwe_words()
        common_x, rare_x, ex_words, ex_common_x, ex_rare_x = (30, 3, 40, 10, 3) if length >= 4096 else (6, 1, 20, 3, 1)

        def word_list(n: int, cx: int, rx: int, r: random.Random) -> tuple[str, list[str]]:
            chosen = r.sample(words, n)
            listed = chosen[:n_common] * cx + chosen[n_common:] * rx
            r.shuffle(listed)
            return " ".join(f"{i + 1}. {w}" for i, w in enumerate(listed)), chosen[:n_common]

        ex_context, ex_common = word_list(ex_words, ex_common_x, ex_rare_x, rng)
        answered = " ".join(f"{i + 1}. {w}" for i, w in enumerate(ex_common))
        example = (T.CWE_TEMPLATE.format(context=ex_context, num_cw=n_common) + T.CWE_ANSWER.format(num_cw=n_common)
                   + (" " if self.style == "ruler" else "") + answered)
        draw = rng.getrandbits(64)
        answer = T.CWE_ANSWER.format(num_cw=n_common)

        def build(n: int) -> tuple[str, int]:
            context, _ = word_list(n, common_x, rare_x, random.Random(draw))
            body = T.CWE_TEMPLATE.format(context=context, num_cw=n_common)
            if self.style == "ruler":
                return example + "\n" + self._join("cwe", body, answer), T.ANSWER_TOKENS["cwe"]
            # lm-eval sizes for the example and the answers but leaves the example out of the prompt
            extra = self.n_tokens(example + "\n") + self.n_tokens(" " + " ".join(common_of(n)))
            return self._join("cwe", body, answer), T.ANSWER_TOKENS["cwe"] + extra

        def common_of(n: int) -> list[str]:
            return word_list(n, common_x, rare_x, random.Random(draw))[1]

        n, text = self._largest("cwe", length, build, n_common + 1, min(len(words), length),
                                10 if self.style == "lm-eval" else 1)
        return self._sample("cwe", length, None, text, common_of(n))

    # -- frequent words
    def fwe(self, length: int, rng: random.Random, cell: dict[str, Any] | None = None,
            alpha: float = 2.0) -> RulerSample:
        from scipy.special import zeta

        cell = {} if cell is None else cell

        size = (length - T.ANSWER_TOKENS["fwe"]) // 50 if self.style == "ruler" else length // 50
        budget = length - (T.ANSWER_TOKENS["fwe"] if self.style == "ruler" else 0)  # the prompt's, BOS included
        step = max(1, length // 32)

        def draw_vocab() -> list[str]:
            vocab: set[str] = set()
            while len(vocab) < max(size, 4):
                vocab.add("".join(rng.choices(_LOWER, k=6)))
            ranked = sorted(vocab)
            random.Random(42).shuffle(ranked)
            ranked[0] = "..."  # the most frequent "word" is RULER's noise, which the question says to ignore
            return ranked

        weights = np.arange(1, max(size, 4) + 1, dtype=np.float64) ** -alpha / zeta(alpha)

        def build(ranked: list[str], n: int) -> str:
            counts = (n * weights).astype(int)
            words = [w for w, c in zip(ranked, counts, strict=True) for _ in range(c)]
            random.Random(42).shuffle(words)
            return self._join("fwe", T.FWE_TEMPLATE.format(context=" ".join(words)), T.FWE_ANSWER)

        if "fwe_words" not in cell:
            # RULER sizes once per cell, with a vocabulary of its own: from length/6 up by length/32 while the
            # prompt stays under the budget, then one step back
            sizing, n = draw_vocab(), length // 6
            while len(self.prompt_ids(build(sizing, n))) < budget:
                n += step
            cell["fwe_words"] = n - step
        ranked, n = draw_vocab(), cell["fwe_words"]
        text = build(ranked, n)
        while len(self.prompt_ids(text)) > budget and n > step:  # each prompt steps down only while it is too long
            n -= step
            text = build(ranked, n)
        if n <= 0 or len(self.prompt_ids(text)) > budget:
            raise UserError(f"length {length} is too short for RULER's fwe prompt and its answer budget")
        return self._sample("fwe", length, None, text, ranked[1:4])

    def sample(self, task: str, length: int, depth: float | None, rng: random.Random,
               cell: dict[str, Any] | None = None) -> RulerSample:
        """One prompt of a cell. `cell` holds what RULER draws once per cell and shares among its prompts
        (vt's worked example, fwe's word count): pass the same dict for every prompt of one cell."""
        cell = {} if cell is None else cell
        if task in NIAH_TASKS:
            return self.niah(task, length, depth, rng)
        if task == "vt":
            return self.vt(length, rng, cell)
        if task == "fwe":
            return self.fwe(length, rng, cell)
        return self.cwe(length, rng)


def build_samples(gen: Generator, tasks: Sequence[str], lengths: Sequence[int], depths: Sequence[float | None],
                  samples: int, seed: int) -> list[RulerSample]:
    """Every (task, length[, depth]) cell's prompts, each cell from its own seeded stream (a cell's prompts do
    not depend on which other cells are asked for). A NIAH depth of None places needles at random (RULER)."""
    if bad := sorted(set(tasks) - set(TASKS)):
        raise UserError(f"unknown RULER task(s) {', '.join(bad)}; choose from {', '.join(TASKS)}")
    out = []
    for task in tasks:
        for L in lengths:
            for d in (depths if task in NIAH_TASKS else [None]):
                rng, cell = random.Random(f"{seed}:{task}:{L}:{d}"), {}
                out += [gen.sample(task, L, d, rng, cell) for _ in range(samples)]
    return out
