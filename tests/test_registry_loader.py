"""Registry and SAE loading: hub cache and local layouts, and the errors that name the fix."""
from __future__ import annotations

import pytest
import torch

from qscope_utils.registry import REGISTRY, find_groups, get_group, parse_repo_name
from qscope_utils.sae import SAELoader, TopKSAE, load_layer_file, save_layer_file

from conftest import TINY_GROUP, make_sae_state, write_group


# SPEC §1, the release's table: repo id, backbone to pair with, d_model, d_sae, k, layers
SPEC_GROUPS = [
    ("Qwen/SAE-Res-Qwen3-1.7B-Base-W32K-L0_50", "Qwen/Qwen3-1.7B-Base", 2048, 32768, 50, 28),
    ("Qwen/SAE-Res-Qwen3-1.7B-Base-W32K-L0_100", "Qwen/Qwen3-1.7B-Base", 2048, 32768, 100, 28),
    ("Qwen/SAE-Res-Qwen3-8B-Base-W64K-L0_50", "Qwen/Qwen3-8B-Base", 4096, 65536, 50, 36),
    ("Qwen/SAE-Res-Qwen3-8B-Base-W64K-L0_100", "Qwen/Qwen3-8B-Base", 4096, 65536, 100, 36),
    ("Qwen/SAE-Res-Qwen3.5-2B-Base-W32K-L0_50", "Qwen/Qwen3.5-2B-Base", 2048, 32768, 50, 24),
    ("Qwen/SAE-Res-Qwen3.5-2B-Base-W32K-L0_100", "Qwen/Qwen3.5-2B-Base", 2048, 32768, 100, 24),
    ("Qwen/SAE-Res-Qwen3.5-9B-Base-W64K-L0_50", "Qwen/Qwen3.5-9B-Base", 4096, 65536, 50, 32),
    ("Qwen/SAE-Res-Qwen3.5-9B-Base-W64K-L0_100", "Qwen/Qwen3.5-9B-Base", 4096, 65536, 100, 32),
    ("Qwen/SAE-Res-Qwen3.5-27B-W80K-L0_50", "Qwen/Qwen3.5-27B", 5120, 81920, 50, 64),
    ("Qwen/SAE-Res-Qwen3.5-27B-W80K-L0_100", "Qwen/Qwen3.5-27B", 5120, 81920, 100, 64),
    ("Qwen/SAE-Res-Qwen3-30B-A3B-Base-W32K-L0_50", "Qwen/Qwen3-30B-A3B-Base", 2048, 32768, 50, 48),
    ("Qwen/SAE-Res-Qwen3-30B-A3B-Base-W128K-L0_100", "Qwen/Qwen3-30B-A3B-Base", 2048, 131072, 100, 48),
    ("Qwen/SAE-Res-Qwen3.5-35B-A3B-Base-W32K-L0_50", "Qwen/Qwen3.5-35B-A3B-Base", 2048, 32768, 50, 40),
    ("Qwen/SAE-Res-Qwen3.5-35B-A3B-Base-W128K-L0_100", "Qwen/Qwen3.5-35B-A3B-Base", 2048, 131072, 100, 40),
]


def test_registry_has_the_14_groups_of_the_spec():
    # (other tests register fixture groups with other backbones in the same session)
    official = {g.repo_id: g for g in REGISTRY.values() if g.repo_id.startswith("Qwen/")
                and g.backbone.startswith("Qwen/Qwen3")}
    assert sorted(official) == sorted(row[0] for row in SPEC_GROUPS)
    for repo, backbone, d_model, d_sae, k, n_layers in SPEC_GROUPS:
        g = get_group(repo)
        assert (g.backbone, g.d_model, g.d_sae, g.k, g.n_layers) == (backbone, d_model, d_sae, k, n_layers), repo
        assert g.moe == ("-A3B-" in repo), repo
        assert parse_repo_name(repo)["d_sae"] == d_sae and parse_repo_name(repo)["k"] == k, repo
    moe = [g for g in official.values() if g.moe]
    assert sorted((g.d_sae, g.k) for g in moe) == [(32768, 50)] * 2 + [(131072, 100)] * 2


