"""Paper-shape dry run: every notebook's PAPER code path on random weights of the published shapes.

    python scripts/paper_shape.py --model 1.7B --device cpu --notebooks 01 02 04
    python scripts/paper_shape.py --model 8B --device cuda          # all seven (scripts/paper_shape_gpu.sh)

It builds (once, in ``--root``, outside the repository by default) an offline hub of real shapes
(:func:`qscope_utils.testing.paper_hub.build_paper_hub` with ``shape="real"``), then runs each notebook
with papermill exactly as README's paper section does (``-p profile paper -y <parameters>``) plus a
handful of texts and short generations, with the probe of :mod:`qscope_utils.testing.probe` in the
kernel. Per notebook and per cell ("stage") it records wall seconds, peak memory (CUDA max allocated on
a GPU; resident set of the kernel process on a CPU), bytes of SAE layer files and backbone weight files
loaded, and bytes read by ``read()`` calls, into ``<out>/<device>_<model>.csv`` (one row per stage and a
``TOTAL`` row per notebook), ``.json`` (the same with the run's shapes, versions and parameters) and
``.md`` (the per-notebook table).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
PROBE = Path(__file__).resolve().parent / "probe"
NOTEBOOKS = ("01_sae_loading", "02_steering_case_studies", "03_benchmark_redundancy", "04_toxicity",
             "05_safety_synthesis", "06_sasft", "07_sae_dapo")
USER_DIR_NOTEBOOKS = ("02_steering_case_studies", "06_sasft")
"""Notebooks that read user-supplied files from their working directory (README: ``--cwd my_data``)."""


def notebook_parameters(nb: str, model: str) -> dict:
    """Parameters of one dry run of ``nb`` at ``model``'s shape: README's paper parameters, a handful of
    texts, short generations. Layers exist in both depths (28 and 36); LoRA rank 8 for the fine-tuning
    notebooks (a full fine-tune of 1.7B in fp32 with AdamW needs about 32 GB, of 8B about 130 GB)."""
    small = model != "8B"
    p = {
        "01_sae_loading": {"layers": [9, 18], "n_texts": 8, "max_length": 64, "batch_size": 8},
        "02_steering_case_studies": {
            "layer": 18, "classical_dataset": "zh_classical.jsonl", "modern_dataset": "zh_modern.jsonl",
            "config": {"n_cs_prompts": 4, "n_style_prompts": 2, "seeds": [0], "max_new_tokens": 4, "batch_size": 8,
                       "n_discovery_texts": 6, "n_dashboard_texts": 2, "max_length": 32, "n_boot": 50,
                       "suppress_multipliers": [0.0, 5.0], "activate_multipliers": [0.0, 5.0]}},
        "03_benchmark_redundancy": {"paper_benchmarks": ["GSM8K", "MATH", "MBPP"], "paper_layer": 18, "n_items": 6,
                                    "n_draws": 5, "config": {"batch_size": 8, "feature_max_length": 32}},
        "04_toxicity": {"layers": [18, 27], "langs": ["en", "ru", "zh"], "n_disc": 4, "n_eval": 2, "config": {
            "n_repeats": 1, "fractions": [0.5, 1.0], "batch_size": 8, "max_length": 32, "chunk_texts": 16,
            "n_boot": 20, "m_values": [1, 2], "logreg_Cs": [1.0], "layers_per_pass": 2}},
        "05_safety_synthesis": {
            "layer": 18 if small else 30, "natural_dataset_id": "allenai/WildChat-1M", "natural_column": "conversation",
            "budget": 4, "config": {
                "n_seed_per_cell": 2, "n_discovery_per_cell": None, "n_eval_per_cell": None, "budget_grid": [0, 2, 4],
                "natural_pool_max": 8, "n_candidates": 2, "n_rounds": 1, "max_new_tokens": 4, "batch_size": 8,
                "max_length": 32, "n_boot": 20, "example_tokens": 8, "n_examples": 1, "alpha_multipliers": [0.0]}},
        "06_sasft": {
            "paper_model": f"Qwen3-{model}-Base", "sft_file": "sft.jsonl", "eval_file": "eval_prompts.jsonl",
            "stats_file": "lang_texts.jsonl", "lambdas": [0.0005], "steps": 2, "lora_r": 8, "config": {
                "n_train": 8, "prompt_tokens": 8, "response_tokens": 8, "batch_size": 2, "warmup": 0,
                "eval_prompts_per_lang": 2, "n_seeds": 1, "max_new_tokens": 4, "gen_batch_size": 8,
                "ppl_docs_per_lang": 2, "ppl_max_length": 32, "stat_docs_per_lang": 4, "stat_max_length": 32,
                "n_boot": 20}},
        "07_sae_dapo": {
            "paper_model": model, "layer": 18, "n_steps": 1, "lora_r": 8, "repetition_config": {
                "n_candidates": 2, "screen_mults": [1.0], "n_screen_prompts": 2, "screen_samples": 1, "n_contexts": 4,
                "chunk_tokens": 8, "n_repeats": 3, "alphas": [0.0, 4.0], "n_sweep_prompts": 2, "n_eval_prompts": 2,
                "n_samples": 1, "n_boot": 20},
            "dapo_config": {"G": 2, "n_prompts": 1, "minibatches": 1, "max_new_tokens": 12, "cache_len": 4,
                            "n_train_problems": 4, "n_eval_problems": 2, "n_ppl_texts": 2}},
    }[nb]
    if small and nb == "02_steering_case_studies":
        p["lzh_feature"] = 30000        # the report's 36398 is an 8B W64K id: out of range for a W32K group
    if small and nb == "04_toxicity":   # 04 has its own 1.7B parameters: the real 1.7B ids
        p.update(backbone="Qwen/Qwen3-1.7B-Base", sae_repo="Qwen/SAE-Res-Qwen3-1.7B-Base-W32K-L0_50")
    return p


@dataclass
class RunConfig:
    """One dry run.

    model: published shape to build ("1.7B" or "8B").
    device: "cpu" or "cuda" (QSCOPE_DEVICE of the kernels).
    dtype: backbone dtype (QSCOPE_DTYPE); None keeps the paper profile's bfloat16 (CPU default: float32,
        bf16 matmuls without bf16 matrix units run about 100x slower).
    notebooks: notebook stems to run, in order.
    root: folder for the hub, the user files and the executed notebooks (GBs; outside the repository).
    out: folder of the result tables.
    timeout_s: per-notebook limit (a notebook past it is recorded as "timeout").
    n_distinct_layers: distinct random SAE states cycled over the layer files (disk, not bytes read).
    """

    model: str = "1.7B"
    device: str = "cpu"
    dtype: str | None = None
    notebooks: list[str] = field(default_factory=lambda: list(NOTEBOOKS))
    root: Path = Path(os.environ.get("QSCOPE_PAPER_SHAPE_ROOT", "/tmp/qscope-paper-shape"))
    out: Path = ROOT / "results" / "paper-shape"
    timeout_s: int = 1800
    n_distinct_layers: int = 2

    @property
    def tag(self) -> str:
        return f"{self.device}_{self.model}"


def ensure_hub(cfg: RunConfig):
    """Build (or reuse) the real-shape hub and the user files under ``cfg.root``; returns (hub, user_dir)."""
    from .paper_hub import PaperHub, build_paper_hub, write_user_files

    hf_home, user_dir = cfg.root / f"hub_{cfg.model}", cfg.root / "my_data"
    stamp = hf_home / "paper_shape.json"
    if stamp.exists():
        meta = json.loads(stamp.read_text())
        hub = PaperHub(hf_home, hf_home / "registry_override.json", repos=meta["repos"], datasets=meta["datasets"],
                       shape="real", aliases=meta["aliases"])
    else:
        t0 = time.perf_counter()
        hub = build_paper_hub(hf_home, shape="real", models=(cfg.model,), n_distinct_layers=cfg.n_distinct_layers)
        stamp.write_text(json.dumps({"repos": hub.repos, "datasets": hub.datasets, "aliases": hub.aliases,
                                     "build_seconds": time.perf_counter() - t0}))
    write_user_files(user_dir)
    return hub, user_dir


def run_notebook(nb: str, cfg: RunConfig, hub, user_dir: Path) -> dict:
    """Execute ``nb`` under papermill with the probe; returns its record (stages, totals, status)."""
    work = cfg.root / "runs" / cfg.tag / nb
    work.mkdir(parents=True, exist_ok=True)
    log = work / "probe.jsonl"
    log.unlink(missing_ok=True)
    Path(f"{log}.running").unlink(missing_ok=True)
    env = {**os.environ, **hub.env(), "QSCOPE_DEVICE": cfg.device, "QSCOPE_RESULTS": str(work),
           "QSCOPE_PROBE_LOG": str(log), "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(PROBE), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    if cfg.dtype:
        env["QSCOPE_DTYPE"] = cfg.dtype
    params = notebook_parameters(nb, cfg.model)
    executed = work / f"{nb}.ipynb"
    cwd = ["--cwd", str(user_dir)] if nb in USER_DIR_NOTEBOOKS else []
    cmd = [sys.executable, "-m", "papermill", str(ROOT / "notebooks" / f"{nb}.ipynb"), str(executed), *cwd,
           "-p", "profile", "paper", "-y", yaml.safe_dump(params), "--no-progress-bar"]
    load0, t0 = os.getloadavg(), time.perf_counter()
    # own process group: a timeout must also end the kernel (papermill's child), not only papermill
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=work,
                            start_new_session=True)
    try:
        _, err = proc.communicate(timeout=cfg.timeout_s)
        status, tail = ("ok" if proc.returncode == 0 else "error"), err[-4000:]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        _, err = proc.communicate()
        status, tail = "timeout", f"stopped after {cfg.timeout_s} s (--timeout)\n" + (err or "")[-4000:]
    wall = time.perf_counter() - t0
    rec = summarize(nb, read_probe(log), status, wall, portable(tail, cfg.root), params,
                    [{k: portable(v, cfg.root) for k, v in e.items()} for e in _errors(executed)])
    # a shared machine: the 1-minute load average before and after says how contended the seconds were
    rec["loadavg_1min"] = {"start": round(load0[0], 2), "end": round(os.getloadavg()[0], 2)}
    return rec


def portable(text, root: Path):
    """``text`` with the checkout's and the run folder's absolute paths replaced (committed results name none)."""
    if not isinstance(text, str):
        return text
    text = text.replace(str(root), "<root>").replace(str(ROOT) + "/", "").replace(str(ROOT), ".")
    return text.replace(sys.prefix, "<venv>").replace(sys.base_prefix, "<python>")


def _errors(executed: Path) -> list[dict]:
    if not executed.exists():
        return []
    cells = json.loads(executed.read_text())["cells"]
    return [{"ename": o.get("ename"), "evalue": str(o.get("evalue"))[:500], "traceback_tail": _strip(o)[-1500:]}
            for c in cells for o in c.get("outputs", []) if o.get("output_type") == "error"]


def _strip(o: dict) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(o.get("traceback", [])))


def read_probe(log: Path) -> tuple[list[dict], dict]:
    """(cell records, exit record) of a probe log; missing file -> ([], {}). A ``<log>.running`` file (the
    cell a timeout killed, as of its last 5 s heartbeat) is appended as a stage labelled "(stopped) ..."."""
    recs = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
    cells = [r for r in recs if r.get("cell") != "exit"]
    running = Path(f"{log}.running")
    if running.exists():
        r = json.loads(running.read_text())
        cells.append({**r, "label": f"(stopped) {r['label']}"})
    return cells, next((r for r in recs if r.get("cell") == "exit"), {})


def summarize(nb: str, probe: tuple[list[dict], dict], status: str, wall: float, stderr_tail: str, params: dict,
              errors: list[dict]) -> dict:
    """One notebook's record: per-stage rows and totals (peaks are maxima, bytes and seconds are sums)."""
    cells, exit_rec = probe
    stages = [{"stage": c["cell"], "label": c["label"], "seconds": c["seconds"], "peak_rss_bytes": c["peak_rss_bytes"],
               "cuda_max_allocated_bytes": c["cuda_max_allocated_bytes"], "rchar_bytes": c["rchar_bytes"],
               "sae_bytes": sum(f["bytes"] for f in c["sae_files"]), "sae_loads": len(c["sae_files"]),
               "model_bytes": sum(f["bytes"] for f in c["model_files"]), "error": c["error"]} for c in cells]
    sae_files = [f"{f['repo']}/{f['file']}" for c in cells for f in c["sae_files"]]
    cuda = [s["cuda_max_allocated_bytes"] for s in stages if s["cuda_max_allocated_bytes"] is not None]
    total = {"seconds_wall": wall, "seconds_cells": sum(s["seconds"] for s in stages),
             "peak_rss_bytes": max([s["peak_rss_bytes"] for s in stages] + [exit_rec.get("ru_maxrss_bytes", 0)]),
             "cuda_max_allocated_bytes": max(cuda) if cuda else None,
             "sae_bytes": sum(s["sae_bytes"] for s in stages), "sae_loads": len(sae_files),
             "sae_distinct_files": len(set(sae_files)), "model_bytes": sum(s["model_bytes"] for s in stages),
             "rchar_bytes": sum(s["rchar_bytes"] for s in stages)}
    return {"notebook": nb, "status": status, "parameters": params, "total": total, "stages": stages,
            "sae_files_loaded": sae_files, "errors": errors, "stderr_tail": stderr_tail if status != "ok" else ""}


