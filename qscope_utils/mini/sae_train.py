"""TopK SAEs for every layer of the mini backbone, saved exactly in the Qwen-Scope release format.

Architecture and convention (docs/CONVENTIONS.md §2), via :class:`qscope_utils.sae.TopKSAE`:
``z = TopK_k(ReLU(x @ W_enc.T + b_enc))`` on the raw residual (no b_dec subtraction),
``x_hat = z @ W_dec.T + b_dec``. Since the encoder does not subtract b_dec, centring is learned in
``b_enc``; it is initialised to ``-W_enc @ mean(x)`` (and ``b_dec`` to ``mean(x)``), which starts
training where a centred encoder would, without changing the architecture.

Training (§2.2; Gao et al. 2024, EleutherAI sparsify):

* activations: the OUTPUT of ``model.model.layers[n]`` (:func:`qscope_utils.hooks.capture_residuals`)
  on packed training sequences of the balanced mixture; position 0 (the bos attention sink) is
  dropped and so is any token whose L2 norm exceeds ``NORM_RATIO`` x the layer's median norm;
  the whole buffer is shuffled (one global permutation) before training.
* loss: normalised MSE (FVU of the batch) + 1/32 x AuxK, where AuxK reconstructs the residual
  error ``x - x_hat`` with the top-``k_aux`` (= d_model/2) latents among the *dead* ones (not fired
  for ``dead_tokens`` training tokens), scaled by min(1, n_dead/k_aux) as in sparsify.
* decoder columns are kept at unit norm (gradient component parallel to each column removed
  before the step, columns renormalised after it), as in Gao et al.; this makes latent values
  comparable across features and steering with the raw column ``W_dec[:, i]`` a unit-norm push.
* Adam, linear warm-up (5%) and linear decay to 0 over the last 20% of steps.

Outputs in ``data/<profile>/sae/<group>/``: ``layer{n}.sae.pt`` (the 4 float32 tensors, nothing
else), ``layer{n}.log.json`` (curve, FVU, dead fraction, tokens/s, stamp) and ``train_log.json``
(all layers). Training resumes per layer: a layer whose log carries the current stamp and the
size and SHA-256 of its layer file (the log is written after the file, both atomically) is not
retrained; a missing, truncated or altered layer file is.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ..atomic import atomic_write_json, file_digest
from ..hooks import capture_residuals
from ..profiles import MiniScopeConfig, Profile, get_profile, mini_group_name
from ..registry import SAEGroup, register
from ..sae import SAE_KEYS, TopKSAE, save_layer_file
from .pretrain import TokenData, _batch, cached_tokens, load_checkpoint, mixture_weights, tokenize_split
from .progress import ProgressLine
from .tokenizer import load_tokenizer

__all__ = ["NORM_RATIO", "AUXK_ALPHA", "collect_activations", "filter_activations", "train_sae", "update_dead",
           "auxk_loss", "remove_radial_grad_", "step_loss", "StepLoss",
           "eval_sae", "train_all_layers", "register_mini_group", "sae_group_dir", "read_train_log", "layer_is_done"]

NORM_RATIO = 10.0      # drop tokens with ||x|| > NORM_RATIO * median ||x|| (massive activations)
AUXK_ALPHA = 1 / 32
ACT_MEMORY_BYTES = 1_500_000_000   # activation buffer budget: layers are collected in groups under it


def sae_group_dir(profile: Profile) -> Path:
    """Local group directory ``data/<profile>/sae/<group name without 'local/'>``."""
    return profile.data_dir / "sae" / mini_group_name(profile.scope).split("/")[-1]


def register_mini_group(profile: str | Profile = "mini") -> SAEGroup:
    """Register the profile's built SAE group in :data:`qscope_utils.registry.REGISTRY`."""
    prof = get_profile(profile) if isinstance(profile, str) else profile
    s = prof.scope
    if s is None:
        raise ValueError(f"profile {prof.name!r} has no mini scope to register")
    return register(SAEGroup(repo_id=mini_group_name(s), backbone=prof.backbone, d_model=s.hidden_size,
                             d_sae=s.sae_expansion * s.hidden_size, k=s.sae_k, n_layers=s.n_layers))


@torch.no_grad()
def collect_activations(model, seqs: torch.Tensor, layers: list[int], batch: int = 32) -> dict[int, torch.Tensor]:
    """Residuals after ``layers`` for token sequences (S, T): dict layer -> (S, T, d) float32."""
    out: dict[int, list[torch.Tensor]] = {l: [] for l in layers}
    for i in range(0, len(seqs), batch):
        res = capture_residuals(model, seqs[i:i + batch], None, layers)
        for l in layers:
            out[l].append(res[l].float())
    return {l: torch.cat(v) for l, v in out.items()}


