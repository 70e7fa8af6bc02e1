"""PolicyStore: trained DAPO policies kept in memory (mini / smoke) or spilled to disk (paper), one alive at a time."""
from __future__ import annotations

import copy
import weakref

import pytest
import torch

from qscope_utils.launch import PolicyStore

IDS = torch.tensor([[5, 17, 42, 99, 7, 3, 250, 11]])


def _policies(base, n=3):
    """n distinct 'trained' policies: copies of the tiny Qwen3 with different perturbations."""
    out = []
    for i in range(n):
        m = copy.deepcopy(base)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.01 * (i + 1) * torch.randn(p.shape, generator=torch.Generator().manual_seed(i)))
        out.append(m.eval())
    return out


def _logits(m):
    with torch.no_grad():
        return m(IDS).logits


def test_spill_round_trip_is_bit_identical_with_tied_weights_and_inv_freq(tiny_model, tmp_path):
    base, _ = tiny_model
    assert base.lm_head.weight is base.model.embed_tokens.weight     # the tiny Qwen3 ties its embeddings
    pols = _policies(base)
    want = [_logits(m) for m in pols]
    inv = [m.model.rotary_emb.inv_freq.clone() for m in pols]
    store = PolicyStore(spill=True, folder=tmp_path / "pol")
    for i, m in enumerate(pols):
        store.put(f"arm{i}", m)
        assert m.lm_head.weight.is_meta and m.model.rotary_emb.inv_freq.is_meta   # freed after spilling
    assert store.alive() == [] and len(list((tmp_path / "pol").glob("*.safetensors"))) == 3
    for i, (name, m) in enumerate(store.items()):
        assert name == f"arm{i}" and store.alive() == [name]
        assert m.lm_head.weight is m.model.embed_tokens.weight                   # still tied after loading
        assert torch.equal(m.model.rotary_emb.inv_freq, inv[i])                  # non-persistent buffer restored
        assert m.model.embed_tokens.weight.dtype == base.model.embed_tokens.weight.dtype
        assert torch.equal(_logits(m), want[i])                                  # bit-identical
    assert store.alive() == []
    m = store.load("arm1")
    assert torch.equal(_logits(m), want[1])
    store.load("arm2")                                                          # loading another frees arm1
    assert store.alive() == ["arm2"] and m.lm_head.weight.is_meta


def test_at_most_one_spilled_policy_alive_while_iterating(tiny_model):
    base, _ = tiny_model
    store = PolicyStore(spill=True)                                             # temporary folder
    for i, m in enumerate(_policies(base, 4)):
        store.put(f"arm{i}", m)
    nbytes = lambda m: sum(t.numel() * t.element_size() for t in list(m.parameters()) + list(m.buffers())
                           if not t.is_meta)
    one = nbytes(base)
    peak = 0
    refs = []
    for name, m in store.items():
        refs.append(weakref.ref(m))
        peak = max(peak, sum(nbytes(r()) for r in refs if r() is not None))
        assert store.alive() == [name]
    assert peak == one                                                          # never more than one policy's bytes
    folder = store.folder
    del store
    assert not folder.exists()                                                  # the temporary folder goes with the store


def test_memory_store_keeps_the_same_objects(tiny_model):
    base, _ = tiny_model
    pols = _policies(base, 2)
    store = PolicyStore(spill=False)
    for i, m in enumerate(pols):
        store.put(f"arm{i}", m)
    assert [m for _, m in store.items()] == pols and store.alive() == ["arm0", "arm1"]
    assert store.load("arm0") is pols[0] and not pols[0].lm_head.weight.is_meta


def test_profile_defaults_and_bad_input(tmp_path):
    assert PolicyStore.for_profile("paper").spill
    assert PolicyStore.for_profile("paper", folder=tmp_path).folder == tmp_path / "policies"
    assert not PolicyStore.for_profile("mini").spill and not PolicyStore.for_profile("smoke").spill
    assert PolicyStore.for_profile("smoke", "disk").spill and not PolicyStore.for_profile("paper", "memory").spill
    with pytest.raises(ValueError, match="keep_policies must be 'memory', 'disk'"):
        PolicyStore.for_profile("mini", "gpu")
    store = PolicyStore()
    store.put("a", torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="already stored"):
        store.put("a", torch.nn.Linear(2, 2))
    with pytest.raises(KeyError, match="stored: \\['a'\\]"):
        store.load("b")


def test_spill_of_a_peft_lora_model(tiny_model, tmp_path):
    peft = pytest.importorskip("peft")
    base, _ = tiny_model
    m = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(r=2, target_modules="all-linear"))
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_B" in n:
                p.normal_(generator=torch.Generator().manual_seed(1))
    m.eval()
    want = _logits(m)
    store = PolicyStore(spill=True, folder=tmp_path)
    store.put("lora", m)
    got = store.load("lora")
    assert torch.equal(_logits(got), want)


@pytest.mark.slow
def test_notebook_07_spilled_policies_give_identical_tables(run_notebook_smoke, smoke_scope):
    """Smoke notebook 07 with every trained arm spilled to disk (the paper default) writes the same tables,
    in the same order, as with the arms kept in memory (timing columns excepted)."""
    import pandas as pd

    names = ("07_training_curves", "07_variant_validation", "07_comparison")
    mem, _ = run_notebook_smoke("07", keep_policies="memory")
    want = {n: pd.read_csv(mem / f"{n}.csv") for n in names}
    disk, _ = run_notebook_smoke("07", keep_policies="disk")
    for n in names:
        got = pd.read_csv(disk / f"{n}.csv")
        cols = [c for c in want[n].columns if "seconds" not in c]
        assert list(got.columns) == list(want[n].columns)
        pd.testing.assert_frame_equal(got[cols], want[n][cols], check_exact=True)
