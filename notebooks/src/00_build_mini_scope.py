# %% [markdown]
# # 00 · Build the mini Qwen-Scope (offline, CPU)
#
# The embedded default of this package: a small multilingual corpus assembled from Debian
# packages (fortunes and man pages in en / zh / classical Chinese / ru / fr / de / es / it / ja),
# the Python standard library and generated arithmetic; a byte-level BPE tokenizer; a real
# `Qwen3ForCausalLM` pretrained from scratch (with a zoo of checkpoints over training steps and
# two data mixtures); and one TopK SAE per layer saved exactly in the Qwen-Scope release format
# (`layer{n}.sae.pt`: `W_enc`, `W_dec`, `b_enc`, `b_dec`, float32).
#
# Every stage is cached with a config stamp: re-running this notebook does nothing unless a
# size in `MiniScopeConfig` changed (then only the dependent stages rebuild). All logic lives
# in `qscope_utils.mini`.

# %% tags=["parameters"]
profile = "mini"
force = False
build_seed = None   # None: $QSCOPE_SEED, else 0; seed N > 0 builds into data/<profile>-seedN, writes results/<profile>-seedN

# %%
import json
import os

import pandas as pd

from qscope_utils import figures as F
from qscope_utils.mini.build import build_scope
from qscope_utils.mini.corpus import read_manifest
from qscope_utils.mini.sae_train import read_train_log
from qscope_utils.paths import results_dir
from qscope_utils.profiles import get_profile

if build_seed is not None:   # this kernel's seed; later notebooks follow $QSCOPE_SEED (./run_all.sh --seed N sets both)
    os.environ["QSCOPE_SEED"] = str(int(build_seed))
prof = get_profile(profile)
out = results_dir(profile)
print("CJK font for figures:", F.apply_style(fetch_font=True))   # fetched like the corpus (apt-get download, no root)
report = build_scope(profile, force=force)
pd.DataFrame([{"stage": s, **{k: v for k, v in r.items() if k in ("status", "seconds", "hash")}}
              for s, r in report["stages"].items()])

# %% [markdown]
# ## Corpus: sources, languages, labels, licences
# Labels (`offensive`/`clean`) exist only where the Debian packaging says so (the es/it `-off`
# packages and their plain counterparts); every other document is unlabelled.

# %%
man = read_manifest(profile)
manifest = pd.DataFrame(man["sources"])[["source", "lang", "label", "n_docs", "n_heldout", "n_chars", "licence", "obtained"]]
manifest.to_csv(out / "00_corpus_manifest.csv", index=False)
manifest

# %% [markdown]
# ## Backbone: checkpoint zoo and held-out perplexity
# `bits_per_char` is comparable across languages and scripts (perplexity per token is not).

# %%
models = prof.data_dir / "models"
zoo = pd.DataFrame(json.loads((models / "zoo.json").read_text()))
zoo.to_csv(out / "00_zoo.csv", index=False)
pretrain_info = json.loads((models / "pretrain.json").read_text())
print({k: pretrain_info[k] for k in ("n_params", "tokens_per_s", "train_tokens_in_corpus", "seconds")})
zoo

# %%
ppl = pd.read_csv(models / "perplexity.csv")
ppl.to_csv(out / "00_perplexity.csv", index=False)
ppl

# %%
log = pd.read_csv(models / "train_log.csv")
log.to_csv(out / "00_train_log.csv", index=False)
fig = F.render(profile, "00_pretraining")

# %% [markdown]
# ## A few continuations (greedy) from the main checkpoint

# %%
from qscope_utils.generation import generate, load_backbone

model, tok = load_backbone(prof.backbone)
prompts = ["The meaning of life is", "Привет, как", "Der Computer", "La vida es", "床前明月光，",
           "今天我们", "def main(", "Compute 3 + 4 =", "Question: Tom has 3 apples and buys 5 more. How many apples does he have? Answer:"]
samples = pd.DataFrame({"prompt": prompts,
                        "continuation": generate(model, tok, prompts, max_new_tokens=24, do_sample=False)})
samples.to_csv(out / "00_samples.csv", index=False)
samples

# %% [markdown]
# ## SAEs: final held-out FVU and dead fraction per layer, training curves
# FVU uses the release convention (encode without `b_dec` subtraction); position 0 and
# extreme-norm tokens are excluded, as in training.

# %%
logs = read_train_log(prof.sae_source)["layers"]
sae_table = pd.DataFrame([{"layer": l["layer"], "heldout_fvu": l["heldout"]["fvu"], "heldout_l0": l["heldout"]["l0"],
                           "dead_frac": l["dead_frac"], "never_fired_eval": l["heldout"]["never_fired_frac_eval"],
                           "train_tokens": l["train_tokens"], "tokens_per_s": l["tokens_per_s"],
                           "dropped_norm": l["filter"]["dropped_norm"]} for l in logs])
sae_table.to_csv(out / "00_sae_quality.csv", index=False)
pd.concat([pd.DataFrame(l["curve"]).assign(layer=l["layer"]) for l in logs]).to_csv(out / "00_sae_curves.csv", index=False)
fig = F.render(profile, "00_sae_training")
sae_table
