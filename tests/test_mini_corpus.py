"""Corpus assembly of the mini scope, on synthetic package files (no network)."""
from __future__ import annotations

import json
import re

import pytest

from conftest_mini import fake_debian  # noqa: F401  (fixture)
from qscope_utils.mini import corpus, tasks
from qscope_utils.profiles import SMOKE_SCOPE, _built
from dataclasses import replace

SMALL = replace(SMOKE_SCOPE, max_chars_per_source=3000)
FAKE_PKGS = {"fortunes", "fortunes-min", "fortunes-zh", "fortunes-es", "fortunes-es-off", "fortunes-it",
             "fortunes-it-off", "manpages-de"}


def _specs():
    return tuple(s for s in corpus.SOURCES if not s.packages or set(s.packages) <= FAKE_PKGS)


def _build(tmp_name="t"):
    prof = _built(tmp_name, SMALL)
    corpus.build_corpus(prof, sources=_specs(), progress=False)
    return prof


def test_parse_fortunes_strips_ansi_and_splits():
    raw = "\x1b[32m《静夜思》\x1b[m\n床前明月光\n%\n\n%\nsecond entry here\n%"
    assert corpus.parse_fortunes(raw) == ["《静夜思》\n床前明月光", "second entry here"]
    assert corpus.strip_ansi("\x1b[33m作者\x1b[m") == "作者"


def test_roff_to_text_keeps_prose_drops_macros():
    from conftest_mini import ROFF

    text = corpus.roff_to_text(ROFF)
    assert "ls - Verzeichnisinhalte auflisten" in text
    assert "ls listet Informationen über die Dateien auf." in text
    assert "-a" in text and "stat(2)" in text
    assert "\\f" not in text and ".TH" not in text and "comment line" not in text
    assert corpus.roff_to_text(".so man1/other.1\n") == ""


def test_chunking_bounds():
    text = "\n\n".join(f"paragraph {i} " + "x" * 300 for i in range(20))
    chunks = corpus.chunk_text(text, 1000)
    assert all(len(c) <= 1000 for c in chunks) and len(chunks) > 1
    assert "".join(chunks).replace("\n", "") == text.replace("\n", "")


def test_build_corpus_labels_langs_and_manifest(fake_debian):
    prof = _build()
    docs = corpus.load_corpus(prof)
    by_src = {}
    for d in docs:
        by_src.setdefault(d.source, []).append(d)
    # labels only where the packaging says so
    for d in docs:
        if d.source in ("fortunes-es-off", "fortunes-it-off"):
            assert d.label == "offensive"
        elif d.source in ("fortunes-es", "fortunes-it"):
            assert d.label == "clean"
        else:
            assert d.label is None, d
    # the plain fortunes-es package's es/off/ copy is not read as clean
    clean_es = {d.text for d in by_src["fortunes-es"]}
    assert not any("grosero" in t for t in clean_es)
    assert any("grosero" in d.text for d in by_src["fortunes-es-off"])
    # languages and classical Chinese as its own sources
    assert {d.lang for d in by_src["tang300"]} == {"lzh"} and {d.lang for d in by_src["song100"]} == {"lzh"}
    assert by_src["fortunes-zh-modern"][0].lang == "zh"
    assert all("\x1b" not in d.text for d in docs)
    assert {"en", "zh", "lzh", "de", "es", "it", "code", "math"} <= {d.lang for d in docs}
    # ascii-art and index files skipped
    assert not any("/\\_/\\" in d.text for d in by_src["fortunes-en"])
    # man page reduced to prose
    assert any("Verzeichnisinhalte" in d.text for d in by_src["manpages-de"])
    # cap per source
    for src, ds in by_src.items():
        assert sum(len(d.text) for d in ds) <= SMALL.max_chars_per_source, src
    man = corpus.read_manifest(prof)
    rows = {s["source"]: s for s in man["sources"]}
    assert rows["fortunes-es-off"]["licence"].endswith("GPL-2+")
    assert rows["fortunes-es-off"]["packages"] == [{"name": "fortunes-es-off", "version": "1.0-test"}]
    assert "apt-get download fortunes-es-off=1.0-test" in rows["fortunes-es-off"]["obtained"]
    assert rows["fortunes-en"]["n_docs"] == len(by_src["fortunes-en"])
    assert rows["python-stdlib"]["licence"].startswith("PSF")
    # filters
    assert all(d.label == "offensive" for d in corpus.load_corpus(prof, label="offensive"))
    assert all(d.split == "heldout" and d.lang == "math" for d in corpus.load_corpus(prof, split="heldout", lang="math"))


def test_splits_are_deterministic(fake_debian):
    prof = _build("a")
    first = (corpus.corpus_dir(prof) / "docs.jsonl").read_text()
    prof = _build("a")
    assert (corpus.corpus_dir(prof) / "docs.jsonl").read_text() == first
    for line in first.splitlines():
        d = json.loads(line)
        if d["lang"] != "math":
            assert d["split"] == corpus.doc_split(d["text"])
    texts = [f"document number {i}" for i in range(5000)]
    frac = sum(corpus.doc_split(t) == "heldout" for t in texts) / len(texts)
    assert 0.08 < frac < 0.12