def test_lookup_by_backbone_width_k():
    assert [g.k for g in find_groups("Qwen3-1.7B-Base", d_sae=32768)] == [50, 100]
    assert find_groups("Qwen/Qwen3-8B-Base", k=100)[0].repo_id == "Qwen/SAE-Res-Qwen3-8B-Base-W64K-L0_100"
    assert parse_repo_name("Qwen/SAE-Res-Qwen3-30B-A3B-Base-W128K-L0_100")["d_sae"] == 131072


def test_unknown_repo_lists_known_ones():
    with pytest.raises(KeyError, match="Known groups"):
        get_group("Qwen/SAE-Res-Qwen3-4B-Base-W32K-L0_50")


def test_feature_and_layer_ranges_are_checked():
    g = get_group("Qwen/SAE-Res-Qwen3-1.7B-Base-W32K-L0_50")
    with pytest.raises(IndexError, match="W64K"):
        g.check_feature(36398)
    with pytest.raises(IndexError, match="layer27"):
        g.check_layer(28)


def test_hub_loader_reads_offline_cache(hub_cache, tiny_group):
    loader = SAELoader(TINY_GROUP, source="hub", cache_size=2)
    sae = loader[1]
    ref = make_sae_state(32, 1024, seed=1)
    assert torch.equal(sae.W_dec, ref["W_dec"]) and sae.k == 8
    loader[0], loader[2]
    assert list(loader._cache) == [0, 2]  # LRU: never more than cache_size layers in memory
    assert set(loader.load_seconds) == {0, 1, 2}


def test_offline_without_cache_names_the_fix(hub_cache, monkeypatch):
    from qscope_utils.registry import SAEGroup, register

    register(SAEGroup("Qwen/SAE-Res-Absent-Base-W1K-L0_8", "x", 32, 1024, 8, 2))
    with pytest.raises(FileNotFoundError, match="not in the Hugging Face cache") as ei:
        SAELoader("Qwen/SAE-Res-Absent-Base-W1K-L0_8")[0]
    assert "`hf download Qwen/SAE-Res-Absent-Base-W1K-L0_8 layer0.sae.pt`" in str(ei.value)


def test_local_loader_missing_layer_and_bad_shapes(tmp_path, tiny_group):
    d = write_group(tmp_path / "g", 3, 32, 1024, skip=(2,))
    loader = SAELoader(TINY_GROUP, source=str(d))
    assert loader[0].d_sae == 1024
    with pytest.raises(FileNotFoundError, match="missing layer file"):
        loader[2]
    with pytest.raises(IndexError, match="out of range"):
        loader[3]
    torch.save(make_sae_state(16, 1024), d / "layer2.sae.pt")
    with pytest.raises(ValueError, match="do not match the registry"):
        loader[2]
    with pytest.raises(ValueError, match="hidden size"):
        SAELoader(TINY_GROUP, source=str(d), hidden_size=64)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SAELoader(TINY_GROUP, source=str(tmp_path / "nope"))


def test_missing_keys_and_transposed_weights_are_rejected(tmp_path):
    sd = make_sae_state(32, 1024)
    torch.save({k: v for k, v in sd.items() if k != "b_dec"}, tmp_path / "a.pt")
    with pytest.raises(KeyError, match="b_dec"):
        load_layer_file(tmp_path / "a.pt", k=8)
    torch.save({**sd, "W_dec": sd["W_dec"].T.contiguous()}, tmp_path / "b.pt")
    with pytest.raises(ValueError, match="W_dec"):
        load_layer_file(tmp_path / "b.pt", k=8)


def test_save_writes_exactly_the_release_format(tmp_path):
    sae = TopKSAE(32, 1024, 8)
    p = save_layer_file(sae, tmp_path / "layer0.sae.pt")
    sd = torch.load(p, weights_only=True)
    assert sorted(sd) == ["W_dec", "W_enc", "b_dec", "b_enc"]
    assert {k: tuple(v.shape) for k, v in sd.items()} == {"W_enc": (1024, 32), "W_dec": (32, 1024),
                                                          "b_enc": (1024,), "b_dec": (32,)}
    assert all(v.dtype == torch.float32 for v in sd.values())
