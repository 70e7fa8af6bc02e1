"""Feature discovery for steering (docs/CONVENTIONS.md §3): the two ways the report finds a feature.

1. :func:`rank_by_response` — rank features by their activation on the tokens of a *bad response*
   that are in the unwanted language (tokens whose characters are in a given Unicode script,
   e.g. Han in an English answer that drifted into Chinese). Other tokens of the same texts give
   a baseline, so each feature gets ``mean_on`` (mean code over target tokens), ``mean_off`` and
   their difference.
2. :func:`contrast_features` — mean activation difference between a positive and a negative set
   of texts (e.g. classical vs modern Chinese).

Both exclude position 0 (the attention sink) by default and can drop massive-norm tokens
(``norm_ratio``), through :func:`qscope_utils.features.iter_codes`.

Dashboards: :func:`feature_dashboards` collects, per candidate feature, its top-activating
contexts in a corpus and its mean activation per corpus language; :func:`format_dashboards` gives
the text version and :func:`plot_dashboards` the PNG (context text is drawn only when a CJK-capable
font is installed; otherwise the PNG shows the numbers and points to the text dashboard).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from .features import TopContexts, iter_codes, mean_activations
from .sae import TopKSAE
from .scripts_unicode import contains_script

__all__ = ["token_script_masks", "rank_by_response", "contrast_features", "language_profile", "FeatureDashboard",
           "feature_dashboards", "render_context", "format_dashboards", "plot_dashboards", "cjk_font", "pick_feature", "pick_contrast",
           "given_feature_rank"]


def token_script_masks(tokenizer, texts: Sequence[str], script: str | Iterable[str], max_length: int = 128,
                       start_chars: Sequence[int] | None = None) -> list[np.ndarray]:
    """Per text, a bool array over its tokens (as ``tokenizer(text, truncation=True, max_length)``
    tokenizes it): True where the token's character span holds a character of ``script``.

    ``start_chars[i]``: only characters at or after this offset count (e.g. the response part of
    a prompt + response text). Needs a fast tokenizer (character offsets); byte-level pieces of a
    multi-byte character map to that character's span, so they count too.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError("token_script_masks needs a fast tokenizer (return_offsets_mapping); load it with use_fast=True")
    out = []
    for i, t in enumerate(texts):
        enc = tokenizer(t, truncation=True, max_length=max_length, return_offsets_mapping=True)
        lo = 0 if start_chars is None else int(start_chars[i])
        m = np.array([e > s and e > lo and contains_script(t[max(s, lo):e], script) for s, e in enc["offset_mapping"]],
                     dtype=bool)
        out.append(m)
    return out


