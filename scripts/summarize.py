"""Collect the headline numbers of a profile's results into a markdown table ("paper vs ours").

Reads results/<profile>/NN_summary.json (written by the notebooks), writes
results/<profile>/SUMMARY.md and, with --readme, replaces the block between
``<!-- results:begin -->`` and ``<!-- results:end -->`` in README.md, so that every number the
README quotes is regenerated from results/, never typed in (machine facts such as the CPU count come
from timings.json / the benchmark JSON). With ``QSCOPE_RESULTS`` set, results are read from and
SUMMARY.md written to that directory, and nothing is written into the repository.

    .venv/bin/python scripts/summarize.py --profile mini --readme

``--seeds N`` aggregates build seeds 0..N-1 (``results/mini``, ``results/mini-seed1``, ...; written by
``./run_all.sh --seeds N``): mean and range over seeds of every headline number with each seed's
per-prompt interval, how often the seeds make the same selection, and each claim's verdicts
(:mod:`qscope_utils.across_seeds`). It writes ``results/<profile>-seeds/SUMMARY.md`` and
``seeds.json``; with ``--readme`` that table replaces README's results block.

``--compare [DIR]`` asks whether one run (default ``results/<profile>``, e.g. a fresh clone's
``./run_all.sh`` on another machine) agrees with the across-seed results in ``--against``
(default the committed ``results/<profile>-seeds/seeds.json``): its verdicts against the same
seed's, its numbers against the seeds' 95% prediction interval, its picks against the same seed's
(:mod:`qscope_utils.agreement`). It writes ``DIR/REPRODUCTION.md`` and ``DIR/reproduction.json``.
``--seeds N --against SEEDS_JSON`` adds to SUMMARY.md each claim's verdict across seeds beside that
aggregate's (the same seeds built on another machine).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def results_root() -> Path:
    """results/ of the repository, or $QSCOPE_RESULTS when set."""
    return Path(os.environ["QSCOPE_RESULTS"]) if os.environ.get("QSCOPE_RESULTS") else ROOT / "results"


def _machine(profile: str) -> dict:
    """The machine record the runner wrote into timings.json (platform, cpus, python), or {}."""
    t = results_root() / profile / "timings.json"
    return json.loads(t.read_text()).get("machine", {}) if t.exists() else {}


def _cores(profile: str) -> str:
    cpus = _machine(profile).get("cpus")
    return f"{cpus} CPU cores" if cpus else "this machine"


def _load(res: Path, nn: str) -> dict | None:
    p = res / f"{nn}_summary.json"
    return json.loads(p.read_text()) if p.exists() else None


def _ci(d: dict, v="mean", lo="lo", hi="hi", fmt="{:.3f}") -> str:
    return f"{fmt.format(d[v])} [{fmt.format(d[lo])}, {fmt.format(d[hi])}]"


def s01(d):
    return [("§2 reconstruction", "FVU ≈ 0.20 at a middle layer (third-party audit, Qwen3.5-2B, k=100)",
             f"mid-layer FVU {d['mid_layer_fvu']:.3f} (layer {d['mid_layer']}, k={d['k']}), max {d['max_fvu']:.3f}; "
             f"dead {100 * d['mean_dead_fraction']:.1f}%; Δ LM loss {d['mean_delta_loss']:.3f} nats/token",
             f"{d['n_texts']} held-out texts, {d['tokens_per_layer']} tokens/layer")]


def s02(d):
    c1, c2 = d["case1"], d["case2"]
    b, s = c1["has_script"]["baseline"], c1["has_script"]["best_steered"]
    pb, ps = c2["p_classical"]["baseline"], c2["p_classical"]["best_steered"]
    return [("§3 case 1: suppress Chinese feature", "feature 6159 suppressed removes the mixing (qualitative)",
             f"feature {d['zh_feature']} (layer {d['layer']}): Han-containing share {_ci(b)} → {_ci(s)} at α={s['alpha']:.2f}",
             f"{d['n_prompts']['case1']} prompts × {len(d['seeds'])} seeds, cluster bootstrap"),
            ("§3 case 2: activate classical feature", "feature 36398 activated turns the style classical (qualitative)",
             f"feature {d['lzh_feature']}: P(classical) {_ci(pb)} → {_ci(ps)} at α={ps['alpha']:.1f}; "
             f"classifier held-out acc {d['case2']['classifier_heldout']['accuracy']:.3f}",
             f"{d['n_prompts']['case2']} openings × {len(d['seeds'])} seeds")]


def s03(d):
    r, sim = d["rho_R_Rhat"], d["similarity_28_pairs"]
    f = lambda k: 100 * sim[k]["r"]
    return [("§4 redundancy", "Spearman ρ(R, R̂) ≈ 0.85 (17 benchmarks, 26 checkpoints)",
             f"ρ = {r['r']:.2f} [{r['lo']:.2f}, {r['hi']:.2f}], p = {r['p']:.2f} (layer {d['layer']}); "
             f"overlap(gsm, math) = {d['overlap_gsm_math']:.2f}, overlap(math, gsm) = {d['overlap_math_gsm']:.2f} "
             f"(paper 0.63 / 0.10)", f"{r['n']} benchmarks, {d['n_checkpoints']} zoo checkpoints"),
            ("§4 similarity", "overlap_min vs score correlation, 28 pairs: Pearson 68.4 / 75.5 (direct / partial), "
             "Spearman 60.7 / 71.3",
             f"Pearson {f('pearson_direct'):.1f} / {f('pearson_partial'):.1f}, "
             f"Spearman {f('spearman_direct'):.1f} / {f('spearman_partial'):.1f}",
             f"{sim['pearson_direct']['n']} pairs, partial correlation controls for the general benchmark")]


def s04(d):
    sys.path.insert(0, str(ROOT))
    from qscope_utils.findings import chosen_k

    best = {}
    for lang in d["or_rule_at_top1diff_layer"]:
        k, r = chosen_k(d, lang)          # notebook 04's one-SE pick (argmax for older summaries)
        best[lang] = f"{lang} {r['f1']:.2f} [{r['f1_ci95'][0]:.2f}, {r['f1_ci95'][1]:.2f}] ({k}, layer {r['layer']})"
    eff = [r for r in d["data_efficiency_macro_f1"] if r["fraction"] == 0.1]
    eff_s = ", ".join(f"K={r['K']}: {r['ratio_to_full']:.2f}" for r in eff)
    return [("§5 toxicity (OR rule)", "English held-out F1 > 0.90",
             "; ".join(best.values()), f"labelled languages: {', '.join(d['languages'])}; top1-diff layer"),
            ("§5 data efficiency", "10% of discovery data keeps ≈99% of macro F1", f"10% keeps {eff_s}",
             "ratio of macro F1 to full discovery")]


def s05(d):
    cov = d["coverage_at_matched_budget_pct"]
    ds = d["downstream"]["sae"]
    fmt = lambda r: f"{r['accuracy']:.1f} [{r['acc_lo']:.1f}, {r['acc_hi']:.1f}]"
    return [("§6 coverage", "99.74% target coverage at matched budget",
             ", ".join(f"{k} {v:.1f}%" for k, v in cov.items()),
             f"{d['n_targets']} targets, seed covers {d['seed_coverage_pct']:.1f}%, budget {d['matched_budget']}"),
            ("§6 downstream accuracy", "4k+4k feature 77.75, 4k+4k random 72.00, 8k real 71.75, 120k real 78.75",
             "; ".join(f"{k} {fmt(v)}" for k, v in ds.items()), "logistic regression on SAE features, held-out %")]


def s06(d):
    out = []
    for lang, r in d["test"].items():
        out.append(f"{lang} {r['sft']['value']:.2f} → {r['sasft']['value']:.2f} (paired Δ {r['diff']['value']:+.2f} "
                   f"[{r['diff']['lo']:+.2f}, {r['diff']['hi']:+.2f}])")
    lam = d["lambda_chosen_on_val"]
    lam = ", ".join(f"{t} {v:g}" for t, v in lam.items()) if isinstance(lam, dict) else f"{lam:g}"
    how = "one SASFT run per target (TRL SFTTrainer + penalty), " if isinstance(d["lambda_chosen_on_val"], dict) else ""
    return [("§7 SASFT code-switch ratio", "1.7B: zh .81→.22, ru .19→.03, ko .36→.00 (SFT → SASFT)",
             "; ".join(out), f"{how}λ chosen on val ({lam}), layers {d['layers']}, {d['n_seeds']} seeds")]


def s07(d):
    arms = d["arms"]
    rr = "; ".join(f"{a}: {v['repeat_stress']['ratio']:.2f}" for a, v in arms.items())
    acc = "; ".join(f"{a}: {v['acc_greedy']['mean']:.3f}" for a, v in arms.items())
    ppl = "; ".join(f"{a}: {v['ppl']['ppl']:.1f}" for a, v in arms.items() if isinstance(v.get("ppl"), dict))
    rs = next(iter(arms.values()))["repeat_stress"]
    top = max(v["repeat_task"]["ratio"] for v in arms.values())
    unsteered = "unsteered sampling never loops" if top == 0 else f"unsteered sampling loops in up to {top:.2f} of responses"
    variant = f"; SAE arm = {d['sae_variant_chosen']} (chosen on validation)" if d.get("sae_variant_chosen") else ""
    return [("§8 repeat ratio", "drops sharply after SAE-guided DAPO",
             f"with the repetition feature (#{d['feature']}) steered in at eval: {rr}; {unsteered}",
             f"{rs['n_prompts']} held-out problems × {rs['n_samples']} samples"),
            ("§8 task accuracy", "MGSM +5.56 / +2.28 / +5.84 points (1.7B / 8B / 30B-A3B)",
             f"greedy accuracy {acc}", "mini arithmetic, matched steps and seeds"),
            ("§8 general metric", "(not reported)", f"held-out perplexity {ppl}", f"mini corpus held-out text{variant}")]


def build_table(profile: str) -> list[str]:
    """Stage times and sizes of a built scope, read from the build's own stamps (data/<profile>/)."""
    sys.path.insert(0, str(ROOT))
    from qscope_utils.profiles import get_profile
    from qscope_utils.provenance import cpu_model

    prof = get_profile(profile)
    if not prof.is_built:
        return []
    stamps = {st: prof.data_dir / sub / ".stamp.json" for st, sub in
              (("corpus", "corpus"), ("tokenizer", "tokenizer"), ("pretrain", "models"))}
    stamps["sae"] = Path(prof.sae_source) / ".stamp.json"
    if not all(p.exists() for p in stamps.values()):
        return []
    st = {k: json.loads(p.read_text()) for k, p in stamps.items()}
    pre = json.loads((prof.data_dir / "models" / "pretrain.json").read_text())
    sc = prof.scope
    fvu = ", ".join(f"{l['heldout_fvu']:.3f}" for l in st["sae"]["layers"])
    tps = sum(l["tokens_per_s"] for l in st["sae"]["layers"]) / len(st["sae"]["layers"])
    secs = pre["seconds"]     # train_wall covers the mixtures trained at once; older builds give per-mixture times only
    pre_s = secs["train_wall"] + secs.get("perplexity_eval", 0.0) if "train_wall" in secs else sum(secs.values())
    return ["", f"### How the {profile} scope in this checkout was built (from the build's stamps in "
                f"`{_shown(Path(prof.data_dir))}`, {cpu_model()})", "",
            f"| stage | what | seconds ({_cores(profile)}) |", "|---|---|---|",
            f"| corpus | {st['corpus']['n_docs']} documents, {st['corpus']['n_chars'] / 1e6:.1f} M characters | "
            f"{st['corpus']['seconds']:.0f} |",
            f"| tokenizer | byte-level BPE, vocab {sc.vocab_size} | {st['tokenizer']['seconds']:.0f} |",
            f"| pretraining | Qwen3ForCausalLM, {pre['n_params'] / 1e6:.2f} M params, d_model {sc.hidden_size}, "
            f"{sc.n_layers} layers; {len(pre['zoo'])} zoo checkpoints; {pre['tokens_per_s']:.0f} tokens/s | "
            f"{pre_s:.0f} |",
            f"| SAEs | TopK W{sc.sae_expansion * sc.hidden_size // 1024}K k={sc.sae_k}, every layer, "
            f"{sc.sae_train_tokens / 1e6:.1f} M tokens each at {tps:.0f} tokens/s; held-out FVU per layer {fvu} | "
            f"{st['sae']['seconds']:.0f} |"]


