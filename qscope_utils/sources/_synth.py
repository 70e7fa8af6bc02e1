"""Small synthetic building blocks for benchmark miniatures (questions with 4 options, code tasks)."""
from __future__ import annotations

_FACTS = [("What is the boiling point of water at sea level in Celsius?", ["100", "90", "80", "120"]),
          ("Which planet is known as the Red Planet?", ["Mars", "Venus", "Jupiter", "Mercury"]),
          ("What is 7 multiplied by 8?", ["56", "54", "64", "48"]),
          ("Which organ pumps blood through the body?", ["Heart", "Liver", "Lung", "Kidney"]),
          ("What gas do plants absorb for photosynthesis?", ["Carbon dioxide", "Oxygen", "Nitrogen", "Helium"])]
_ZH_FACTS = [("水在标准大气压下的沸点是多少摄氏度？", ["100", "90", "80", "120"]),
             ("被称为红色星球的是哪颗行星？", ["火星", "金星", "木星", "水星"]),
             ("七乘以八等于多少？", ["56", "54", "64", "48"])]


def mc(i: int, zh: bool = False, tag: str = "") -> tuple[str, list[str], int]:
    """(question, 4 options, index of the correct one), the correct option rotated through positions."""
    pool = _ZH_FACTS if zh else _FACTS
    q, opts = pool[i % len(pool)]
    k = i % 4
    opts = opts[1:k + 1] + [opts[0]] + opts[k + 1:]
    return f"{q} [{tag}{i}]", opts, k


def code_task(i: int) -> tuple[str, str, str]:
    """(prompt with signature and docstring, canonical solution, entry point) of a tiny Python task."""
    name = f"add_{i}"
    prompt = f'def {name}(x: int) -> int:\n    """Return x plus {i}.\n    >>> {name}(1)\n    {1 + i}\n    """\n'
    return prompt, f"    return x + {i}\n", name