def _acc_sums(codes, sel: torch.Tensor, d_sae: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of codes and count of firings per feature over the selected token rows."""
    idx, val = codes.indices[sel], codes.values[sel]
    s = torch.zeros(d_sae, dtype=torch.float64).index_add_(0, idx.reshape(-1), val.reshape(-1).double())
    act = val > 0
    c = torch.zeros(d_sae, dtype=torch.float64).index_add_(0, idx[act], torch.ones(int(act.sum()), dtype=torch.float64))
    return s, c


def _batch_mask(masks: Sequence[np.ndarray], width: int) -> torch.Tensor:
    """(B, width) bool tensor from per-text token masks (right padding, truncated to width)."""
    out = torch.zeros(len(masks), width, dtype=torch.bool)
    for i, m in enumerate(masks):
        k = min(len(m), width)
        out[i, :k] = torch.from_numpy(m[:k])
    return out


def rank_by_response(model, tokenizer, sae: TopKSAE, layer: int, texts: Sequence[str], script: str | Iterable[str],
                     start_chars: Sequence[int] | None = None, by: str = "mean_on", top: int | None = 50,
                     min_target_tokens: int = 1, truncation_side: str = "left", **kw) -> pd.DataFrame:
    """Rank features by activation on the unwanted-script tokens of bad responses.

    texts: prompt + response strings; start_chars: where each response starts (characters).
    Returns a DataFrame sorted by ``by`` (``mean_on`` as in the report, or ``diff`` = mean_on -
    mean_off) with columns feature, mean_on, rate_on, mean_off, rate_off, diff; ``attrs``
    hold the token counts. Codes are per token (N, d_sae) means, in SAE activation units.
    Texts longer than ``max_length`` tokens are cut on the ``truncation_side`` (default left: the
    response sits at the end, so it is kept).
    """
    if by not in ("mean_on", "diff"):
        raise ValueError(f"by={by!r}: choose 'mean_on' or 'diff'")
    old_side = tokenizer.truncation_side
    tokenizer.truncation_side = truncation_side
    try:
        return _rank_by_response(model, tokenizer, sae, layer, texts, script, start_chars, by, top,
                                 min_target_tokens, **kw)
    finally:
        tokenizer.truncation_side = old_side


def _rank_by_response(model, tokenizer, sae, layer, texts, script, start_chars, by, top, min_target_tokens, **kw):
    max_length = kw.get("max_length", 128)
    masks = token_script_masks(tokenizer, texts, script, max_length=max_length, start_chars=start_chars)
    n_target = int(sum(m[1:].sum() for m in masks))  # position 0 is never counted
    if n_target < min_target_tokens:
        raise ValueError(f"only {n_target} tokens in script {script!r} in the responses: nothing to rank. Fix: pass "
                         f"responses that actually contain the unwanted language (check start_chars)")
    d = sae.d_sae
    on_s, on_c, off_s, off_c = (torch.zeros(d, dtype=torch.float64) for _ in range(4))
    n_on = n_off = 0
    for b in iter_codes(model, tokenizer, {layer: sae}, list(texts), desc="bad-response codes", **kw):
        tgt = _batch_mask(masks[b.start:b.start + b.input_ids.shape[0]], b.input_ids.shape[1])[b.rows, b.positions]
        c = b.codes[layer]
        for sel, (s_acc, c_acc) in ((tgt, (on_s, on_c)), (~tgt, (off_s, off_c))):
            s, cnt = _acc_sums(c, sel, d)
            s_acc += s
            c_acc += cnt
        n_on += int(tgt.sum())
        n_off += int((~tgt).sum())
    df = pd.DataFrame({"feature": np.arange(d), "mean_on": (on_s / max(n_on, 1)).numpy(),
                       "rate_on": (on_c / max(n_on, 1)).numpy(), "mean_off": (off_s / max(n_off, 1)).numpy(),
                       "rate_off": (off_c / max(n_off, 1)).numpy()})
    df["diff"] = df.mean_on - df.mean_off
    df = df.sort_values(by, ascending=False, kind="stable").reset_index(drop=True)
    df.insert(0, "rank", np.arange(1, len(df) + 1))
    df.attrs.update(n_target_tokens=n_on, n_other_tokens=n_off, layer=layer, method=f"response:{by}")
    return df.head(top) if top else df


def contrast_features(model, tokenizer, sae: TopKSAE, layer: int, positive: Sequence[str], negative: Sequence[str],
                      top: int | None = 50, min_rate: float = 0.0, **kw) -> pd.DataFrame:
    """Rank features by mean activation difference, positive minus negative set (per token).

    Columns: rank, feature, diff, mean_pos, mean_neg, rate_pos, rate_neg. ``min_rate`` drops
    features firing on fewer than that share of positive tokens.
    """
    if not positive or not negative:
        raise ValueError(f"contrast needs two non-empty sets (got {len(positive)} positive, {len(negative)} negative)")
    mp = mean_activations(model, tokenizer, {layer: sae}, list(positive), desc="positive set", **kw)[layer]
    mn = mean_activations(model, tokenizer, {layer: sae}, list(negative), desc="negative set", **kw)[layer]
    df = pd.DataFrame({"feature": np.arange(sae.d_sae), "diff": (mp["mean"] - mn["mean"]).numpy(),
                       "mean_pos": mp["mean"].numpy(), "mean_neg": mn["mean"].numpy(),
                       "rate_pos": mp["rate"].numpy(), "rate_neg": mn["rate"].numpy()})
    df = df[df.rate_pos >= min_rate].sort_values("diff", ascending=False, kind="stable").reset_index(drop=True)
    df.insert(0, "rank", np.arange(1, len(df) + 1))
    df.attrs.update(n_pos_tokens=mp["n_tokens"], n_neg_tokens=mn["n_tokens"], layer=layer, method="contrast")
    return df.head(top) if top else df


def _profile_pass(model, tokenizer, sae: TopKSAE, layer: int, texts_by_lang: Mapping[str, Sequence[str]],
                  features: Sequence[int], n: int, **kw) -> tuple[pd.DataFrame, dict, list[str], list[str]]:
    """One encoding pass over all texts: per-language mean activation of ``features`` and their top-n
    (activation, text index, position) contexts. Returns (profile, best, corpus, lang_of)."""
    feats = [int(f) for f in features]
    langs = [l for l, ts in texts_by_lang.items() if ts]
    corpus = [t for l in langs for t in texts_by_lang[l]]
    lang_of = [l for l in langs for _ in texts_by_lang[l]]
    lang_idx = torch.tensor([langs.index(l) for l in lang_of], dtype=torch.long)
    sums = torch.zeros(len(langs), len(feats), dtype=torch.float64)
    counts = torch.zeros(len(langs), dtype=torch.float64)
    tc = TopContexts(feats, n)
    fidx = torch.tensor(feats, dtype=torch.long)
    for b in iter_codes(model, tokenizer, {layer: sae}, corpus, desc="dashboards", **kw):
        c = b.codes[layer]
        if n:
            tc.update(c, b.rows, b.positions, b.start)
        vals = ((c.indices[:, :, None] == fidx) * c.values[:, :, None]).sum(1).double()   # (N, n_feats)
        li = lang_idx[b.start + b.rows]
        sums.index_add_(0, li, vals)
        counts.index_add_(0, li, torch.ones(li.numel(), dtype=torch.float64))
    prof = pd.DataFrame((sums / counts.clamp(min=1)[:, None]).T.numpy(), columns=langs,
                        index=pd.Index(feats, name="feature"))
    return prof, tc.best, corpus, lang_of


def language_profile(model, tokenizer, sae: TopKSAE, layer: int, texts_by_lang: Mapping[str, Sequence[str]],
                     features: Sequence[int], **kw) -> pd.DataFrame:
    """(features x languages) mean activation per token of each feature on each language's texts."""
    return _profile_pass(model, tokenizer, sae, layer, texts_by_lang, features, 0, **kw)[0]


@dataclass
class FeatureDashboard:
    """One candidate feature: its top contexts (dicts: activation, text_index, position, lang, context) and its
    mean activation per language (pd.Series)."""

    feature: int
    layer: int
    label: str
    contexts: list[dict]
    by_lang: pd.Series


def feature_dashboards(model, tokenizer, sae: TopKSAE, layer: int, features: Sequence[int],
                       texts_by_lang: Mapping[str, Sequence[str]], n: int = 8, labels: Mapping[int, str] | None = None,
                       **kw) -> list[FeatureDashboard]:
    """Top-``n`` contexts over all texts of ``texts_by_lang`` and the per-language profile of each feature."""
    prof, best, corpus, lang_of = _profile_pass(model, tokenizer, sae, layer, texts_by_lang, features, n, **kw)
    max_length = kw.get("max_length", 128)
    out = []
    for f in prof.index:
        rows = [{"activation": a, "text_index": ti, "position": pos, "lang": lang_of[ti],
                 "context": render_context(tokenizer, corpus[ti], pos, max_length)} for a, ti, pos in best[f]]
        out.append(FeatureDashboard(int(f), layer, (labels or {}).get(int(f), ""), rows, prof.loc[f]))
    return out


def render_context(tokenizer, text: str, position: int, max_length: int = 128, before: int = 24, after: int = 6) -> str:
    """``before`` characters of ``text`` up to token ``position``, the token's characters in [[ ]], then
    ``after`` characters. Uses character offsets, so byte pieces of one Chinese character show as
    that character (not as U+FFFD)."""
    enc = tokenizer(text, truncation=True, max_length=max_length, return_offsets_mapping=True)
    offs = enc["offset_mapping"]
    if not 0 <= position < len(offs):
        raise IndexError(f"token position {position} out of range for a text of {len(offs)} tokens")
    s, e = offs[position]
    return f"{text[max(0, s - before):s]}[[{text[s:e]}]]{text[e:e + after]}"


def format_dashboards(dashboards: Sequence[FeatureDashboard]) -> str:
    """Plain-text dashboards: per feature, the language profile and the top contexts (token in [[ ]])."""
    lines = []
    for d in dashboards:
        lines.append(f"=== layer {d.layer} feature {d.feature}" + (f" ({d.label})" if d.label else "") + " ===")
        prof = ", ".join(f"{k}={v:.3f}" for k, v in d.by_lang.sort_values(ascending=False).items())
        lines.append(f"mean activation per token by language: {prof}")
        for i, r in enumerate(d.contexts, 1):
            ctx = r["context"].replace("\n", "\u21b5")
            lines.append(f"  {i:2d}. {r['activation']:7.3f} [{r['lang']}] {ctx}")
        if not d.contexts:
            lines.append("  (never fires on this corpus)")
        lines.append("")
    return "\n".join(lines)


_CJK_FAMILIES = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Micro Hei", "WenQuanYi Zen Hei",
                 "SimHei", "Microsoft YaHei", "PingFang SC", "Heiti SC", "AR PL UMing CN", "Droid Sans Fallback")