def _span(values: list[float], fmt: str = "{:.0f}") -> str:
    lo, hi = min(values), max(values)
    return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else f"{fmt.format(lo)}-{fmt.format(hi)}"


def perf_prose(sae_rows: list[dict], rss: list[dict]) -> str:
    """The paragraph under the benchmark table, every number from the benchmark JSON.

    Release shapes are d_sae >= 32768 (the 14 groups' widths); smaller ones are the mini/smoke shapes.
    """
    small = [r for r in sae_rows if r["d_sae"] < 32768]
    big = [r for r in sae_rows if r["d_sae"] >= 32768]
    out = ["Encode ratios are time(dense GEMM alone) / time(encode) in one run; values a little over 1 are timing "
           "noise."]
    if small:
        reach = "out of reach" if max(r["encode_vs_bound"] for r in small) < 0.8 else "reached"
        out.append(f"At the mini shapes the GEMM is only {_span([r['d_model'] for r in small])} multiply-adds per "
                   f"latent, so top-k ({_span([100 * r['topk_share'] for r in small])}% of encode time) weighs "
                   f"heavily and the 0.8 target is {reach} there (ratios "
                   f"{_span([r['encode_vs_bound'] for r in small], '{:.2f}')});")
    if big:
        out.append(f"at the release shapes top-k is {_span([100 * r['topk_share'] for r in big])}% and encode runs at "
                   f"{_span([r['encode_vs_bound'] for r in big], '{:.2f}')} of the bound.")
    out.append("Sparse decode (embedding_bag over contiguous decoder rows) is the one `TopKSAE.forward` uses.")
    if rss:
        sizes = sorted({r["n_texts"] for r in rss})
        by = {(r["reducer"], r["n_texts"]): r["peak_rss_mb"] for r in rss}
        growth = max(by[(red, sizes[-1])] - by[(red, sizes[0])] for red in {r["reducer"] for r in rss})
        out.append(f"Peak RSS of the streaming reducers grows by at most {growth / 1024:.2f} GB for "
                   f"{sizes[-1] / sizes[0]:.0f}x more texts (the per-text max output itself grows with the texts).")
    return " ".join(out)


