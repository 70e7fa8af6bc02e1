"""Does a new run agree with the committed across-seed results? (``scripts/summarize.py --compare``)

A fresh clone on another machine builds a model whose floats differ from the committed builds (other CPU
kernels), and training amplifies that; the committed results therefore give every headline number for
N independent build seeds (:mod:`qscope_utils.across_seeds`). A new run reproduces them when it looks
like one more seed:

* **headline numbers**: inside the 95% prediction interval of one new draw from the seeds' values,
  ``mean ± t(0.975, N-1) · sd · sqrt(1 + 1/N)`` (normal model; N = 3 gives ±4.97 sd). Not the seeds'
  min-max range: a new exchangeable draw falls outside the range of N others with probability
  2/(N+1), 50% for N = 3, even when nothing is wrong. Beside it, the distance from the committed run
  of the same build seed in seed standard deviations (0 on the machine that made the commit);
* **claims**: the run's verdict (:mod:`qscope_utils.findings`) against the same seed's committed verdict,
  and whether any committed seed gave it;
* **selections**: the run's pick against the same seed's committed pick. Feature ids are compared too: the
  same seed starts its SAEs from the same initialisation, so ids usually match, but training can amplify
  another machine's rounding into a different dictionary (seed 1 in ``results/mini-crosscheck``).
"""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Mapping

from scipy import stats as st

from .across_seeds import _hashable, _num, headlines, load_seeds, picks, _verdicts, NOTEBOOKS, SECTION

__all__ = ["prediction_interval", "compare", "render", "summary_line", "compare_dirs", "compare_settled"]


def prediction_interval(values: list[float], level: float = 0.95) -> tuple[float, float] | None:
    """Two-sided ``level`` prediction interval for one new draw, from ``values`` (normal model):
    ``mean ± t((1 + level) / 2, n - 1) · sd · sqrt(1 + 1/n)``; None with fewer than 2 finite values."""
    v = _finite(values)
    if len(v) < 2:
        return None
    mean = statistics.fmean(v)
    half = float(st.t.ppf((1 + level) / 2, len(v) - 1)) * statistics.stdev(v) * math.sqrt(1 + 1 / len(v))
    return mean - half, mean + half


def _finite(values) -> list[float]:
    return [float(x) for x in values if x is not None and math.isfinite(float(x))]


def _matched(run: Mapping[str, dict], rows: list[dict], field: str, items_of, label_of):
    """(nn, item, committed row) for every item ``items_of(nn, summary)`` of the run whose label
    (``label_of(item)``) the aggregate's ``rows`` also have under ``field``."""
    committed = {(r["nn"], r[field]): r for r in rows}
    for nn in NOTEBOOKS:
        for item in items_of(nn, run[nn]) if nn in run else []:
            ref = committed.get((nn, label_of(item)))
            if ref is not None:
                yield nn, item, ref


def _same_seed(ref: dict, seed: int, field: str):
    """The committed row's ``field`` for build seed ``seed`` (None when that seed lacks it)."""
    return next((x[field] for x in ref["per_seed"] if x["seed"] == seed), None)


def _headline_rows(agg: dict, run: Mapping[str, dict], seed: int) -> list[dict]:
    rows = []
    for nn, h, ref in _matched(run, agg["headlines"], "quantity", headlines, lambda h: h.quantity):
        vals = _finite(x["value"] for x in ref["per_seed"])
        same = _same_seed(ref, seed, "value")
        pi = prediction_interval(vals)
        sd = statistics.stdev(vals) if len(vals) > 1 else float("nan")
        inside = None if pi is None or not math.isfinite(h.value) else pi[0] - 1e-12 <= h.value <= pi[1] + 1e-12
        shift = (h.value - same) / sd if same is not None and sd > 0 else (0.0 if same == h.value else None)
        rows.append({"nn": nn, "section": SECTION[nn], "quantity": h.quantity, "fmt": h.fmt, "value": h.value,
                     "lo": h.lo, "hi": h.hi, "seed_values": vals, "pi": pi, "inside": inside,
                     "same_seed": same, "shift_sd": shift})
    return rows


