"""External datasets of the paper profile: one adapter per dataset, picked from the :data:`SOURCES` table.

Every adapter is a :class:`~.base.DatasetSource` (see ``base.py``): ``SOURCES[name].load(config, split)``
returns a schema-checked ``datasets.Dataset`` read through ``huggingface_hub.snapshot_download`` (online or
from the offline hub cache), ``write_miniature(root)`` writes a schema-exact miniature, and
:func:`write_fixture_hub` writes all miniatures into an offline hub cache for tests.
docs/paper_sources.md lists, per notebook, which source and parameters the paper run uses.
"""
from __future__ import annotations

from pathlib import Path

from . import (ceval, chinese_text, cmmlu, evalplus, gpqa, gsm8k, hendrycks_math, include, mbpp, mgsm, mmlu,
               mmlu_pro, mmlu_redux, mmmlu, multipl_e, sasft_files, supergpqa, textdetox, theoremqa, user_benchmarks,
               wikitext, wildchat, wildjailbreak)
from .base import DatasetSource, SchemaError, SourceNotAvailable, resolve_file
from .fixture_hub import write_fixture_hub

__all__ = ["SOURCES", "DatasetSource", "SchemaError", "SourceNotAvailable", "get_source", "source_for_repo",
           "load_texts", "write_fixture_hub"]

_ALL: list[DatasetSource] = [
    textdetox.SOURCE, *wildjailbreak.SOURCES, wildchat.SOURCE, gsm8k.SOURCE, mgsm.SOURCE, wikitext.SOURCE,
    *chinese_text.SOURCES, *sasft_files.SOURCES, mmlu.SOURCE, mmlu_redux.SOURCE, mmlu_pro.SOURCE, supergpqa.SOURCE,
    ceval.SOURCE, cmmlu.SOURCE, hendrycks_math.SOURCE, gpqa.SOURCE, theoremqa.SOURCE, mbpp.SOURCE, evalplus.SOURCE,
    multipl_e.SOURCE, mmmlu.SOURCE, include.SOURCE, *user_benchmarks.SOURCES]

SOURCES: dict[str, DatasetSource] = {s.name: s for s in _ALL}
"""name -> adapter. Hub-hosted ones have a ``repo_id``; user-supplied ones a ``user_param``."""


def get_source(name: str) -> DatasetSource:
    """The adapter called ``name``; an unknown name lists the known ones."""
    if name not in SOURCES:
        raise KeyError(f"no dataset source {name!r}; known: {sorted(SOURCES)}")
    return SOURCES[name]


def source_for_repo(repo_id: str, config: str | None = None) -> DatasetSource | None:
    """The adapter reading hub repo ``repo_id`` (and ``config``, when one repo has several adapters), or None."""
    hits = [s for s in _ALL if s.repo_id == repo_id]
    if config is not None and len(hits) > 1:
        hits = [s for s in hits if config in s.configs] or hits
    return hits[0] if hits else None


def _text_column(ds, column: str) -> list[str]:
    from .base import type_name

    if column not in ds.column_names:
        raise SchemaError(f"no column {column!r}; columns: {ds.column_names}. Fix: pass the text column")
    if type_name(ds.features[column]).startswith("list<struct"):
        return wildchat.first_user_turns(ds, column)            # chat data: list of {role, content} turns
    return [t for t in ds[column] if isinstance(t, str) and t.strip()]


def load_texts(dataset_id: str, column: str = "text", split: str | None = None, config: str | None = None,
               n: int | None = None, seed: int = 0) -> list[str]:
    """Up to ``n`` non-empty texts (seeded random subset) from a dataset.

    ``dataset_id``: a hub id with an adapter in :data:`SOURCES` (read through it, schema-checked), a
    local file or directory (``.jsonl``/``.json``/``.csv``/``.tsv``/``.parquet``), a file of a hub dataset
    repo as ``org/name:path/in/repo.jsonl`` (``hf_hub_download``, cached), or any other hub id
    (read with ``datasets.load_dataset``: online, or offline only from the datasets cache). A column
    holding a list of chat turns gives each conversation's first user turn.
    """
    src = source_for_repo(dataset_id, config)
    p = resolve_file(dataset_id) if src is None else Path(dataset_id)
    if src is not None:
        ds = src.load(config, split)
    elif p.exists():
        fmt = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}.get(
            p.suffix.lower() if p.is_file() else ".parquet")
        if fmt is None:
            raise ValueError(f"{p}: use a .jsonl, .csv, .tsv or .parquet file")
        ds = DatasetSource(name=p.name, repo_id="local", revision="", configs=("default",), splits=("train",),
                           columns={}, file_format=fmt, data_files="").load(path=p)
    else:
        import datasets

        try:
            ds = datasets.load_dataset(dataset_id, config, split=split or "train")
        except Exception as e:
            raise SourceNotAvailable(f"cannot load {dataset_id!r} ({config}, {split}): {e}\nFix: run once online "
                                     f"(HF_HUB_OFFLINE unset), or pass a local file") from e
    if n is not None and n < len(ds):
        ds = ds.shuffle(seed=seed).select(range(n))
    return _text_column(ds, column)