def perf_table() -> list[str]:
    """The benchmark table written by benchmarks/run.py plus the §4 metric scaling, if present."""
    bdir = results_root() / "benchmarks"
    out = []
    if (bdir / "TABLE.md").exists() and (bdir / "sae_encode_decode.json").exists():
        info = json.loads((bdir / "sae_encode_decode.json").read_text())["device_info"]
        out += ["", f"### Performance (`benchmarks/run.py`, {info['cpus']} CPU cores, torch {info['torch']}, "
                    f"device {info['device']})", "", (bdir / "TABLE.md").read_text().strip()]
    if (bdir / "redundancy_scaling.json").exists():
        rows = json.loads((bdir / "redundancy_scaling.json").read_text())["rows"]
        big = max(rows, key=lambda r: r["N"])
        out += [f"| §4 metrics at {big['N']} samples x {big['d_sae']} features ({big['nnz']} active entries) | "
                f"c_n for every n + R̂ {big['coverage_cpu_s']:.2f} s, τ_n + R {big['tau_cpu_s']:.2f} s, "
                f"8-benchmark overlaps {big['overlap8_cpu_s']:.3f} s CPU | near-linear in N |"]
    if (bdir / "sae_encode_decode.json").exists():
        sae_rows = json.loads((bdir / "sae_encode_decode.json").read_text())["rows"]
        pipe = bdir / "pipeline.json"
        rss = json.loads(pipe.read_text())["streaming_rss"] if pipe.exists() else []
        out += ["", perf_prose(sae_rows, rss)]
    return out


