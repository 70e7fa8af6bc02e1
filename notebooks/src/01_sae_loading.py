# %% [markdown]
# # 01 · SAE loading and reconstruction quality
#
# Loads a Qwen-Scope SAE group layer by layer (lazily: at most two layers in memory) and measures,
# per layer, on held-out text: FVU (fraction of variance unexplained), L0, dead / dense latent
# fractions, cosine(x, x̂), and the change in LM loss when the layer's output is replaced by its
# reconstruction. Conventions follow docs/CONVENTIONS.md §2: raw residual after block *n*, no `b_dec`
# subtraction, TopK after ReLU, position 0 excluded from statistics; on the paper profile tokens with
# a massive residual norm (attention sinks, docs/CONVENTIONS.md §2) are excluded too (`norm_ratio`, recorded).

# %% tags=["parameters"]
profile = "mini"        # mini | smoke | paper
layers = None           # None: every layer of the group; a list, e.g. -y 'layers: [9, 18, 27]'
n_texts = 256           # held-out texts evaluated per layer
max_length = 128        # tokens per text
batch_size = 16
with_loss = True        # also splice x̂ back in and measure delta LM loss
norm_ratio = "profile"  # drop tokens with norm > norm_ratio x median; "profile": paper 10.0, mini/smoke None
seed = 0

# %%
from qscope_utils.texts import require_languages
require_languages(profile, "01")  # a custom QSCOPE_CORPUS_DIR must hold what 01 reads (data/README.md)
from qscope_utils.plan import show_plan; show_plan("01", globals())  # downloads, peak GPU memory, GPU time (nothing runs)

import json
import torch

from qscope_utils import figures as F
from qscope_utils.params import as_int_list
from qscope_utils.profiles import get_profile, massive_norm_ratio
from qscope_utils.scope import open_scope
from qscope_utils.texts import eval_texts
from qscope_utils.recon import evaluate_group
from qscope_utils.report import save_table, save_json

torch.manual_seed(seed)
prof = get_profile(profile)
scope = open_scope(prof)
layers = as_int_list(layers, "layers")
norm_ratio = massive_norm_ratio(prof, norm_ratio)
print(f"backbone: {prof.backbone}\nSAE group: {scope.group}\nmassive-norm exclusion: norm_ratio={norm_ratio}")

# %%
texts = eval_texts(prof, n=n_texts, seed=seed)
df = evaluate_group(scope, texts, layers=layers, batch_size=batch_size, max_length=max_length, with_loss=with_loss,
                    norm_ratio=norm_ratio)
save_table(df, profile, "01_reconstruction")
df.round(4)

# %%
# drawn from the saved tables by qscope_utils.figures (`./run_all.sh --figures` redraws it the same way)
fig_meta = {"group": scope.group.repo_id, "k": scope.group.k, "n_texts": len(texts),
            "tokens_per_layer": int(df.n_tokens.iloc[0])}
fig = F.render(profile, "01_reconstruction_by_layer", fig_meta)

# %% [markdown]
# ## Decoder column norms and load cost
# Released decoders are not unit-norm: steering with `alpha * W_dec[:, i]` therefore scales with
# each column's norm. Load time is the wall time to read one `layer{n}.sae.pt` (download excluded).
# The norm quantiles were taken in the single pass above (each layer file is read once).

# %%
fig = F.render(profile, "01_decoder_norms_and_load")

# %%
mid = df.iloc[len(df) // 2]
summary = {"group": scope.group.repo_id, "backbone": prof.backbone, "k": scope.group.k,
           "n_texts": len(texts), "tokens_per_layer": int(mid.n_tokens),
           "mid_layer": int(mid.layer), "mid_layer_fvu": float(mid.fvu), "max_fvu": float(df.fvu.max()),
           "mean_dead_fraction": float(df.dead_fraction.mean()),
           "mean_delta_loss": float(df.delta_loss.mean()) if with_loss else None,
           "exclude_first": True, "norm_ratio": norm_ratio,
           "reference": "third-party audit: FVU ~0.20 at a middle layer of Qwen3.5-2B-Base, k=100 (docs/CONVENTIONS.md §2)"}
save_json(summary, profile, "01_summary", seed=seed)
print(json.dumps(summary, indent=2))

# %% [markdown]
# ## What we found vs the report
# Generated from the summary this notebook just saved (`qscope_utils.findings`); verdict words are
# defined in `docs/CONVENTIONS.md`.

# %%
from IPython.display import Markdown

from qscope_utils.findings import for_notebook

Markdown(for_notebook("01", profile))