def filter_activations(acts: torch.Tensor, norm_ratio: float = NORM_RATIO) -> tuple[torch.Tensor, dict]:
    """(S, T, d) -> (N, d): drop position 0 and tokens with extreme norm. Returns (kept, stats)."""
    x = acts[:, 1:].reshape(-1, acts.shape[-1])
    norms = x.norm(dim=-1)
    med = norms.median()
    keep = norms <= norm_ratio * med
    stats = {"tokens_in": int(acts.shape[0] * acts.shape[1]), "dropped_position0": int(acts.shape[0]),
             "dropped_norm": int((~keep).sum()), "median_norm": float(med),
             "position0_median_norm": float(acts[:, 0].norm(dim=-1).median())}
    return x[keep], stats


def _lr_at(step: int, steps: int, lr: float) -> float:
    warm = max(1, steps // 20)
    if step < warm:
        return lr * (step + 1) / warm
    decay_start = int(0.8 * steps)
    if step >= decay_start:
        return lr * max(0.0, (steps - step) / max(1, steps - decay_start))
    return lr


def _decode_topk(sae: TopKSAE, idx: torch.Tensor, vals: torch.Tensor, bias: bool = True) -> torch.Tensor:
    out = F.embedding_bag(idx, sae.W_dec.T, per_sample_weights=vals, mode="sum")
    return out + sae.b_dec if bias else out


@torch.no_grad()
def update_dead(since_fired: torch.Tensor, idx: torch.Tensor, vals: torch.Tensor, n_tokens: int,
                dead_tokens: int) -> torch.Tensor:
    """Advance the per-latent "tokens since last fired" counters (in place) by a batch of
    ``n_tokens`` whose top-k slots are (idx, vals), and return the dead mask (d_sae,) bool:
    latents that have not fired (value > 0) for at least ``dead_tokens`` tokens."""
    since_fired += n_tokens
    since_fired[idx[vals > 0]] = 0
    return since_fired >= dead_tokens


def auxk_loss(sae: TopKSAE, pre: torch.Tensor, dead: torch.Tensor, err: torch.Tensor, k_aux: int,
              total_var: torch.Tensor) -> torch.Tensor:
    """AuxK (Gao et al. 2024): reconstruct the residual error ``err`` (detached) from the top
    ``min(k_aux, n_dead)`` DEAD latents of the ReLU'd pre-activations ``pre`` (N, d_sae), decoder
    without bias; normalised by ``total_var`` like the main FVU term."""
    ka = min(k_aux, int(dead.sum()))
    aux_pre = pre.masked_fill(~dead, float("-inf"))
    av, ai = aux_pre.topk(ka, dim=-1, sorted=False)
    av = av.clamp_min(0)           # -inf (never: ka <= n_dead) and negatives -> 0
    e_hat = _decode_topk(sae, ai, av, bias=False)
    return (e_hat - err.detach()).pow(2).sum() / total_var


class StepLoss(NamedTuple):
    """One training step's loss and its parts (tensors keep the graph; n_dead is a count)."""
    loss: torch.Tensor
    fvu: torch.Tensor
    aux: torch.Tensor
    n_dead: int


def step_loss(sae: TopKSAE, x: torch.Tensor, k: int, since_fired: torch.Tensor, dead_tokens: int,
              k_aux: int) -> StepLoss:
    """Loss of one batch x (N, d): FVU of the TopK reconstruction + AUXK_ALPHA x min(1, n_dead/k_aux)
    x AuxK, after advancing the dead-latent counters ``since_fired`` (in place) with this batch."""
    pre = F.relu(F.linear(x, sae.W_enc, sae.b_enc))
    vals, idx = pre.topk(k, dim=-1, sorted=False)
    x_hat = _decode_topk(sae, idx, vals)
    err = x - x_hat
    total_var = (x - x.mean(0)).pow(2).sum()
    fvu = err.pow(2).sum() / total_var
    dead = update_dead(since_fired, idx, vals, x.shape[0], dead_tokens)
    n_dead = int(dead.sum())
    loss = fvu
    aux = torch.zeros(())
    if n_dead > 0:
        aux = auxk_loss(sae, pre, dead, err, k_aux, total_var)
        loss = loss + AUXK_ALPHA * min(1.0, n_dead / k_aux) * aux
    return StepLoss(loss, fvu, aux, n_dead)


@torch.no_grad()
def remove_radial_grad_(W: torch.Tensor) -> None:
    """Drop the component of ``W.grad`` parallel to each (unit-norm) column of ``W`` (in place), so
    that a step moves the decoder columns along the sphere (they are renormalised after it)."""
    if W.grad is not None:
        W.grad -= (W.grad * W).sum(0, keepdim=True) * W


def train_sae(acts: torch.Tensor, d_sae: int, k: int, lr: float, batch_tokens: int, seed: int = 0,
              dead_tokens: int | None = None, log_every: int = 20, progress: bool = False) -> tuple[TopKSAE, dict]:
    """Train one TopK SAE on shuffled activations (N, d). Returns (sae, log)."""
    torch.manual_seed(seed)
    n, d = acts.shape
    sae = TopKSAE(d, d_sae, k)
    with torch.no_grad():
        mu = acts[: min(n, 50_000)].mean(0)
        sae.b_dec.copy_(mu)
        sae.b_enc.copy_(-(sae.W_enc @ mu))
    opt = torch.optim.Adam(sae.parameters(), lr=lr, betas=(0.9, 0.999))
    steps = max(1, n // batch_tokens)
    k_aux = max(1, d // 2)
    dead_tokens = dead_tokens or max(batch_tokens, min(100_000, n // 10))
    since_fired = torch.zeros(d_sae, dtype=torch.long)
    curve, t0 = [], time.time()
    bar = ProgressLine(progress if isinstance(progress, str) else "sae", 0, steps, enabled=bool(progress))
    for step in range(steps):
        x = acts[step * batch_tokens:(step + 1) * batch_tokens]
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, steps, lr)
        loss, fvu, aux, n_dead = step_loss(sae, x, k, since_fired, dead_tokens, k_aux)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        remove_radial_grad_(sae.W_dec)
        opt.step()
        sae.normalize_decoder_()
        if step % log_every == 0 or step == steps - 1:
            curve.append({"step": step, "tokens": (step + 1) * batch_tokens, "fvu": fvu.item(),
                          "auxk": aux.item(), "dead_frac": n_dead / d_sae, "lr": _lr_at(step, steps, lr)})
        bar.tick(step, fvu=fvu.item(), dead=n_dead / d_sae, tok_per_s=(step + 1) * batch_tokens / max(1e-9, time.time() - t0))
    dt = time.time() - t0
    log = {"train_tokens": steps * batch_tokens, "train_steps": steps, "seconds": dt,
           "tokens_per_s": steps * batch_tokens / max(dt, 1e-9), "dead_tokens_window": dead_tokens,
           "dead_frac_train": float((since_fired >= dead_tokens).float().mean()),
           "final_train_fvu": curve[-1]["fvu"], "k_aux": k_aux, "curve": curve}
    sae.requires_grad_(False)
    return sae, log


@torch.no_grad()
def eval_sae(sae: TopKSAE, x: torch.Tensor) -> dict:
    """FVU, L0 and firing statistics of an SAE on activations (N, d), with the exact release
    convention (``TopKSAE.forward``: encode without b_dec subtraction, decode with it)."""
    x_hat = sae(x)
    fvu = float((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
    codes = sae.encode_sparse(x)
    fired = torch.zeros(sae.d_sae, dtype=torch.bool)
    fired[codes.indices[codes.active()]] = True
    return {"fvu": fvu, "l0": float(codes.active().sum(1).float().mean()), "eval_tokens": int(x.shape[0]),
            "never_fired_frac_eval": float(1 - fired.float().mean()),
            "cosine": float(F.cosine_similarity(x, x_hat, dim=-1).mean())}


def _seqs_from(data: TokenData, n_seqs: int, seq_len: int, seed: int, salt: int) -> torch.Tensor:
    weights = mixture_weights(data, "balanced")
    rng = np.random.default_rng([seed, 1_000 + salt])
    return _batch(data, weights, n_seqs, seq_len - 1, rng)   # (n, seq_len)


def train_all_layers(profile: Profile, stamp: str = "", progress: bool = True) -> dict:
    """Train (or resume) the SAE of every layer of the profile's main checkpoint. Returns the
    summary written to ``train_log.json``."""
    scope: MiniScopeConfig = profile.scope
    torch.manual_seed(scope.seed)
    out = sae_group_dir(profile)
    out.mkdir(parents=True, exist_ok=True)
    model = load_checkpoint(profile.backbone)
    tok = load_tokenizer(profile.backbone)
    models_dir = Path(profile.backbone).parent
    from .corpus import load_corpus

    train_data = cached_tokens(models_dir / "_data" / "train_tokens.npz",
                               lambda: tokenize_split(load_corpus(profile, split="train"), tok))
    # written by the pretrain stage; builds from before that change make it here
    held_data = cached_tokens(models_dir / "_data" / "heldout_tokens.npz",
                              lambda: tokenize_split(load_corpus(profile, split="heldout"), tok))
    d, d_sae, k = scope.hidden_size, scope.sae_expansion * scope.hidden_size, scope.sae_k
    T = scope.seq_len
    # enough sequences that ~sae_train_tokens survive the position-0 and norm filters
    n_train_seqs = math.ceil(scope.sae_train_tokens / (T - 1) * 1.02) + 1
    n_eval_seqs = max(8, math.ceil(max(2048, scope.sae_train_tokens // 100) / (T - 1)))
    eval_seqs = _seqs_from(held_data, n_eval_seqs, T, scope.seed, salt=1)

    def layer_done(l):
        return layer_is_done(out, l, stamp)

    todo = [l for l in range(scope.n_layers) if not layer_done(l)]
    per_layer_bytes = n_train_seqs * T * d * 4
    group_size = max(1, min(len(todo) or 1, ACT_MEMORY_BYTES // max(1, per_layer_bytes)))
    timings = {"collect_seconds": 0.0}
    for gi in range(0, len(todo), group_size):
        layers = todo[gi:gi + group_size]
        t = time.time()
        if progress:
            print(f"[sae] collecting activations for layers {layers} ({len(todo) - gi} of {len(todo)} layers left)",
                  flush=True)
        train_seqs = _seqs_from(train_data, n_train_seqs, T, scope.seed, salt=0)
        acts = collect_activations(model, train_seqs, layers)
        ev = collect_activations(model, eval_seqs, layers)
        timings["collect_seconds"] += time.time() - t
        for l in layers:
            x, fstats = filter_activations(acts.pop(l))
            g = torch.Generator().manual_seed(scope.seed + l)
            x = x[torch.randperm(x.shape[0], generator=g)][: scope.sae_train_tokens].contiguous()
            xe, estats = filter_activations(ev.pop(l))
            sae, log = train_sae(x, d_sae, k, scope.sae_lr, scope.sae_batch_tokens, seed=scope.seed + l,
                                 progress=f"sae layer {l}" if progress else False)
            del x
            fp = save_layer_file(sae, out / f"layer{l}.sae.pt")
            ev_stats = eval_sae(sae, xe)
            log.update(layer=l, d_model=d, d_sae=d_sae, k=k, stamp=stamp, filter=fstats, eval_filter=estats,
                       heldout=ev_stats, dead_frac=log["dead_frac_train"], file=file_digest(fp))
            atomic_write_json(out / f"layer{l}.log.json", log)    # after the layer file: it vouches for it
            if progress:
                print(f"[sae] layer {l}: heldout FVU {ev_stats['fvu']:.3f}  dead {log['dead_frac_train']:.3f}  "
                      f"never-fired(eval) {ev_stats['never_fired_frac_eval']:.3f}  {log['tokens_per_s']:.0f} tok/s")
    summary = read_train_log(out, with_curves=False)
    summary.update(group=mini_group_name(scope), d_model=d, d_sae=d_sae, k=k, n_layers=scope.n_layers,
                   convention="z = TopK(ReLU(x @ W_enc.T + b_enc)); x_hat = z @ W_dec.T + b_dec",
                   keys=list(SAE_KEYS), **timings)
    atomic_write_json(out / "train_log.json", summary)
    register_mini_group(profile)
    return summary


def layer_is_done(group_dir: Path, layer: int, stamp: str) -> bool:
    """Layer ``layer`` of a group is trained for ``stamp``: its log is readable, carries the stamp,
    and (logs from this version on) the layer file has the size and SHA-256 the log recorded."""
    lp, fp = group_dir / f"layer{layer}.log.json", group_dir / f"layer{layer}.sae.pt"
    try:
        log = json.loads(lp.read_text())
    except (OSError, ValueError):
        return False
    if log.get("stamp") != stamp or not fp.is_file():
        return False
    want = log.get("file")
    return want is None or (fp.stat().st_size == want["bytes"] and file_digest(fp) == want)


def read_train_log(group_dir: Path, with_curves: bool = True) -> dict:
    """Per-layer training logs of a built group: {"layers": [ {layer, fvu, dead_frac, ...}, ... ]}."""
    layers = []
    for p in sorted(Path(group_dir).glob("layer*.log.json"), key=lambda p: int(p.name[5:].split(".")[0])):
        lg = json.loads(p.read_text())
        if not with_curves:
            lg = {k: v for k, v in lg.items() if k != "curve"}
        layers.append(lg)
    return {"layers": layers}