SECTIONS = [("01", s01), ("02", s02), ("03", s03), ("04", s04), ("05", s05), ("06", s06), ("07", s07)]


def has_results(profile: str) -> bool:
    """Whether any notebook of ``profile`` has saved its summary."""
    return any((results_root() / profile / f"{nn}_summary.json").exists() for nn, _ in SECTIONS)


def paper_rows(res: Path) -> list[str]:
    """The "paper | ours | how measured" rows of one results directory."""
    lines = ["| section | paper | ours | how measured |", "|---|---|---|---|"]
    for nn, fn in SECTIONS:
        d = _load(res, nn)
        if d is None:
            lines.append(f"| notebook {nn} | | not run yet | |")
            continue
        try:
            for row in fn(d):
                lines.append("| " + " | ".join(str(c).replace("|", "/") for c in row) + " |")
        except (KeyError, TypeError, ValueError) as e:
            lines.append(f"| notebook {nn} | | summary lacks {e} | |")
    return lines


def table(profile: str) -> str:
    res = results_root() / profile
    lines = [f"## Results ({profile} profile): the paper's claims beside ours", "",
             f"Generated by `scripts/summarize.py` from `results/{profile}/NN_summary.json`; details, figures and "
             "caveats are in each notebook and in `docs/NN_*.md`. Intervals are 95% bootstrap.", "",
             *paper_rows(res)]
    lines += build_table(profile)
    t = res / "timings.json"
    if t.exists():
        tim = json.loads(t.read_text())["notebooks"]
        lines += ["", f"Wall time per notebook on this profile (s, {_cores(profile)}; each notebook's last run, "
                      "which may have shared the cores with other jobs): " +
                  ", ".join(f"{k[:2]}: {v:.0f}" for k, v in sorted(tim.items()))]
    lines += perf_table()
    return "\n".join(lines) + "\n"


