"""Fault injection: the smoke build killed (SIGKILL) inside every stage and with artefacts truncated
between runs resumes to artefacts bit-identical to an uninterrupted build's.

Each build runs in a subprocess (``python -m qscope_utils.mini.build --profile smoke``) with its own
``QSCOPE_DATA``; ``QSCOPE_FAULT_KILL`` (see :mod:`qscope_utils.atomic`) makes it kill itself at a
chosen atomic write, before or after the rename. The Debian package cache of the session's smoke
build is shared read-only, so no network is needed. A quicker smoke scope (``--set``) keeps the
whole test near 2.5 min on 2 cores.
"""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest_mini import fresh_data_root, quick_smoke_build, smoke_scope  # noqa: F401  (smoke_scope fills the package cache)
from qscope_utils.profiles import SMOKE_SCOPE, mini_group_name

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
GROUP = mini_group_name(SMOKE_SCOPE).split("/")[-1]
_build, _data_root = quick_smoke_build, fresh_data_root


def _truncate(p: Path) -> None:
    size = p.stat().st_size
    with open(p, "r+b") as f:
        f.truncate(size // 2)


def _artefacts(smoke: Path) -> dict[str, str]:
    """sha256 of every artefact that must not depend on interruptions: corpus, tokenizer, every
    checkpoint's weights and tokenizer, SAE layer files."""
    files = [smoke / "corpus" / "docs.jsonl", *sorted((smoke / "tokenizer").glob("*.json")),
             *sorted((smoke / "models").glob("main/*")), *sorted((smoke / "models").glob("zoo/*/*.safetensors")),
             *sorted((smoke / "sae" / GROUP).glob("layer*.sae.pt"))]
    return {str(p.relative_to(smoke)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in files if p.name != ".stamp.json"}


# kill point (QSCOPE_FAULT_KILL rule) -> files to truncate before the next run
SCHEDULE: list[tuple[str, list[str]]] = [
    ("smoke/corpus/.stamp.json", []),                           # corpus written, its stamp not yet
    ("smoke/tokenizer@1", []),                                  # tokenizer complete in its temp dir
    ("_resume/balanced-step4.pt", ["models/_data/train_tokens.npz"]),    # branch checkpoint mid-write
    ("zoo/code_math_heavy-step8", ["models/_resume/balanced-step4.pt"]),  # branch run; trunk's branch point damaged
    ("models/zoo.json+", []),                                   # zoo listed, perplexity not yet evaluated
    (f"{GROUP}/layer0.sae.pt+", []),                            # layer file saved, its log not yet
    (f"{GROUP}/layer1.log.json", [f"sae/{GROUP}/layer0.sae.pt"]),  # a finished layer's file damaged
    (f"{GROUP}/.stamp.json", []),                               # all layers done, stage stamp not yet
]


def test_killed_and_truncated_builds_resume_to_identical_artefacts(smoke_scope, tmp_path):
    ref_root = _data_root(tmp_path / "ref")
    r = _build(ref_root)
    assert r.returncode == 0, r.stderr[-3000:]
    want = _artefacts(ref_root / "smoke")
    assert len(want) >= 12

    root = _data_root(tmp_path / "faulty")
    smoke = root / "smoke"
    for rule, damage in SCHEDULE:
        r = _build(root, kill=rule)
        assert r.returncode == -signal.SIGKILL, f"{rule}: expected a SIGKILL, got rc={r.returncode}\n{r.stderr[-3000:]}"
        for rel in damage:
            _truncate(smoke / rel)
    r = _build(root)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _artefacts(smoke) == want

    # damage after a complete build: the size-checked stamps send the build back to the damaged stages
    for rel in ("tokenizer/tokenizer.json", "models/main/model.safetensors", f"sae/{GROUP}/layer1.sae.pt"):
        _truncate(smoke / rel)
    r = _build(root)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "stage tokenizer done" in r.stderr and "stage sae done" in r.stderr
    assert _artefacts(smoke) == want
    r = _build(root)          # and now everything is stamped and whole: nothing is rebuilt
    assert r.returncode == 0 and "[build smoke] stage" not in r.stderr, r.stderr[-2000:]


def test_fault_rule_kills_before_or_after_the_rename(tmp_path):
    code = ("from qscope_utils.atomic import atomic_write_text as w; import sys; "
            "w(sys.argv[1] + '/a.txt', 'one'); w(sys.argv[1] + '/b.txt', 'two'); w(sys.argv[1] + '/a.txt', 'three')")
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for i, (rule, a, b) in enumerate((("a.txt@2", "one", "two"), ("a.txt@2+", "three", "two"), ("b.txt", "one", None))):
        d = tmp_path / f"case{i}"
        d.mkdir()
        r = subprocess.run([sys.executable, "-c", code, str(d)], env={**env, "QSCOPE_FAULT_KILL": rule}, timeout=120)
        assert r.returncode == -signal.SIGKILL
        assert (d / "a.txt").read_text() == a
        assert ((d / "b.txt").read_text() if (d / "b.txt").exists() else None) == b


def test_sae_layer_log_vouches_for_its_file(tmp_path):
    from qscope_utils.atomic import atomic_write_json, file_digest
    from qscope_utils.mini.sae_train import layer_is_done
    from qscope_utils.sae import TopKSAE, save_layer_file

    fp = save_layer_file(TopKSAE(8, 32, 4), tmp_path / "layer0.sae.pt")
    atomic_write_json(tmp_path / "layer0.log.json", {"stamp": "s1", "file": file_digest(fp)})
    assert layer_is_done(tmp_path, 0, "s1") and not layer_is_done(tmp_path, 0, "s2")
    assert not layer_is_done(tmp_path, 1, "s1")
    sd = torch.load(fp, weights_only=True)
    sd["b_dec"][0] += 1.0                     # same size, altered content: the digest catches it
    torch.save(sd, fp)
    assert not layer_is_done(tmp_path, 0, "s1")
    (tmp_path / "layer0.log.json").write_text('{"stamp": "s1", "fi')   # a torn log is "not done", not a crash
    assert not layer_is_done(tmp_path, 0, "s1")


def test_atomic_torch_save_bytes_do_not_depend_on_the_temporary_name(tmp_path):
    from qscope_utils.atomic import atomic_torch_save

    a = atomic_torch_save({"w": torch.arange(4.0)}, tmp_path / "a" / "layer0.sae.pt").read_bytes()
    b = atomic_torch_save({"w": torch.arange(4.0)}, tmp_path / "b" / "other_name.pt").read_bytes()
    assert a == b and not list((tmp_path / "a").glob(".*tmp"))
