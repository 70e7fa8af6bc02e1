"""SAELens release names as aliases of the 14 Qwen-Scope groups (docs/CONVENTIONS.md)."""
import pytest

from qscope_utils.registry import REGISTRY, SAELENS_RELEASES, _OFFICIAL, get_group, saelens_layer, saelens_release

# names seen in public SAELens uses (release strings passed to SAE.from_pretrained)
KNOWN = {"qwen-scope-3-8b-base-w64k-l50": "Qwen/SAE-Res-Qwen3-8B-Base-W64K-L0_50",
         "qwen-scope-3-8b-base-w64k-l100": "Qwen/SAE-Res-Qwen3-8B-Base-W64K-L0_100",
         "qwen-scope-3-1.7b-base-w32k-l50": "Qwen/SAE-Res-Qwen3-1.7B-Base-W32K-L0_50",
         "qwen-scope-3.5-9b-base-w64k-l100": "Qwen/SAE-Res-Qwen3.5-9B-Base-W64K-L0_100",
         "qwen-scope-3.5-27b-w80k-l50": "Qwen/SAE-Res-Qwen3.5-27B-W80K-L0_50"}


def test_all_14_groups_round_trip():
    official = sorted(_OFFICIAL)          # the released table (tests may register tiny Qwen/-named groups)
    assert len(official) == 14 and len(SAELENS_RELEASES) == 14
    for repo in official:
        alias = saelens_release(repo)
        assert alias.startswith("qwen-scope-") and alias == alias.lower()
        assert get_group(alias) is REGISTRY[repo] and SAELENS_RELEASES[alias] == repo


@pytest.mark.parametrize("alias,repo", sorted(KNOWN.items()))
def test_known_release_names(alias, repo):
    assert saelens_release(repo) == alias
    assert get_group(alias).repo_id == repo


def test_moe_names_follow_the_rule():
    assert get_group("qwen-scope-3-30b-a3b-base-w128k-l100").d_sae == 131072
    assert get_group("qwen-scope-3.5-35b-a3b-base-w32k-l50").n_layers == 40


def test_sae_id():
    assert saelens_layer("layer0") == 0 and saelens_layer("layer35") == 35
    with pytest.raises(ValueError, match="layer<n>"):
        saelens_layer("layer_3")
    with pytest.raises(KeyError, match="unknown SAE group"):
        get_group("qwen-scope-3-8b-base-w64k-l75")
