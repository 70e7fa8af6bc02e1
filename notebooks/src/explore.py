# %% [markdown]
# # Explore · Analyze, Compare, Steer and feature cards over any profile's SAE group
#
# Interactive views in the spirit of the official Qwen-Scope demo, over this package's profiles
# (`mini` by default, `smoke`, or `paper` with a real Qwen3 + Qwen-Scope group). Not part of the
# batch run (`run_all.sh` runs only the numbered notebooks); open it with `./run_all.sh --lab`.
# Every view is a plain function of `qscope_utils.explorer` returning DataFrames; the cells below
# show each once with the parameters, and the last cell wires them to ipywidgets.
#
# * **Analyze**: a prompt's feature x token heatmap and the top features of each token.
# * **Compare**: two prompt sets, features ranked by mean activation difference (first token excluded).
# * **Steer**: unsteered vs steered generations side by side; `h += alpha * W_dec[:, f]` after the
#   layer at every prompt position and every generated token.
# * **Feature card**: top-activating contexts on held-out corpus text and the decoder-direction
#   logit lens `W_U @ W_dec[:, f]`.

# %% tags=["parameters"]
profile = "mini"          # mini | smoke | paper
layer = None              # SAE layer (None: the middle layer)
prompt = "床前明月光，疑是地上霜。The moon is bright tonight. Луна светит ярко."
positive = ["床前明月光，疑是地上霜。", "今天我们去公园散步。", "他说这本书很好看。"]
negative = ["The moon is bright tonight.", "We walked in the park today.", "He said the book was good."]
steer_prompts = ["The meaning of life is", "Once upon a time"]
features = None           # features to steer (None: the top Compare feature)
alpha = 20.0              # steering strength (the official demo's presets: 5 / 20 / 100)
max_new_tokens = 24
card_feature = None       # feature of the card (None: the top Compare feature)
n_corpus_texts = 200      # held-out texts searched for the card's top contexts
interactive = True        # build the ipywidgets UI (headless runs just create it)

# %%
import matplotlib.pyplot as plt
import seaborn as sns
from IPython.display import display

from qscope_utils import explorer as X
from qscope_utils.figures import apply_style
from qscope_utils.scope import open_scope
from qscope_utils.texts import eval_texts

apply_style()                                  # one theme; CJK font if fetched (python -m qscope_utils.figures --fetch-font)
scope = open_scope(profile)
layer = scope.n_layers // 2 if layer is None else layer
sae = scope.saes[layer]
model, tok = scope.model, scope.tokenizer
corpus = eval_texts(scope.profile, n=n_corpus_texts)
print(f"{scope.group.repo_id} layer {layer} (d_sae {sae.d_sae}, k {sae.k}) on {scope.profile.backbone}")


def show_analysis(a, title=""):
    fig, ax = plt.subplots(figsize=(min(18, 2 + 0.45 * a.heat.shape[1]), 1 + 0.3 * max(len(a.heat), 1)))
    sns.heatmap(a.heat, ax=ax, cmap="viridis", cbar_kws={"label": "activation"})
    ax.set(xlabel="position:token", ylabel="feature", title=title)
    plt.show()


# %% [markdown]
# ## Analyze

# %%
analysis = X.analyze(model, tok, sae, layer, prompt)
show_analysis(analysis, f"layer {layer}: top features of the prompt (position 0 excluded from the choice)")
analysis.per_token.pivot_table(index=["position", "token"], columns="rank", values="feature", aggfunc="first")

# %% [markdown]
# ## Compare

# %%
ranking = X.compare(model, tok, sae, layer, positive, negative, top=15)
ranking.round(3)

# %% [markdown]
# ## Steer

# %%
steer_features = features if features is not None else [int(ranking.feature.iloc[0])]
side = X.steer_side_by_side(model, tok, sae, layer, steer_prompts, steer_features, alpha, max_new_tokens=max_new_tokens)
print(f"steering features {steer_features} with alpha {alpha} at layer {layer}")
side

# %% [markdown]
# ## Feature card

# %%
f = card_feature if card_feature is not None else int(ranking.feature.iloc[0])
card = X.feature_card(model, tok, sae, layer, f, corpus)
print(f"feature {f} at layer {layer}: top contexts on {len(corpus)} held-out texts; logit lens W_U @ W_dec[:, {f}]")
display(card.contexts.round(3))
display(card.logits_up.assign(down_token=card.logits_down.token, down_logit=card.logits_down.logit).round(3))

# %% [markdown]
# ## Interactive views (ipywidgets)
# Each tab runs its function on demand and renders into its output area.

# %%
import ipywidgets as W


def _lines(s):
    return [x for x in s.splitlines() if x.strip()]


def _tab_analyze():
    text, out, go = W.Textarea(value=prompt, layout=W.Layout(width="95%")), W.Output(), W.Button(description="Analyze")

    def run(_):
        with out:
            out.clear_output()
            a = X.analyze(model, tok, sae, layer, text.value)
            show_analysis(a)
            display(a.per_token)
    go.on_click(run)
    return W.VBox([text, go, out])


def _tab_compare():
    pos = W.Textarea(value="\n".join(positive), description="positive", layout=W.Layout(width="95%"))
    neg = W.Textarea(value="\n".join(negative), description="negative", layout=W.Layout(width="95%"))
    out, go = W.Output(), W.Button(description="Compare")

    def run(_):
        with out:
            out.clear_output()
            display(X.compare(model, tok, sae, layer, _lines(pos.value), _lines(neg.value), top=20).round(3))
    go.on_click(run)
    return W.VBox([pos, neg, go, out])


def _tab_steer():
    prompts = W.Textarea(value="\n".join(steer_prompts), description="prompts", layout=W.Layout(width="95%"))
    feats = W.Text(value=",".join(map(str, steer_features)), description="features")
    strength = W.FloatText(value=alpha, description="alpha")
    n_new = W.IntSlider(value=max_new_tokens, min=4, max=128, description="new tokens")
    out, go = W.Output(), W.Button(description="Steer")

    def run(_):
        with out:
            out.clear_output()
            fs = [int(x) for x in feats.value.replace(" ", "").split(",") if x]
            display(X.steer_side_by_side(model, tok, sae, layer, _lines(prompts.value), fs, strength.value,
                                         max_new_tokens=n_new.value))
    go.on_click(run)
    return W.VBox([prompts, W.HBox([feats, strength, n_new]), go, out])


def _tab_card():
    feat, out, go = W.IntText(value=f, description="feature"), W.Output(), W.Button(description="Feature card")

    def run(_):
        with out:
            out.clear_output()
            c = X.feature_card(model, tok, sae, layer, feat.value, corpus)
            display(c.contexts, c.logits_up, c.logits_down)
    go.on_click(run)
    return W.VBox([feat, go, out])


if interactive:
    tabs = W.Tab(children=[_tab_analyze(), _tab_compare(), _tab_steer(), _tab_card()])
    for i, name in enumerate(["Analyze", "Compare", "Steer", "Feature card"]):
        tabs.set_title(i, name)
    display(tabs)