def cjk_font() -> str | None:
    """Name of an installed matplotlib font that can draw Chinese, or None."""
    from matplotlib import font_manager

    names = {f.name for f in font_manager.fontManager.ttflist}
    return next((f for f in _CJK_FAMILIES if f in names), None)


def plot_dashboards(dashboards: Sequence[FeatureDashboard], title: str = ""):
    """Figure: per feature, mean activation by language (left) and its top-context activations (right).

    Context text labels the bars when a CJK font is installed; otherwise bars are labelled by
    language and text index, and the title points to the text dashboard.
    """
    import matplotlib.pyplot as plt

    font = cjk_font()
    n = len(dashboards)
    fig, axes = plt.subplots(n, 2, figsize=(13, 2.6 * max(n, 1)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 2]})
    for (a0, a1), d in zip(axes, dashboards):
        prof = d.by_lang.sort_values(ascending=False)
        a0.bar(prof.index, prof.values, color="tab:blue")
        a0.set_title(f"L{d.layer} f{d.feature} {d.label}: mean act. by language", fontsize=9)
        a0.tick_params(axis="x", labelrotation=60, labelsize=7)
        acts = [r["activation"] for r in d.contexts][::-1]
        if font:
            labels = [r["context"].replace("\n", " ")[-40:] for r in d.contexts][::-1]
        else:
            labels = [f"[{r['lang']}] text {r['text_index']} pos {r['position']}" for r in d.contexts][::-1]
        a1.barh(range(len(acts)), acts, color="tab:orange")
        a1.set_yticks(range(len(acts)))
        a1.set_yticklabels(labels, fontsize=7, **({"fontfamily": font} if font else {}))
        a1.set_title("top-activating contexts" + ("" if font else " (text: see the text dashboard; no CJK font)"),
                     fontsize=9)
        a1.set_xlabel("activation")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def pick_feature(response_rank: pd.DataFrame | None, contrast_rank: pd.DataFrame, top: int = 20) -> dict:
    """Choose one feature from the two rankings.

    Among the ``top`` features of the bad-response ranking, the one with the largest contrast
    difference (the most language-specific of the features that fire on the bad tokens); without a
    response ranking (no bad response found), the top contrast feature. Returns {feature,
    response_rank (or None), contrast_rank, method, runner_up, diff_margin}: ``runner_up`` is the
    candidate with the next-largest contrast difference and ``diff_margin`` the winner's lead over it
    (relative: (diff - diff_runner_up) / |diff|; None without a runner-up), so a reader can see how
    close the pick is to flipping.
    """
    c = contrast_rank.set_index("feature")
    if response_rank is None or response_rank.empty:
        cand = [int(f) for f in contrast_rank.feature.head(2)]
        return {"feature": cand[0], "response_rank": None, "contrast_rank": int(c.loc[cand[0], "rank"]),
                "method": "contrast", **_runner_up(cand, c["diff"])}
    cand = [int(f) for f in response_rank.feature.head(top) if int(f) in c.index]
    if not cand:
        raise ValueError(f"none of the top-{top} response features is in the contrast ranking: pass top=None to "
                         f"contrast_features so every feature is ranked")
    cand = sorted(cand, key=lambda x: -float(c.loc[x, "diff"]))      # stable: ties keep the response order
    f = cand[0]
    r = response_rank.set_index("feature")
    return {"feature": f, "response_rank": int(r.loc[f, "rank"]), "contrast_rank": int(c.loc[f, "rank"]),
            "method": f"best contrast among top-{top} by response", **_runner_up(cand, c["diff"])}


