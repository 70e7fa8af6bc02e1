"""The README's commands that run offline, as a new user types them: runner CLI edges, the paper
profile's offline failure (one clear line), summarize and the benchmark table without results, and
the environment bootstrap on an existing environment. Everything writes under tmp_path."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _env(tmp_path: Path, **extra) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "QSCOPE_HOME": str(ROOT), "QSCOPE_RESULTS": str(tmp_path / "res"),
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.update(extra)
    return env


def _runner(tmp_path: Path, *args: str, **extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qscope_utils.runner", *args], cwd=ROOT, env=_env(tmp_path, **extra),
                          capture_output=True, text=True, timeout=600)


def _lines(text: str) -> list[str]:
    return [ln for ln in text.strip().splitlines() if ln.strip()]


# --- runner: selection and parameters (in-process, known answers) ---------------------------------

def test_only_numbers_are_normalised_to_two_digits():
    from qscope_utils.runner import list_notebooks

    assert [p.name[:2] for p in list_notebooks(["1"])] == ["01"]
    assert [p.name[:2] for p in list_notebooks(["0"])] == ["00"]          # not all eight
    assert [p.name[:2] for p in list_notebooks(["7", "03"])] == ["03", "07"]
    assert [p.name[:2] for p in list_notebooks(["04_toxicity"])] == ["04"]
    assert len(list_notebooks(None)) == 8


def test_paper_profile_skips_notebook_00_only():
    from qscope_utils.runner import applies, list_notebooks

    nbs = list_notebooks(None)
    assert [p.name[:2] for p in nbs if not applies(p, "paper")] == ["00"]
    assert all(applies(p, "mini") and applies(p, "smoke") for p in nbs)


def test_parameters_parse_like_papermill(tmp_path):
    from qscope_utils.runner import RunnerError, parse_parameters

    f = tmp_path / "p.yaml"
    f.write_text("layer: 3\nalpha: 2.5\n")
    assert parse_parameters([["layer", "18"], ["name", "abc"], ["flag", "true"]], "alpha: 20") == \
        {"alpha": 20, "layer": 18, "name": "abc", "flag": True}
    assert parse_parameters(None, str(f)) == {"layer": 3, "alpha": 2.5}
    with pytest.raises(RunnerError, match="mapping"):
        parse_parameters(None, "- 1\n- 2")
    with pytest.raises(RunnerError, match="--profile"):
        parse_parameters([["profile", "paper"]])


# --- runner CLI: exit code and one clear line ----------------------------------------------------

@pytest.mark.parametrize("args, needle", [
    (["--only", "99"], "no notebook matches 99; valid ids: 00, 01, 02, 03, 04, 05, 06, 07"),
    (["--only", "01", "99"], "no notebook matches 99;"),
    (["--only"], "--only: expected at least one argument"),
    (["--profile", "gpu"], "invalid choice: 'gpu'"),
])
def test_runner_cli_errors_are_one_line(tmp_path, args, needle):
    r = _runner(tmp_path, *args)
    assert r.returncode == 2, r.stderr
    lines = _lines(r.stderr)
    assert len(lines) == 1 and lines[0].startswith("[run_all] error: ") and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "res").exists()


def test_paper_profile_on_cpu_torch_names_the_cuda_install(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this torch has CUDA")
    r = _runner(tmp_path, "--profile", "paper", "--only", "01")
    assert r.returncode == 2
    (line,) = _lines(r.stderr)
    assert "QSCOPE_TORCH=cuda ./run_all.sh --profile paper" in line and "QSCOPE_DEVICE=cpu" in line


def test_paper_profile_offline_skips_00_then_fails_in_one_clear_line(tmp_path):
    """`./run_all.sh --profile paper` offline with an empty cache: 00 skipped, 01 fails, one framed line."""
    hf = tmp_path / "hf"
    hf.mkdir()
    r = _runner(tmp_path, "--profile", "paper", "--only", "00", "01", "--quiet", QSCOPE_DEVICE="cpu",
                HF_HOME=str(hf), HF_HUB_CACHE=str(hf / "hub"))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "[run_all] paper: skipping 00_build_mini_scope (applies to mini, smoke only)" in r.stdout
    last = _lines(r.stderr)[-1]
    assert last.startswith("[run_all] 01_sae_loading failed: "), r.stderr
    assert "Traceback" not in r.stderr and "PapermillExecutionError" not in r.stderr
    assert "cell " not in r.stdout                                  # --quiet: no per-cell lines
    executed = tmp_path / "res" / "paper" / "notebooks" / "01_sae_loading.ipynb"
    text = executed.read_text()                                     # the full traceback stays in the notebook
    assert str(ROOT) not in text and str(tmp_path) not in text      # and names no absolute path


# --- outputs are portable --------------------------------------------------------------------------

def test_save_json_writes_repository_relative_paths(tmp_path, monkeypatch):
    from qscope_utils.paths import rel
    from qscope_utils.profiles import get_profile
    from qscope_utils.report import save_json

    monkeypatch.setenv("QSCOPE_RESULTS", str(tmp_path / "res"))
    monkeypatch.delenv("QSCOPE_DATA", raising=False)
    prof = get_profile("smoke")
    assert Path(prof.backbone).is_absolute()                       # profiles hold absolute paths ...
    summary = {"backbone": prof.backbone, "sae": Path(prof.sae_source), "hub": "Qwen/Qwen3-8B-Base",
               "nested": [{"p": str(ROOT / "results" / "smoke" / "x.png")}], "n": 3}
    save_json(summary, "smoke", "01_summary", seed=0)
    text = (tmp_path / "res" / "smoke" / "01_summary.json").read_text()
    rec = json.loads(text)
    assert str(ROOT) not in text                                   # ... outputs never do
    assert rec["backbone"] == "data/smoke/models/main"
    assert rec["sae"].startswith("data/smoke/sae/SAE-Res-")
    assert rec["hub"] == "Qwen/Qwen3-8B-Base" and rec["n"] == 3
    assert rec["nested"][0]["p"] == "results/smoke/x.png"
    assert rel("/usr/lib") == "/usr/lib"                           # outside the repository: unchanged
    monkeypatch.setenv("QSCOPE_DATA", str(tmp_path / "d"))
    assert rel(get_profile("smoke").backbone) == "data/smoke/models/main"


def test_make_portable_rewrites_executed_notebook_paths(tmp_path):
    from qscope_utils.runner import make_portable

    nb = tmp_path / "x.ipynb"
    nb.write_text(json.dumps({"metadata": {"papermill": {"input_path": f"{ROOT}/notebooks/x.ipynb"}},
                              "text": f"{ROOT}/qscope_utils/benchmarks.py:1: UserWarning; cwd {ROOT}; "
                                      f"other {ROOT}x/keep"}))
    make_portable(nb)
    d = json.loads(nb.read_text())
    assert d["metadata"]["papermill"]["input_path"] == "notebooks/x.ipynb"
    assert d["text"] == f"qscope_utils/benchmarks.py:1: UserWarning; cwd .; other {ROOT}x/keep"


_ABS = re.compile(r"(?<![\w.\-/])/(?:[\w.\-]+/)+(?:data|results|notebooks|qscope_utils)/")


def test_committed_results_name_no_absolute_path():
    """results/smoke and results/mini (tracked text files) name no absolute path of the machine that made them."""
    files = subprocess.run(["git", "ls-files", "results/smoke", "results/mini"], cwd=ROOT, capture_output=True,
                           text=True).stdout.split()
    bad = []
    for f in files:
        if f.endswith((".json", ".ipynb", ".csv", ".md", ".txt")):
            text = (ROOT / f).read_text(errors="replace")
            if str(ROOT) in text or _ABS.search(text):
                bad.append(f)
    assert not bad, f"absolute paths in {bad}: regenerate with ./run_all.sh"


def test_no_tracked_file_cites_a_spec_or_path_outside_the_repository():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    # the checkout's own absolute path, and the spec beside it (not its parent folder: CI clones anywhere,
    # e.g. under /tmp, where README's example output paths would then match)
    outside = [re.escape(s) for s in ("SPEC.md", "../shared/", str(ROOT) + "/")]
    pat = re.compile("|".join(outside))
    bad = []
    for f in files:
        if f.startswith("results/") or not f.endswith((".py", ".md", ".sh", ".yml", ".toml", ".txt", ".ipynb", ".cfg")):
            continue
        if f == "tests/test_readme_commands.py":
            continue
        if pat.search((ROOT / f).read_text(errors="replace")):
            bad.append(f)
    assert not bad, f"cite something outside the repository (use docs/CONVENTIONS.md): {bad}"
    assert (ROOT / "docs" / "CONVENTIONS.md").exists()


# --- summarize and benchmarks ------------------------------------------------------------------------

def test_summarize_paper_without_results_says_so(tmp_path):
    r = subprocess.run([sys.executable, "scripts/summarize.py", "--profile", "paper"], cwd=ROOT,
                       env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    (line,) = _lines(r.stderr)
    assert "no paper results yet" in line and "./run_all.sh --profile paper" in line
    assert "Traceback" not in r.stderr


def test_summarize_reads_and_writes_under_qscope_results(tmp_path):
    src = ROOT / "results" / "mini" / "01_summary.json"
    if not src.exists():
        pytest.skip("no committed mini summary")
    (tmp_path / "res" / "mini").mkdir(parents=True)
    (tmp_path / "res" / "mini" / "01_summary.json").write_text(src.read_text())
    (tmp_path / "res" / "mini" / "timings.json").write_text(json.dumps({"machine": {"cpus": 7}, "notebooks": {"01_x": 3}}))
    r = subprocess.run([sys.executable, "scripts/summarize.py", "--profile", "mini"], cwd=ROOT,
                       env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    md = (tmp_path / "res" / "mini" / "SUMMARY.md").read_text()
    assert "(s, 7 CPU cores; each notebook's last run, which may have shared the cores with other jobs): 01: 3" in md and "| notebook 02 | | not run yet | |" in md
    r = subprocess.run([sys.executable, "scripts/summarize.py", "--profile", "mini", "--readme"], cwd=ROOT,
                       env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "unset QSCOPE_RESULTS" in r.stderr


def test_summarize_perf_prose_numbers_come_from_the_rows():
    sys.path.insert(0, str(ROOT / "scripts"))
    import summarize

    rows = [{"d_model": 64, "d_sae": 1024, "topk_share": 0.30, "encode_vs_bound": 0.5},
            {"d_model": 128, "d_sae": 2048, "topk_share": 0.70, "encode_vs_bound": 0.6},
            {"d_model": 2048, "d_sae": 32768, "topk_share": 0.02, "encode_vs_bound": 0.91},
            {"d_model": 4096, "d_sae": 65536, "topk_share": 0.05, "encode_vs_bound": 0.99}]
    rss = [{"reducer": "mean", "n_texts": 100, "peak_rss_mb": 500}, {"reducer": "mean", "n_texts": 500, "peak_rss_mb": 756},
           {"reducer": "max", "n_texts": 100, "peak_rss_mb": 500}, {"reducer": "max", "n_texts": 500, "peak_rss_mb": 600}]
    p = summarize.perf_prose(rows, rss)
    assert "only 64-128 multiply-adds" in p and "top-k (30-70% of encode time)" in p and "out of reach" in p
    assert "top-k is 2-5% and encode runs at 0.91-0.99" in p
    assert "at most 0.25 GB for 5x more texts" in p


def test_benchmark_table_survives_missing_results(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import run as bench_run

    out = tmp_path / "bench"
    monkeypatch.setattr(bench_run, "OUT", out)
    fake = {"rows": [{"d_model": 8, "d_sae": 64, "k": 2, "dtype": "float32", "encode_tokens_per_s": 10.0,
                      "encode_vs_bound": 0.5, "topk_share": 0.25, "sparse_decode_speedup": 2.0}]}
    monkeypatch.setattr(bench_run.bench_sae, "main", lambda flag: fake)
    bench_run.main(["--quick", "--only", "sae"])                   # no sae_training_quick.json anywhere
    table = (out / "TABLE_quick.md").read_text()
    assert "| encode 8x64 k=2 float32 | 10 tok/s, 0.50 of matmul bound, top-k 25%" in table
    assert "| SAE training | not run yet (`benchmarks/run.py --quick --only train`) | - |" in table


def test_benchmark_output_honours_qscope_results(tmp_path):
    code = "import sys; sys.path.insert(0, 'benchmarks'); import common; print(common.OUT)"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True)
    assert r.stdout.strip() == str(tmp_path / "res" / "benchmarks"), r.stderr


# --- environment bootstrap ---------------------------------------------------------------------------

def _pins_satisfied() -> bool:
    from importlib import metadata

    for line in (ROOT / "requirements.txt").read_text().splitlines():
        m = re.match(r"\s*([A-Za-z0-9_.\-]+)==(\S+)", line.split("#")[0])
        if m:
            try:
                if metadata.version(m[1]).split("+")[0] != m[2]:
                    return False
            except metadata.PackageNotFoundError:
                return False
    return True


@pytest.mark.parametrize("how", ["QSCOPE_VENV", "conda"])
def test_bootstrap_uses_an_existing_environment_without_recreating_it(tmp_path, how):
    if not _pins_satisfied():
        pytest.skip("this interpreter does not hold the pins (bootstrap would install them)")
    prefix = sys.prefix
    extra = {"QSCOPE_VENV": prefix} if how == "QSCOPE_VENV" else {"CONDA_PREFIX": prefix, "CONDA_DEFAULT_ENV": "qscope"}
    env = {k: v for k, v in os.environ.items() if k not in ("QSCOPE_VENV", "CONDA_PREFIX", "CONDA_DEFAULT_ENV",
                                                             "QSCOPE_NO_VENV")}
    env.update(extra, PIP_NO_INDEX="1")
    before = sorted(os.listdir(prefix))
    r = subprocess.run(["bash", "scripts/bootstrap.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{prefix}/bin/python"
    assert "creating" not in r.stderr and "installing" not in r.stderr
    assert sorted(os.listdir(prefix)) == before
    if how == "conda":
        assert "using the active conda env qscope" in r.stderr


def test_bootstrap_refuses_an_unknown_torch_build():
    env = {**os.environ, "QSCOPE_TORCH": "gpu"}
    r = subprocess.run(["bash", "scripts/bootstrap.sh"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "QSCOPE_TORCH must be cpu or cuda" in r.stderr


def test_batch_kernels_start_with_progress_bars_off(tmp_path, monkeypatch):
    from qscope_utils import runner

    monkeypatch.delenv("QSCOPE_PROGRESS", raising=False)
    env = runner._batch_kernel_env(str(tmp_path))
    assert env["IPYTHONDIR"] == str(tmp_path) and env["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    (startup,) = (tmp_path / "profile_default" / "startup").glob("*.py")
    code = startup.read_text() + "\nfrom tqdm.auto import tqdm\nbar = tqdm(range(3), disable=False)\nprint(bar.disable)\n"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip() == "True", r.stderr
    monkeypatch.setenv("QSCOPE_PROGRESS", "1")
    assert runner._batch_kernel_env(str(tmp_path / "other")) == {}
