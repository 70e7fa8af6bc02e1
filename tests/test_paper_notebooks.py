"""Notebooks 01-07 on the PAPER profile, executed by the papermill command line against an offline
fixture hub (issue #13).

The hub (``qscope_utils.testing.paper_hub``) holds tiny Qwen3 models under the real backbone ids,
SAE repos under the real ``Qwen/SAE-Res-*`` ids (tiny shapes through QSCOPE_REGISTRY_OVERRIDE) and
the dataset miniatures of ``qscope_utils.sources``; the notebooks read it through the real
``from_pretrained`` / ``hf_hub_download`` / dataset loaders with HF_HUB_OFFLINE=1. Each run passes
the parameters a user would (``USER``, YAML through ``-y``, exactly as README's paper section shows
them) plus small sizes (``SIZES``), then checks tables, figures and summary keys.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
DEVICE = os.environ.get("QSCOPE_TEST_DEVICE", "cpu")
"""Device the notebooks run on (CI: cpu). GPU check of the same runs:
``QSCOPE_TEST_DEVICE=cuda ./run_tests.sh tests/test_paper_notebooks.py``."""

# notebook -> (parameters a user passes, as README shows them; small sizes added by the test only)
USER = {
    "01_sae_loading": "layers: [9, 18]",
    "02_steering_case_studies": "{layer: 18, classical_dataset: zh_classical.jsonl, modern_dataset: zh_modern.jsonl}",
    "03_benchmark_redundancy": "{paper_benchmarks: [GSM8K, MATH, MBPP], paper_layer: 18}",
    "04_toxicity": "{layers: [18, 27], langs: [en, ru, zh]}",
    "05_safety_synthesis": "{layer: 30, natural_dataset_id: allenai/WildChat-1M, natural_column: conversation}",
    "06_sasft": ("{paper_model: Qwen3-1.7B-Base, sft_file: sft.jsonl, eval_file: eval_prompts.jsonl, "
                 "stats_file: lang_texts.jsonl, lambdas: [0.0005, 0.001]}"),
    "07_sae_dapo": "{paper_model: 1.7B, layer: 18}",
}
SIZES = {
    "01_sae_loading": {"n_texts": 8, "max_length": 32, "batch_size": 8},
    "02_steering_case_studies": {"config": {
        "n_cs_prompts": 4, "n_style_prompts": 2, "seeds": [0], "max_new_tokens": 4, "batch_size": 8,
        "n_discovery_texts": 6, "n_dashboard_texts": 2, "max_length": 32, "n_boot": 50,
        "suppress_multipliers": [0.0, 5.0], "activate_multipliers": [0.0, 5.0]}},
    "03_benchmark_redundancy": {"n_items": 6, "n_draws": 5, "config": {"batch_size": 8, "feature_max_length": 64}},
    "04_toxicity": {"n_disc": 4, "n_eval": 2, "config": {
        "n_repeats": 1, "fractions": [0.5, 1.0], "batch_size": 8, "max_length": 32, "chunk_texts": 16,
        "n_boot": 20, "m_values": [1, 2], "logreg_Cs": [1.0], "layers_per_pass": 2}},
    "05_safety_synthesis": {"budget": 4, "config": {
        "n_seed_per_cell": 2, "n_discovery_per_cell": None, "n_eval_per_cell": None, "budget_grid": [0, 2, 4],
        "natural_pool_max": 8, "n_candidates": 2, "n_rounds": 1, "max_new_tokens": 6, "batch_size": 8,
        "max_length": 32, "n_boot": 20, "example_tokens": 8, "n_examples": 1, "alpha_multipliers": [0.0]}},
    "06_sasft": {"steps": 2, "config": {
        "n_train": 8, "prompt_tokens": 8, "response_tokens": 8, "batch_size": 4, "warmup": 0,
        "eval_prompts_per_lang": 4, "n_seeds": 1, "max_new_tokens": 4,
        "gen_batch_size": 8, "ppl_docs_per_lang": 2, "ppl_max_length": 32, "stat_docs_per_lang": 4,
        "stat_max_length": 32, "n_boot": 20}},
    "07_sae_dapo": {"n_steps": 1, "repetition_config": {
        "n_candidates": 2, "screen_mults": [1.0], "n_screen_prompts": 2, "screen_samples": 1, "n_contexts": 4,
        "chunk_tokens": 8, "n_repeats": 3, "alphas": [0.0, 4.0], "n_sweep_prompts": 2, "n_eval_prompts": 2,
        "n_samples": 1, "n_boot": 20},
        "dapo_config": {"G": 2, "n_prompts": 1, "minibatches": 1, "max_new_tokens": 12, "cache_len": 4, "n_train_problems": 4,
                        "max_batch_tokens": 64,  # a tiny budget: rollouts and evaluation stream in batches
                        "n_eval_problems": 2, "n_ppl_texts": 2}},
}


def paper_command(nb: str) -> str:
    """The command README's paper section shows (the test adds ``-y <sizes>`` and output paths)."""
    cwd = " --cwd my_data" if nb in ("02_steering_case_studies", "06_sasft") else ""
    return f"papermill notebooks/{nb}.ipynb out/{nb}.ipynb{cwd} -p profile paper -y '{USER[nb]}'"