def _runner_up(ordered: Sequence[int], score: pd.Series) -> dict:
    """{runner_up, diff_margin} of a pick ``ordered[0]`` over ``ordered[1]`` by ``score`` (feature -> value)."""
    if len(ordered) < 2:
        return {"runner_up": None, "diff_margin": None}
    a, b = float(score.loc[ordered[0]]), float(score.loc[ordered[1]])
    return {"runner_up": int(ordered[1]), "diff_margin": (a - b) / abs(a) if a else None}


def pick_contrast(contrast_rank: pd.DataFrame, min_ratio: float = 2.0, exclude: Iterable[int] = ()) -> dict:
    """The top contrast feature that is *specific* to the positive set: mean_pos >= min_ratio x mean_neg
    (features that merely fire a bit more on the positive set, e.g. a general language feature when
    contrasting two styles of that language, are skipped), and not in ``exclude``. Also returns the
    next eligible feature and the relative lead in ``diff`` (``runner_up``, ``diff_margin``) and
    ``ratio``, whose distance from ``min_ratio`` shows how close the cut is."""
    ex = {int(f) for f in exclude}
    ok = contrast_rank[(contrast_rank.mean_pos >= min_ratio * contrast_rank.mean_neg) & (contrast_rank["diff"] > 0)
                       & ~contrast_rank.feature.isin(ex)]
    if ok.empty:
        raise ValueError(f"no feature fires >= {min_ratio}x more on the positive set: lower min_ratio or add data")
    r = ok.iloc[0]
    return {"feature": int(r.feature), "contrast_rank": int(r["rank"]), "ratio": float(r.mean_pos / max(r.mean_neg, 1e-12)),
            "method": f"top contrast with mean_pos >= {min_ratio} x mean_neg" + (f", excluding {sorted(ex)}" if ex else ""),
            **_runner_up([int(x) for x in ok.feature.head(2)], ok.set_index("feature")["diff"])}