def across_seeds(profile: str, n_seeds: int, against: str | None = None) -> tuple[str, dict]:
    """Aggregate build seeds 0..n_seeds-1 into results/<profile>-seeds/ (SUMMARY.md, seeds.json); the markdown
    and the aggregate. ``against``: another aggregate's seeds.json (the same seeds built elsewhere) whose
    verdicts across seeds are set beside these, claim by claim."""
    sys.path.insert(0, str(ROOT))
    from qscope_utils import across_seeds as A
    from qscope_utils.paths import seeded

    agg = A.aggregate(A.load_seeds(results_root(), profile, list(range(n_seeds))))
    if not any(r["per_seed"] for r in agg["headlines"]):
        print(f"[summarize] no {profile} results for seeds 0..{n_seeds - 1} under {results_root()}: run "
              f"`./run_all.sh --profile {profile} --seeds {n_seeds}` first.", file=sys.stderr)
        sys.exit(1)
    out = results_root() / f"{profile}-seeds"
    out.mkdir(parents=True, exist_ok=True)
    lines = [A.render(agg, profile, power_rows(profile)).rstrip("\n"), "",
             "### Seed 0 in detail: the paper's numbers beside ours", "",
             f"From `results/{profile}/NN_summary.json` (details, figures and caveats: each notebook and "
             "`docs/NN_*.md`; intervals are 95% bootstrap over prompts).", "",
             *paper_rows(results_root() / profile)]
    walls = []
    for s in agg["seeds"]:
        t = results_root() / seeded(profile, s) / "timings.json"
        if t.exists():
            walls.append(f"seed {s}: {sum(json.loads(t.read_text()).get('notebooks', {}).values()):.0f}")
    if walls:
        lines += ["", f"Notebook wall time per seed (s, {_cores(profile)}; build cached or not): " + ", ".join(walls)]
    lines += build_table(profile) + perf_table()        # seed 0's build and the machine benchmarks
    if against:
        lines += settled_table(agg, Path(against))
    md = "\n".join(lines) + "\n"
    (out / "seeds.json").write_text(json.dumps(agg, indent=1, default=str))
    (out / "SUMMARY.md").write_text(md)
    return md, agg


