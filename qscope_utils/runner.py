"""Run the numbered notebooks headlessly with papermill for one profile.

Executed notebooks go to ``results/<profile>/notebooks/``; per-notebook wall times are merged
into ``results/<profile>/timings.json``. ``python -m qscope_utils.runner --profile smoke``.

Parameters reach every selected notebook as papermill's ``-y`` does: a YAML mapping, so lists stay
lists (``-y 'layers: [18, 20]'``); ``-p NAME VALUE`` parses VALUE as YAML too. A notebook ignores
(with a papermill warning) parameters its parameters cell does not name.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from .paths import repo_root, results_dir

__all__ = ["list_notebooks", "run_notebook", "run_all", "parse_parameters"]


def list_notebooks(only: list[str] | None = None) -> list[Path]:
    """Numbered notebooks (``NN_name.ipynb``) in run order; ``only`` filters by prefix or name."""
    nbs = sorted(p for p in (repo_root() / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if only:
        nbs = [p for p in nbs if any(p.name.startswith(o) or p.stem == o for o in only)]
        if not nbs:
            raise FileNotFoundError(f"no notebook matches {only}")
    return nbs


def run_notebook(nb: Path, profile: str, parameters: dict | None = None, kernel: str = "python3") -> dict:
    """Execute one notebook with papermill; returns {'notebook', 'seconds', 'output'}."""
    import papermill as pm

    out_dir = results_dir(profile) / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / nb.name
    t0 = time.perf_counter()
    pm.execute_notebook(str(nb), str(out), parameters={"profile": profile, **(parameters or {})},
                        kernel_name=kernel, cwd=str(nb.parent), progress_bar=False, log_output=False)
    return {"notebook": nb.name, "seconds": round(time.perf_counter() - t0, 2), "output": str(out)}


def run_all(profile: str, only: list[str] | None = None, parameters: dict | None = None) -> list[dict]:
    """Run the notebooks in order, stopping at the first failure; timings are saved as we go."""
    tpath = results_dir(profile) / "timings.json"
    timings = json.loads(tpath.read_text()) if tpath.exists() else {}
    timings.setdefault("notebooks", {})
    timings["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(), "python": sys.version.split()[0]}
    done = []
    for nb in list_notebooks(only):
        print(f"[run_all] {profile}: {nb.name} ...", flush=True)
        rec = run_notebook(nb, profile, parameters)
        print(f"[run_all] {profile}: {nb.name} done in {rec['seconds']:.1f} s", flush=True)
        # re-read before writing: another runner (another profile subset) may have written meanwhile
        timings = {**timings, "notebooks": json.loads(tpath.read_text())["notebooks"] if tpath.exists() else {}}
        timings["notebooks"][nb.stem] = rec["seconds"]
        tpath.write_text(json.dumps(timings, indent=2, sort_keys=True))
        done.append(rec)
    return done


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--profile", default="mini", choices=["mini", "smoke", "paper"])
    ap.add_argument("--only", nargs="*", help="notebook prefixes to run, e.g. 00 01")
    ap.add_argument("-y", "--parameters-yaml", action="append", default=[],
                    help="YAML mapping of notebook parameters, e.g. -y 'layers: [18, 20]' (repeatable)")
    ap.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="one parameter; VALUE is parsed as YAML ('[18]' is a list)")
    args = ap.parse_args(argv)
    run_all(args.profile, args.only, parse_parameters(args.parameters_yaml, args.parameter))


def parse_parameters(yaml_texts: list[str], pairs: list[tuple[str, str]] = ()) -> dict:
    """Merge ``-y`` YAML mappings and ``-p NAME VALUE`` pairs (later wins) into one dict."""
    import yaml

    out: dict = {}
    for text in yaml_texts:
        d = yaml.safe_load(text) or {}
        if not isinstance(d, dict):
            raise ValueError(f"-y {text!r} is not a YAML mapping; write it as 'name: value', e.g. -y 'layers: [18]'")
        out.update(d)
    for name, value in pairs:
        out[name] = yaml.safe_load(value)
    return out


if __name__ == "__main__":
    main()