def _claim_rows(agg: dict, run: Mapping[str, dict], seed: int) -> list[dict]:
    rows = []
    for nn, (label, verdict), ref in _matched(run, agg["claims"], "claim", _verdicts, lambda v: v[0]):
        same = _same_seed(ref, seed, "verdict")
        rows.append({"nn": nn, "section": SECTION[nn], "claim": label, "verdict": verdict, "same_seed": same,
                     "committed": ref.get("final", ref.get("across_seeds")),
                     "seen": verdict in {x["verdict"] for x in ref["per_seed"]}, "agrees": verdict == same})
    return rows


def _pick_rows(agg: dict, run: Mapping[str, dict], seed: int) -> list[dict]:
    rows = []
    for nn, p, ref in _matched(run, agg["picks"], "what", picks, lambda p: p.what):
        same = _same_seed(ref, seed, "value")
        rows.append({"nn": nn, "section": SECTION[nn], "what": p.what, "value": p.value, "same_seed": same,
                     "agrees": _hashable(p.value) == _hashable(same)})
    return rows


def compare(agg: dict, run: Mapping[str, dict], seed: int = 0) -> dict:
    """Compare one run's summaries ``run`` ({nn: NN_summary.json dict}, build seed ``seed``) with an across-seed
    aggregate ``agg`` (:func:`qscope_utils.across_seeds.aggregate`, e.g. the committed ``seeds.json``)::

        {"seed", "committed_seeds", "missing": [notebooks without a summary in the run],
         "headlines": [{"nn", "section", "quantity", "value", "lo", "hi", "seed_values", "pi": (lo, hi) | None,
                        "inside": bool | None, "same_seed", "shift_sd"}],
         "claims": [{"nn", "section", "claim", "verdict", "same_seed", "committed", "seen", "agrees"}],
         "picks": [{"nn", "section", "what", "value", "same_seed", "agrees"}]}
    """
    return {"seed": seed, "committed_seeds": list(agg["seeds"]), "missing": [nn for nn in NOTEBOOKS if nn not in run],
            "headlines": _headline_rows(agg, run, seed), "claims": _claim_rows(agg, run, seed),
            "picks": _pick_rows(agg, run, seed)}


def _count(rows: list[dict], key: str) -> tuple[int, int]:
    judged = [r for r in rows if r[key] is not None]
    return sum(bool(r[key]) for r in judged), len(judged)


def summary_line(cmp: dict) -> str:
    """One line: claims agreeing with the same seed, numbers inside the prediction interval, same picks."""
    c, nc = _count(cmp["claims"], "agrees")
    seen = sum(r["seen"] for r in cmp["claims"])
    h, nh = _count(cmp["headlines"], "inside")
    p, npk = _count(cmp["picks"], "agrees")
    n = len(cmp["committed_seeds"])
    shifts = sorted(abs(r["shift_sd"]) for r in cmp["headlines"] if r["shift_sd"] is not None)
    med = f"{statistics.median(shifts):.2f}" if shifts else "—"
    return (f"verdicts equal to committed seed {cmp['seed']}'s: {c}/{nc} ({seen}/{nc} given by some committed seed); "
            f"headline numbers inside the 95% prediction interval of the {n} committed seeds: {h}/{nh}; "
            f"median |shift| from committed seed {cmp['seed']}: {med} seed sd ({sum(x > 1 for x in shifts)} of "
            f"{len(shifts)} above 1); same picks as committed seed {cmp['seed']}: {p}/{npk}")


