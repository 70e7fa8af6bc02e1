"""Text sources shared by the sections: the mini corpus for built profiles, HF datasets for paper."""
from __future__ import annotations

import random

from .profiles import Profile

__all__ = ["eval_texts", "load_hf_texts", "require_languages"]


def load_hf_texts(dataset_id: str, split: str = "train", column: str = "text", n: int | None = None,
                  config: str | None = None, seed: int = 0) -> list[str]:
    """Up to ``n`` non-empty texts from a Hugging Face dataset (honours HF_DATASETS_OFFLINE / the cache)."""
    import datasets

    try:
        ds = datasets.load_dataset(dataset_id, config, split=split)
    except Exception as e:  # datasets raises several types for offline / missing
        raise RuntimeError(f"cannot load dataset {dataset_id!r} ({config}, {split}): {e}\nFix: run once with network "
                           f"access so it lands in the HF cache, or pass a local path/dataset id that is cached.") from e
    if column not in ds.column_names:
        raise KeyError(f"{dataset_id} has no column {column!r}; columns: {ds.column_names}")
    if n is not None and n < len(ds):
        ds = ds.shuffle(seed=seed).select(range(n))
    return [t for t in ds[column] if t and t.strip()]


def eval_texts(profile: Profile, n: int = 256, seed: int = 0, dataset_id: str = "Salesforce/wikitext",
               config: str | None = "wikitext-103-raw-v1", column: str = "text") -> list[str]:
    """``n`` held-out texts for reconstruction metrics.

    Built profiles: the mini corpus's held-out split, sampled evenly across languages (fixed seed).
    Paper: ``dataset_id`` from the hub (any text dataset; a parameter, the report does not say).
    """
    if not profile.is_built:
        return load_hf_texts(dataset_id, "test", column, n, config=config, seed=seed)
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
