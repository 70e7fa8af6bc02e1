"""A plan before a run: what each notebook will download, hold in GPU memory and spend in GPU time.

``./run_all.sh --profile paper --plan`` prints one row per notebook (01..07) from the notebook's own
parameters (its parameters cell merged with ``-p`` / ``-y`` overrides, as the runner passes them) and
the section configs' profile defaults; notebooks call :func:`show_plan` first. Nothing is run or
downloaded. Every number is arithmetic on published shapes (:mod:`qscope_utils.model_shapes`, the SAE
registry) and the sizes the code will process; the constants below are the only assumptions, each with
its reason. Where a size is not knowable without the data (dataset downloads, row counts of user
files or of "all rows" splits) the plan prints ``?`` and a ``>=`` on totals, never a guess.

Units: bytes, and GB = 1e9 bytes. Sizes:

* backbone download = ``n_params x 2`` (bf16 safetensors);
* one SAE layer file ``layer{n}.sae.pt`` = (W_enc + W_dec: ``2 x d_model x d_sae``, b_enc: ``d_sae``,
  b_dec: ``d_model``) float32 elements x 4 bytes (docs/CONVENTIONS.md §2: 2.15 GB at 64K x 4096);
* peak GPU memory = weights + SAE layers alive (loader cache, or layers held per pass) x layer bytes +
  the largest transient of any stage's batch: KV cache (rows x (prompt + new tokens) x kv bytes/token),
  float32 logits of at most :data:`LOGITS_CHUNK_TOKENS` positions, float32 SAE pre-activations; a batch is
  the stage's row batch, cut further by its token budget where the code sets one (:attr:`Stage.max_tokens`,
  as ``qscope_utils.batching.token_budget_batches`` does: rows x (prompt + new tokens) <= budget);
  training stages use the training memory model (``qscope_utils.fit.training_peak_bytes``) with the
  micro-batch and gradient checkpointing the trainer runs;
* GPU time = FLOPs / (peak x utilisation) for prefill, forward and training (2 x params x tokens
  forward, 6 x for training), float32 SAE encodes at the FP32 rate: budgets change memory, not these
  FLOPs. Decode steps cost the larger of the bytes-moved time (weights + KV read per step over HBM
  bandwidth) and the compute time, PER BATCH: every batch re-reads all weights at every step, so a token
  budget that shrinks the batch raises decode time (assumed: batches run one after another, no overlap).

Generation runs every row to its ``max_new_tokens`` and every text is counted at its truncation length:
the GPU-hours are upper bounds for the stated row counts.
"""
from __future__ import annotations

import ast
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping, Sequence

from .batching import DEFAULT_CHUNK_TOKENS
from .model_shapes import BackboneShape, backbone_shape

__all__ = ["PlanError", "TrainingModelMissing", "Stage", "NotebookPlan", "NOTEBOOKS",
           "H100_BF16_FLOPS", "H100_FP32_FLOPS", "H100_HBM_BYTES_PER_S", "H100_MEMORY_BYTES", "MFU_FORWARD",
           "MFU_TRAIN", "MFU_DECODE", "FP32_EFFICIENCY", "HBM_EFFICIENCY", "DOWNLOAD_BYTES_PER_S",
           "LOGITS_CHUNK_TOKENS", "SHORT_PROMPT_TOKENS", "ASSUMED_PROMPT_TOKENS", "SAFETY_CELLS",
           "BENCHMARK_ITEMS", "backbone_bytes", "sae_layer_bytes", "kv_cache_bytes", "logits_bytes",
           "forward_flops", "sae_encode_flops", "compute_seconds", "decode_seconds", "sae_seconds", "stage_seconds",
           "stage_transient_bytes", "training_bytes", "notebook_defaults", "plan_notebook", "plan_all",
           "format_table", "show_plan"]

# ----------------------------------------------------------------------------------- constants
H100_BF16_FLOPS = 989e12
"""Dense bf16 tensor-core peak of one H100 SXM (FLOP/s), the figure ``dapo.paper_compute`` uses too."""
H100_FP32_FLOPS = 67e12
"""FP32 (non-tensor-core) peak of one H100 SXM (FLOP/s): SAE encodes run in float32 and torch's default
matmul precision ("highest") does not use TF32."""
H100_HBM_BYTES_PER_S = 3.35e12
"""HBM3 bandwidth of one H100 SXM (bytes/s): bounds a decode step, which reads all weights and the KV cache."""
H100_MEMORY_BYTES = 80e9
"""Memory of one H100 (80 GB); a plan row whose peak exceeds it is flagged (``fits`` = no)."""
MFU_FORWARD = 0.4
"""Utilisation of the bf16 peak in prefill / forward passes (a typical HF eager-attention figure)."""
MFU_TRAIN = 0.4
"""Utilisation of the bf16 peak in training steps (forward + backward, gradient checkpointing excluded)."""
MFU_DECODE = 0.2
"""Utilisation of the bf16 peak in a decode step when it is compute-bound (large batches); decode is
usually bandwidth-bound and then :data:`HBM_EFFICIENCY` decides."""
FP32_EFFICIENCY = 0.5
"""Utilisation of the FP32 peak by the SAE encode GEMMs (tokens x d_model x d_sae)."""
HBM_EFFICIENCY = 0.6
"""Share of HBM bandwidth a decode step achieves in HF ``generate`` (eager kernels, one step per call)."""
DOWNLOAD_BYTES_PER_S = 100e6
"""Assumed download rate from the hub (100 MB/s), only to compare downloads with GPU time in "dominant"."""
LOGITS_CHUNK_TOKENS = DEFAULT_CHUNK_TOKENS
"""Positions whose float32 logits exist at once: log-probs and losses are computed in chunks of
``qscope_utils.batching.DEFAULT_CHUNK_TOKENS`` positions (4,096 x 151,936 x 4 B = 2.5 GB)."""
SHORT_PROMPT_TOKENS = 64
"""Tokens of notebook 02's prompts: a <= 120-character English prefix plus a cue, or a story opening
(assumed upper bound; Chinese text is about one token per character)."""
ASSUMED_PROMPT_TOKENS = 256
"""Prompt tokens where the data fixes them and the plan cannot read the data (06's user prompt files,
07's GSM8K questions with the template): an assumption, named in the notes of those rows."""
SAFETY_CELLS = 4
"""(group, label) cells of WildJailbreak train: vanilla / adversarial x harmful / benign; the report's
"4k real" seed set is 4 x 1,000 (``SafetyConfig.n_seed_per_cell``)."""
BENCHMARK_ITEMS: dict[str, int | None] = {
    "MMLU": 14_042, "MMLU-Redux": 3_000, "MMLU-Pro": 12_032, "SuperGPQA": None, "C-Eval": 1_346,
    "CMMLU": 11_528, "GSM8K": 1_319, "MATH": 5_000, "GPQA-Diamond": 198, "TheoremQA": 800, "MBPP": 500,
    "EvalPlus": 164, "MultiPL-E": None, "MMMLU": None, "INCLUDE": None}
