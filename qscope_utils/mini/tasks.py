"""Generated arithmetic in two styles, deterministic by seed.

* ``gsm``: GSM8K-like one-step word problems,
  ``"Question: Tom has 3 apples and buys 5 more. How many apples does he have? Answer: 8"``.
* ``math``: MATH-like bare expressions, ``"Compute 7 * 6 + 2 = 44"``.

A problem is a prompt (ending just before the answer) and an integer answer; the corpus text is
``prompt + " " + answer``. Every prompt has a fixed split by hash (:func:`problem_split`, 10%
held out), so held-out problem sets made by :func:`make_problems` never occur in the
pretraining corpus; :func:`score_answer` is the exact-match reward for benchmarks and RL.
"""
from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

__all__ = ["Problem", "gen_word_problem", "gen_expression", "problem_split", "make_problems",
           "extract_answer", "score_answer", "STYLES"]

STYLES = ("gsm", "math")

_NAMES = [("Tom", "he"), ("Anna", "she"), ("Ben", "he"), ("Lily", "she"), ("Sam", "he"), ("Mia", "she"),
          ("Jack", "he"), ("Emma", "she"), ("Leo", "he"), ("Zoe", "she"), ("Max", "he"), ("Eva", "she")]
_ITEMS = ["apples", "pencils", "books", "marbles", "cookies", "stickers", "coins", "cards", "eggs", "flowers"]


@dataclass(frozen=True)
class Problem:
    prompt: str
    answer: int
    style: str

    @property
    def text(self) -> str:
        """The problem as it appears in the pretraining corpus."""
        return f"{self.prompt} {self.answer}"


def gen_word_problem(rng: random.Random) -> Problem:
    """One GSM8K-like word problem (add, take away, groups of, share equally, two-step)."""
    name, pron = rng.choice(_NAMES)
    item = rng.choice(_ITEMS)
    kind = rng.randrange(5)
    if kind == 0:
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        q = f"{name} has {a} {item} and buys {b} more. How many {item} does {pron} have?"
        ans = a + b
    elif kind == 1:
        a = rng.randint(2, 30)
        b = rng.randint(1, a)
        q = f"{name} has {a} {item} and gives {b} to a friend. How many {item} does {pron} have left?"
        ans = a - b
    elif kind == 2:
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        q = f"{name} has {a} boxes with {b} {item} in each box. How many {item} does {pron} have?"
        ans = a * b
    elif kind == 3:
        b, ans = rng.randint(2, 9), rng.randint(1, 9)
        a = b * ans
        q = f"{name} shares {a} {item} equally among {b} friends. How many {item} does each friend get?"
    else:
        a, b = rng.randint(1, 15), rng.randint(1, 15)
        c = rng.randint(1, a + b)
        q = (f"{name} has {a} {item}, finds {b} more and then loses {c}. "
             f"How many {item} does {pron} have now?")
        ans = a + b - c
    return Problem(f"Question: {q} Answer:", ans, "gsm")


def gen_expression(rng: random.Random) -> Problem:
    """One MATH-like bare expression with standard precedence (integer results only)."""
    kind = rng.randrange(4)
    if kind == 0:
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        op = rng.choice("+-")
        expr = f"{a} {op} {b}"
    elif kind == 1:
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        expr = f"{a} * {b}"
    elif kind == 2:
        a, b, c = rng.randint(2, 9), rng.randint(2, 9), rng.randint(0, 20)
        expr = f"{a} * {b} {rng.choice('+-')} {c}"
    else:
        a, b, c = rng.randint(0, 30), rng.randint(2, 9), rng.randint(2, 9)
        expr = f"{a} + {b} * {c}"
    ans = int(eval(expr, {"__builtins__": {}}, {}))  # noqa: S307 - generated from digits and + - * only
    return Problem(f"Compute {expr} =", ans, "math")


_GEN = {"gsm": gen_word_problem, "math": gen_expression}


def problem_split(prompt: str, heldout_pct: int = 10) -> str:
    """``"heldout"`` for a fixed ~10% of prompts (by hash), ``"train"`` otherwise."""
    h = int.from_bytes(hashlib.sha1(("problem:" + prompt).encode()).digest()[:8], "big")
    return "heldout" if h % 100 < heldout_pct else "train"


def make_problems(n: int, style: str = "gsm", seed: int = 0, split: str = "heldout",
                  unique: bool = True, max_tries: int | None = None) -> list[Problem]:
    """``n`` problems of one style from one split, deterministic by ``seed``.

    ``split="heldout"`` gives problems whose prompts never appear in the pretraining corpus
    (the corpus only holds train-split prompts). ``unique`` drops repeated prompts; if the
    problem space runs out before ``n`` (only happens for very large n) fewer are returned.
    """
    if style not in _GEN:
        raise ValueError(f"style must be one of {STYLES}, not {style!r}")
    rng = random.Random(f"{style}:{seed}:{split}")
    out, seen = [], set()
    tries = max_tries or 200 * n + 1000
    for _ in range(tries):
        if len(out) >= n:
            break
        p = _GEN[style](rng)
        if problem_split(p.prompt) != split or (unique and p.prompt in seen):
            continue
        seen.add(p.prompt)
        out.append(p)
    return out


_INT_RE = re.compile(r"-?\d+")


def extract_answer(completion: str) -> int | None:
    """The first integer in a model completion (what follows the prompt), or None."""
    m = _INT_RE.search(completion)
    return int(m.group()) if m else None


def score_answer(completion: str, answer: int) -> float:
    """Exact-match reward: 1.0 if the first integer of the completion equals the answer."""
    got = extract_answer(completion)
    return 1.0 if got is not None and got == answer else 0.0
