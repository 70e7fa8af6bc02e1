"""qscope_utils.explorer on the tiny Qwen3 with a random TopK SAE: known answers computed by hand."""
import pytest
import torch

from conftest import SENTENCES, TINY, make_sae_state
from qscope_utils import explorer as X
from qscope_utils.generation import generate
from qscope_utils.hooks import capture_residuals
from qscope_utils.sae import TopKSAE
from qscope_utils.steering import steer

LAYER = 1


@pytest.fixture()
def sae():
    return TopKSAE.from_state_dict(make_sae_state(TINY["hidden_size"], 1024, seed=3), k=8)


def _z(model, tok, sae, text):
    enc = tok(text, return_tensors="pt")
    with torch.no_grad():
        h = capture_residuals(model, enc["input_ids"], enc["attention_mask"], [LAYER])[LAYER][0]
        return sae.encode(h.float())


def test_analyze_matches_manual_encoding(tiny_model, sae):
    model, tok = tiny_model
    text = "床前明月光，疑是地上霜。 The quick brown fox"
    a = X.analyze(model, tok, sae, LAYER, text, n_features=6, top_per_token=2)
    z = _z(model, tok, sae, text)
    assert len(a.tokens) == z.shape[0] == a.heat.shape[1]
    peak = z[1:].max(0).values                               # position 0 excluded from the choice
    assert list(a.heat.index) == peak.topk(6).indices.tolist()
    torch.testing.assert_close(torch.tensor(a.heat.values), z[:, a.heat.index].T)
    first = a.per_token[(a.per_token.position == 3) & (a.per_token["rank"] == 1)].iloc[0]
    assert first.feature == int(z[3].argmax()) and first.activation == pytest.approx(float(z[3].max()))
    assert 0 not in set(a.per_token.position)


def test_compare_ranks_by_mean_difference_excluding_first_token(tiny_model, sae):
    model, tok = tiny_model
    pos, neg = SENTENCES[:2], SENTENCES[3:5]
    c = X.compare(model, tok, sae, LAYER, pos, neg, top=5)

    def mean(texts):
        zs = torch.cat([_z(model, tok, sae, t)[1:] for t in texts])
        return zs.mean(0)

    diff = mean(pos) - mean(neg)
    assert list(c.feature) == diff.topk(5).indices.tolist()
    assert c["diff"].tolist() == pytest.approx(diff.topk(5).values.tolist(), abs=1e-5)
    assert (X.compare(model, tok, sae, LAYER, pos, pos, top=3)["diff"].abs() < 1e-6).all()
    with pytest.raises(ValueError, match="at least one"):
        X.compare(model, tok, sae, LAYER, pos, [])


def test_steer_side_by_side(tiny_model, sae, one_thread):
    model, tok = tiny_model
    prompts = ["The quick", "Bonjour"]
    zero = X.steer_side_by_side(model, tok, sae, LAYER, prompts, [5, 9], 0.0, max_new_tokens=6)
    assert list(zero.unsteered) == list(zero.steered)
    out = X.steer_side_by_side(model, tok, sae, LAYER, prompts, [5, 9], [40.0, -20.0], max_new_tokens=6)
    vec = 40.0 * sae.W_dec[:, 5] - 20.0 * sae.W_dec[:, 9]
    with steer(model, {LAYER: vec}):
        ref = generate(model, tok, prompts, max_new_tokens=6, do_sample=False)
    assert list(out.steered) == ref and list(out.unsteered) == list(zero.unsteered)


def test_logit_lens_and_feature_card(tiny_model, sae):
    model, tok = tiny_model
    up, down = X.logit_lens(model, tok, sae, 7, n=4)
    logits = model.get_output_embeddings().weight.detach() @ sae.W_dec[:, 7].detach()
    assert up.token_id.tolist() == logits.topk(4).indices.tolist()
    assert down.token_id.tolist() == (-logits).topk(4).indices.tolist()
    assert up.logit.iloc[0] == pytest.approx(float(logits.max()), rel=1e-5)
    texts = SENTENCES[:7]
    f = int(_z(model, tok, sae, texts[0])[1:].max(0).values.argmax())
    card = X.feature_card(model, tok, sae, LAYER, f, texts, n=3)
    best = max(float(_z(model, tok, sae, t)[1:, f].max()) for t in texts)
    assert card.contexts.activation.iloc[0] == pytest.approx(best, rel=1e-5)
    assert "[[" in card.contexts.context.iloc[0]
    with pytest.raises(IndexError):
        X.feature_card(model, tok, sae, LAYER, 5000, texts)


@pytest.mark.slow
def test_explore_notebook_runs_headless_on_smoke(tmp_path, monkeypatch, smoke_scope):
    """notebooks/explore.ipynb (outside the batch order) with default parameters under papermill."""
    import json
    from pathlib import Path

    import papermill as pm

    root = Path(__file__).resolve().parents[1]
    monkeypatch.setenv("QSCOPE_RESULTS", str(tmp_path))
    out = tmp_path / "explore.ipynb"
    pm.execute_notebook(str(root / "notebooks" / "explore.ipynb"), str(out), parameters={"profile": "smoke"},
                        kernel_name="python3", cwd=str(root / "notebooks"), progress_bar=False)
    nb = json.loads(out.read_text())
    text = "".join(o.get("text", "") if isinstance(o.get("text", ""), str) else "".join(o["text"])
                   for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", []))
    assert "steering features" in text and "logit lens" in text
    kinds = {k for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
             for k in o.get("data", {})}
    assert "image/png" in kinds and "text/html" in kinds                 # heatmap and DataFrames rendered
    assert "application/vnd.jupyter.widget-view+json" in kinds           # the ipywidgets UI was built