"""Items of the paper benchmarks' evaluated splits as the adapters in ``qscope_utils/sources/`` state them
(module docstrings, ``expected_rows``); None where they state no count (printed as ``?``)."""

NOTEBOOKS = ("01", "02", "03", "04", "05", "06", "07")
GB = 1e9


class PlanError(ValueError):
    """A notebook parameter the plan cannot use (unknown name, wrong type); the message names the fix."""


class TrainingModelMissing(PlanError):
    """``qscope_utils.fit`` (the training memory model) is not importable in this checkout."""


# ----------------------------------------------------------------------------------- pure arithmetic
def backbone_bytes(shape: BackboneShape, bytes_per_el: int = 2) -> int:
    """Weights of a backbone: ``n_params x bytes_per_el`` (2 = the bf16 safetensors on the hub)."""
    return shape.n_params * bytes_per_el


def sae_layer_bytes(d_model: int, d_sae: int, bytes_per_el: int = 4) -> int:
    """One ``layer{n}.sae.pt``: W_enc (d_sae x d_model) + W_dec (d_model x d_sae) + b_enc (d_sae) +
    b_dec (d_model) in the release dtype (float32: 4 bytes)."""
    return (2 * d_model * d_sae + d_sae + d_model) * bytes_per_el


def kv_cache_bytes(shape: BackboneShape, tokens: int, bytes_per_el: int = 2) -> int:
    """KV cache of ``tokens`` cached positions (rows x context) across all layers."""
    return tokens * shape.kv_bytes_per_token(bytes_per_el)


def logits_bytes(vocab: int, positions: int, chunk: int | None = LOGITS_CHUNK_TOKENS, bytes_per_el: int = 4) -> int:
    """Float32 logits alive at once for ``positions`` scored positions, at most ``chunk`` of them."""
    return (positions if chunk is None else min(positions, chunk)) * vocab * bytes_per_el


def _layer_params(shape: BackboneShape) -> float:
    """Parameters of one decoder layer (embedding, LM head and final norm excluded)."""
    emb = shape.vocab_size * shape.hidden_size * (1 if shape.tie_word_embeddings else 2)
    return (shape.n_params - emb - shape.hidden_size) / shape.n_layers


def forward_flops(shape: BackboneShape, tokens: float, upto_layer: int | None = None) -> float:
    """2 x params x tokens for a full forward (decoder layers + LM head; the embedding lookup is free);
    a capture cut after layer ``upto_layer`` runs only layers 0..upto_layer and no head."""
    if upto_layer is None:
        return 2.0 * tokens * (shape.n_layers * _layer_params(shape) + shape.vocab_size * shape.hidden_size)
    return 2.0 * tokens * (upto_layer + 1) * _layer_params(shape)


def sae_encode_flops(d_model: int, d_sae: int, tokens: float) -> float:
    """Dense encode ``x @ W_enc.T``: 2 x tokens x d_model x d_sae (the top-k and sparse decode are small)."""
    return 2.0 * tokens * d_model * d_sae


def compute_seconds(flops: float, peak: float = H100_BF16_FLOPS, mfu: float = MFU_FORWARD) -> float:
    """Seconds for ``flops`` at ``peak`` x ``mfu``."""
    return flops / (peak * mfu)


def decode_seconds(shape: BackboneShape, rows: int, prompt: int, new_tokens: int, batch_rows: int,
                   bytes_per_el: int = 2) -> float:
    """Decode time of ``rows`` generations of ``new_tokens`` after ``prompt`` tokens, ``batch_rows`` at a time.

    Per step and batch: max(bytes moved / (HBM x efficiency), 2 x params x batch / (bf16 peak x MFU_DECODE)),
    bytes moved = all weights + the batch's KV cache at the mean context (prompt + new_tokens / 2)."""
    if rows <= 0 or new_tokens <= 0:
        return 0.0
    n_batches = math.ceil(rows / batch_rows)
    b = min(batch_rows, rows)
    moved = backbone_bytes(shape, bytes_per_el) + kv_cache_bytes(shape, b * (prompt + new_tokens / 2), bytes_per_el)
    t_mem = moved / (H100_HBM_BYTES_PER_S * HBM_EFFICIENCY)
    t_cmp = 2.0 * shape.n_params * b / (H100_BF16_FLOPS * MFU_DECODE)
    return n_batches * new_tokens * max(t_mem, t_cmp)