def test_missing_package_names_package_and_fix(tmp_path, monkeypatch):
    import subprocess

    monkeypatch.setenv("QSCOPE_DATA", str(tmp_path))
    monkeypatch.setattr(corpus, "_run", lambda cmd, cwd=None: subprocess.CompletedProcess(cmd, 100, "", "E: Unable to locate package"))
    with pytest.raises(corpus.CorpusSourceError, match=r"(?s)fortunes-zh.*Fix: run `apt-get update && apt-get download fortunes-zh`"):
        corpus.fetch_package("fortunes-zh")


def test_user_corpus_dir(tmp_path, monkeypatch):
    root = tmp_path / "texts"
    (root / "en" / "mybooks").mkdir(parents=True)
    (root / "en" / "mybooks" / "a.txt").write_text("An ordinary English document about gardens.")
    (root / "de" / "forum" / "offensive").mkdir(parents=True)
    (root / "de" / "forum" / "offensive" / "x.txt").write_text("Ein grober Satz.\n%\nNoch ein grober Satz.\n")
    monkeypatch.setenv("QSCOPE_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("QSCOPE_CORPUS_DIR", str(root))
    prof = _built("u", SMALL)
    corpus.build_corpus(prof, sources=tuple(s for s in corpus.SOURCES if s.kind == "gen"), progress=False)
    docs = corpus.load_corpus(prof)
    assert {(d.lang, d.source, d.label) for d in docs if d.lang != "math"} == {
        ("en", "mybooks", None), ("de", "forum", "offensive")}
    assert len(corpus.load_corpus(prof, source="forum")) == 2


# ----------------------------------------------------------------------------- arithmetic

def _check(p: tasks.Problem) -> int:
    if p.style == "math":
        expr = re.fullmatch(r"Compute (.+) =", p.prompt).group(1)
        assert re.fullmatch(r"[\d +*-]+", expr)
        return eval(expr)
    q = p.prompt
    nums = [int(x) for x in re.findall(r"\d+", q)]
    if "buys" in q:
        return nums[0] + nums[1]
    if "gives" in q:
        return nums[0] - nums[1]
    if "boxes" in q:
        return nums[0] * nums[1]
    if "equally" in q:
        assert nums[0] % nums[1] == 0
        return nums[0] // nums[1]
    if "finds" in q:
        return nums[0] + nums[1] - nums[2]
    raise AssertionError(q)


@pytest.mark.parametrize("style", tasks.STYLES)
def test_arithmetic_answers_correct_and_deterministic(style):
    probs = tasks.make_problems(300, style, seed=3)
    assert len(probs) == 300 and len({p.prompt for p in probs}) == 300
    for p in probs:
        assert _check(p) == p.answer, p
        assert tasks.problem_split(p.prompt) == "heldout"
        assert p.text == f"{p.prompt} {p.answer}"
    assert tasks.make_problems(300, style, seed=3) == probs
    assert tasks.make_problems(50, style, seed=4) != probs[:50]
    if style == "gsm":
        assert probs[0].prompt.startswith("Question: ") and probs[0].prompt.endswith("Answer:")
    else:
        assert probs[0].prompt.startswith("Compute ") and probs[0].prompt.endswith("=")


def test_heldout_problems_never_in_training_corpus(fake_debian):
    prof = _build()
    train_math = {d.text for d in corpus.load_corpus(prof, lang="math", split="train")}
    assert train_math
    held = tasks.make_problems(200, "math", seed=0) + tasks.make_problems(200, "gsm", seed=0)
    assert not any(p.text in train_math for p in held)
    assert all(tasks.problem_split(t.rsplit(" ", 1)[0]) == "train" for t in train_math)


def test_score_answer():
    assert tasks.score_answer(" 44\nQuestion: next", 44) == 1.0
    assert tasks.score_answer(" -3 apples", -3) == 1.0
    assert tasks.score_answer(" forty-four", 44) == 0.0
    assert tasks.score_answer(" 45", 44) == 0.0
    assert tasks.extract_answer("no number") is None


def test_rotated_fortune_files_are_decoded(tmp_path):
    """Debian's offensive fortunes are ROT13 on disk; the strfile flag in the .dat says so."""
    import codecs
    import struct

    from qscope_utils.mini.corpus import _file_docs, fortune_is_rotated

    text = "Este es un chiste bastante largo para ser un documento.\n%\nOtro chiste largo, también en español.\n"
    for name, flags in (("rot", 0x4), ("plain", 0x0)):
        f = tmp_path / name
        f.write_text(codecs.encode(text, "rot13") if flags else text, encoding="utf-8")
        (tmp_path / f"{name}.dat").write_bytes(struct.pack(">5I", 2, 2, 60, 40, flags) + b"%\0\0\0")
    assert fortune_is_rotated(tmp_path / "rot") and not fortune_is_rotated(tmp_path / "plain")
    assert _file_docs(tmp_path / "rot", "fortune") == _file_docs(tmp_path / "plain", "fortune")
    assert "chiste" in _file_docs(tmp_path / "rot", "fortune")[0]
