"""Notebook 01 runs headlessly on the smoke profile and writes its figure, table and summary."""
from __future__ import annotations

import json

import pandas as pd
import pytest


@pytest.mark.slow
def test_notebook_01_on_smoke(run_notebook_smoke, smoke_scope):
    out, executed = run_notebook_smoke("01", n_texts=24)
    df = pd.read_csv(out / "01_reconstruction.csv")
    from qscope_utils.profiles import get_profile

    scope = get_profile("smoke").scope
    assert list(df.layer) == list(range(scope.n_layers))
    assert ((df.fvu > 0) & (df.fvu < 1.5)).all() and (df.l0 <= scope.sae_k + 1e-6).all()
    assert df.delta_loss.notna().all()
    assert (out / "01_reconstruction_by_layer.png").stat().st_size > 5000
    summary = json.loads((out / "01_summary.json").read_text())
    assert summary["k"] == scope.sae_k and summary["_meta"]["seed"] == 0
    assert executed.exists()
