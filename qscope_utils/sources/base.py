"""The one interface every external dataset goes through: :class:`DatasetSource`.

An adapter states what it expects of a Hugging Face dataset repo (id, revision, configs, splits,
column types, file format and file layout) and offers three things:

* :meth:`DatasetSource.load` resolves the files with ``huggingface_hub.snapshot_download`` (which
  honours ``HF_HUB_OFFLINE`` and the hub cache ``$HF_HOME/hub``), parses them with a packaged
  ``datasets`` builder (``parquet`` / ``csv`` / ``json``) and checks the schema, raising
  :class:`SchemaError` that names the mismatch (expected vs found) and the fix.
  Why not ``datasets.load_dataset(repo_id, ...)``: in datasets 5.2.0 that call does not read a dataset
  repo from the hub cache offline (it raises ``ConnectionError ... OfflineModeIsEnabled`` even when
  ``datasets--org--name/snapshots/<sha>`` holds the files), so the fixture hub could not exercise it.
  The snapshot route is the same code online (it downloads) and offline (it reads the cache).
* :meth:`DatasetSource.write_miniature` writes a schema-exact miniature of the repo: same configs,
  split names, file paths, format, column names and types, with a few realistic synthetic rows.
* ``path=`` on :meth:`load` reads a local file of the same schema instead (user-supplied data).

Column types use one small vocabulary: ``string``, ``int``, ``float``, ``bool``, ``list<T>``,
``struct<a,b>`` (the struct must hold AT LEAST the named fields) and ``any``.
"""
from __future__ import annotations

import glob
import json
import random
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

__all__ = ["DatasetSource", "SchemaError", "SourceNotAvailable", "type_name", "type_matches", "CONVERTED_PARQUET",
           "MINI_SHARD", "resolve_file"]

CONVERTED_PARQUET = "refs/convert/parquet"
"""The hub's auto-converted Parquet branch (``{config}/{split}/0000.parquet``): a branch, not a pinned commit."""

MINI_SHARD = "00000-of-00001"
"""What a ``*`` in a data-file pattern becomes in a miniature (the hub's single-shard name)."""

_FORMATS = {"parquet": "parquet", "csv": "csv", "tsv": "csv", "jsonl": "json", "json": "json"}


class SchemaError(ValueError):
    """The data does not have the schema its adapter expects (column, type, split or config)."""


class SourceNotAvailable(RuntimeError):
    """The dataset cannot be reached: not in the offline cache, gated, or a user-supplied file not given."""


# ----------------------------------------------------------------------------- types

def type_name(feature) -> str:
    """A ``datasets`` feature as a type string of the vocabulary above (ints -> ``int``, struct fields sorted)."""
    from datasets import ClassLabel, Value

    if isinstance(feature, ClassLabel):
        return "int"
    if isinstance(feature, dict):
        return "struct<" + ",".join(sorted(feature)) + ">"
    if isinstance(feature, Value):
        d = feature.dtype
        if d in ("string", "large_string"):
            return "string"
        if d.startswith(("int", "uint")):
            return "int"
        if d.startswith("float") or d == "double":
            return "float"
        if d == "bool":
            return "bool"
        return d
    inner = getattr(feature, "feature", None)
    if inner is not None:          # List / LargeList / Sequence
        return f"list<{type_name(inner)}>"
    return type(feature).__name__