# ----------------------------------------------------------------------------------- stages
@dataclass(frozen=True)
class Stage:
    """One piece of a notebook's work.

    name: what it is (printed as the dominant cost). kind: ``forward`` (full pass with logits),
    ``capture`` (cut after ``upto_layer``), ``generate`` (prefill ``length`` tokens, then decode
    ``new_tokens``) or ``train`` (forward + backward over ``length`` tokens per row).
    rows: sequences processed (None: not knowable without the data; the stage then counts as 0 and
    totals are lower bounds). length: tokens per row (prompt tokens for ``generate``).
    batch_rows: rows per batch (memory). passes: times the rows are processed (e.g. one per layer).
    sae_layers: SAE layers encoded per pass (float32 encode FLOPs). upto_layer: capture depth.
    max_tokens: token budget of one batch (rows x (length + new_tokens)); None = ``batch_rows`` only.
    """

    name: str
    kind: str
    rows: int | None
    length: int
    batch_rows: int = 1
    new_tokens: int = 0
    passes: int = 1
    sae_layers: int = 0
    upto_layer: int | None = None
    max_tokens: int | None = None

    def __post_init__(self):
        if self.kind not in ("forward", "capture", "generate", "train"):
            raise ValueError(f"stage {self.name!r}: unknown kind {self.kind!r}")

    @property
    def batch(self) -> int:
        """Rows in one batch: ``batch_rows`` (at most ``rows``), cut to ``max_tokens // (length +
        new_tokens)`` under a token budget (at least one row: a row is never split)."""
        b = self.batch_rows if self.rows is None else min(self.batch_rows, self.rows)
        if self.max_tokens is not None:
            b = min(b, max(1, self.max_tokens // (self.length + self.new_tokens)))
        return max(b, 1)


def sae_seconds(shape: BackboneShape, d_sae: int, st: Stage) -> float:
    """GPU seconds of a stage's float32 SAE encodes (``sae_layers`` per pass, every token)."""
    if not st.rows or not st.sae_layers:
        return 0.0
    tokens = st.rows * st.length * st.passes
    return compute_seconds(sae_encode_flops(shape.hidden_size, d_sae, tokens) * st.sae_layers,
                           H100_FP32_FLOPS, FP32_EFFICIENCY)


def stage_seconds(shape: BackboneShape, d_sae: int, st: Stage, bytes_per_el: int = 2) -> float:
    """GPU seconds of one stage on one H100, SAE encodes included (0 when its row count is unknown)."""
    if not st.rows:
        return 0.0
    tokens = st.rows * st.length * st.passes
    sae = sae_seconds(shape, d_sae, st)
    if st.kind == "train":
        return compute_seconds(3 * forward_flops(shape, tokens), mfu=MFU_TRAIN) + sae
    if st.kind == "generate":
        prefill = compute_seconds(forward_flops(shape, tokens))
        return prefill + st.passes * decode_seconds(shape, st.rows, st.length, st.new_tokens, st.batch,
                                                    bytes_per_el) + sae
    upto = st.upto_layer if st.kind == "capture" else None
    return compute_seconds(forward_flops(shape, tokens, upto)) + sae


def stage_transient_bytes(shape: BackboneShape, d_sae: int, st: Stage, bytes_per_el: int = 2) -> int:
    """Memory one batch of a stage adds on top of weights and SAE layers: KV cache (generation: prompt +
    new tokens; forward passes keep no cache), float32 logits (chunked) and float32 SAE pre-activations."""
    if st.rows == 0 or st.passes == 0:
        return 0
    b = st.batch
    ctx = st.length + st.new_tokens
    kv = kv_cache_bytes(shape, b * ctx, bytes_per_el) if st.kind == "generate" else 0
    positions = b if st.kind == "generate" else (0 if st.kind == "capture" else b * ctx)
    pre = b * ctx * d_sae * 4 if st.sae_layers else 0
    return kv + logits_bytes(shape.vocab_size, positions) + pre


def training_bytes(shape: BackboneShape, *, lora_r: int = 0, n_gpus: int = 1, sharded: bool = False,
                   tokens_per_micro_batch: int, grad_checkpointing: bool = True) -> int:
    """Peak bytes per GPU of a fine-tuning step, from ``qscope_utils.fit.training_peak_bytes`` (the one
    training memory model of the project: weights, master copy, gradients, optimizer, activations)."""
    try:
        from .fit import training_peak_bytes
    except ImportError as e:
        raise TrainingModelMissing("training memory needs qscope_utils.fit.training_peak_bytes, which this "
                                   "checkout lacks (it comes with issue #14's training-precision part)") from e
    return int(training_peak_bytes(shape, lora_r=lora_r, n_gpus=n_gpus, sharded=sharded,
                                   tokens_per_micro_batch=tokens_per_micro_batch,
                                   grad_checkpointing=grad_checkpointing).total)


# ----------------------------------------------------------------------------------- plans
@dataclass
class NotebookPlan:
    """The plan of one notebook.

    downloads: (what, bytes or None when not knowable). stages: its work. weights: backbone bytes in the
    run dtype. sae_alive: SAE layers held at once; sae_bytes: one layer's bytes. train_bytes: peak of a
    training step (None: no training, or the training model is missing: see notes).
    """

    notebook: str
    profile: str
    backbone: str
    sae_repo: str
    shape: BackboneShape
    d_sae: int
    downloads: list[tuple[str, int | None]]
    stages: list[Stage]
    weights: int
    sae_alive: int
    sae_bytes: int
    train_bytes: int | None = None
    trains: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def download_bytes(self) -> int:
        return sum(b for _, b in self.downloads if b is not None)

    @property
    def downloads_unknown(self) -> list[str]:
        return [w for w, b in self.downloads if b is None]

    def stage_peaks(self, training: bool = True) -> list[tuple[str, int]]:
        """(stage, peak bytes) per stage: weights + SAE layers alive + the stage's batch transient, or the
        training peak + SAE layers for training stages (left out when unknown or ``training`` is False)."""
        sae = self.sae_alive * self.sae_bytes
        out = [("weights + SAE layers", self.weights + sae)]
        for s in self.stages:
            if s.kind != "train":
                out.append((s.name, self.weights + sae + stage_transient_bytes(self.shape, self.d_sae, s)))
            elif training and self.train_bytes is not None:
                out.append((s.name, self.train_bytes + sae))
        return out

    @property
    def peak_bytes(self) -> int:
        """Peak device memory of the known stages (a lower bound when :attr:`peak_unknown`)."""
        return max(b for _, b in self.stage_peaks())

    @property
    def peak_stage(self) -> str:
        """The stage that sets :attr:`peak_bytes` (``weights + SAE layers`` when no stage adds memory)."""
        return max(self.stage_peaks(), key=lambda nb: nb[1])[0]

    @property
    def peak_unknown(self) -> bool:
        """True when a training stage's memory could not be computed (see the notes)."""
        return self.trains and self.train_bytes is None

    @property
    def seconds(self) -> dict[str, float]:
        """GPU seconds per cost: each stage's backbone work, and all float32 SAE encodes together."""
        out: dict[str, float] = {}
        for s in self.stages:
            sae = sae_seconds(self.shape, self.d_sae, s)
            out[s.name] = out.get(s.name, 0.0) + stage_seconds(self.shape, self.d_sae, s) - sae
            if sae:
                out["SAE encode (fp32)"] = out.get("SAE encode (fp32)", 0.0) + sae
        return out

    @property
    def gpu_hours(self) -> float:
        return sum(self.seconds.values()) / 3600

    @property
    def lower_bound(self) -> bool:
        """True when some stage's row count is not knowable (the GPU-hours are then a lower bound)."""
        return any(s.rows is None for s in self.stages)

    @property
    def dominant(self) -> str:
        """The largest cost: a stage's GPU time, or the download at :data:`DOWNLOAD_BYTES_PER_S`."""
        costs = dict(self.seconds)
        if self.downloads:
                costs[f"download {_gb(self.download_bytes)}"] = self.download_bytes / DOWNLOAD_BYTES_PER_S
        name, sec = max(costs.items(), key=lambda kv: kv[1])
        return f"{name} ({_hours(sec / 3600)})"


def _hours(h: float) -> str:
    """A duration given in hours: seconds / minutes below two hours, else hours."""
    s = h * 3600
    if s < 120:
        return f"{s:.0f} s" if s >= 1 else f"{s:.2g} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{h:.1f} h" if h < 10 else f"{h:.0f} h"


# ----------------------------------------------------------------------------------- parameters
def _notebook_file(nb: str) -> Path:
    from .paths import repo_root

    hits = sorted((repo_root() / "notebooks").glob(f"{nb}_*.ipynb"))
    if not hits:
        raise PlanError(f"no notebook {nb}_*.ipynb under notebooks/; notebooks with a plan: {', '.join(NOTEBOOKS)}")
    return hits[0]


def notebook_defaults(nb: str) -> dict:
    """The parameters cell of notebook ``nb`` (``"01"``..``"07"``) as a dict (literal values only)."""
    cells = json.loads(_notebook_file(nb).read_text())["cells"]
    src = next(("".join(c["source"]) for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if src is None:
        raise PlanError(f"notebook {nb} has no cell tagged 'parameters'")
    out = {}
    for node in ast.parse(src).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            try:
                out[name] = ast.literal_eval(node.value)
            except ValueError:
                raise PlanError(f"notebook {nb}: parameter {name} has no literal default; the parameters cell "
                                f"must hold plain values (papermill reads it the same way)") from None
    return out


def _merge(nb: str, overrides: Mapping | None, strict: bool = True) -> tuple[dict, list[str]]:
    """Defaults of ``nb`` updated with the overrides it has; unknown names raise (``strict``) or are
    returned (the runner passes one parameter set to every notebook, as papermill does)."""
    params = notebook_defaults(nb)
    unknown = sorted(set(overrides or {}) - set(params))
    if unknown and strict:
        raise PlanError(f"notebook {nb} has no parameter(s) {unknown}; its parameters are {sorted(params)}")
    params.update({k: v for k, v in (overrides or {}).items() if k in params})
    return params, unknown


def _int(p: Mapping, name: str, default=None) -> int | None:
    v = p.get(name, default)
    if v is None:
        return None
    try:
        return int(v)
    except (TypeError, ValueError):
        raise PlanError(f"parameter {name}={v!r} must be an integer, e.g. -p {name} 16") from None


# ----------------------------------------------------------------------------------- per notebook
def _scope_of(prof) -> tuple[BackboneShape, object]:
    """Backbone shape and SAE group of a profile (built profiles: their built or to-be-built sizes)."""
    from .scope import group_for

    group = group_for(prof)
    if prof.is_built and not (Path(prof.backbone) / "config.json").is_file():
        s = prof.scope
        shape = BackboneShape(s.hidden_size, s.intermediate_size, s.n_layers, s.n_heads, s.n_kv_heads, s.head_dim,
                              s.vocab_size, tie_word_embeddings=True)
    else:
        shape = backbone_shape(prof.backbone)
    return shape, group


def _base(nb: str, prof, layers: Sequence[int], datasets: Sequence[str], stages: list[Stage], alive: int,
          notes: list[str] | None = None) -> NotebookPlan:
    shape, group = _scope_of(prof)
    for l in layers:
        group.check_layer(int(l))
    bpe = 2 if prof.dtype in ("bfloat16", "float16") else 4
    lb = sae_layer_bytes(group.d_model, group.d_sae)
    downloads: list[tuple[str, int | None]] = []
    if not prof.is_built:
        downloads.append((f"{prof.backbone} (bf16 safetensors)", backbone_bytes(shape)))
        downloads.append((f"{group.repo_id}: {len(set(layers))} x layer{{n}}.sae.pt", len(set(layers)) * lb))
        downloads += [(d, None) for d in datasets]
    return NotebookPlan(nb, prof.name, prof.backbone, group.repo_id, shape, group.d_sae, downloads, stages,
                        backbone_bytes(shape, bpe), min(alive, len(set(layers))), lb, notes=list(notes or []))


def _plan_01(p: dict, profile: str) -> NotebookPlan:
    from .params import as_int_list
    from .profiles import get_profile

    prof = get_profile(profile)
    _, group = _scope_of(prof)
    layers = as_int_list(p["layers"], "layers") or list(range(group.n_layers))
    n, L, b = _int(p, "n_texts"), _int(p, "max_length"), _int(p, "batch_size")
    passes = 2 if p.get("with_loss", True) else 0
    st = [Stage("capture per layer", "capture", n, L, b, passes=len(layers), upto_layer=max(layers), sae_layers=1),
          Stage("clean + spliced LM loss per layer", "forward", n, L, b, passes=passes * len(layers))]
    return _base("01", prof, layers, ["Salesforce/wikitext (wikitext-103-raw-v1, test)"], st, alive=2)


def _plan_02(p: dict, profile: str) -> NotebookPlan:
    from . import steer_eval as se
    from .params import given, override_config
    from .profiles import get_profile

    over = given(**{k: p.get(k) for k in ("layer", "zh_feature", "lzh_feature", "alpha_scale", "classical_dataset",
                                          "classical_column", "modern_dataset", "modern_column", "english_dataset")})
    cfg = override_config(se.SteerConfig.for_profile(profile, seed=_int(p, "seed", 0), **over), p.get("config"))
    prof = get_profile(profile)
    _, group = _scope_of(prof)
    L = cfg.layer if cfg.layer is not None else se.middle_layer(group.n_layers)
    seeds = len(cfg.seeds)
    n_sup = 1 + sum(m > 0 for m in cfg.suppress_multipliers)          # baseline + suppression conditions
    n_act = 1 + sum(m > 0 for m in cfg.activate_multipliers)
    case1_rows = n_sup * cfg.n_cs_prompts * seeds
    st = [Stage("contrast discovery", "capture", 4 * cfg.n_discovery_texts, cfg.max_length, cfg.batch_size,
                upto_layer=L, sae_layers=1),
          Stage("dashboards", "capture", 3 * cfg.n_dashboard_texts, cfg.max_length, cfg.batch_size, upto_layer=L,
                sae_layers=1),
          Stage("case 1 generation", "generate", case1_rows, SHORT_PROMPT_TOKENS, cfg.batch_size, cfg.max_new_tokens),
          Stage("case 1 continuation NLL", "forward", case1_rows, SHORT_PROMPT_TOKENS + cfg.max_new_tokens,
                cfg.batch_size),
          Stage("case 2 generation", "generate", n_act * cfg.n_style_prompts * seeds, SHORT_PROMPT_TOKENS,
                cfg.batch_size, cfg.max_new_tokens)]
    data = ([f"{cfg.english_dataset} ({cfg.english_config}, {cfg.english_split})",
             f"classical Chinese: {cfg.classical_dataset or 'user file (classical_dataset)'}",
             f"modern Chinese: {cfg.modern_dataset or 'user file (modern_dataset)'}"])
    return _base("02", prof, [L], data, st, alive=2, notes=[f"prompts counted at {SHORT_PROMPT_TOKENS} tokens"])


def _plan_03(p: dict, profile: str) -> NotebookPlan:
    from . import benchmarks as bm
    from . import redundancy as rd
    from .params import as_list, given, override_config
    from .profiles import get_profile

    cfg = override_config(rd.RedundancyConfig.for_profile(profile), p.get("config"))
    cfg = replace(cfg, **given(n_items=_int(p, "n_items"), n_draws=_int(p, "n_draws")))
    prof = get_profile(profile)
    _, group = _scope_of(prof)
    layer = _int(p, "layer")
    main = layer if layer is not None else (_int(p, "paper_layer") if profile == "paper" else group.n_layers // 2)
    layers = list(range(group.n_layers)) if cfg.sweep_layers else [main]
    layers = sorted(set(layers) | {main})
    st, data, notes = [], [], []
    if prof.is_built:
        n = (cfg.n_items or 0) * len(cfg.pair_benchmarks) + (cfg.n_general or 0)
        st.append(Stage("benchmark features", "capture", n, cfg.feature_max_length, cfg.batch_size,
                        upto_layer=max(layers), sae_layers=len(layers)))
        from .mini.pretrain import zoo_plan
        zoo = len(zoo_plan(prof.scope))
        st.append(Stage("zoo correctness (generation)", "generate", n * zoo, cfg.max_length, cfg.batch_size,
                        cfg.max_new_tokens))
    else:
        names = as_list(p.get("paper_benchmarks"), "paper_benchmarks") or list(bm.PAPER_BENCHMARKS)
        bad = sorted(set(names) - set(bm.PAPER_BENCHMARKS) - set(bm.USER_BENCHMARKS))
        if bad:
            raise PlanError(f"paper_benchmarks: unknown {bad}; known: {sorted(bm.PAPER_BENCHMARKS)}")
        for nm in names:
            items = BENCHMARK_ITEMS.get(nm) if cfg.n_items is None else cfg.n_items
            st.append(Stage(f"features {nm}", "capture", items, cfg.feature_max_length, cfg.batch_size,
                            upto_layer=max(layers), sae_layers=len(layers)))
            spec = bm.PAPER_BENCHMARKS.get(nm) or bm.USER_BENCHMARKS[nm]
            data.append(f"{nm}: {_source_repo(spec.source)}")
        notes.append(f"each item counted at feature_max_length={cfg.feature_max_length} tokens (upper bound)")
    return _base("03", prof, layers, data, st, alive=2, notes=notes)


def _source_repo(name: str) -> str:
    from .sources import SOURCES

    s = SOURCES.get(name)
    return (s.repo_id or f"user file ({s.user_param})") if s else name


def _plan_04(p: dict, profile: str) -> NotebookPlan:
    from . import toxicity as tx
    from .params import as_int_list, as_list, given, override_config
    from .profiles import get_profile

    prof = get_profile(profile, **given(backbone=p.get("backbone"), sae_repo=p.get("sae_repo")))
    cfg = override_config(tx.ToxicityConfig.for_profile(profile), p.get("config"))
    layers_p, langs_p = as_int_list(p.get("layers"), "layers"), as_list(p.get("langs"), "langs")
    cfg = replace(cfg, **given(n_disc=_int(p, "n_disc"), n_eval=_int(p, "n_eval"),
                               layers=tuple(layers_p) if layers_p else None, langs=tuple(langs_p) if langs_p else None))
    _, group = _scope_of(prof)
    layers = list(cfg.layers) if cfg.layers else list(range(group.n_layers))
    langs = list(cfg.langs) if cfg.langs else (["es", "it"] if prof.is_built else [])
    n = None if cfg.n_disc is None or cfg.n_eval is None else 2 * (cfg.n_disc + cfg.n_eval)   # both classes
    st = []
    for g in range(0, len(layers), cfg.layers_per_pass):
        chunk = layers[g:g + cfg.layers_per_pass]
        st.append(Stage("capture + SAE encode (all languages)", "capture", None if n is None else n * len(langs),
                        cfg.max_length, cfg.batch_size, upto_layer=max(chunk), sae_layers=len(chunk)))
    notes = [f"{len(langs)} languages x {n if n is not None else '?'} texts, {len(st)} passes of "
             f"{cfg.layers_per_pass} layers"]
    return _base("04", prof, layers, [f"{cfg.dataset_id}"] if not prof.is_built else [], st,
                 alive=cfg.layers_per_pass, notes=notes)


def _plan_05(p: dict, profile: str) -> NotebookPlan:
    from . import safety as S
    from .params import given, override_config
    from .profiles import get_profile

    cfg = override_config(S.SafetyConfig.for_profile(profile), p.get("config"))
    cfg = replace(cfg, **given(layer=_int(p, "layer"), budget=_int(p, "budget"),
                               natural_dataset_id=p.get("natural_dataset_id")))
    prof = get_profile(profile)
    cells = SAFETY_CELLS
    per = lambda n: None if n is None else n * cells
    prompt = cfg.n_examples * cfg.example_tokens + 64            # few-shot examples + instruction
    enc = dict(length=cfg.max_length, batch_rows=cfg.batch_size, upto_layer=cfg.layer, sae_layers=1)
    st = [Stage("encode discovery", "capture", per(cfg.n_discovery_per_cell), **enc),
          Stage("encode seed", "capture", per(cfg.n_seed_per_cell), **enc),
          Stage("encode eval", "capture", per(cfg.n_eval_per_cell), **enc),
          Stage("synthesis generation (>= 2 x budget)", "generate", 2 * cfg.budget, prompt, cfg.batch_size,
                cfg.max_new_tokens),
          Stage("encode candidates", "capture", 2 * cfg.budget, **enc)]
    if cfg.target_set == "pool_rare":      # pool firing rates need the whole natural pool encoded
        st.append(Stage("encode natural pool", "capture", cfg.natural_pool_max, **enc))
    else:
        st.append(Stage("encode natural draws", "capture", cfg.budget, **enc))
    notes = ["discovery / eval rows are 'balanced max' of the data: ?" if cfg.n_discovery_per_cell is None else "",
             "generation counts the kept budget only (rejected candidates add more)"]
    data = [] if prof.is_built else [f"{cfg.dataset_id} (train + eval; gated)", cfg.natural_dataset_id]
    return _base("05", prof, [cfg.layer], data, st, alive=2, notes=[n for n in notes if n])


def _accelerate(p: Mapping) -> tuple[int, bool]:
    """(GPUs, sharded) from the launch parameters: ``num_processes`` and a ZeRO-3 / FSDP config name."""
    n = _int(p, "num_processes") or 1
    acc = str(p.get("accelerate_config") or "")
    return n, any(s in acc for s in ("zero3", "fsdp"))


def _plan_06(p: dict, profile: str) -> NotebookPlan:
    from . import sasft
    from .params import as_list, given, override_config
    from .profiles import get_profile

    lam = as_list(p.get("lambdas"), "lambdas")
    over = given(lambdas=tuple(float(x) for x in lam) if lam is not None else None, steps=_int(p, "steps"),
                 batch_size=_int(p, "batch_size"), effective_batch=_int(p, "effective_batch"),
                 max_length=_int(p, "max_length"))
    model = p.get("paper_model", "Qwen3-1.7B-Base")
    if profile == "paper" and model not in sasft.PAPER_GROUPS:
        raise PlanError(f"paper_model={model!r}: choose one of {sorted(sasft.PAPER_GROUPS)}")
    cfg = override_config(sasft.SASFTConfig.for_profile(profile, paper_model=model, **over), p.get("config"))
    lambdas = (0.0,) + tuple(l for l in cfg.lambdas if l != 0)
    if profile == "paper":
        backbone, group_id = sasft.PAPER_GROUPS[model]
        prof = get_profile("paper", backbone=backbone, sae_repo=group_id)
    else:
        prof = get_profile(profile)
    shape, group = _scope_of(prof)
    layers = sasft.default_layers(group.n_layers, cfg.layers)
    runs = 1 + (len(lambdas) - 1) * len(cfg.targets)
    rows = cfg.n_train if cfg.n_train else None
    if cfg.steps is not None:
        rows = cfg.steps * cfg.effective_batch
    seq = cfg.max_length if profile == "paper" else cfg.prompt_tokens + cfg.response_tokens
    prompt = ASSUMED_PROMPT_TOKENS if profile == "paper" else cfg.prompt_tokens
    n_eval = cfg.eval_prompts_per_lang * len(cfg.targets) * cfg.n_seeds
    st = [Stage("language statistics", "capture", cfg.stat_docs_per_lang * len(cfg.stat_langs), cfg.stat_max_length,
                cfg.gen_batch_size, upto_layer=max(layers), sae_layers=len(layers)),
          Stage("SFT / SASFT training", "train", None if rows is None else rows * runs, seq, cfg.batch_size,
                sae_layers=len(layers)),
          Stage("evaluation generation", "generate", n_eval * runs, prompt, cfg.gen_batch_size, cfg.max_new_tokens),
          Stage("perplexity", "forward", cfg.ppl_docs_per_lang * len(cfg.stat_langs) * runs, cfg.ppl_max_length,
                cfg.gen_batch_size)]
    n_gpus, sharded = _accelerate(p)
    plan = _base("06", prof, layers, [] if prof.is_built else
                 ["SFT data: user file (sft_file)", "eval prompts: user file (eval_file)",
                  "language texts: user file (stats_file)"], st, alive=2,
                 notes=[f"{runs} training runs (lambda 0 + {len(lambdas) - 1} lambdas x {len(cfg.targets)} targets)",
                        "one epoch of sft_file: rows ?" if rows is None else f"{rows} examples per run"]
                 + ([f"eval prompts counted at {prompt} tokens (assumed)"] if profile == "paper" else []))
    # micro-batch = batch_size x max_length tokens, gradient checkpointing on (TRL's SFTConfig default, which
    # sasft_trainer.sft_config keeps and check_fits counts)
    _add_training(plan, shape, lora_r=_int(p, "lora_r", 0), n_gpus=n_gpus, sharded=sharded,
                  tokens=cfg.batch_size * seq, grad_checkpointing=True)
    return plan


def _add_training(plan: NotebookPlan, shape: BackboneShape, *, lora_r: int, n_gpus: int, sharded: bool,
                  tokens: int, grad_checkpointing: bool) -> None:
    """Training peak of one micro-batch of ``tokens`` tokens; a note names LoRA and 8 sharded GPUs (the
    alternatives ``qscope_utils.fit.check_training_fits`` offers) when it exceeds one H100."""
    plan.trains = True
    kw = dict(tokens_per_micro_batch=tokens, grad_checkpointing=grad_checkpointing)
    try:
        plan.train_bytes = training_bytes(shape, lora_r=lora_r, n_gpus=n_gpus, sharded=sharded, **kw)
    except TrainingModelMissing as e:
        plan.notes.append(f"training memory: ? ({e})")
        return
    plan.notes.append(f"training micro-batch {tokens:,} tokens, gradient checkpointing "
                      f"{'on' if grad_checkpointing else 'off'}: {_gb(plan.train_bytes)} per GPU")
    if plan.train_bytes > H100_MEMORY_BYTES:
        lora = training_bytes(shape, lora_r=16, n_gpus=n_gpus, sharded=sharded, **kw)
        shard = training_bytes(shape, lora_r=lora_r, n_gpus=8, sharded=True, **kw)
        plan.notes.append(f"training does not fit one 80 GB GPU (the trainer refuses it before any step): "
                          f"-p lora_r 16 -> {_gb(lora)}, or -p launch launch -p accelerate_config zero3_8b.yaml "
                          f"(8 GPUs) -> {_gb(shard)} per GPU")


def _plan_07(p: dict, profile: str) -> NotebookPlan:
    from . import dapo as D
    from . import repetition as R
    from .params import override_config
    from .profiles import get_profile

    rcfg = override_config(R.RepetitionConfig.for_profile(profile), p.get("repetition_config"), "repetition_config")
    model = str(p.get("paper_model", "8B"))
    if profile == "paper" and model not in D.PAPER_MODELS:
        raise PlanError(f"paper_model={model!r}: choose one of {sorted(D.PAPER_MODELS)}")
    dcfg = D.DAPOConfig.for_profile(profile, model) if profile == "paper" else D.DAPOConfig.for_profile(profile)
    dcfg = override_config(dcfg, p.get("dapo_config"), "dapo_config")
    dcfg = replace(dcfg, **{k: v for k, v in dict(n_steps=_int(p, "n_steps"), minibatches=_int(p, "minibatches")).items()
                            if v})
    prof = get_profile(profile, **dcfg.profile_overrides())
    shape, group = _scope_of(prof)
    layer = _int(p, "layer")
    cand = ((layer,) if layer is not None else tuple(rcfg.candidate_layers) if rcfg.candidate_layers
            else (rcfg.layer if rcfg.layer is not None else group.n_layers // 2,))
    variants = p.get("sae_variants") or [{}]
    arms = 1 + len(variants)
    prompt = ASSUMED_PROMPT_TOKENS if profile == "paper" else SHORT_PROMPT_TOKENS
    L = dcfg.max_new_tokens
    rollouts = dcfg.n_prompts * dcfg.G
    screen_calls = 1 + len(cand) * len(rcfg.screen_mults) + rcfg.n_candidates * len(rcfg.screen_mults)
    sweep_rows = 2 * len(rcfg.alphas) * (rcfg.n_sweep_prompts * rcfg.n_samples + rcfg.n_eval_prompts)
    budget = dcfg.max_batch_tokens          # every generation set streams in batches of at most this many tokens
    gen = lambda rows, batch=rollouts: dict(rows=rows, length=prompt, batch_rows=batch, new_tokens=L,
                                            max_tokens=budget)
    n_gpus, sharded = _accelerate(p)
    per_mb = max(1, rollouts // (max(dcfg.minibatches, 1) * n_gpus))     # rows per mini-batch and process
    micro = min(dcfg.micro_batch or per_mb, per_mb)                       # rows per forward / backward pass
    rollout = Stage("DAPO rollouts (decode)", "generate", **gen(arms * dcfg.n_steps * rollouts))
    st = [Stage("repetition contexts", "capture", rcfg.n_contexts, rcfg.chunk_tokens * rcfg.n_repeats, 32,
                upto_layer=max(cand), sae_layers=1, passes=len(cand)),
          Stage("steering screen", "generate", **gen(screen_calls * rcfg.n_screen_prompts * rcfg.screen_samples,
                                                     rcfg.n_screen_prompts * rcfg.screen_samples)),
          Stage("steering sweep", "generate", **gen(sweep_rows, rcfg.n_sweep_prompts * rcfg.n_samples)),
          rollout,
          Stage("DAPO old log-probs", "forward", arms * dcfg.n_steps * rollouts, prompt + L, micro),
          Stage("DAPO updates", "train", arms * dcfg.n_steps * rollouts * dcfg.ppo_epochs, prompt + L, micro),
          Stage("validation", "generate", **gen(arms * dcfg.n_val_problems * rcfg.n_samples,
                                                dcfg.n_val_problems * rcfg.n_samples)),
          Stage("held-out evaluation", "generate", **gen(3 * dcfg.n_eval_problems * (rcfg.n_samples + 1),
                                                         dcfg.n_eval_problems * rcfg.n_samples)),
          Stage("perplexity", "forward", arms * dcfg.n_val_texts + 3 * dcfg.n_ppl_texts, 128, 1)]
    data = [] if prof.is_built else [" / ".join(str(x) for x in dcfg.train_data if x),
                                     " / ".join(str(x) for x in dcfg.eval_data if x),
                                     "Salesforce/wikitext (wikitext-103-raw-v1, test)"]
    plan = _base("07", prof, list(cand), data, st, alive=2,
                 notes=[f"{arms} DAPO arms x {dcfg.n_steps} steps x {rollouts} rollouts of <= {L} tokens "
                        f"(every rollout counted at L_max)"]
                 + [f"prompts counted at {prompt} tokens (assumed)"]
                 + ([f"generation batches of <= {budget:,} tokens ({rollout.batch} rows of {prompt + L} tokens): "
                     f"decode re-reads the weights per batch"] if budget else []))
    _add_training(plan, shape, lora_r=_int(p, "lora_r", 0), n_gpus=n_gpus, sharded=sharded,
                  tokens=micro * (prompt + L), grad_checkpointing=dcfg.grad_checkpointing)
    return plan


_BUILDERS = {"01": _plan_01, "02": _plan_02, "03": _plan_03, "04": _plan_04, "05": _plan_05, "06": _plan_06,
             "07": _plan_07}


def plan_notebook(nb: str, profile: str = "paper", parameters: Mapping | None = None, strict: bool = True
                  ) -> NotebookPlan:
    """The plan of notebook ``nb`` ("01".."07") for ``profile`` with ``parameters`` over its defaults."""
    nb = str(nb).zfill(2)[:2]
    if nb not in _BUILDERS:
        raise PlanError(f"no plan for notebook {nb!r}; notebooks with a plan: {', '.join(NOTEBOOKS)}")
    params, _ = _merge(nb, parameters, strict=strict)
    params.pop("profile", None)
    try:
        return _BUILDERS[nb](params, profile)
    except PlanError:
        raise
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise PlanError(f"notebook {nb}: {e}") from e


def plan_all(profile: str = "paper", parameters: Mapping | None = None, only: Sequence[str] | None = None
             ) -> list[NotebookPlan]:
    """Plans of notebooks 01..07 (or ``only``); a parameter no selected notebook has is an error."""
    nbs = [n for n in NOTEBOOKS if only is None or n in {str(o).zfill(2)[:2] for o in only}]
    unknown = set(parameters or {})
    for nb in nbs:
        unknown -= set(notebook_defaults(nb))
    if unknown:
        raise PlanError(f"no selected notebook ({', '.join(nbs)}) has parameter(s) {sorted(unknown)}")
    return [plan_notebook(nb, profile, parameters, strict=False) for nb in nbs]


# ----------------------------------------------------------------------------------- printing
def _gb(b: int | None) -> str:
    """Bytes as GB (one decimal), or MB below 1 GB (built profiles)."""
    if b is None:
        return "?"
    return f"{b / GB:,.1f} GB" if b >= GB else f"{b / 1e6:,.1f} MB"


def format_table(plans: Sequence[NotebookPlan]) -> str:
    """The plan as a fixed-width table plus per-notebook downloads and notes."""
    head = ("nb", "backbone", "download", "peak GPU mem", "fits 80 GB", "GPU time (1 H100)", "dominant cost")
    rows = []
    for pl in plans:
        dl = (_gb(pl.download_bytes) + (" + ?" if pl.downloads_unknown else "")) if pl.downloads else "- (built)"
        peak = pl.peak_bytes
        fits = "NO" if peak > H100_MEMORY_BYTES else ("?" if pl.peak_unknown else "yes")
        hours = ("≥ " if pl.lower_bound else "") + _hours(pl.gpu_hours)
        rows.append((pl.notebook, pl.backbone.split("/")[-1], dl, ("≥ " if pl.peak_unknown else "") + _gb(peak), fits,
                     hours, pl.dominant))
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
    out = [line(head), line(tuple("-" * w for w in widths)), *map(line, rows), ""]
    for pl in plans:
        items = "; ".join(f"{w} {_gb(b)}" for w, b in pl.downloads)
        if items:
            out.append(f"{pl.notebook} downloads: {items}")
        out.append(f"{pl.notebook} peak memory at: {pl.peak_stage} ({pl.sae_alive} SAE layer(s) of "
                   f"{_gb(pl.sae_bytes)} alive)")
        if pl.trains:
            name, b = max(pl.stage_peaks(training=False), key=lambda nb: nb[1])
            out.append(f"{pl.notebook} peak without training: {_gb(b)} at {name}")
        for n in pl.notes:
            out.append(f"{pl.notebook} note: {n}")
    out.append(f"constants (qscope_utils.plan): bf16 {H100_BF16_FLOPS / 1e12:.0f} TFLOP/s x MFU {MFU_FORWARD} "
               f"(forward) / {MFU_TRAIN} (train); SAE encode fp32 {H100_FP32_FLOPS / 1e12:.0f} TFLOP/s x "
               f"{FP32_EFFICIENCY}; decode max(bytes / ({H100_HBM_BYTES_PER_S / 1e12:.2f} TB/s x {HBM_EFFICIENCY}), "
               f"FLOPs / (peak x {MFU_DECODE})); logits in chunks of {LOGITS_CHUNK_TOKENS} positions; "
               f"downloads at {DOWNLOAD_BYTES_PER_S / 1e6:.0f} MB/s; GB = 1e9 B; '?' = not knowable without the data")
    return "\n".join(out)


def show_plan(nb: str, namespace: Mapping) -> NotebookPlan | None:
    """Print notebook ``nb``'s plan from its parameters as they stand in ``namespace`` (a notebook passes
    ``globals()`` right after its parameters cell). Never stops the notebook: a failure is printed."""
    try:
        names = notebook_defaults(str(nb).zfill(2)[:2])
        params = {k: namespace[k] for k in names if k in namespace and k != "profile"}
        plan = plan_notebook(nb, str(namespace.get("profile", "mini")), params)
    except Exception as e:  # the plan informs; the notebook's own checks report bad parameters
        print(f"[plan] notebook {nb}: no plan ({type(e).__name__}: {e})")
        return None
    print(format_table([plan]))
    return plan