def render(cmp: dict, run_label: str, against: str) -> str:
    """Markdown report of :func:`compare`'s result."""
    n, s = len(cmp["committed_seeds"]), cmp["seed"]
    lines = [f"# This run against the committed results ({run_label}, build seed {s})", "",
             f"Generated by `scripts/summarize.py --compare` against `{against}` (build seeds "
             f"{', '.join(map(str, cmp['committed_seeds']))}; `qscope_utils.agreement`).", "",
             summary_line(cmp) + ".", ""]
    if cmp["missing"]:
        lines += [f"Not run, left out: {', '.join(cmp['missing'])}.", ""]
    lines += ["## Claims", "", f"| section | claim | this run | committed seed {s} | across the {n} seeds | equal |",
              "|---|---|---|---|---|---|"]
    for r in cmp["claims"]:
        mark = "yes" if r["agrees"] else ("no (another seed gave it)" if r["seen"] else "**no**")
        lines.append(f"| {r['section']} | {r['claim']} | {r['verdict']} | {r['same_seed']} | {r['committed']} | {mark} |")
    lines += ["", "## Headline numbers", "",
              f"Inside: within `mean ± t(0.975, {n - 1}) · sd · sqrt(1 + 1/{n})` of the committed seeds' values, the 95% "
              f"prediction interval of one more seed (a new seed falls outside the seeds' min-max range with "
              f"probability {2 / (n + 1):.0%} even when nothing is wrong). Shift: this run minus committed seed {s}, in "
              f"seed standard deviations.", "",
              f"| section | quantity | this run [interval] | committed seeds | 95% prediction interval | inside | "
              f"committed seed {s} | shift (sd) |", "|---|---|---|---|---|---|---|---|"]
    for r in cmp["headlines"]:
        f = r["fmt"]
        ci = f" [{_num(f, r['lo'])}, {_num(f, r['hi'])}]" if r["lo"] is not None else ""
        pi = f"{_num(f, r['pi'][0])} – {_num(f, r['pi'][1])}" if r["pi"] else "—"
        inside = "—" if r["inside"] is None else ("yes" if r["inside"] else "**no**")
        shift = "—" if r["shift_sd"] is None else f"{r['shift_sd']:+.2f}"
        lines.append(f"| {r['section']} | {r['quantity']} | {_num(f, r['value'])}{ci} | "
                     f"{'; '.join(_num(f, v) for v in r['seed_values'])} | {pi} | {inside} | {_num(f, r['same_seed'])} | {shift} |")
    lines += ["", "## Selections", "", f"| section | pick | this run | committed seed {s} | equal |", "|---|---|---|---|---|"]
    for r in cmp["picks"]:
        lines.append(f"| {r['section']} | {r['what']} | {r['value']} | {r['same_seed']} | {'yes' if r['agrees'] else '**no**'} |")
    return "\n".join(lines) + "\n"


def compare_dirs(run_dir: str | Path, seeds_json: str | Path, seed: int | None = None) -> dict:
    """:func:`compare` of the summaries in ``run_dir`` (``NN_summary.json``) with the aggregate in ``seeds_json``.
    The build seed is read from the summaries' ``_meta.build_seed`` unless given."""
    run_dir, seeds_json = Path(run_dir), Path(seeds_json)
    if not seeds_json.is_file():
        raise FileNotFoundError(f"no across-seed results at {seeds_json}: compare against the committed "
                                f"results/<profile>-seeds/seeds.json (git checkout it if a --seeds run replaced it)")
    run = load_seeds(run_dir.parent, run_dir.name, [0])[0]
    if not run:
        raise FileNotFoundError(f"no NN_summary.json in {run_dir}: run the notebooks first (./run_all.sh)")
    if seed is None:
        seeds = {d.get("_meta", {}).get("build_seed") for d in run.values()} - {None}
        seed = seeds.pop() if len(seeds) == 1 else 0
    return compare(json.loads(seeds_json.read_text()), run, seed)


def compare_settled(ours: dict, theirs: dict) -> list[dict]:
    """Claim by claim, the verdict across seeds (``final``) of two aggregates, e.g. the same seeds built on two
    machines: ``[{"nn", "section", "claim", "ours", "theirs", "equal", "ours_seeds", "theirs_seeds"}]`` for the
    claims both have (``*_seeds``: each aggregate's per-seed verdict counts, e.g. ``{"reproduced": 2, ...}``)."""
    mine = {(c["nn"], c["claim"]): c for c in ours["claims"]}
    rows = []
    for c in theirs["claims"]:
        o = mine.get((c["nn"], c["claim"]))
        if o is not None:
            a, b = o.get("final", o["across_seeds"]), c.get("final", c["across_seeds"])
            rows.append({"nn": c["nn"], "section": c["section"], "claim": c["claim"], "ours": a, "theirs": b,
                         "equal": a == b, "ours_seeds": o["verdicts"], "theirs_seeds": c["verdicts"]})
    return rows