CSV_FIELDS = ["device", "model", "notebook", "stage", "label", "status", "seconds", "peak_rss_mb",
              "cuda_max_allocated_mb", "sae_bytes", "sae_loads", "model_bytes", "rchar_bytes"]


def _mb(b) -> float | None:
    return None if b is None else round(b / 2**20, 1)


def csv_rows(cfg: RunConfig, records: list[dict]) -> list[dict]:
    rows = []
    for r in records:
        base = {"device": cfg.device, "model": cfg.model, "notebook": r["notebook"], "status": r["status"]}
        for s in r["stages"]:
            rows.append({**base, "stage": s["stage"], "label": s["label"], "seconds": round(s["seconds"], 3),
                         "peak_rss_mb": _mb(s["peak_rss_bytes"]), "cuda_max_allocated_mb": _mb(s["cuda_max_allocated_bytes"]),
                         "sae_bytes": s["sae_bytes"], "sae_loads": s["sae_loads"], "model_bytes": s["model_bytes"],
                         "rchar_bytes": s["rchar_bytes"]})
        t = r["total"]
        rows.append({**base, "stage": "TOTAL", "label": "whole notebook (wall seconds incl. kernel start)",
                     "seconds": round(t["seconds_wall"], 3), "peak_rss_mb": _mb(t["peak_rss_bytes"]),
                     "cuda_max_allocated_mb": _mb(t["cuda_max_allocated_bytes"]), "sae_bytes": t["sae_bytes"],
                     "sae_loads": t["sae_loads"], "model_bytes": t["model_bytes"], "rchar_bytes": t["rchar_bytes"]})
    return rows