def compare(profile: str, run_dir: str | None, against: str | None) -> str:
    """Compare one run's summaries with an across-seed aggregate; writes REPRODUCTION.md and reproduction.json
    into the run's folder and returns the markdown."""
    sys.path.insert(0, str(ROOT))
    from qscope_utils import agreement as AG

    run = Path(run_dir) if run_dir else results_root() / profile
    seeds_json = Path(against) if against else results_root() / f"{profile}-seeds" / "seeds.json"
    try:
        cmp = AG.compare_dirs(run, seeds_json)
    except FileNotFoundError as e:
        print(f"[summarize] {e}", file=sys.stderr)
        sys.exit(1)
    machine = _machine_of(run)
    md = AG.render(cmp, f"{run.name}{', ' + machine if machine else ''}", _shown(seeds_json))
    (run / "REPRODUCTION.md").write_text(md)
    (run / "reproduction.json").write_text(json.dumps(cmp, indent=1, default=str))
    return md


def settled_table(agg: dict, against: Path) -> list[str]:
    """Markdown rows: each claim's verdict across seeds here and in the aggregate at ``against``."""
    from qscope_utils.agreement import compare_settled

    if not against.is_file():
        print(f"[summarize] --against {against}: no such seeds.json", file=sys.stderr)
        sys.exit(1)
    rows = compare_settled(agg, json.loads(against.read_text()))
    lines = ["", f"### Verdicts across seeds: these results against `{_shown(against)}`", "",
             f"The same verdict for {sum(r['equal'] for r in rows)} of {len(rows)} claims.", "",
             "| section | claim | here | there | equal | per-seed verdicts here | there |", "|---|---|---|---|---|---|---|"]
    counts = lambda v: ", ".join(f"{k} {m}" for k, m in sorted(v.items()))
    lines += [f"| {r['section']} | {r['claim']} | {r['ours']} | {r['theirs']} | {'yes' if r['equal'] else '**no**'} | "
              f"{counts(r['ours_seeds'])} | {counts(r['theirs_seeds'])} |" for r in rows]
    return lines


def _machine_of(run: Path) -> str:
    """"<cpu>, <n> threads" from the run's summaries (``_meta``), or ""."""
    for p in sorted(run.glob("*_summary.json")):
        meta = json.loads(p.read_text()).get("_meta", {})
        if meta.get("cpu"):
            return f"{meta['cpu']}, {meta.get('torch_threads', '?')} torch threads"
    return ""


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it, else as it is."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def power_rows(profile: str) -> list[dict]:
    """Rows of results/<profile>/power.csv (scripts/power.py), or [] when it was not written."""
    import csv

    p = results_root() / profile / "power.csv"
    return list(csv.DictReader(p.open(encoding="utf-8"))) if p.exists() else []


