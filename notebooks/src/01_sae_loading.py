# %% [markdown]
# # 01 · SAE loading and reconstruction quality
#
# Loads a Qwen-Scope SAE group layer by layer (lazily: at most two layers in memory) and measures,
# per layer, on held-out text: FVU (fraction of variance unexplained), L0, dead / dense latent
# fractions, cosine(x, x̂), and the change in LM loss when the layer's output is replaced by its
# reconstruction. Conventions follow SPEC.md §2: raw residual after block *n*, no `b_dec`
# subtraction, TopK after ReLU, position 0 excluded from statistics; on the paper profile tokens with
# a massive residual norm (attention sinks, SPEC.md §2) are excluded too (`norm_ratio`, recorded).

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
import json
import matplotlib.pyplot as plt
import torch

from qscope_utils.params import as_int_list
from qscope_utils.profiles import get_profile, massive_norm_ratio
from qscope_utils.scope import open_scope
from qscope_utils.texts import eval_texts
from qscope_utils.recon import evaluate_group
from qscope_utils.report import save_fig, save_table, save_json

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
fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
axes[0].plot(df.layer, df.fvu, "o-"); axes[0].set_title("FVU (lower is better)")
axes[0].axhline(0.20, ls="--", c="gray", lw=1, label="audit: Qwen3.5-2B mid-layer, k=100")
axes[0].legend(fontsize=7)
axes[1].plot(df.layer, df.l0, "o-"); axes[1].axhline(scope.group.k, ls=":", c="gray"); axes[1].set_title(f"L0 (k={scope.group.k})")
axes[2].plot(df.layer, 100 * df.dead_fraction, "o-", label="dead"); axes[2].plot(df.layer, 100 * df.dense_fraction, "s-", label=">10% dense")
axes[2].set_title("latents (%)"); axes[2].legend(fontsize=7)
if with_loss:
    axes[3].plot(df.layer, df.delta_loss, "o-"); axes[3].set_title("Δ LM loss when spliced (nats/token)")
for ax in axes:
    ax.set_xlabel("layer"); ax.set_xticks(list(df.layer))
fig.suptitle(f"{scope.group.repo_id} on {len(texts)} held-out texts ({int(df.n_tokens.iloc[0])} tokens/layer)")
fig.tight_layout()
save_fig(fig, profile, "01_reconstruction_by_layer")

# %% [markdown]
# ## Decoder column norms and load cost
# Released decoders are not unit-norm: steering with `alpha * W_dec[:, i]` therefore scales with
# each column's norm. Load time is the wall time to read one `layer{n}.sae.pt` (download excluded).
# The norm quantiles were taken in the single pass above (each layer file is read once).

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
boxes = [{"label": str(r.layer), "whislo": r.dec_norm_q05, "q1": r.dec_norm_q25, "med": r.dec_norm_q50,
          "q3": r.dec_norm_q75, "whishi": r.dec_norm_q95} for r in df.itertuples()]
axes[0].bxp(boxes, positions=list(df.layer), showfliers=False)
axes[0].set_title("‖W_dec[:, i]‖ per layer (5-25-50-75-95%)")
axes[1].bar(df.layer, df.load_seconds); axes[1].set_title("load time per layer (s)")
for ax in axes:
    ax.set_xlabel("layer"); ax.set_xticks(list(df.layer))
fig.tight_layout()
save_fig(fig, profile, "01_decoder_norms_and_load")

# %%
mid = df.iloc[len(df) // 2]
summary = {"group": scope.group.repo_id, "backbone": prof.backbone, "k": scope.group.k,
           "n_texts": len(texts), "tokens_per_layer": int(mid.n_tokens),
           "mid_layer": int(mid.layer), "mid_layer_fvu": float(mid.fvu), "max_fvu": float(df.fvu.max()),
           "mean_dead_fraction": float(df.dead_fraction.mean()),
           "mean_delta_loss": float(df.delta_loss.mean()) if with_loss else None,
           "exclude_first": True, "norm_ratio": norm_ratio,
           "reference": "third-party audit: FVU ~0.20 at a middle layer of Qwen3.5-2B-Base, k=100 (SPEC.md §2)"}
save_json(summary, profile, "01_summary", seed=seed)
print(json.dumps(summary, indent=2))
