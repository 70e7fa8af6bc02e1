"""Same-machine determinism: two from-scratch smoke builds (fresh processes, fresh QSCOPE_DATA roots)
are bit-identical, file by file, and a different build seed gives a different scope in its own folder.

Every artefact is compared by SHA-256 of its bytes: corpus, tokenizer, every checkpoint's
``model.safetensors`` and tokenizer, the SAE layer files (``torch.save`` output: bit-identical too,
see ``qscope_utils.atomic.atomic_torch_save``), the resume states and the token caches. The only
fields allowed to differ are wall-clock records (``seconds``, ``*_seconds``, ``tokens_per_s``,
``finished``) in the build's logs and stamps, and the byte sizes of those logs that the stamps list;
those files are compared with these fields removed. Uses the quick smoke
sizes (``conftest_mini.QUICK_SMOKE``): three builds in about a minute on 2 cores.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

import pytest

from conftest_mini import fresh_data_root, quick_smoke_build, smoke_scope  # noqa: F401  (smoke_scope fills the package cache)

pytestmark = pytest.mark.slow

TIMING_KEYS = {"seconds", "tokens_per_s", "finished"}


def _is_timing_key(k: str) -> bool:
    return k in TIMING_KEYS or k.endswith("_seconds")


def _is_timing_record(p: Path) -> bool:
    return p.name in {".stamp.json", "pretrain.json", "train_log.csv", "train_log.json"} or p.name.endswith(".log.json")


def _without_timings(obj):
    if isinstance(obj, dict):     # a stamp's "files" maps names to sizes: a log's size varies with its timings
        return {k: _without_timings(v) for k, v in obj.items()
                if not _is_timing_key(k) and not (isinstance(v, int) and _is_timing_record(Path(k)))}
    if isinstance(obj, list):
        return [_without_timings(v) for v in obj]
    return obj


def _normalised(p: Path) -> bytes:
    """A timing record's content without its wall-clock fields."""
    if p.suffix == ".csv":
        rows = list(csv.DictReader(io.StringIO(p.read_text())))
        return json.dumps([_without_timings(r) for r in rows], sort_keys=True).encode()
    return json.dumps(_without_timings(json.loads(p.read_text())), sort_keys=True).encode()


def digests(scope_dir: Path) -> dict[str, str]:
    """{relative path: sha256} of every file of a built scope (timing records normalised)."""
    out = {}
    for p in sorted(scope_dir.rglob("*")):
        if p.is_file():
            data = _normalised(p) if _is_timing_record(p) else p.read_bytes()
            out[p.relative_to(scope_dir).as_posix()] = hashlib.sha256(data).hexdigest()
    return out


def test_timing_fields_are_the_only_ones_dropped(tmp_path):
    (tmp_path / ".stamp.json").write_text(json.dumps({"files": {"layer0.log.json": 120, "layer0.sae.pt": 99}}))
    (tmp_path / "layer0.log.json").write_text(json.dumps({"seconds": 1.5, "heldout": {"fvu": 0.2, "tokens_per_s": 9}}))
    (tmp_path / "train_log.csv").write_text("mixture,step,loss,lr,tokens_per_s\nbalanced,1,5.9,0.003,2423.8\n")
    a = digests(tmp_path)
    (tmp_path / "layer0.log.json").write_text(json.dumps({"seconds": 7.0, "heldout": {"fvu": 0.2, "tokens_per_s": 1}}))
    (tmp_path / "train_log.csv").write_text("mixture,step,loss,lr,tokens_per_s\nbalanced,1,5.9,0.003,11.0\n")
    (tmp_path / ".stamp.json").write_text(json.dumps({"files": {"layer0.log.json": 118, "layer0.sae.pt": 99}}))
    assert digests(tmp_path) == a                   # wall-clock fields changed: same digests
    (tmp_path / "layer0.log.json").write_text(json.dumps({"seconds": 7.0, "heldout": {"fvu": 0.3, "tokens_per_s": 1}}))
    (tmp_path / "train_log.csv").write_text("mixture,step,loss,lr,tokens_per_s\nbalanced,1,5.8,0.003,11.0\n")
    (tmp_path / ".stamp.json").write_text(json.dumps({"files": {"layer0.log.json": 118, "layer0.sae.pt": 98}}))
    b = digests(tmp_path)
    assert all(b[k] != a[k] for k in ("layer0.log.json", "train_log.csv", ".stamp.json"))


def test_two_fresh_smoke_builds_are_bit_identical_and_a_seed_changes_them(smoke_scope, tmp_path):
    roots = [fresh_data_root(tmp_path / name) for name in ("first", "second")]
    for root in roots:
        r = quick_smoke_build(root)
        assert r.returncode == 0, r.stderr[-3000:]
    a, b = (digests(root / "smoke") for root in roots)
    kinds = {"model.safetensors": 4, ".sae.pt": 2, "tokenizer.json": 5, "docs.jsonl": 1}   # 3 zoo + main; 2 layers
    for suffix, n in kinds.items():
        assert sum(k.endswith(suffix) for k in a) >= n, (suffix, sorted(a))
    assert sorted(a) == sorted(b)
    assert [k for k in a if a[k] != b[k]] == []

    # build seed 1 (the CLI's --seed): its own folder, seed 0's untouched, different weights everywhere
    r = quick_smoke_build(roots[0], "--seed", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    assert digests(roots[0] / "smoke") == a
    s1 = digests(roots[0] / "smoke-seed1")
    assert json.loads((roots[0] / "smoke-seed1" / "corpus" / ".stamp.json").read_text())["fields"]["seed"] == 1
    for k in ("models/main/model.safetensors", "sae/SAE-Res-MiniQwen3-Base-W1K-L0_8/layer0.sae.pt",
              "sae/SAE-Res-MiniQwen3-Base-W1K-L0_8/layer1.sae.pt", "corpus/docs.jsonl"):
        assert s1[k] != a[k], k