DOCS = {"01": "01_sae_loading.md", "02": "02_steering.md", "03": "03_benchmark_redundancy.md", "04": "04_toxicity.md",
        "05": "05_safety_synthesis.md", "06": "06_sasft.md", "07": "07_sae_dapo.md"}


def write_docs(agg: dict, profile: str, docs_dir: Path = ROOT / "docs") -> None:
    """Replace each docs page's ``<!-- seeds:begin -->`` ... ``<!-- seeds:end -->`` block with its section's
    across-seed claims, numbers, picks and minimum detectable effects (``agg``: :func:`across_seeds`' aggregate)."""
    from qscope_utils import across_seeds as A

    power = power_rows(profile)
    for nn, name in DOCS.items():
        page = Path(docs_dir) / name
        if not _replace_block(page, "seeds", A.render_section(agg, nn, profile, power)):
            print(f"[summarize] {page} has no <!-- seeds:begin --> block: left alone", file=sys.stderr)


def _replace_block(path: Path, tag: str, md: str) -> bool:
    """Replace the text between ``<!-- {tag}:begin -->`` and ``<!-- {tag}:end -->`` in ``path`` with ``md``;
    False (nothing written) when the file or the block is missing."""
    text = path.read_text() if path.exists() else ""
    begin, end = f"<!-- {tag}:begin -->", f"<!-- {tag}:end -->"
    if begin not in text:
        return False
    path.write_text(re.sub(f"{begin}.*{end}", lambda _: f"{begin}\n{md}{end}", text, flags=re.S))
    return True


def _write_readme(md: str) -> None:
    _replace_block(ROOT / "README.md", "results", md)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--profile", default="mini")
    ap.add_argument("--readme", action="store_true", help="also update README.md's results block")
    ap.add_argument("--docs", action="store_true", help="with --seeds: also update each docs/NN_*.md page's "
                                                         "across-seed block")
    ap.add_argument("--seeds", type=int, default=None, metavar="N",
                    help="aggregate build seeds 0..N-1 (./run_all.sh --seeds N) into results/<profile>-seeds/")
    ap.add_argument("--compare", nargs="?", const="", default=None, metavar="DIR",
                    help="compare one run (default results/<profile>) with the across-seed results of --against")
    ap.add_argument("--against", default=None, metavar="SEEDS_JSON",
                    help="with --compare: the aggregate to compare with (default results/<profile>-seeds/seeds.json); "
                         "with --seeds: set each claim's verdict across seeds beside that aggregate's")
    args = ap.parse_args(argv)
    if args.compare is not None:
        print(compare(args.profile, args.compare or None, args.against))
        return
    if args.docs and args.seeds is None:
        ap.error("--docs writes the across-seed blocks: give --seeds N too")
    if (args.readme or args.docs) and os.environ.get("QSCOPE_RESULTS"):
        print("[summarize] --readme / --docs write the repository's README.md / docs pages from the repository's "
              "results: unset QSCOPE_RESULTS to use them", file=sys.stderr)
        sys.exit(2)
    if args.seeds is not None:
        if args.seeds < 1:
            ap.error(f"--seeds {args.seeds}: give the number of build seeds, at least 1")
        md, agg = across_seeds(args.profile, args.seeds, args.against)
        if args.readme:
            _write_readme(md)
        if args.docs:
            write_docs(agg, args.profile)
        print(md)
        return
    if not has_results(args.profile):
        run = "QSCOPE_TORCH=cuda ./run_all.sh --profile paper" if args.profile == "paper" else \
            f"./run_all.sh --profile {args.profile}"
        print(f"[summarize] no {args.profile} results yet: {results_root() / args.profile} has no NN_summary.json. "
              f"Run `{run}` first.", file=sys.stderr)
        sys.exit(1)
    md = table(args.profile)
    (results_root() / args.profile / "SUMMARY.md").write_text(md)
    if args.readme:
        _write_readme(md)
    print(md)


if __name__ == "__main__":
    main()
