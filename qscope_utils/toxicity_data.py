"""Labelled splits for §5 toxicity classification: the paper's TextDetox data and the mini corpus's real labels.

Two sources, one output type (:class:`ToxicSplit`, per language: a balanced discovery split and a
balanced evaluation split, label 1 = toxic / offensive, 0 = clean):

* ``paper``: Hugging Face ``textdetox/multilingual_toxicity_dataset`` (one HF split per language,
  columns ``text`` and ``toxic`` in {0, 1}), 13 languages, per language a fixed-seed balanced
  2,000 + 2,000 discovery / 500 + 500 evaluation split (docs/CONVENTIONS.md §5). :func:`splits_from_dataset`
  dedupes and splits any ``datasets.Dataset`` (a pool short of 2,500 unique texts per class, e.g. after
  dedupe, is split in proportion with a warning and its sizes recorded); :func:`paper_splits` reads the
  hub through the ``sources.textdetox`` adapter (pinned layout, 15 language splits checked).
* ``mini``/``smoke``: the mini corpus. Only es and it carry labels, and only because Debian packages
  them separately: ``fortunes-es-off`` / ``fortunes-it-off`` are *offensive*, ``fortunes-es`` /
  ``fortunes-it`` are *clean*. Nothing else is labelled and nothing is invented here: a language
  without both labels is reported by :func:`label_table` and skipped. Discovery comes from the corpus's
  ``train`` split and evaluation from its ``heldout`` split (documents the mini LM never saw),
  balanced to the smaller class and capped by the config sizes.
"""
from __future__ import annotations

import random
import warnings
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

__all__ = ["PAPER_DATASET", "PAPER_LANGS", "ToxicSplit", "balanced_sample", "splits_from_dataset",
           "paper_splits", "mini_splits", "label_table", "labelled_languages", "TOXIC", "CLEAN"]

PAPER_DATASET = "textdetox/multilingual_toxicity_dataset"
PAPER_LANGS = ("en", "ru", "uk", "de", "es", "am", "zh", "ar", "hi", "it", "fr", "tt", "ja")
TOXIC, CLEAN = "offensive", "clean"     # mini-corpus label names


@dataclass
class ToxicSplit:
    """One language's balanced splits. Labels: 1 = toxic/offensive, 0 = clean.

    disc_texts / disc_labels: discovery set (feature selection); eval_texts / eval_labels: held-out
    evaluation set. info: provenance (dataset or corpus sources, pool sizes, seed).
    """

    lang: str
    disc_texts: list[str]
    disc_labels: np.ndarray
    eval_texts: list[str]
    eval_labels: np.ndarray
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        self.disc_labels = np.asarray(self.disc_labels, dtype=np.int8)
        self.eval_labels = np.asarray(self.eval_labels, dtype=np.int8)
        if len(self.disc_texts) != len(self.disc_labels) or len(self.eval_texts) != len(self.eval_labels):
            raise ValueError(f"{self.lang}: texts and labels differ in length")
        overlap = set(self.disc_texts) & set(self.eval_texts)
        if overlap:
            raise ValueError(f"{self.lang}: {len(overlap)} texts are in both discovery and evaluation splits")

    @property
    def sizes(self) -> dict:
        """Counts per split and class: disc_toxic, disc_clean, eval_toxic, eval_clean."""
        return {"disc_toxic": int(self.disc_labels.sum()), "disc_clean": int((self.disc_labels == 0).sum()),
                "eval_toxic": int(self.eval_labels.sum()), "eval_clean": int((self.eval_labels == 0).sum())}


def _dedupe(toxic: list[str], clean: list[str]) -> tuple[list[str], list[str]]:
    """Unique non-empty texts per class; a text found in both classes is dropped from both (ambiguous)."""
    t = list(dict.fromkeys(x for x in toxic if x and x.strip()))
    c = list(dict.fromkeys(x for x in clean if x and x.strip()))
    both = set(t) & set(c)
    return [x for x in t if x not in both], [x for x in c if x not in both]


def balanced_sample(pool: list[str], n: int, rng: random.Random) -> list[str]:
    """``n`` texts drawn without replacement from ``pool`` (sorted first, so the draw depends only on the seed)."""
    if n > len(pool):
        raise ValueError(f"asked for {n} texts but the pool holds {len(pool)}")
    return rng.sample(sorted(pool), n)


def _interleave(toxic: list[str], clean: list[str], rng: random.Random) -> tuple[list[str], np.ndarray]:
    items = [(t, 1) for t in toxic] + [(c, 0) for c in clean]
    rng.shuffle(items)
    return [t for t, _ in items], np.array([y for _, y in items], dtype=np.int8)


