"""Run the numbered notebooks headlessly with papermill for one profile.

Executed notebooks go to ``results/<profile>/notebooks/``; per-notebook wall times are merged
into ``results/<profile>/timings.json``. ``python -m qscope_utils.runner --profile smoke``.

    --only 00 1 03_benchmark_redundancy   notebooks by number (1 = 01) or name
    -p layer 18 -p alpha 20               notebook parameters, values read as YAML (as papermill -p)
    -y "layer: 18"  /  -y params.yaml     notebook parameters as a YAML string or file
    --quiet                               no per-cell progress lines
    --plan                                print downloads, peak GPU memory and GPU-hours per notebook; run nothing
    --seed N                              build seed N (mini/smoke): data/<profile>-seedN, results/<profile>-seedN
    --seeds N                             every notebook for build seeds 0..N-1, then the across-seed summary
                                          (results/<profile>-seeds/; N times a default run's time)

Notebooks that do not apply to a profile (``APPLIES``) are skipped with a message. Progress bars
inside notebooks are off in these batch runs (``QSCOPE_PROGRESS=1`` keeps them): the executed
notebooks stay readable. A failing notebook ends the run with one line naming it and the error.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import yaml

from .paths import rel, repo_root, results_dir
from .provenance import cpu_model
from .seeds import check_seed_options, run_seeds, seed_env

__all__ = ["APPLIES", "RunnerError", "NotebookFailed", "make_portable", "list_notebooks", "applies", "parse_parameters", "run_notebook", "run_all", "print_plan"]

PROFILES = ("mini", "smoke", "paper")

# Notebook number -> the profiles it applies to (absent: every profile). 00 builds the mini/smoke scope;
# the paper profile downloads its models instead.
APPLIES: dict[str, tuple[str, ...]] = {"00": ("mini", "smoke")}


class RunnerError(Exception):
    """A problem with the runner's input (unknown notebook id, bad parameters); printed as one line."""


class NotebookFailed(Exception):
    """A notebook raised: its name, the last line of its error, and where its executed copy is."""

    def __init__(self, stem: str, message: str, output: str):
        super().__init__(f"{stem} failed: {message}")
        self.stem, self.message, self.output = stem, message, output


