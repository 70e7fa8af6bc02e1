"""qscope_utils.figures: every figure redrawn from saved tables (no model), reference lines, CJK font."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "results" / "smoke"


def _py(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg", **env})


@pytest.fixture()
def smoke_copy(tmp_path) -> Path:
    """The committed smoke tables in a temporary results root, with every figure deleted."""
    d = tmp_path / "results" / "smoke"
    shutil.copytree(SMOKE, d, ignore=shutil.ignore_patterns("notebooks", "*.png", "*.pdf", "*.svg"))
    return d


def test_regenerate_from_committed_tables_without_torch(smoke_copy, tmp_path):
    code = """
import json, sys
from qscope_utils import figures as F
r = F.regenerate("smoke", verbose=False)
print(json.dumps({"written": [str(p) for p in r["written"]], "skipped": r["skipped"], "names": list(F.FIGURES),
                  "needs": {n: list(f.needs) for n, f in F.FIGURES.items()},
                  "heavy": [m for m in ("torch", "transformers", "datasets") if m in sys.modules]}))
"""
    p = _py(code, {"QSCOPE_RESULTS": str(tmp_path / "results"), "QSCOPE_DATA": str(tmp_path / "data")})
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["heavy"] == [], f"figures imported {r['heavy']}: regeneration must not load models"
    # every PNG the notebooks save today is registered
    committed = {q.stem for q in SMOKE.glob("*.png")}
    assert committed <= set(r["names"]), committed - set(r["names"])
    drawable = {n for n in r["names"] if all((smoke_copy / t).exists() for t in r["needs"][n])}
    assert set(r["skipped"]) == set(r["names"]) - drawable
    assert len(drawable) >= 21
    for n in drawable:
        for ext in ("png", "pdf"):
            f = smoke_copy / f"{n}.{ext}"
            assert f.exists() and f.stat().st_size > 1000, f
    for n, why in r["skipped"].items():          # skipped ones say which table and which notebook
        assert "missing" in why and f"notebook {n[:2]}" in why
        assert not (smoke_copy / f"{n}.png").exists()


def _ref_lines(ax):
    return {round(float(l.get_ydata()[0]), 6) for l in ax.get_lines()
            if len(set(map(float, l.get_ydata()))) == 1 and l.get_linestyle() == "--"}


def test_paper_reference_lines_at_report_values(smoke_copy):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.collections import PathCollection

    from qscope_utils import figures as F

    fig = F.FIGURES["01_reconstruction_by_layer"](smoke_copy)
    assert 0.2 in _ref_lines(fig.axes[0])                       # audit FVU ~0.20, on the FVU panel only
    assert 0.2 not in _ref_lines(fig.axes[1])
    fig = F.FIGURES["04_f1_by_layer"](smoke_copy)
    assert all(0.9 in _ref_lines(ax) for ax in fig.axes)
    fig = F.FIGURES["05_coverage_vs_budget"](smoke_copy)
    assert 99.74 in _ref_lines(fig.axes[0])
    fig = F.FIGURES["05_downstream"](smoke_copy)                # Table 3 numbers as markers
    marks = {round(float(x), 2) for ax in fig.axes for c in ax.collections
             if isinstance(c, PathCollection) for x, _ in c.get_offsets() if x == x}
    assert {72.0, 78.75, 77.75, 71.75} & marks and marks <= {72.0, 78.75, 77.75, 71.75}


def test_paper_reference_matches_section_constants():
    from qscope_utils import figures as F
    from qscope_utils import sasft, toxicity

    assert F.PAPER_REFERENCE["table4"] == sasft.PAPER_TABLE4
    assert F.PAPER_REFERENCE["toxicity_english_f1"] == toxicity.PAPER_CLAIMS["english_f1_threshold"]
    assert F.PAPER_REFERENCE["toxicity_ratio_at_10pct"] == toxicity.PAPER_CLAIMS["data_efficiency_ratio_at_10pct"]


def test_missing_table_names_the_notebook(tmp_path):
    from qscope_utils import figures as F

    with pytest.raises(F.MissingTable, match="run notebook 04"):
        F.FIGURES["04_transfer_heatmap"](tmp_path)


CJK_FIG = """
import warnings, matplotlib
matplotlib.use("Agg")
from qscope_utils import figures as F
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    fam = F.apply_style()
    F.apply_style()
    fig, ax = F._subplots()
    ax[0, 0].set_title("中文 日本語のテキスト русский текст")
    fig.savefig(r"{out}")
glyph = [str(x.message) for x in w if "missing from font" in str(x.message)]
nofont = [str(x.message) for x in w if "no CJK font" in str(x.message)]
print(f"{fam}|{len(glyph)}|{len(nofont)}")
"""


def _cjk_fonts_dir() -> Path | None:
    """The repo's cached font if present, else a fresh fetch into a temp dir (skips without apt-get)."""
    cached = ROOT / "data" / "_fonts"
    if any(cached.rglob("*.ttc")):
        return cached
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        pytest.skip("apt-get/dpkg-deb not available to fetch the CJK font")
    return None


def test_cjk_text_renders_with_fetched_font(tmp_path):
    cached = _cjk_fonts_dir()
    data = tmp_path / "data"
    data.mkdir()
    if cached:
        (data / "_fonts").symlink_to(cached)
    else:
        p = _py("from qscope_utils.fonts import fetch_cjk_font; fetch_cjk_font()", {"QSCOPE_DATA": str(data)})
        if p.returncode != 0:
            pytest.skip(f"could not fetch the font: {p.stderr[-300:]}")
    p = _py(CJK_FIG.replace("{out}", str(tmp_path / "cjk.png")), {"QSCOPE_DATA": str(data)})
    assert p.returncode == 0, p.stderr[-2000:]
    fam, glyph, nofont = p.stdout.strip().splitlines()[-1].split("|")
    assert fam != "None" and glyph == "0" and nofont == "0", p.stdout


def test_without_cjk_font_warns_once_and_renders(tmp_path):
    p = _py(CJK_FIG.replace("{out}", str(tmp_path / "fallback.png")), {"QSCOPE_DATA": str(tmp_path / "empty")})
    assert p.returncode == 0, p.stderr[-2000:]
    fam, glyph, nofont = p.stdout.strip().splitlines()[-1].split("|")
    if fam != "None":
        pytest.skip(f"a CJK font ({fam}) is installed system-wide: no fallback to exercise")
    assert nofont == "1" and int(glyph) > 0            # one warning from us, boxes for the CJK glyphs
    assert (tmp_path / "fallback.png").stat().st_size > 1000