def _make_split(lang: str, disc_tox: list[str], disc_cln: list[str], eval_tox: list[str], eval_cln: list[str],
                seed: int, info: dict) -> ToxicSplit:
    rng = random.Random(f"toxicity-order:{lang}:{seed}")
    dt, dy = _interleave(disc_tox, disc_cln, rng)
    et, ey = _interleave(eval_tox, eval_cln, rng)
    return ToxicSplit(lang, dt, dy, et, ey, {**info, "seed": seed})


def _short_sizes(lang: str, n_tox: int, n_cln: int, n_disc: int, n_eval: int, on_short: str) -> tuple[int, int]:
    """(n_disc, n_eval) that fit a pool of ``min(n_tox, n_cln)`` unique texts per class (same proportion)."""
    need, have = n_disc + n_eval, min(n_tox, n_cln)
    if have >= need:
        return n_disc, n_eval
    msg = (f"{lang}: {n_tox} toxic / {n_cln} clean unique texts after dedupe, fewer than the {n_disc}+{n_eval} per "
           f"class asked")
    if on_short == "raise" or have < 2:
        raise ValueError(msg + ". Fix: lower n_disc/n_eval (or on_short='warn' to use what exists)")
    if on_short != "warn":
        raise ValueError(f"on_short must be 'warn' or 'raise', not {on_short!r}")
    ev = max(1, round(have * n_eval / need))
    warnings.warn(msg + f": using {have - ev} + {ev} per class (sizes recorded in the split's info)")
    return have - ev, ev


def splits_from_dataset(ds, lang: str, n_disc: int = 2000, n_eval: int = 500, seed: int = 0,
                        text_col: str = "text", label_col: str = "toxic", on_short: str = "warn") -> ToxicSplit:
    """Balanced fixed-seed split of one language's ``datasets.Dataset`` (or any mapping of columns).

    Texts are deduplicated per class first (a text in both classes is dropped as ambiguous). Per class
    ``n_disc`` discovery + ``n_eval`` evaluation texts, disjoint. ``label_col`` holds 1/True for toxic,
    0/False for clean. A pool shorter than ``n_disc + n_eval`` unique texts per class (TextDetox has about
    2,500 per class, minus duplicates) is split in the same proportion with a warning (``on_short="warn"``,
    the default) or raises (``"raise"``); ``info`` records the pool sizes, duplicates dropped and the sizes
    actually used.
    """
    cols = list(getattr(ds, "column_names", None) or ds.keys())
    for c in (text_col, label_col):
        if c not in cols:
            raise KeyError(f"{lang}: dataset has no column {c!r} (columns: {cols}); pass text_col=/label_col=")
    texts, labels = list(ds[text_col]), [int(v) for v in ds[label_col]]
    bad = sorted(set(labels) - {0, 1})
    if bad:
        raise ValueError(f"{lang}: column {label_col!r} must be 0/1, found {bad[:5]}")
    raw_tox = [t for t, y in zip(texts, labels) if y == 1]
    raw_cln = [t for t, y in zip(texts, labels) if y == 0]
    tox, cln = _dedupe(raw_tox, raw_cln)
    asked = (n_disc, n_eval)
    n_disc, n_eval = _short_sizes(lang, len(tox), len(cln), n_disc, n_eval, on_short)
    rng = random.Random(f"toxicity-split:{lang}:{seed}")
    tox_s, cln_s = balanced_sample(tox, n_disc + n_eval, rng), balanced_sample(cln, n_disc + n_eval, rng)
    info = {"source": "dataset", "rows_toxic": len(raw_tox), "rows_clean": len(raw_cln), "pool_toxic": len(tox),
            "pool_clean": len(cln), "dropped_toxic": len(raw_tox) - len(tox), "dropped_clean": len(raw_cln) - len(cln),
            "asked_disc": asked[0], "asked_eval": asked[1], "n_disc": n_disc, "n_eval": n_eval,
            "short_pool": (n_disc, n_eval) != asked}
    return _make_split(lang, tox_s[:n_disc], cln_s[:n_disc], tox_s[n_disc:], cln_s[n_disc:], seed, info)


def paper_splits(dataset_id: str = PAPER_DATASET, langs: tuple[str, ...] = PAPER_LANGS, n_disc: int = 2000,
                 n_eval: int = 500, seed: int = 0, load_fn=None, **kw) -> dict[str, ToxicSplit]:
    """lang -> :class:`ToxicSplit` from the TextDetox hub dataset (one HF split per language).

    Read through the :mod:`qscope_utils.sources.textdetox` adapter (revision and schema checked; online
    once, then the hub cache). ``dataset_id`` other than the adapter's repo reads a copy with the same
    layout. ``load_fn(dataset_id, lang) -> Dataset`` replaces the adapter (custom data). ``kw`` goes to
    :func:`splits_from_dataset` (e.g. ``on_short``).
    """
    from .sources.textdetox import SOURCE

    src = SOURCE if dataset_id == SOURCE.repo_id else replace(SOURCE, repo_id=dataset_id)
    if load_fn is None:
        def load_fn(did, lang):
            return src.load(split=lang)
    out = {}
    for lang in langs:
        sp = splits_from_dataset(load_fn(dataset_id, lang), lang, n_disc, n_eval, seed, **kw)
        sp.info.update(dataset=dataset_id, revision=src.revision)
        out[lang] = sp
    return out