def _split_top(s: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in s:
        depth += ch == "<"
        depth -= ch == ">"
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    return out + [cur] if cur else out


def type_matches(expected: str, feature) -> bool:
    """True if ``feature`` satisfies ``expected`` (``struct<a,b>`` needs at least fields a and b)."""
    if expected == "any":
        return True
    if expected.startswith("list<"):
        inner = getattr(feature, "feature", None)
        return inner is not None and not isinstance(feature, dict) and type_matches(expected[5:-1], inner)
    if expected.startswith("struct<"):
        return isinstance(feature, dict) and all(f in feature for f in _split_top(expected[7:-1]))
    return type_name(feature) == expected


# ----------------------------------------------------------------------------- the interface

@dataclass(frozen=True)
class DatasetSource:
    """One external dataset: what its hub repo holds and how to read it.

    Subclasses (one per file in :mod:`qscope_utils.sources`) override :meth:`mini_row` and may add
    helpers that turn rows into what the sections need (texts, problems, prompts).
    """

    name: str
    """Key in :data:`qscope_utils.sources.SOURCES` (and in docs/paper_sources.md)."""
    repo_id: str
    """Hub dataset id (``org/name``); empty for a user-supplied file (see ``user_param``)."""
    revision: str
    """Pinned commit sha, tag or branch passed to ``snapshot_download``. A 40-hex value is a commit sha
    checked on the hub; anything else is a NAMED revision (branch such as ``main`` or
    ``refs/convert/parquet``) whose content can change: ``revision_note`` says why it is not a sha."""
    configs: tuple[str, ...]
    """Config names as on the hub (``("default",)`` for a single-config repo)."""
    splits: tuple[str, ...]
    """Split names every config must provide (checked on load)."""
    columns: Mapping[str, str]
    """Column name -> type (vocabulary in the module docstring); extra columns in the data are fine."""
    file_format: str
    """How the hub ships the files: ``parquet``, ``tsv``, ``csv`` or ``jsonl``."""
    data_files: str
    """File layout inside the repo: a glob pattern with ``{config}`` and ``{split}`` placeholders, e.g.
    ``data/{split}-*.parquet``; a ``*`` becomes ``00000-of-00001`` in a miniature."""
    concat_configs: bool = False
    """True: ``load(config=None)`` concatenates every config (one config per subject or language)."""
    default_split: str | None = None
    """Split read when ``load`` gets none (default: the first of ``splits``)."""
    read_kwargs: Mapping[str, object] = field(default_factory=dict)
    """Extra keyword arguments of the ``datasets`` builder (e.g. TSV ``delimiter`` / ``keep_default_na``)."""
    expected_rows: int | None = None
    """Rows of the full concatenated default split in the version the report used (a warning if different)."""
    user_param: str | None = None
    """For data without a verifiable hub id: the notebook / config parameter the user must set to a file."""
    revision_note: str = ""
    """Why ``revision`` is what it is (verified sha, or the reason it is a named branch)."""
    note: str = ""
    """Anything a reader must know (what the report says, what is a choice of ours)."""

    # ------------------------------------------------------------------ miniature rows
    def mini_row(self, config: str, split: str, i: int, rng: random.Random) -> dict:
        """Row ``i`` of a miniature's (config, split): realistic synthetic values of the declared types."""
        raise NotImplementedError(f"{type(self).__name__} has no miniature rows")

    def mini_rows(self, config: str, split: str, n_rows: int) -> list[dict]:
        rng = random.Random(f"{self.name}:{config}:{split}")
        return [self.mini_row(config, split, i, rng) for i in range(n_rows)]

    # ------------------------------------------------------------------ layout
    @property
    def is_user_supplied(self) -> bool:
        return not self.repo_id

    def file_pattern(self, config: str, split: str) -> str:
        return self.data_files.format(config=config, split=split)

    def mini_path(self, config: str, split: str) -> str:
        return self.file_pattern(config, split).replace("*", MINI_SHARD)

    def _split(self, split: str | None) -> str:
        split = split or self.default_split or self.splits[0]
        if split not in self.splits:
            raise SchemaError(f"{self.name}: no split {split!r}; {self.repo_id or 'this source'} has splits "
                              f"{list(self.splits)}. Fix: pass one of them")
        return split

    def _configs(self, config: str | None) -> list[str]:
        if config is not None:
            return [config]
        return list(self.configs) if self.concat_configs else [self.configs[0]]

    # ------------------------------------------------------------------ loading
    def load(self, config: str | None = None, split: str | None = None, path: str | Path | None = None):
        """The (config, split) as a ``datasets.Dataset``, schema-checked.

        ``config=None``: the first config, or ALL configs concatenated when ``concat_configs`` (those
        found in the snapshot; a declared config that is missing is reported). ``path``: read a local
        file (or a directory of files) with this source's format instead of the hub.
        """
        if path is not None:
            return self.check(self._read([str(p) for p in _expand(path)], "train"), str(path))
        if self.is_user_supplied:
            raise SourceNotAvailable(f"{self.name}: no public hub copy is known, so it is read from a file you "
                                     f"supply. Fix: set `{self.user_param}` to a {self.file_format} file with columns "
                                     f"{dict(self.columns)}")
        split = self._split(split)
        concat = config is None and self.concat_configs
        root = self._snapshot(["*"] if concat else self._configs(config), split)
        configs = self._found_configs(root, split) if concat else self._configs(config)
        parts: list = []
        missing = [c for c in self.configs if c not in configs] if concat else []
        for c in configs:
            files = sorted(glob.glob(str(root / self.file_pattern(c, split))))
            if not files:
                missing.append(c)
                continue
            ds = self.check(self._read(files, split), f"{self.repo_id}@{self.revision} config {c!r} split {split!r}")
            if len(self.configs) > 1 and "config" not in ds.column_names:
                ds = ds.add_column("config", [c] * len(ds))
            parts.append(ds)
        if not parts or (missing and not concat):
            raise SchemaError(self._missing_msg(root, missing or list(self.configs[:1]), split))
        if missing:
            warnings.warn(f"{self.name}: {len(missing)} of the {len(self.configs)} declared configs have no split "
                          f"{split!r} in the snapshot (e.g. {missing[:5]}); concatenating the {len(parts)} found")
        ds = parts[0] if len(parts) == 1 else _concat(parts, list(self.columns))
        if concat and self.expected_rows is not None and len(ds) != self.expected_rows:
            warnings.warn(f"{self.name}: {len(ds)} rows in split {split!r}, the report's version has "
                          f"{self.expected_rows} ({self.note})")
        return ds

    def _found_configs(self, root: Path, split: str) -> list[str]:
        """Configs present in a snapshot: the ``{config}`` part of every file matching the layout."""
        rx = re.escape(self.data_files).replace(r"\{config\}", "(?P<config>[^/]+)").replace(r"\{split\}",
                                                                                        re.escape(split))
        rx = re.compile(rx.replace(r"\*", "[^/]*") + "$")
        found = set()
        for p in root.rglob("*"):
            m = rx.match(p.relative_to(root).as_posix())
            if m:
                found.add(m.group("config"))
        return sorted(found, key=lambda c: (self.configs.index(c) if c in self.configs else len(self.configs), c))

    def _snapshot(self, configs: Sequence[str], split: str) -> Path:
        from huggingface_hub import snapshot_download

        pats = [self.file_pattern(c, split) for c in configs]
        try:
            return Path(snapshot_download(self.repo_id, repo_type="dataset", revision=self.revision,
                                          allow_patterns=pats))
        except Exception as e:  # offline miss, gated repo, unknown revision, network
            gated = any(k in str(e).lower() for k in ("gated", "401", "403"))
            raise SourceNotAvailable(
                f"cannot fetch {self.repo_id} (revision {self.revision!r}, files {pats[:3]}): {type(e).__name__}: "
                f"{e}\nFix: run once with network access (HF_HUB_OFFLINE unset) so the files land in the hub cache"
                + (", after accepting the dataset's terms on huggingface.co and `hf auth login`" if gated else "")
                + "; or check the repo id / revision") from e

    def _missing_msg(self, root: Path, missing: list[str], split: str) -> str:
        have = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())[:12]
        return (f"{self.name}: {self.repo_id}@{self.revision} has no files for split {split!r} of config(s) "
                f"{missing[:5]} (expected pattern {self.file_pattern(missing[0], split)!r}); files in the snapshot: "
                f"{have}. Fix: pass an existing config/split, or pin the revision whose layout this adapter describes"
                f"{'; offline, the cache may hold only part of the repo: run once online' if _offline() else ''}")

    def _read(self, files: list[str], split: str):
        import datasets

        builder = _FORMATS.get(self.file_format)
        if builder is None:
            raise ValueError(f"{self.name}: unknown file_format {self.file_format!r}; use one of {sorted(_FORMATS)}")
        kw = dict(self.read_kwargs)
        if self.file_format == "tsv":
            kw.setdefault("delimiter", "\t")
        return datasets.load_dataset(builder, data_files={split: files}, split=split, **kw)

    def check(self, ds, where: str = ""):
        """``ds`` unchanged if it has every declared column with its type; else :class:`SchemaError`."""
        found = {c: type_name(f) for c, f in ds.features.items()}
        problems = []
        for col, typ in self.columns.items():
            if col not in ds.features:
                problems.append(f"column {col!r} ({typ}) missing")
            elif not type_matches(typ, ds.features[col]):
                problems.append(f"column {col!r} should be {typ}, found {found[col]}")
        if problems:
            raise SchemaError(f"{self.name} ({where}): " + "; ".join(problems) + f". Found columns: {found}. "
                              f"Fix: pin the revision this adapter describes ({self.revision!r}), or pass data with "
                              f"columns {dict(self.columns)}")
        return ds

    # ------------------------------------------------------------------ miniature
    def write_miniature(self, root: str | Path, n_rows: int = 8) -> Path:
        """Write a schema-exact miniature of the repo under ``root`` (every config x split, ``n_rows`` each)."""
        root = Path(root)
        for c in self.configs:
            for s in self.splits:
                self._write_rows(root / self.mini_path(c, s), self.mini_rows(c, s, n_rows))
        return root

    def _write_rows(self, path: Path, rows: list[dict]) -> None:
        import pandas as pd

        path.parent.mkdir(parents=True, exist_ok=True)
        fmt = self.file_format
        if fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(rows), path)
        elif fmt in ("tsv", "csv"):
            pd.DataFrame(rows).to_csv(path, sep="\t" if fmt == "tsv" else ",", index=False)
        elif fmt in ("jsonl", "json"):
            path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        else:
            raise ValueError(f"{self.name}: cannot write format {fmt!r}")

    def describe(self) -> dict:
        """One row of docs/paper_sources.md."""
        return {"name": self.name, "repo_id": self.repo_id or f"(user file: {self.user_param})",
                "revision": self.revision, "configs": self.configs if len(self.configs) < 6 else
                f"{len(self.configs)} configs" + (" (concatenated)" if self.concat_configs else ""),
                "splits": self.splits, "columns": dict(self.columns), "format": self.file_format}


