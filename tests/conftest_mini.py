"""Fixtures of the mini-scope tests (imported by tests/conftest.py and the mini test modules).

``smoke_scope`` builds the smoke profile once per session (cached under data/smoke, or under
$QSCOPE_DATA/smoke): corpus from Debian packages (apt-get download, no root), tokenizer, a tiny
Qwen3 with its checkpoint zoo and one TopK SAE per layer. A second session finds every stage
stamped and does nothing.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

__all__ = ["smoke_scope", "fake_debian", "QUICK_SMOKE", "quick_smoke_build", "fresh_data_root"]

REPO = Path(__file__).resolve().parents[1]
# a quicker smoke scope (same stages, same files; 8 training steps, a branch at step 4): ~4x less work
QUICK_SMOKE = ["max_chars_per_source=6000", "vocab_size=384", "train_steps=8", "zoo_steps=[4,8]", "branch_step=4",
               "sae_train_tokens=2048"]


def quick_smoke_build(root: Path, *args: str, kill: str | None = None) -> subprocess.CompletedProcess:
    """``python -m qscope_utils.mini.build --profile smoke`` with :data:`QUICK_SMOKE` in a fresh process,
    ``QSCOPE_DATA=root``; ``args`` are extra CLI arguments (``--seed 1``), ``kill`` a QSCOPE_FAULT_KILL rule."""
    env = {**os.environ, "QSCOPE_DATA": str(root), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("QSCOPE_FAULT_KILL", None)      # (QSCOPE_CORPUS_DIR, if set, is kept: the session's corpus source)
    env.pop("QSCOPE_SEED", None)
    if kill:
        env["QSCOPE_FAULT_KILL"] = kill
    sets = [x for kv in QUICK_SMOKE for x in ("--set", kv)]
    return subprocess.run([sys.executable, "-m", "qscope_utils.mini.build", "--profile", "smoke", "--threads", "2",
                           *sets, *args], env=env, capture_output=True, text=True, timeout=900)


def fresh_data_root(tmp: Path) -> Path:
    """A fresh, empty QSCOPE_DATA root sharing the session's unpacked Debian packages (no network)."""
    from qscope_utils.paths import data_dir

    tmp.mkdir(parents=True)
    if data_dir("_sources").is_dir():
        (tmp / "_sources").symlink_to(data_dir("_sources").resolve(), target_is_directory=True)
    return tmp


@pytest.fixture(scope="session")
def smoke_scope():
    """(profile, build report) of the smoke profile, built once per session."""
    from qscope_utils.mini.build import build_scope
    from qscope_utils.profiles import get_profile

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    report = build_scope("smoke", progress=False)
    return get_profile("smoke"), report


FORTUNE_ES = "Más vale tarde que nunca.\n%\nEl que madruga, Dios le ayuda.\n%\n\x1b[32mQuien mucho abarca\x1b[m poco aprieta.\n"
FORTUNE_ES_OFF = "Chiste grosero uno, bastante largo para contar.\n%\nChiste grosero dos, también largo.\n"
FORTUNE_IT = "Chi va piano va sano e va lontano.\n%\nL'abito non fa il monaco.\n"
FORTUNE_IT_OFF = "Battuta volgare numero uno.\n%\nBattuta volgare numero due.\n"
TANG = "\x1b[32m《静夜思》\x1b[m\n\x1b[33m作者：李白\x1b[m\n床前明月光，疑是地上霜。\n举头望明月，低头思故乡。\n%\n\x1b[32m《春晓》\x1b[m\n作者：孟浩然\n春眠不觉晓，处处闻啼鸟。\n"
EN = "A penny saved is a penny earned.\n\t\t-- Benjamin Franklin\n%\nThe early bird catches the worm.\n%\n"
ROFF = """.\\" comment line
.TH LS 1 "2020" "GNU" "Benutzerbefehle"
.SH NAME
ls \\- Verzeichnisinhalte auflisten
.SH BESCHREIBUNG
\\fBls\\fP listet Informationen über die \\fIDateien\\fP auf.
.PP
.B \\-a
zeigt auch versteckte Einträge an.
.BR stat (2)
"""


@pytest.fixture()
def fake_debian(tmp_path, monkeypatch):
    """A fake Debian package cache (no network): fetch_package returns synthetic unpacked roots."""
    import gzip

    from qscope_utils.mini import corpus

    F = "usr/share/games/fortunes"
    layout = {
        "fortunes": {f"{F}/fortunes": EN, f"{F}/fortunes.dat": "binary index", f"{F}/ascii-art": "  /\\_/\\ \n%\n"},
        "fortunes-min": {f"{F}/literature": EN.replace("penny", "pound")},
        "fortunes-zh": {f"{F}/tang300": TANG, f"{F}/song100": TANG.replace("李白", "苏轼"),
                        f"{F}/chinese": "今天天气很好，我们去公园散步吧。\n%\n他说这本书非常有意思。\n"},
        "fortunes-es": {f"{F}/es/refranes.fortunes": FORTUNE_ES, f"{F}/es/off/varios.fortunes": FORTUNE_ES_OFF},
        "fortunes-es-off": {f"{F}/off/es/off/varios.fortunes": FORTUNE_ES_OFF},
        "fortunes-it": {f"{F}/it/italia": FORTUNE_IT},
        "fortunes-it-off": {f"{F}/off/it/italia-o": FORTUNE_IT_OFF},
        "manpages-de": {"usr/share/man/de/man1/ls.1.gz": ROFF},
    }
    roots = {}
    for pkg, files in layout.items():
        root = tmp_path / "debroot" / pkg
        for rel, text in files.items():
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(gzip.compress(text.encode()) if rel.endswith(".gz") else text.encode())
        cp = root / "usr/share/doc" / pkg / "copyright"
        cp.parent.mkdir(parents=True, exist_ok=True)
        cp.write_text("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
                      "Files: *\nLicense: GPL-2+\n")
        roots[pkg] = root

    def fake_fetch(pkg):
        if pkg not in roots:
            raise corpus.CorpusSourceError(f"could not fetch Debian package {pkg!r} (fake)")
        return roots[pkg], "1.0-test"

    monkeypatch.setattr(corpus, "fetch_package", fake_fetch)
    monkeypatch.setenv("QSCOPE_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("QSCOPE_CORPUS_DIR", raising=False)
    return roots
