"""A CJK-capable font for figures, fetched like the mini corpus: a Debian package without root.

``apt-get download fonts-wqy-microhei`` (1.6 MB; WenQuanYi Micro Hei covers Han, kana and Hangul)
into ``data/_fonts/``, unpacked with ``dpkg-deb -x``; the .ttc is registered with matplotlib's
font manager. Latin, Cyrillic and Greek come from DejaVu Sans, which matplotlib ships, so the
family list ``["DejaVu Sans", <CJK font>]`` draws en/ru/zh/ja text in one label (matplotlib
>= 3.6 falls back glyph by glyph). Without apt-get or network the font is simply absent:
:func:`ensure_cjk_font` warns once and figures fall back to DejaVu Sans (CJK glyphs missing).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import warnings
from pathlib import Path

__all__ = ["CJK_PACKAGE", "CJK_FAMILY", "fonts_dir", "fetch_cjk_font", "ensure_cjk_font"]

CJK_PACKAGE = "fonts-wqy-microhei"
CJK_FAMILY = "WenQuanYi Micro Hei"
_KNOWN = ("WenQuanYi Micro Hei", "Noto Sans CJK SC", "Noto Sans CJK JP", "Source Han Sans SC", "WenQuanYi Zen Hei",
          "Droid Sans Fallback")
_warned = False


def fonts_dir() -> Path:
    """``data/_fonts/`` under the data root (``QSCOPE_DATA`` overrides the root, as for every cache)."""
    from .paths import repo_root

    root = Path(os.environ["QSCOPE_DATA"]) if os.environ.get("QSCOPE_DATA") else repo_root() / "data"
    return root / "_fonts"


def _font_files(d: Path) -> list[Path]:
    return sorted(p for ext in ("ttf", "ttc", "otf") for p in d.rglob(f"*.{ext}")) if d.exists() else []


def fetch_cjk_font(package: str = CJK_PACKAGE) -> list[Path]:
    """Download and unpack ``package`` into :func:`fonts_dir` (cached); return its font files.

    Raises RuntimeError naming the fix when apt-get / dpkg-deb are unavailable or the download fails."""
    d = fonts_dir() / package
    if files := _font_files(d):
        return files
    fix = (f"Fix: run `apt-get download {package}` in {fonts_dir()} and `dpkg-deb -x {package}_*.deb {d}`, "
           f"or install any CJK font (e.g. `apt-get install {package}`) and clear ~/.cache/matplotlib.")
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise RuntimeError(f"cannot fetch {package}: apt-get/dpkg-deb not available. {fix}")
    fonts_dir().mkdir(parents=True, exist_ok=True)
    debs = sorted(fonts_dir().glob(f"{package}_*.deb"))
    if not debs:
        r = subprocess.run(["apt-get", "download", package], cwd=fonts_dir(), capture_output=True, text=True)
        debs = sorted(fonts_dir().glob(f"{package}_*.deb"))
        if r.returncode != 0 or not debs:
            raise RuntimeError(f"apt-get download {package} failed: {(r.stderr or r.stdout).strip()[-300:]}. {fix}")
    tmp = d.with_name(d.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    r = subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(tmp)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"dpkg-deb -x {debs[-1].name} failed: {r.stderr.strip()}. {fix}")
    shutil.rmtree(d, ignore_errors=True)
    tmp.rename(d)
    return _font_files(d)


def ensure_cjk_font(fetch: bool = False) -> str | None:
    """Family name of a CJK font usable by matplotlib, or None (after one warning per process).

    Looks for a font already known to matplotlib, then for files cached in :func:`fonts_dir`
    (registered with ``font_manager.addfont``); with ``fetch=True`` downloads the package first.
    """
    global _warned
    from matplotlib import font_manager

    names = {f.name for f in font_manager.fontManager.ttflist}
    if hit := next((n for n in _KNOWN if n in names), None):
        return hit
    files = [p for d in fonts_dir().glob("*") if d.is_dir() and not d.name.endswith(".tmp") for p in _font_files(d)]
    if not files and fetch:
        try:
            files = fetch_cjk_font()
        except RuntimeError as e:
            if not _warned:
                warnings.warn(str(e), stacklevel=2)
    for p in files:
        font_manager.fontManager.addfont(str(p))
    names = {f.name for f in font_manager.fontManager.ttflist}
    if hit := next((n for n in _KNOWN if n in names), None):
        return hit
    if not _warned:
        _warned = True
        warnings.warn(f"no CJK font found: Chinese/Japanese text in figures will show as boxes (DejaVu Sans). "
                      f"Fetch one with `python -m qscope_utils.figures --fetch-font` ({CJK_PACKAGE}, "
                      f"cached in {fonts_dir()}).", stacklevel=2)
    return None