def resolve_file(spec: str | Path) -> Path:
    """A local path, or ``org/name:path/in/repo`` -> the cached file of that hub dataset repo."""
    p = Path(spec)
    if p.exists() or ":" not in str(spec):
        return p
    repo, _, fname = str(spec).partition(":")
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo, fname, repo_type="dataset"))
    except Exception as e:
        raise SourceNotAvailable(f"cannot fetch {fname!r} from dataset repo {repo!r}: {e}\nFix: run once online, "
                                 f"or pass a local path") from e


def _offline() -> bool:
    import huggingface_hub.constants as c

    return bool(c.HF_HUB_OFFLINE)


def _concat(parts: list, declared: list[str]):
    """Concatenate per-config datasets; when their features differ, keep the declared columns (+ config)."""
    import datasets

    if any(p.features != parts[0].features for p in parts[1:]):
        keep = [c for c in declared + ["config"] if c in parts[0].column_names]
        parts = [p.select_columns(keep) for p in parts]
        parts = [parts[0]] + [p.cast(parts[0].features) for p in parts[1:]]
    return datasets.concatenate_datasets(parts)


def _expand(path: str | Path) -> list[Path]:
    p = Path(path)
    if p.is_dir():
        files = sorted(q for q in p.rglob("*") if q.is_file() and not q.name.startswith("."))
    else:
        files = [Path(x) for x in sorted(glob.glob(str(p)))] or [p]
    missing = [q for q in files if not q.exists()]
    if missing or not files:
        raise SourceNotAvailable(f"no such file: {missing[0] if missing else p}. Fix: point the parameter at an "
                                 f"existing file")
    return files
