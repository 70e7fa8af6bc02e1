"""Build seeds end to end without building: QSCOPE_SEED -> folders, profiles and stage hashes;
the runner's --seed / --seeds (run_all replaced by a recorder); provenance in every summary's _meta;
the across-seed aggregate on hand-made per-seed summaries with known answers."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def no_seed(monkeypatch):
    monkeypatch.delenv("QSCOPE_SEED", raising=False)
    monkeypatch.delenv("QSCOPE_DEVICE", raising=False)


# --- paths and profiles ----------------------------------------------------------------------------

def test_seeded_folder_names(no_seed, monkeypatch):
    from qscope_utils.paths import build_seed, seeded

    assert build_seed() == 0 and seeded("mini") == "mini"
    assert seeded("mini", 0) == "mini" and seeded("mini", 2) == "mini-seed2" and seeded("smoke", 1) == "smoke-seed1"
    assert seeded("paper", 3) == "paper" and seeded("_sources", 3) == "_sources"
    monkeypatch.setenv("QSCOPE_SEED", "4")
    assert build_seed() == 4 and seeded("mini") == "mini-seed4" and seeded("mini", 0) == "mini"
    for bad in ("x", "-1", "1.5", "²"):
        monkeypatch.setenv("QSCOPE_SEED", bad)
        with pytest.raises(ValueError, match="QSCOPE_SEED"):
            build_seed()
        assert seeded("paper") == "paper"          # a profile without a build seed never reads it


def test_data_and_results_dirs_follow_the_seed(no_seed, monkeypatch, tmp_path):
    from qscope_utils.paths import data_dir, results_dir

    monkeypatch.setenv("QSCOPE_DATA", str(tmp_path / "d"))
    monkeypatch.setenv("QSCOPE_RESULTS", str(tmp_path / "r"))
    assert data_dir("mini") == tmp_path / "d" / "mini" and results_dir("mini") == tmp_path / "r" / "mini"
    monkeypatch.setenv("QSCOPE_SEED", "1")
    assert data_dir("mini") == tmp_path / "d" / "mini-seed1" and results_dir("smoke") == tmp_path / "r" / "smoke-seed1"
    assert data_dir("paper") == tmp_path / "d" / "paper" and data_dir("_sources") == tmp_path / "d" / "_sources"


def test_seed_zero_profile_is_the_default_build(no_seed, monkeypatch):
    from qscope_utils.mini.build import stage_hashes
    from qscope_utils.profiles import SMOKE_SCOPE, MiniScopeConfig, get_profile

    default = get_profile("mini")
    assert default.scope == MiniScopeConfig() and default.data_dir.name == "mini"
    assert get_profile("smoke").scope == SMOKE_SCOPE
    monkeypatch.setenv("QSCOPE_SEED", "0")
    assert get_profile("mini") == default and stage_hashes(get_profile("mini").scope) == stage_hashes(MiniScopeConfig())
    monkeypatch.setenv("QSCOPE_SEED", "2")
    p = get_profile("mini")
    assert p.scope == replace(MiniScopeConfig(), seed=2)
    assert Path(p.backbone).parts[-3:] == ("mini-seed2", "models", "main") and "mini-seed2" in Path(p.sae_source).parts
    assert p.sae_repo == default.sae_repo                  # same group name: a seed changes weights, not shapes


def test_stage_hashes_differ_by_seed_at_every_stage():
    from qscope_utils.mini.build import stage_hashes
    from qscope_utils.profiles import MiniScopeConfig

    h0, h1, h1b = (stage_hashes(MiniScopeConfig(seed=s)) for s in (0, 1, 1))
    assert h1 == h1b and all(h0[st] != h1[st] for st in h0)


def test_build_refuses_set_seed_and_names_the_flag(no_seed):
    from qscope_utils.mini.build import _with_overrides
    from qscope_utils.profiles import SMOKE_SCOPE

    with pytest.raises(SystemExit, match="--seed 3"):
        _with_overrides(SMOKE_SCOPE, ["seed=3"])


# --- runner ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("profile,seed,seeds,needle", [
    ("mini", 1, 2, "not both"), ("paper", 1, None, "no build seed"), ("paper", None, 3, "no build seed"),
    ("mini", -1, None, "non-negative"), ("smoke", None, 0, "at least 1")])
def test_seed_options_rejected_in_one_line(profile, seed, seeds, needle):
    from qscope_utils.seeds import check_seed_options

    assert needle in check_seed_options(profile, seed, seeds)


def test_seed_options_accepted(no_seed, monkeypatch):
    from qscope_utils.seeds import check_seed_options

    assert check_seed_options("mini", None, None) is None and check_seed_options("smoke", 0, None) is None
    assert check_seed_options("mini", None, 3) is None and check_seed_options("paper", None, None) is None
    monkeypatch.setenv("QSCOPE_SEED", "one")
    assert "QSCOPE_SEED='one'" in check_seed_options("mini", None, None)


def _record_runs(monkeypatch):
    from qscope_utils import runner, seeds

    calls, agg = [], []
    monkeypatch.setattr(runner, "run_all", lambda profile, only, params, quiet=False:
                        calls.append((profile, only, params, os.environ.get("QSCOPE_SEED"))))
    monkeypatch.setattr(seeds, "_summarize", lambda profile, n: agg.append((profile, n)) or 0)
    return runner, calls, agg


def test_runner_seeds_runs_each_seed_then_aggregates(no_seed, monkeypatch):
    runner, calls, agg = _record_runs(monkeypatch)
    runner.main(["--profile", "smoke", "--seeds", "3", "--only", "00", "1", "-p", "layer", "1", "--quiet"])
    assert calls == [("smoke", ["00", "1"], {"layer": 1}, s) for s in ("0", "1", "2")]
    assert agg == [("smoke", 3)] and "QSCOPE_SEED" not in os.environ


def test_runner_seed_sets_the_seed_for_one_run_only(no_seed, monkeypatch):
    runner, calls, agg = _record_runs(monkeypatch)
    runner.main(["--seed", "2"])
    assert calls == [("mini", None, {}, "2")] and agg == [] and "QSCOPE_SEED" not in os.environ
    runner.main([])
    assert calls[-1] == ("mini", None, {}, None)


def test_runner_cli_refuses_seed_for_paper(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "QSCOPE_RESULTS": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "qscope_utils.runner", "--profile", "paper", "--seeds", "2"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no build seed" in r.stderr and len(r.stderr.strip().splitlines()) == 1


# --- provenance ------------------------------------------------------------------------------------

def test_cpu_model_reads_cpuinfo(tmp_path):
    from qscope_utils.provenance import cpu_model

    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
                 "processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n")
    assert cpu_model(f) == "Intel(R) Xeon(R) Platinum 8480+"
    assert cpu_model(tmp_path / "missing") == (__import__("platform").processor() or "unknown")


def test_provenance_fields(no_seed, monkeypatch):
    import transformers

    from qscope_utils.provenance import cpu_model, provenance

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        monkeypatch.setenv("QSCOPE_SEED", "2")
        p = provenance("mini")
        assert p["torch_threads"] == 1
    finally:
        torch.set_num_threads(n)
    assert p["build_seed"] == 2 and p["device"] == "cpu" and p["cpu"] == cpu_model() and p["cpu_count"] == os.cpu_count()
    assert p["torch"] == torch.__version__ and p["transformers"] == transformers.__version__ and "gpu" not in p
    paper = provenance("paper")
    assert paper["build_seed"] is None and paper["device"] == "cuda"
    monkeypatch.setenv("QSCOPE_DEVICE", "cpu")
    assert provenance("paper")["device"] == "cpu" and provenance("not-a-profile")["device"] is None


def test_every_summary_json_carries_provenance(no_seed, monkeypatch, tmp_path):
    from qscope_utils.report import save_json

    monkeypatch.setenv("QSCOPE_RESULTS", str(tmp_path))
    monkeypatch.setenv("QSCOPE_SEED", "1")
    p = save_json({"x": 1}, "smoke", "01_summary", seed=0)
    assert p == tmp_path / "smoke-seed1" / "01_summary.json"
    m = json.loads(p.read_text())["_meta"]
    assert m["profile"] == "smoke" and m["seed"] == 0 and m["build_seed"] == 1 and m["device"] == "cpu"
    assert {"torch", "transformers", "python", "cpu", "cpu_count", "torch_threads", "platform", "created"} <= set(m)