def given_feature_rank(feature: int, tables: Mapping[str, pd.DataFrame | None], layer: int, top: int = 50,
                       min_ratio: float = 1.0) -> dict:
    """Where a GIVEN feature id (e.g. the report's 6159 / 36398) ranks in discovery tables at ``layer``.

    tables: name -> ranking with columns rank, feature and either (mean_pos, mean_neg) (contrast)
    or (mean_on, mean_off) (bad-response ranking), ranked over every feature (``top=None``).
    The feature is *selective* in a table when it ranks within ``top`` and fires at least
    ``min_ratio`` x more (and strictly more) on the positive than on the negative side.
    Returns {'feature', 'layer', 'tables': {name: {rank, n_ranked, pos, neg, selective}},
    'selective' (in at least one table), 'warning' (None or a sentence naming the fix)}.
    """
    out = {}
    for name, t in tables.items():
        if t is None or t.empty:
            continue
        pos_col, neg_col = ("mean_pos", "mean_neg") if "mean_pos" in t else ("mean_on", "mean_off")
        hit = t[t.feature == int(feature)]
        if hit.empty:
            out[name] = {"rank": None, "n_ranked": int(len(t)), "pos": None, "neg": None, "selective": False}
            continue
        r = hit.iloc[0]
        pos, neg = float(r[pos_col]), float(r[neg_col])
        out[name] = {"rank": int(r["rank"]), "n_ranked": int(len(t)), "pos": pos, "neg": neg,
                     "selective": bool(int(r["rank"]) <= top and pos > neg and pos >= min_ratio * neg)}
    selective = any(v["selective"] for v in out.values())
    warning = None if selective else (
        f"feature {feature} is not selective at layer {layer} (not in the top {top} with more activation on the "
        f"positive set in any of {sorted(out)}): the report does not give its layer; try other layers "
        f"(-y 'layer: N') or let the notebook discover the feature (-y 'zh_feature: null')")
    return {"feature": int(feature), "layer": int(layer), "tables": out, "selective": selective, "warning": warning}
