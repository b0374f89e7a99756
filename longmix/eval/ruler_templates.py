"""NVIDIA RULER's templates, answer budgets and word lists (github.com/NVIDIA/RULER, Apache-2.0:
`scripts/data/synthetic/constants.py`, `variable_tracking.py`, `common_words_extraction.py`,
`freq_words_extraction.py`), and where lm-evaluation-harness 0.4.13's port of them differs.

Each task's prompt is its task template followed by its answer prefix (RULER's "base" template: completion
style, no chat template), so base models answer too. The answer budget is RULER's `tokens_to_generate`: the
prompt is sized to leave it free, and generation stops there.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."

NIAH_TEMPLATE = ("Some special magic {type_needle_v} are hidden within the following text. Make sure to memorize "
                 "it. I will quiz you about the {type_needle_v} afterwards.\n{context}\nWhat are all the special "
                 "magic {type_needle_v} for {query} mentioned in the provided text?")
NIAH_ANSWER = " The special magic {type_needle_v} for {query} mentioned in the provided text are"
NEEDLE = "One of the special magic {type_needle_v} for {key} is: {value}."

VT_TEMPLATE = ("Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n{context}\n"
               "Question: Find all variables that are assigned the value {query} in the text above.")
VT_ANSWER = (" Answer: According to the chain(s) of variable assignment in the text above, {num_v} variables are "
             "assigned the value {query}, they are: ")
VT_ANSWER_LM_EVAL = VT_ANSWER.replace("are assigned", "are assgined")  # lm-eval 0.4.13 keeps RULER's old typo

CWE_TEMPLATE = ("Below is a numbered list of words. In these words, some appear more often than others. Memorize the "
                "ones that appear most often.\n{context}\nQuestion: What are the {num_cw} most common words in the "
                "above list?")
CWE_ANSWER = " Answer: The top {num_cw} words that appear most often in the list are:"

FWE_TEMPLATE = ("Read the following coded text and track the frequency of each coded word. Find the three most "
                "frequently appeared coded words. {context}\nQuestion: Do not provide any explanation. Please ignore "
                "the dots '....'. What are the three most frequently appeared words in the above coded text?")
FWE_ANSWER = " Answer: According to the coded text above, the three most frequently appeared words are:"

# RULER's tokens_to_generate per task (scripts/synthetic.yaml), the same in lm-eval's task files.
ANSWER_TOKENS = {"niah_single_1": 128, "niah_single_2": 128, "niah_single_3": 128, "niah_multikey": 128,
                 "niah_multivalue": 128, "niah_multiquery": 128, "vt": 30, "cwe": 120, "fwe": 50}

# lm-eval joins its input and the stripped answer prefix with the task's target delimiter.
LM_EVAL_DELIMITER = {"cwe": "\n\n"}


@cache
def wonderwords(kind: str) -> tuple[str, ...]:
    """The English word lists RULER draws its keys (adjective-noun) and CWE words (nouns, adjectives, verbs)
    from: the ones the `wonderwords` package ships."""
    try:
        text = (resources.files("wonderwords") / "assets" / f"{kind}list.txt").read_text(encoding="utf-8")
    except ModuleNotFoundError:
        from longmix.core.errors import UserError

        raise UserError("RULER's word lists come from the wonderwords package: pip install wonderwords") from None
    return tuple(w.strip() for w in text.splitlines() if w.strip())


@cache
def cwe_words() -> tuple[str, ...]:
    """RULER's CWE vocabulary: the sorted set of nouns, adjectives and verbs, shuffled with seed 42."""
    import random

    words = sorted({w for kind in ("noun", "adjective", "verb") for w in wonderwords(kind)})
    random.Random(42).shuffle(words)
    return tuple(words)
