"""Text sources shared by the sections: the mini corpus for built profiles, HF datasets for paper."""
from __future__ import annotations

import random

from .profiles import Profile

__all__ = ["eval_texts", "load_hf_texts", "require_languages"]


def load_hf_texts(dataset_id: str, split: str | None = "train", column: str = "text", n: int | None = None,
                  config: str | None = None, seed: int = 0) -> list[str]:
    """Up to ``n`` non-empty texts (seeded subset) from a dataset, through :func:`qscope_utils.sources.load_texts`:
    hub ids with an adapter are read (online or from the offline hub cache) and schema-checked, local
    files work too, and a list-of-chat-turns column (WildChat ``conversation``) gives first user turns."""
    from .sources import load_texts

    return load_texts(dataset_id, column=column, split=split, config=config, n=n, seed=seed)


def eval_texts(profile: Profile, n: int = 256, seed: int = 0, dataset_id: str = "Salesforce/wikitext",
               config: str | None = "wikitext-103-raw-v1", column: str = "text") -> list[str]:
    """``n`` held-out texts for reconstruction metrics.

    Built profiles: the mini corpus's held-out split, sampled evenly across languages (fixed seed).
    Paper: ``dataset_id`` from the hub (any text dataset; a parameter, the report does not say).
    """
    if not profile.is_built:
        return _paper_eval_texts(dataset_id, config, column, n, seed)
    from .mini.corpus import load_corpus

    docs = load_corpus(profile, split="heldout")
    by_lang: dict[str, list[str]] = {}
    for d in docs:
        by_lang.setdefault(d.lang, []).append(d.text)
    rng = random.Random(seed)
    for v in by_lang.values():
        rng.shuffle(v)
    out, langs = [], sorted(by_lang)
    while len(out) < n and any(by_lang.values()):
        for lang in langs:
            if by_lang[lang] and len(out) < n:
                out.append(by_lang[lang].pop())
    return out


def require_languages(profile: str | Profile, notebook: str) -> None:
    """Built profiles: stop early, naming the notebook and language, when the corpus lacks one it reads.

    The per-notebook table is ``qscope_utils.mini.corpus.NOTEBOOK_LANGUAGES`` (data/README.md repeats it).
    """
    from .mini.corpus import require_languages as _require

    _require(profile, notebook)


def _paper_eval_texts(dataset_id: str, config: str | None, column: str, n: int, seed: int) -> list[str]:
    """``n`` texts of the test split; WikiText's blank and ``= Heading =`` rows are dropped BEFORE sampling."""
    from .sources import source_for_repo
    from .sources.wikitext import SOURCE as WIKITEXT, paragraphs

    if source_for_repo(dataset_id, config) is WIKITEXT:
        texts = paragraphs(load_hf_texts(dataset_id, "test", column, None, config=config))
        rng = random.Random(seed)
        return rng.sample(texts, n) if n < len(texts) else texts
    return load_hf_texts(dataset_id, "test", column, n, config=config, seed=seed)