def markdown_table(records: list[dict]) -> list[str]:
    lines = ["| notebook | status | wall s | peak RSS GiB | CUDA max alloc GiB | SAE files loaded (distinct) | "
             "SAE GiB read | model GiB read | read() GiB | load avg |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        t = r["total"]
        cuda = "-" if t["cuda_max_allocated_bytes"] is None else f"{t['cuda_max_allocated_bytes'] / 2**30:.2f}"
        lines.append(f"| {r['notebook']} | {r['status']} | {t['seconds_wall']:.0f} | {t['peak_rss_bytes'] / 2**30:.2f} | "
                     f"{cuda} | {t['sae_loads']} ({t['sae_distinct_files']}) | {t['sae_bytes'] / 2**30:.2f} | "
                     f"{t['model_bytes'] / 2**30:.2f} | {t['rchar_bytes'] / 2**30:.2f} | {_load(r)} |")
    return lines


def _load(rec: dict) -> str:
    la = rec.get("loadavg_1min")
    return "-" if not la else f"{la['start']:.1f} -> {la['end']:.1f}"


def environment(cfg: RunConfig, hub) -> dict:
    import torch
    import transformers

    from ..model_shapes import BACKBONE_SHAPES
    from ..registry import official_group
    from .paper_hub import REAL_MODELS

    bb, grp = REAL_MODELS[cfg.model]
    g = official_group(grp)
    info = {"device": cfg.device, "model": cfg.model, "dtype": cfg.dtype or "bfloat16 (paper profile)",
            "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "cpus": os.cpu_count(),
            "backbone": bb, "backbone_shape": BACKBONE_SHAPES[bb].__dict__, "backbone_params": BACKBONE_SHAPES[bb].n_params,
            "sae_group": grp, "sae_shape": {"d_model": g.d_model, "d_sae": g.d_sae, "k": g.k, "n_layers": g.n_layers},
            "aliases": hub.aliases, "tokenizer": hub.tokenizer, "weights": "random (N(0, 0.02), RMSNorm gains 1)",
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if cfg.device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def write_results(cfg: RunConfig, env: dict, records: list[dict]) -> Path:
    """Write ``<tag>.csv``, ``.json`` and ``.md`` under ``cfg.out`` (atomically); returns the JSON path."""
    from ..atomic import atomic_write_text

    cfg.out.mkdir(parents=True, exist_ok=True)
    rows = csv_rows(cfg, records)
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(cfg.out / f"{cfg.tag}.csv", buf.getvalue())
    md = [f"# Paper-shape dry run: {cfg.model} shape on {cfg.device}", "",
          f"backbone {env['backbone']} shape {env['backbone_shape']} ({env['backbone_params']:,} parameters), "
          f"dtype {env['dtype']}; SAE {env['sae_group']} {env['sae_shape']}; torch {env['torch']}; {env['created']}",
          ""] + markdown_table(records)
    atomic_write_text(cfg.out / f"{cfg.tag}.md", "\n".join(md) + "\n")
    path = cfg.out / f"{cfg.tag}.json"
    atomic_write_text(path, json.dumps({"environment": env, "notebooks": records}, indent=1))
    return path


def _stem(name: str) -> str:
    match = [nb for nb in NOTEBOOKS if nb == name or nb.startswith(f"{name}_")]
    if len(match) != 1:
        raise SystemExit(f"unknown notebook {name!r}: give a number (01..07) or a stem of {', '.join(NOTEBOOKS)}")
    return match[0]


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["1.7B", "8B"], default="1.7B")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None, help="backbone dtype (default: float32 on cpu, the profile's bf16 on cuda)")
    ap.add_argument("--notebooks", nargs="*", default=[nb[:2] for nb in NOTEBOOKS])
    ap.add_argument("--root", type=Path, default=RunConfig.root)
    ap.add_argument("--out", type=Path, default=RunConfig.out)
    ap.add_argument("--timeout", type=int, default=RunConfig.timeout_s)
    args = ap.parse_args(argv)
    dtype = args.dtype or ("float32" if args.device == "cpu" else None)
    cfg = RunConfig(args.model, args.device, dtype, [_stem(n) for n in args.notebooks], args.root, args.out, args.timeout)
    print(f"[paper-shape] building / reusing the {cfg.model} hub under {cfg.root}", flush=True)
    hub, user_dir = ensure_hub(cfg)
    env = environment(cfg, hub)
    prev = cfg.out / f"{cfg.tag}.json"
    done = {r["notebook"]: r for r in json.loads(prev.read_text())["notebooks"]} if prev.exists() else {}
    for nb in cfg.notebooks:
        print(f"[paper-shape] {nb} ...", flush=True)
        rec = run_notebook(nb, cfg, hub, user_dir)
        done[nb] = rec                      # a rerun of some notebooks keeps the others' rows
        t = rec["total"]
        print(f"  {rec['status']}: {t['seconds_wall']:.0f} s, peak RSS {t['peak_rss_bytes'] / 2**30:.2f} GB, "
              f"SAE {t['sae_bytes'] / 2**30:.2f} GB in {t['sae_loads']} loads", flush=True)
        if rec["errors"]:
            print("  " + rec["errors"][0]["traceback_tail"][-800:], flush=True)
        path = write_results(cfg, env, [done[n] for n in NOTEBOOKS if n in done])
    return path


if __name__ == "__main__":
    main()