def _all_notebooks() -> list[Path]:
    return sorted((repo_root() / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _matches(nb: Path, token: str) -> bool:
    if token.isdigit():
        return nb.name[:2] == token.zfill(2)
    return nb.stem == token or nb.name == token or (len(token) > 2 and nb.stem.startswith(token))


def list_notebooks(only: list[str] | None = None) -> list[Path]:
    """Numbered notebooks (``NN_name.ipynb``) in run order.

    ``only`` selects by number (``1`` and ``01`` are the same notebook) or by name; every token must
    match a notebook, else :class:`RunnerError` lists the valid ids.
    """
    nbs = _all_notebooks()
    if only is None:
        return nbs
    if not only:
        raise RunnerError("--only needs at least one notebook id")
    bad = [o for o in only if not any(_matches(p, o) for p in nbs)]
    if bad:
        valid = ", ".join(p.name[:2] for p in nbs)
        raise RunnerError(f"no notebook matches {', '.join(bad)}; valid ids: {valid} (or a notebook name)")
    return [p for p in nbs if any(_matches(p, o) for o in only)]


def applies(nb: Path, profile: str) -> bool:
    """Whether notebook ``nb`` is meant to run on ``profile`` (see ``APPLIES``)."""
    return profile in APPLIES.get(nb.name[:2], PROFILES)


def _yaml_value(text: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_parameters(pairs: list[list[str]] | None = None, yaml_text: str | None = None) -> dict:
    """Notebook parameters from ``-p name value`` pairs and a ``-y`` YAML string or file (pairs win)."""
    params: dict = {}
    if yaml_text:
        path = Path(yaml_text)
        src = path.read_text() if len(yaml_text) < 4096 and "\n" not in yaml_text and path.is_file() else yaml_text
        try:
            loaded = yaml.safe_load(src)
        except yaml.YAMLError as e:
            raise RunnerError(f"--parameters-yaml is not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(loaded, dict):
            raise RunnerError("--parameters-yaml must be a mapping, e.g. 'layer: 18'")
        params.update(loaded)
    for name, value in pairs or []:
        params[name] = _yaml_value(value)
    if "profile" in params:
        raise RunnerError("set the profile with --profile, not as a notebook parameter")
    return params


def _progress_engine() -> str:
    """Register (once) a papermill engine that calls ``on_cell(index, n_code_cells)`` after each cell."""
    from papermill.engines import NBClientEngine, NotebookExecutionManager, papermill_engines

    if _ENGINE:
        return _ENGINE[0]

    class _Manager(NotebookExecutionManager):
        on_cell: Callable | None = None

        def cell_complete(self, cell, cell_index=None, **kwargs):
            super().cell_complete(cell, cell_index=cell_index, **kwargs)
            if self.on_cell is not None and cell.cell_type == "code":
                code = [i for i, c in enumerate(self.nb.cells) if c.cell_type == "code"]
                self.on_cell(code.index(cell_index) + 1 if cell_index in code else len(code), len(code))

    class ProgressEngine(NBClientEngine):
        @classmethod
        def execute_notebook(cls, nb, kernel_name, output_path=None, progress_bar=False, log_output=False,
                             autosave_cell_every=30, on_cell=None, **kwargs):
            nb_man = _Manager(nb, output_path=output_path, progress_bar=progress_bar, log_output=log_output,
                              autosave_cell_every=autosave_cell_every)
            nb_man.on_cell = on_cell
            nb_man.notebook_start()
            try:
                cls.execute_managed_notebook(nb_man, kernel_name, log_output=log_output, **kwargs)
            finally:
                nb_man.cleanup_pbar()
                nb_man.notebook_complete()
            return nb_man.nb

    papermill_engines.register("qscope", ProgressEngine)
    _ENGINE.append("qscope")
    return "qscope"


_ENGINE: list[str] = []   # the registered engine's name, once registered


def _progress_printer(stem: str, previous_s: float | None) -> Callable[[int, int], None]:
    t0 = time.perf_counter()

    def on_cell(i: int, n: int) -> None:
        el = time.perf_counter() - t0
        if previous_s:
            eta = f"ETA {max(previous_s - el, 0):.0f} s (last run {previous_s:.0f} s)"
        else:
            eta = f"ETA ~{el / i * (n - i):.0f} s" if i else "ETA ?"
        print(f"[run_all]   {stem}: cell {i}/{n}, {el:.0f} s elapsed, {eta}", flush=True)

    return on_cell


def run_notebook(nb: Path, profile: str, parameters: dict | None = None, kernel: str = "python3",
                 on_cell: Callable[[int, int], None] | None = None) -> dict:
    """Execute one notebook with papermill; returns {'notebook', 'seconds', 'output'} (the executed copy)."""
    import papermill as pm

    out_dir = results_dir(profile) / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / nb.name
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(str(nb), str(out), parameters={"profile": profile, **(parameters or {})},
                            kernel_name=kernel, cwd=str(nb.parent), progress_bar=False, log_output=False,
                            engine_name=_progress_engine(), on_cell=on_cell)
    finally:
        if out.exists():
            make_portable(out)
    return {"notebook": nb.name, "seconds": round(time.perf_counter() - t0, 2), "output": str(out)}


def make_portable(nb_path: Path) -> None:
    """Rewrite an executed notebook so it names no absolute path of this machine under the repository.

    Papermill records ``input_path`` / ``output_path``; warnings and prints carry module and data
    paths. Every ``<repo root>/`` prefix becomes repository-relative.
    """
    text = new = nb_path.read_text()
    for env, shown in (("QSCOPE_DATA", "data"), ("QSCOPE_RESULTS", "results")):
        if os.environ.get(env):
            new = re.sub(re.escape(str(Path(os.environ[env]).resolve())) + r"(?![\w.-])", shown, new)
    root = re.escape(str(repo_root()))
    new = re.sub(root + "/", "", new)
    new = re.sub(root + r"(?![\w.-])", ".", new)
    if new != text:
        tmp = nb_path.with_suffix(".tmp")
        tmp.write_text(new)
        tmp.replace(nb_path)


# IPython startup file for batch kernels: every `from tqdm.auto import tqdm` gets a disabled bar (the
# notebook bar ignores TQDM_DISABLE), so executed notebooks carry no progress-bar outputs.
_NO_PROGRESS = """import tqdm.auto, tqdm.std


class _Off(tqdm.std.tqdm):
    def __init__(self, *args, **kwargs):
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


tqdm.auto.tqdm = _Off
"""


def _batch_kernel_env(tmp: str) -> dict[str, str]:
    """Environment for batch kernels without progress bars (empty when QSCOPE_PROGRESS=1)."""
    if os.environ.get("QSCOPE_PROGRESS") == "1":
        return {}
    startup = Path(tmp) / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-qscope-no-progress.py").write_text(_NO_PROGRESS)
    return {"IPYTHONDIR": tmp, "TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def check_profile_device(profile: str) -> None:
    """Fail before any notebook when the profile's device cannot work with this torch build."""
    from .profiles import get_profile, require_device

    try:
        require_device(get_profile(profile))
    except RuntimeError as e:
        raise RunnerError(str(e)) from None


def run_all(profile: str, only: list[str] | None = None, parameters: dict | None = None,
            quiet: bool = False) -> list[dict]:
    """Run the notebooks in order, stopping at the first failure; timings are saved as we go."""
    nbs = list_notebooks(only)
    check_profile_device(profile)
    with tempfile.TemporaryDirectory(prefix="qscope-ipython-") as tmp:
        saved = {k: os.environ.get(k) for k in ("IPYTHONDIR", "TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS")}
        os.environ.update(_batch_kernel_env(tmp))       # inherited by the kernels papermill starts
        try:
            return _run_in_order(nbs, profile, parameters, quiet)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def _run_in_order(nbs: list[Path], profile: str, parameters: dict | None, quiet: bool) -> list[dict]:
    tpath = results_dir(profile) / "timings.json"
    timings = json.loads(tpath.read_text()) if tpath.exists() else {}
    previous = dict(timings.get("notebooks", {}))
    timings["machine"] = {"platform": platform.platform(), "cpu": cpu_model(), "cpus": os.cpu_count(),
                          "python": sys.version.split()[0]}
    done = []
    for nb in nbs:
        if not applies(nb, profile):
            print(f"[run_all] {profile}: skipping {nb.stem} (applies to {', '.join(APPLIES[nb.name[:2]])} only)",
                  flush=True)
            continue
        print(f"[run_all] {profile}: {nb.name} ...", flush=True)
        on_cell = None if quiet else _progress_printer(nb.stem, previous.get(nb.stem))
        try:
            rec = run_notebook(nb, profile, parameters, on_cell=on_cell)
        except Exception as e:  # papermill's error carries the notebook's exception name and message
            ename, evalue = getattr(e, "ename", type(e).__name__), getattr(e, "evalue", str(e))
            raise NotebookFailed(nb.stem, f"{ename}: {_last_line(evalue)}",
                                 rel(results_dir(profile) / "notebooks" / nb.name)) from e
        print(f"[run_all] {profile}: {nb.name} done in {rec['seconds']:.1f} s", flush=True)
        # re-read before writing: another runner (another profile subset) may have written meanwhile
        timings = {**timings, "notebooks": json.loads(tpath.read_text()).get("notebooks", {}) if tpath.exists() else {}}
        timings["notebooks"][nb.stem] = rec["seconds"]
        tpath.write_text(json.dumps(timings, indent=2, sort_keys=True))
        done.append(rec)
    return done


def print_agreement(profile: str) -> str | None:
    """After a run that left every section's summary in ``results/<profile>``: one line on how it compares
    with the committed across-seed results (``results/<profile>-seeds/seeds.json``, when there are any),
    and the command that writes the details. Returns the line (None when there is nothing to compare)."""
    from .across_seeds import NOTEBOOKS
    from .agreement import compare_dirs, summary_line
    from .paths import seeded

    run = results_dir(profile)
    seeds_json = run.parent / f"{profile}-seeds" / "seeds.json"
    if not seeds_json.is_file() or not all((run / f"{nn}_summary.json").is_file() for nn in NOTEBOOKS):
        return None
    try:
        line = f"against the committed {profile} results ({rel(seeds_json)}): {summary_line(compare_dirs(run, seeds_json))}"
    except (KeyError, TypeError, ValueError) as e:     # an aggregate of another schema: the run itself is fine
        print(f"[run_all] could not compare with {rel(seeds_json)} ({type(e).__name__}: {e}); regenerate it with "
              f"`python scripts/summarize.py --profile {profile} --seeds N`", flush=True)
        return None
    extra = f" --compare {rel(run)}" if run.name != seeded(profile, 0) else " --compare"
    print(f"[run_all] {line}\n[run_all] details: python scripts/summarize.py --profile {profile}{extra}", flush=True)
    return line


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one clear line instead of usage + message
        print(f"[run_all] error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def print_plan(profile: str, only: list[str] | None, parameters: dict) -> None:
    """``--plan``: the cost table of the selected notebooks that have a plan (01..07); nothing runs."""
    from .plan import NOTEBOOKS, PlanError, format_table, plan_all

    ids = [p.name[:2] for p in list_notebooks(only) if p.name[:2] in NOTEBOOKS]
    if not ids:
        raise RunnerError(f"--plan covers notebooks {', '.join(NOTEBOOKS)}; none selected")
    try:
        plans = plan_all(profile, parameters, ids)
    except PlanError as e:
        raise RunnerError(str(e)) from None
    print(f"[run_all] plan for profile {profile} (nothing is run or downloaded):")
    print(format_table(plans), flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = _Parser(prog="./run_all.sh", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="mini", choices=list(PROFILES))
    ap.add_argument("--only", nargs="+", metavar="ID", help="notebook numbers or names to run, e.g. 00 1 03")
    ap.add_argument("-p", "--parameters", nargs=2, action="append", metavar=("NAME", "VALUE"),
                    help="notebook parameter (repeatable); VALUE is read as YAML: 18 -> int, true -> bool")
    ap.add_argument("-y", "--parameters-yaml", metavar="YAML", help="notebook parameters as a YAML string or file")
    ap.add_argument("--quiet", action="store_true", help="no per-cell progress lines")
    ap.add_argument("--plan", action="store_true",
                    help="print each notebook's downloads, peak GPU memory and GPU-hours (qscope_utils.plan); run nothing")
    ap.add_argument("--seed", type=int, metavar="N", help="build seed of mini/smoke (seed N>0: data/<profile>-seedN)")
    ap.add_argument("--seeds", type=int, metavar="N", help="run for build seeds 0..N-1, then aggregate across seeds")
    args = ap.parse_args(argv)
    if (problem := check_seed_options(args.profile, args.seed, args.seeds)) is not None:
        ap.error(problem)

    try:
        params = parse_parameters(args.parameters, args.parameters_yaml)
        if args.plan:
            with seed_env(args.seed):
                print_plan(args.profile, args.only, params)
            return
        if args.seeds is not None:
            run_seeds(args.profile, args.seeds, lambda: run_all(args.profile, args.only, params, quiet=args.quiet))
        else:
            with seed_env(args.seed):
                run_all(args.profile, args.only, params, quiet=args.quiet)
                print_agreement(args.profile)
    except RunnerError as e:
        print(f"[run_all] error: {e}", file=sys.stderr)
        sys.exit(2)
    except NotebookFailed as e:
        print(f"[run_all] the executed notebook with the full traceback: {e.output}", file=sys.stderr)
        print(f"[run_all] {e.stem} failed: {e.message}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
