"""Build notebooks/NN_name.ipynb from notebooks/src/NN_name.py ("percent" cell format).

Cells start with ``# %%``; ``# %% [markdown]`` makes a markdown cell (lines prefixed ``# ``);
``# %% tags=["parameters"]`` tags the papermill parameters cell. Usage:
    python scripts/nb.py            # all sources
    python scripts/nb.py notebooks/src/01_sae_loading.py
The .py file is the source of truth for review and diffs; the .ipynb is what users open and
what papermill runs. tests/test_project.py checks that the two are in step.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
_HEAD = re.compile(r"^# %%(?P<md> \[markdown\])?(?: tags=(?P<tags>\[.*\]))?\s*$")


def build(src: Path) -> nbformat.NotebookNode:
    cells, kind, tags, buf = [], None, [], []

    def flush():
        if kind is None:
            return
        text = "\n".join(buf).strip("\n")
        if kind == "markdown":
            text = "\n".join(l[2:] if l.startswith("# ") else l.lstrip("#") for l in text.splitlines())
            cell = nbformat.v4.new_markdown_cell(text)
        else:
            cell = nbformat.v4.new_code_cell(text)
        if tags:
            cell.metadata["tags"] = tags
        cells.append(cell)

    for line in src.read_text().splitlines():
        m = _HEAD.match(line)
        if m:
            flush()
            kind = "markdown" if m["md"] else "code"
            tags = json.loads(m["tags"]) if m["tags"] else []
            buf = []
        else:
            buf.append(line)
    flush()
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def target(src: Path) -> Path:
    return ROOT / "notebooks" / (src.stem + ".ipynb")


def main(argv: list[str]) -> None:
    srcs = [Path(a) for a in argv] or sorted((ROOT / "notebooks" / "src").glob("*.py"))
    for src in srcs:
        nb = build(src)
        # stable ids so regenerating an unchanged source gives an identical file
        for i, c in enumerate(nb.cells):
            c["id"] = f"c{i:03d}"
        nbformat.write(nb, target(src))
        print(f"wrote {target(src).relative_to(ROOT)}")


if __name__ == "__main__":
    main(sys.argv[1:])