# ----------------------------------------------------------------------------- mini corpus

def label_table(profile) -> pd.DataFrame:
    """Which corpus languages carry toxicity labels, and how many documents: one row per
    (lang, source, label, split) with ``n_docs``; unlabelled languages appear with label ``None``."""
    from .mini.corpus import load_corpus

    rows: dict[tuple, int] = {}
    for d in load_corpus(profile):
        key = (d.lang, d.source, d.label if d.label else "none", d.split)
        rows[key] = rows.get(key, 0) + 1
    df = pd.DataFrame([(*k, v) for k, v in rows.items()], columns=["lang", "source", "label", "split", "n_docs"])
    return df.sort_values(["label", "lang", "source", "split"]).reset_index(drop=True)


def labelled_languages(profile) -> list[str]:
    """Languages of the corpus holding BOTH offensive and clean documents (mini: es, it)."""
    from .mini.corpus import load_corpus

    langs_tox = {d.lang for d in load_corpus(profile, label=TOXIC)}
    langs_cln = {d.lang for d in load_corpus(profile, label=CLEAN)}
    return sorted(langs_tox & langs_cln)


def mini_splits(profile, n_disc: int | None = None, n_eval: int | None = None, seed: int = 0,
                langs: list[str] | None = None) -> dict[str, ToxicSplit]:
    """lang -> :class:`ToxicSplit` from the mini corpus's REAL labels.

    Discovery texts come from the corpus ``train`` split, evaluation texts from ``heldout``; each
    is balanced to its smaller class and capped at ``n_disc`` / ``n_eval`` per class (None = all).
    ``langs`` defaults to :func:`labelled_languages`; asking for an unlabelled language raises.
    (Debian stores the Spanish offensive fortunes ROT13-encoded; the corpus builder decodes them, see
    ``mini.corpus.fortune_is_rotated``.)
    """
    from .mini.corpus import load_corpus

    avail = labelled_languages(profile)
    langs = list(avail if langs is None else langs)
    missing = [l for l in langs if l not in avail]
    if missing:
        raise ValueError(f"the {getattr(profile, 'name', profile)} corpus has no offensive+clean labels for {missing}; "
                         f"labelled languages: {avail}. Labels are never invented: drop these languages.")
    if not langs:
        raise ValueError("no labelled language in the corpus: build it with the es/it fortune packages")
    out = {}
    for lang in langs:
        pools = {}
        tox_all = {sp_: [d.text for d in load_corpus(profile, split=sp_, lang=lang, label=TOXIC)] for sp_ in ("train", "heldout")}
        for split in ("train", "heldout"):
            cln = [d.text for d in load_corpus(profile, split=split, lang=lang, label=CLEAN)]
            pools[split] = _dedupe(tox_all[split], cln)
        (ttr, ctr), (tho, cho) = pools["train"], pools["heldout"]
        # a text may sit in train of one source and heldout of another only if duplicated across sources
        ho = set(tho) | set(cho)
        ttr, ctr = [t for t in ttr if t not in ho], [t for t in ctr if t not in ho]
        nd = min(len(ttr), len(ctr), n_disc if n_disc is not None else 10 ** 9)
        ne = min(len(tho), len(cho), n_eval if n_eval is not None else 10 ** 9)
        if nd < 1 or ne < 1:
            raise ValueError(f"{lang}: too few labelled documents (train {len(ttr)}/{len(ctr)}, heldout "
                             f"{len(tho)}/{len(cho)} offensive/clean)")
        rng = random.Random(f"toxicity-split:{lang}:{seed}")
        info = {"source": "mini corpus (Debian fortunes-*-off = offensive, fortunes-* = clean)",
                "pool_train_toxic": len(ttr), "pool_train_clean": len(ctr), "pool_heldout_toxic": len(tho),
                "pool_heldout_clean": len(cho), "n_disc": nd, "n_eval": ne}
        out[lang] = _make_split(lang, balanced_sample(ttr, nd, rng), balanced_sample(ctr, nd, rng),
                                balanced_sample(tho, ne, rng), balanced_sample(cho, ne, rng), seed, info)
    return out