@pytest.fixture(scope="session")
def paper_hub(tmp_path_factory):
    from qscope_utils.testing.paper_hub import build_paper_hub, write_user_files

    root = tmp_path_factory.mktemp("paper_hub")
    hub = build_paper_hub(root / "hf_home")
    assert hub.datasets, "qscope_utils.sources.write_fixture_hub is missing: the dataset miniatures were not written"
    write_user_files(root / "my_data")
    return hub, root / "my_data"


def run_paper(nb: str, hub, user_dir: Path, out: Path) -> tuple[Path, dict]:
    import yaml

    env = {**os.environ, **hub.env(), "QSCOPE_DEVICE": DEVICE, "QSCOPE_RESULTS": str(out),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    executed = out / f"{nb}.ipynb"
    cwd = ["--cwd", str(user_dir)] if "--cwd my_data" in paper_command(nb) else []
    cmd = [sys.executable, "-m", "papermill", str(ROOT / "notebooks" / f"{nb}.ipynb"), str(executed), *cwd,
           "-p", "profile", "paper", "-y", USER[nb], "-y", yaml.safe_dump(SIZES[nb]), "--no-progress-bar"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=out)
    cells = json.loads(executed.read_text())["cells"] if executed.exists() else []
    errors = [o for c in cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert proc.returncode == 0 and not errors, (proc.stderr[-3000:], [e.get("evalue") for e in errors])
    return out / "paper", {c["id"]: c for c in cells}


def _summary(res: Path, name: str) -> dict:
    return json.loads((res / f"{name}_summary.json").read_text())


def _figs(res: Path, *names: str) -> None:
    for n in names:
        assert (res / f"{n}.png").stat().st_size > 3000, n


def test_readme_shows_the_commands_these_tests_run():
    readme = (ROOT / "README.md").read_text()
    for nb in USER:
        assert paper_command(nb) in readme, paper_command(nb)


@pytest.mark.slow
def test_paper_01(paper_hub, tmp_path):
    res, _ = run_paper("01_sae_loading", *paper_hub, tmp_path)
    df = pd.read_csv(res / "01_reconstruction.csv")
    assert list(df.layer) == [9, 18] and (df.l0 <= 50 + 1e-6).all() and (df.n_tokens > 0).all()
    assert {"dec_norm_q05", "dec_norm_q50", "dec_norm_q95", "norm_ratio"} <= set(df.columns)
    s = _summary(res, "01")
    assert s["group"] == "Qwen/SAE-Res-Qwen3-8B-Base-W64K-L0_50" and s["backbone"] == "Qwen/Qwen3-8B-Base"
    assert s["k"] == 50 and s["norm_ratio"] == 10.0 and s["mid_layer"] == 18
    _figs(res, "01_reconstruction_by_layer", "01_decoder_norms_and_load")


@pytest.mark.slow
def test_paper_02(paper_hub, tmp_path):
    res, _ = run_paper("02_steering_case_studies", *paper_hub, tmp_path)
    s = _summary(res, "02")
    assert (s["layer"], s["zh_feature"], s["lzh_feature"]) == (18, 6159, 36398)
    assert set(s["given_feature_ranks"]) == {"zh", "lzh"} and s["norm_ratio"] == 10.0
    assert s["given_feature_ranks"]["lzh"]["tables"]["contrast lzh vs zh"]["n_ranked"] == 37888
    c1 = pd.read_csv(res / "02_case1_summary.csv")
    assert {"condition", "metric", "mean", "diff"} <= set(c1.columns)
    conds = set(c1.condition)
    assert len(conds) == 3 and {"baseline", "clamp=0"} <= conds       # baseline, one additive alpha, clamp
    _figs(res, "02_case1_sweep", "02_case2_sweep", "02_dashboards")


@pytest.mark.slow
def test_paper_03(paper_hub, tmp_path):
    res, _ = run_paper("03_benchmark_redundancy", *paper_hub, tmp_path)
    bench = pd.read_csv(res / "03_benchmarks.csv")
    assert list(bench.name) == ["GSM8K", "MATH", "MBPP"]
    red = pd.read_csv(res / "03_redundancy.csv")
    assert sorted(red.benchmark) == ["GSM8K", "MATH", "MBPP"]
    ov = pd.read_csv(res / "03_overlap.csv").set_index("benchmark")
    assert ov.shape == (3, 3) and (ov.values.diagonal() == 1).all()
    s = _summary(res, "03")
    assert s["layer"] == 18 and set(s["benchmarks"]) == {"GSM8K", "MATH", "MBPP"}
    _figs(res, "03_overlap_heatmap")


@pytest.mark.slow
def test_paper_04(paper_hub, tmp_path):
    res, _ = run_paper("04_toxicity", *paper_hub, tmp_path)
    s = _summary(res, "04")
    assert s["languages"] == ["en", "ru", "zh"] and s["norm_ratio"] == 10.0
    grid = pd.read_csv(res / "04_f1_by_layer.csv")
    assert sorted(grid.layer.unique()) == [18, 27] and sorted(grid.lang.unique()) == ["en", "ru", "zh"]
    sizes = pd.read_csv(res / "04_split_sizes.csv")
    assert sorted(sizes.lang) == ["en", "ru", "zh"]


@pytest.mark.slow
def test_paper_05(paper_hub, tmp_path):
    res, _ = run_paper("05_safety_synthesis", *paper_hub, tmp_path)
    s = _summary(res, "05")
    assert s["status"] == "ok" and s["layer"] == 30 and s["n_missing"] > 0 and s["norm_ratio"] == 10.0
    assert s["seed_disjoint_from_discovery"] and s["matched_budget"] >= 0
    cov = pd.read_csv(res / "05_coverage_vs_budget.csv")
    assert {"budget", "Cov(T) feature synthesis", "Cov(T) natural sampling"} <= set(cov.columns)
    _figs(res, "05_targets", "05_coverage_vs_budget")


@pytest.mark.slow
def test_paper_06(paper_hub, tmp_path):
    res, _ = run_paper("06_sasft", *paper_hub, tmp_path)
    s = _summary(res, "06")
    assert (s["backbone"], s["sae_group"]) == ("Qwen/Qwen3-1.7B-Base", "Qwen/SAE-Res-Qwen3-1.7B-Base-W32K-L0_50")
    assert s["layers"] == [26, 27] and s["lambdas"] == [0.0, 0.0005, 0.001] and s["steps"] == 2
    assert s["norm_ratio"] == 10.0                    # massive-norm exclusion in the language statistics
    assert {f["layer"] for f in s["features"]} == {26, 27} and set(s["test"]) == set(s["targets"])


@pytest.mark.slow
def test_paper_07(paper_hub, tmp_path):
    res, _ = run_paper("07_sae_dapo", *paper_hub, tmp_path)
    s = _summary(res, "07")
    assert s["layer"] == 18 and 0 <= s["feature"] < 1024 and s["candidate_layers"] == [18]
    assert s["dapo"]["paper_model"] == "1.7B" and s["dapo"]["n_steps"] == 1 and s["dapo"]["max_new_tokens"] == 12
    assert set(s["arms"]) == {"before RL", "vanilla DAPO", "DAPO + SAE rollouts"}
    assert (res / "07_repetition_features.csv").exists()
