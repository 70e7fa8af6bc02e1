"""Fixture: an offline Hugging Face hub cache holding dataset miniatures (``qscope_utils.sources``).

Import it into a test module with ``from conftest_sources import dataset_hub  # noqa: F401``.
"""
from __future__ import annotations

import pytest


@pytest.fixture()
def dataset_hub(tmp_path, monkeypatch):
    """``make(names=None, n_rows=12) -> hf_home``: writes the miniatures of ``names`` into ``tmp_path/hf``
    and points HF_HOME / HF_HUB_CACHE / HF_DATASETS_CACHE and the imported constants there, offline."""
    import datasets.config as dcfg
    import huggingface_hub.constants as c

    from qscope_utils.sources import write_fixture_hub

    home = tmp_path / "hf"
    hub, ds_cache = home / "hub", home / "datasets"
    for k, v in {"HF_HOME": home, "HF_HUB_CACHE": hub, "HF_DATASETS_CACHE": ds_cache, "HF_HUB_OFFLINE": "1"}.items():
        monkeypatch.setenv(k, str(v))
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(dcfg, "HF_DATASETS_CACHE", ds_cache)

    def make(names=None, n_rows: int = 12):
        write_fixture_hub(home, names, n_rows=n_rows)
        return home

    return make
