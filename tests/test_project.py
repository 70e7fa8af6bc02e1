"""Project hygiene: pins agree everywhere, notebooks are in step with their sources, entry points exist."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^\s*-?\s*\"?([A-Za-z0-9_.\-]+)==([^\s\",]+)")


def _pins(lines) -> dict[str, str]:
    out = {}
    for line in lines:
        m = PIN.match(line.split("#")[0])
        if m:
            out[m[1].lower().replace("_", "-")] = m[2]
    return out


def test_requirements_pyproject_and_environment_pin_the_same_versions():
    req = _pins((ROOT / "requirements.txt").read_text().splitlines())
    env = _pins((ROOT / "environment.yml").read_text().splitlines())
    text = (ROOT / "pyproject.toml").read_text()
    proj = _pins(re.findall(r'"([^"]+==[^"]+)"', text))
    assert req["torch"] == "2.13.0"
    assert env == req
    assert proj == req


def test_notebooks_are_built_from_their_sources():
    sys.path.insert(0, str(ROOT / "scripts"))
    import nb

    srcs = sorted((ROOT / "notebooks" / "src").glob("*.py"))
    assert srcs, "no notebook sources"
    for src in srcs:
        built = json.loads((ROOT / "notebooks" / f"{src.stem}.ipynb").read_text())
        want = nb.build(src)
        joined = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"] for c in built["cells"]]
        assert joined == [c["source"] for c in want.cells], (
            f"{src.name} changed: run `python scripts/nb.py {src.relative_to(ROOT)}`")
        params = [c for c in built["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(params) == 1 and "profile" in "".join(params[0]["source"]), src.name


def test_notebooks_are_numbered_in_run_order_without_gaps():
    names = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    nums = [int(n[:2]) for n in names]
    assert nums == list(range(8)), names  # 00 build, 01 SAE loading, 02-07 the report's sections 3-8


def test_ci_calls_exactly_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./run_tests.sh" in ci
    assert "./run_tests.sh" in (ROOT / "README.md").read_text()
    assert "./run_all.sh" in (ROOT / "README.md").read_text()


def test_profiles_resolve_and_unknown_profile_is_refused():
    import pytest

    from qscope_utils.profiles import get_profile

    assert get_profile("paper").sae_repo.startswith("Qwen/SAE-Res-")
    assert get_profile("smoke").scope.n_layers >= 2
    with pytest.raises(ValueError, match="mini, smoke, paper"):
        get_profile("tiny")
