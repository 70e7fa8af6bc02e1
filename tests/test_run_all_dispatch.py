"""./run_all.sh --lab / --figures dispatch (cheap: --help and --list only, on the running environment)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)


def _run_all(*args):
    from importlib import metadata

    try:                 # bootstrap.sh accepts an environment that holds the pins and the package itself
        metadata.version("qscope-utils")
    except metadata.PackageNotFoundError:
        pytest.skip("the running environment has no qscope-utils install (run_all.sh would install into it)")
    env = {**os.environ, "QSCOPE_VENV": str(VENV), "PYTHONPATH": str(ROOT)}
    return subprocess.run([str(ROOT / "run_all.sh"), *args], capture_output=True, text=True, env=env, timeout=300)


def test_lab_dispatches_to_jupyterlab():
    p = _run_all("--lab", "--help")
    assert p.returncode == 0, p.stderr[-2000:]
    assert "JupyterLab" in p.stdout and "--no-browser" in p.stdout


def test_project_kernel_is_installed_in_the_venv():
    spec = VENV / "share" / "jupyter" / "kernels" / "python3" / "kernel.json"
    if not spec.exists():
        pytest.skip("kernel spec not installed (bootstrap.sh installs it)")
    import json

    argv = json.loads(spec.read_text())["argv"]
    assert Path(argv[0]).parent.resolve() == (VENV / "bin").resolve()   # the venv's own python


def test_figures_dispatches_to_the_figure_cli():
    p = _run_all("--figures", "--list")
    assert p.returncode == 0, p.stderr[-2000:]
    assert "01_reconstruction_by_layer" in p.stdout and "07_comparison" in p.stdout
