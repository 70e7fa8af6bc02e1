"""SASFT on TRL: an ``SFTTrainer`` whose loss adds lambda x the SAE penalty (docs/CONVENTIONS.md §7).

The official SASFT code (``train.py`` of arXiv:2507.14894) is itself an ``SFTTrainer`` subclass; this is
the same design on TRL 1.16 / accelerate:

* :class:`SASFTTrainer` adds ``lambda * SASFTPenalty.loss`` to the response-only cross-entropy of
  ``SFTTrainer.compute_loss``. The penalty's forward hooks sit on the decoder layers of the model being
  trained (plain, DDP-, DeepSpeed- or PEFT-wrapped); per hooked layer the official term
  :func:`qscope_utils.sasft.official_layer_penalty`, SUMMED over layers. As in the official code the term
  is added to each micro-batch's loss (under gradient accumulation the CE is normalised over the whole
  accumulation window by TRL, the penalty per micro-batch, exactly as there).
* ``lambda = 0`` is the matched plain-SFT control: the same trainer, data order (the sampler's seed),
  steps and schedule; the penalty is still measured and logged (``penalty`` column of the log).
* One run per target language (the report's Table 4 rows are separate runs), each with its own
  feature table (:func:`feature_table_for`).
* Master weights stay in float32 (:func:`master_weights`: full fine-tuning up-casts the model; ``bf16=True``
  only turns on autocast): no pure-bf16 AdamW. LoRA trains float32 adapters over the frozen base in its
  loaded dtype (bf16 on a GPU). Before the trainer is built, :func:`qscope_utils.fit.check_training_fits`
  refuses a run that cannot fit the GPU (8B full fine-tuning on one 80 GB GPU), naming LoRA and the
  sharded multi-GPU configurations.
* Memory: prompt + response are cut to ``max_length`` tokens (:func:`truncation_count` says how many
  were); one micro-batch is ``batch_size`` x at most ``max_length`` tokens whatever ``effective_batch``
  (gradient accumulation); TRL's fused LM head scores the response tokens in tiles, so no
  (batch x length x vocabulary) logits exist, in float32 or otherwise. The penalty is the official
  per-MICRO-batch term: with accumulation it is summed over the window's micro-batches (like the
  official ``batch 1 x 32`` schedule), so ``batch_size`` is part of its definition; the CE is not (TRL
  normalises it over the window's tokens), see ``tests/test_sasft_trainer.py``.

Entry points: :func:`train_sasft` (in-process; mini / smoke and one GPU) and ``python -m
qscope_utils.sasft_trainer --job job.json`` (the same function under ``accelerate launch``, see
``configs/accelerate/`` and :mod:`qscope_utils.launch`).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import pandas as pd
import torch
from torch import nn

from .hooks import pad_ids
from .sasft import CHAT_END, SASFTPenalty, SFTExample, format_prompt

__all__ = ["SASFTTrainArgs", "SASFTCollator", "SASFTTrainer", "sft_dataset", "feature_table_for", "train_sasft",
           "build_sasft_trainer", "sft_config", "quiet", "training_log", "truncation_count", "TruncationCount",
           "master_weights", "check_fits"]


@dataclass
class SASFTTrainArgs:
    """Optimisation settings of one SASFT / SFT run (official defaults in ``for_paper``)."""

    steps: int | None = 150
    """Optimizer steps (None: ``epochs`` over the data)."""
    epochs: float = 1.0
    """Epochs when ``steps`` is None (the official runs train by epochs)."""
    batch_size: int = 8
    """Per-device micro-batch (official: 1)."""
    effective_batch: int = 8
    """Examples per optimizer step over all processes; accumulation = effective / (batch x processes) (official 32)."""
    lr: float = 1e-3
    """Peak learning rate (official: 5e-5 for Qwen3-1.7B, 5e-6 for 8B)."""
    weight_decay: float = 0.0
    """AdamW weight decay (official 0.1)."""
    scheduler: str = "linear"
    """transformers scheduler name (official: cosine)."""
    warmup: int = 20
    """Warm-up steps (official 100)."""
    grad_clip: float = 1.0
    """Max gradient norm."""
    max_length: int = 2048
    """Truncation of prompt + response in tokens (official 2,048)."""
    bf16: bool = False
    """Autocast in bf16 over float32 master weights (GPU runs)."""
    use_cpu: bool = True
    """Train on the CPU (mini / smoke / tests)."""
    seed: int = 0
    """Data order and initialisation seed: identical for every lambda (matched control)."""
    peft_lora_r: int = 0
    """> 0: train a LoRA adapter of this rank (PEFT ``LoraConfig`` on all linear layers) instead of all weights."""
    gpu_memory_gb: float | None = None
    """Check before training that the run fits a GPU of this many GB (:mod:`qscope_utils.fit`); None: the CUDA
    device's own memory when training on CUDA, no check on the CPU."""

    @classmethod
    def for_paper(cls, paper_model: str = "Qwen3-1.7B-Base", **over) -> "SASFTTrainArgs":
        """The official schedule: effective batch 32 by accumulation, cosine, wd 0.1, warm-up 100, 2,048 tokens."""
        lr = 5e-6 if "8B" in paper_model else 5e-5
        kw = dict(steps=None, epochs=1.0, batch_size=1, effective_batch=32, lr=lr, weight_decay=0.1, scheduler="cosine",
                  warmup=100, max_length=2048, bf16=True, use_cpu=False, seed=42)
        kw.update(over)
        return cls(**kw)

    @classmethod
    def from_config(cls, cfg, use_cpu: bool = True, lora_r: int = 0) -> "SASFTTrainArgs":
        """The settings of a :class:`qscope_utils.sasft.SASFTConfig` (bf16 autocast off the CPU)."""
        return cls(steps=cfg.steps, batch_size=cfg.batch_size, effective_batch=cfg.effective_batch, lr=cfg.lr,
                   weight_decay=cfg.weight_decay, scheduler=cfg.scheduler, warmup=cfg.warmup, grad_clip=cfg.grad_clip,
                   max_length=cfg.max_length, bf16=not use_cpu, use_cpu=use_cpu, seed=cfg.seed, peft_lora_r=lora_r,
                   gpu_memory_gb=cfg.gpu_memory_gb)


# --------------------------------------------------------------------------------------------- data
class TruncationCount(NamedTuple):
    """What cutting to ``max_length`` tokens did to a set of SFT examples."""

    n_examples: int
    truncated: int
    """Examples longer than max_length (cut at the end: their response loses its tail)."""
    dropped: int
    """Examples whose prompt alone fills max_length (no response token left: not trained on)."""
    longest: int
    """Tokens of the longest example before cutting."""


def _tokenized(tokenizer, examples: Sequence[SFTExample]):
    """(prompt ids, response ids) per example: ``tok(format_prompt(prompt))``, ``tok(response + <|im_end|>)``."""
    for ex in examples:
        yield (tokenizer(format_prompt(ex.prompt))["input_ids"],
               tokenizer(ex.response + CHAT_END, add_special_tokens=False)["input_ids"])


def truncation_count(tokenizer, examples: Sequence[SFTExample], max_length: int) -> TruncationCount:
    """How many examples :func:`sft_dataset` cuts (and drops) at ``max_length`` tokens."""
    lens = [(len(p), len(p) + len(r)) for p, r in _tokenized(tokenizer, examples)]
    return TruncationCount(len(lens), sum(t > max_length for _, t in lens), sum(p >= max_length for p, _ in lens),
                           max((t for _, t in lens), default=0))


def sft_dataset(tokenizer, examples: Sequence[SFTExample], max_length: int):
    """A ``datasets.Dataset`` of tokenised examples: input_ids, labels (-100 off the response), response_lang.

    Sequence = ``tok(format_prompt(prompt))`` + ``tok(response + <|im_end|>)``, cut to ``max_length``;
    only the response tokens are labelled (completion-only loss, as the official collator)."""
    import datasets

    if max_length < 1:
        raise ValueError(f"max_length must be >= 1 token, got {max_length}")
    rows = {"input_ids": [], "labels": [], "response_lang": []}
    for ex, (p, r) in zip(examples, _tokenized(tokenizer, examples)):
        ids = (p + r)[:max_length]
        lab = ([-100] * len(p) + r)[:max_length]
        if all(x == -100 for x in lab):
            continue                                   # prompt alone fills max_length: nothing to learn
        rows["input_ids"].append(ids)
        rows["labels"].append(lab)
        rows["response_lang"].append(ex.response_lang)
    if not rows["input_ids"]:
        raise ValueError(f"no trainable examples (max_length={max_length}): raise max_length or shorten prompts")
    return datasets.Dataset.from_dict(rows)


class SASFTCollator:
    """Right-pads a batch; keeps ``response_lang`` (a list of str) for the penalty's alpha_j and lang mask."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, feats: list[dict]) -> dict:
        ids, am = pad_ids([f["input_ids"] for f in feats], self.pad_id)
        lab, _ = pad_ids([f["labels"] for f in feats], -100)
        return {"input_ids": ids, "attention_mask": am, "labels": lab,
                "response_lang": [f["response_lang"] for f in feats]}


def feature_table_for(features: pd.DataFrame, target: str) -> pd.DataFrame:
    """The rows of one target language: one SASFT run penalises one language's features (official)."""
    sub = features[features.target == target]
    if sub.empty:
        raise ValueError(f"no selected features for target {target!r}; targets: {sorted(features.target.unique())}")
    return sub.reset_index(drop=True)


# --------------------------------------------------------------------------------------------- trainer
def _trl():
    from trl import SFTConfig, SFTTrainer

    return SFTConfig, SFTTrainer


def sft_config(args: SASFTTrainArgs, output_dir: str | Path, num_processes: int = 1):
    """TRL ``SFTConfig`` for these settings (pre-tokenised data, no checkpoints, log every step; gradient
    checkpointing on, TRL's SFTConfig default, which :func:`check_fits` and the cost plan count)."""
    SFTConfig, _ = _trl()
    per_step = args.batch_size * max(num_processes, 1)
    if args.effective_batch % per_step:
        raise ValueError(f"effective_batch {args.effective_batch} is not a multiple of batch_size x processes "
                         f"({args.batch_size} x {num_processes}): change one of them")
    return SFTConfig(
        output_dir=str(output_dir), max_steps=args.steps if args.steps else -1, num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=args.effective_batch // per_step,
        learning_rate=args.lr, weight_decay=args.weight_decay, lr_scheduler_type=args.scheduler,
        warmup_steps=args.warmup, max_grad_norm=args.grad_clip, max_length=args.max_length, bf16=args.bf16,
        use_cpu=args.use_cpu, seed=args.seed, data_seed=args.seed, logging_steps=1, save_strategy="no",
        report_to="none", remove_unused_columns=False, dataset_kwargs={"skip_prepare_dataset": True},
        disable_tqdm=True, dataloader_num_workers=0)


@functools.lru_cache(maxsize=None)
def _trainer_class():
    _, SFTTrainer = _trl()

    class SASFTTrainer(SFTTrainer):
        """``SFTTrainer`` + ``sasft_lambda`` x the SAE penalty (official per-layer formula, summed over layers)."""

        def __init__(self, *a, penalty: SASFTPenalty | None = None, sasft_lambda: float = 0.0, **kw):
            if sasft_lambda < 0:
                raise ValueError(f"sasft_lambda must be >= 0, got {sasft_lambda}")
            if sasft_lambda > 0 and penalty is None:
                raise ValueError("sasft_lambda > 0 needs a SASFTPenalty (select language features first)")
            super().__init__(*a, **kw)
            self.penalty, self.sasft_lambda = penalty, float(sasft_lambda)
            self.penalty_log: list[float] = []
            self._attached = None
            if penalty is not None:
                self._attached = penalty.attach(_base_model(self.model))
                self._attached.__enter__()

        def detach(self):
            """Remove the penalty's hooks (the trained model is returned without them)."""
            if self._attached is not None:
                self._attached.__exit__(None, None, None)
                self._attached = None

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            langs = inputs.pop("response_lang")
            mask = inputs["labels"] != -100
            out = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                       num_items_in_batch=num_items_in_batch)
            if self.penalty is None or not model.training:
                return out
            loss = out[0] if return_outputs else out
            pen = self.penalty.loss(mask, langs)
            self.penalty_log.append(float(pen.detach()))
            mode = "train" if self.model.training else "eval"
            self._metrics[mode]["sasft_penalty"].append(float(pen.detach()))
            if self.sasft_lambda > 0:
                loss = loss + self.sasft_lambda * pen.to(loss.dtype)
            return (loss, out[1]) if return_outputs else loss

    return SASFTTrainer


def _base_model(model: nn.Module) -> nn.Module:
    """The module that owns the decoder layers (unwraps DDP ``.module`` and PEFT ``.get_base_model()``)."""
    m = getattr(model, "module", model)
    return m.get_base_model() if hasattr(m, "get_base_model") else m


def __getattr__(name):  # SASFTTrainer is built lazily so that importing this module does not import TRL
    if name == "SASFTTrainer":
        return _trainer_class()
    raise AttributeError(name)


def _lora(r: int):
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")


def _zero3() -> bool:
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def master_weights(model: nn.Module, lora_r: int = 0) -> None:
    """Put ``model`` (in place) in training precision.

    Full fine-tuning: every parameter float32 (a bf16-loaded backbone is up-cast; ``bf16=True`` only
    autocasts), so AdamW never updates bf16 weights. LoRA: the frozen base keeps its loaded dtype and PEFT
    creates float32 adapters (``autocast_adapter_dtype``); under DeepSpeed ZeRO-3, where TRL would make the
    adapters bf16, the base is up-cast too so that they stay float32."""
    if not lora_r or _zero3():
        model.float()


def check_fits(model: nn.Module, *, lora_r: int, base_bytes: int, tokens_per_micro_batch: int, use_cpu: bool,
               gpu_memory_gb: float | None, grad_checkpointing: bool = False, what: str = "fine-tuning"):
    """:func:`qscope_utils.fit.check_training_fits` for this model and process layout, before any step.

    Checked against ``gpu_memory_gb`` when given, else against the CUDA device's memory when training on
    CUDA; returns the :class:`qscope_utils.fit.TrainingMemory` or None (CPU run, no size given)."""
    from .fit import check_training_fits, shape_from_config

    if gpu_memory_gb is not None:
        gpu_bytes = float(gpu_memory_gb) * 1e9
    elif not use_cpu and torch.cuda.is_available():
        gpu_bytes = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    else:
        return None
    n = int(os.environ.get("WORLD_SIZE", "1"))
    sharded = _zero3() or os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    return check_training_fits(shape_from_config(model.config), gpu_bytes, lora_r=lora_r, n_gpus=n, sharded=sharded,
                               tokens_per_micro_batch=tokens_per_micro_batch, grad_checkpointing=grad_checkpointing,
                               base_bytes=base_bytes or 2, what=what)


def build_sasft_trainer(model: nn.Module, tokenizer, examples: Sequence[SFTExample], args: SASFTTrainArgs,
                        penalty: SASFTPenalty | None = None, sasft_lambda: float = 0.0,
                        output_dir: str | Path | None = None, copy_model: bool = True):
    """The :class:`SASFTTrainer` for one run on (a copy of) ``model``, in training precision
    (:func:`master_weights`), after the memory check (:func:`check_fits`, micro-batch = batch_size x max_length)."""
    import copy
    import tempfile

    out = output_dir or tempfile.mkdtemp(prefix="sasft_")
    nproc = int(os.environ.get("WORLD_SIZE", "1"))
    cfg = sft_config(args, out, nproc)
    check_fits(model, lora_r=args.peft_lora_r, base_bytes=4 if _zero3() else next(model.parameters()).element_size(),
               tokens_per_micro_batch=args.batch_size * args.max_length, use_cpu=args.use_cpu,
               gpu_memory_gb=args.gpu_memory_gb, grad_checkpointing=bool(cfg.gradient_checkpointing), what="SASFT")
    tr = _trainer_class()
    m = copy.deepcopy(model) if copy_model else model
    master_weights(m, args.peft_lora_r)
    m.train()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    trainer = tr(model=m, args=cfg, train_dataset=sft_dataset(tokenizer, examples, args.max_length),
                 processing_class=tokenizer, data_collator=SASFTCollator(pad), penalty=penalty,
                 sasft_lambda=sasft_lambda, peft_config=_lora(args.peft_lora_r) if args.peft_lora_r else None)
    quiet(trainer)
    return trainer


def train_sasft(model: nn.Module, tokenizer, examples: Sequence[SFTExample], args: SASFTTrainArgs,
                penalty: SASFTPenalty | None = None, sasft_lambda: float = 0.0, output_dir: str | Path | None = None,
                copy_model: bool = True) -> tuple[nn.Module, pd.DataFrame]:
    """Fine-tune (a copy of) ``model`` with TRL; returns (model in eval mode, per-step log).

    Log columns: step, lr, loss (CE + lambda x penalty as TRL logs it), ce (TRL's response CE, ``loss``
    minus the penalty term), penalty (measured in every run, also at lambda = 0), grad_norm.
    """
    trainer = build_sasft_trainer(model, tokenizer, examples, args, penalty, sasft_lambda, output_dir, copy_model)
    try:
        trainer.train()
    finally:
        trainer.detach()
    log = training_log(trainer.state.log_history, trainer.penalty_log, trainer.args.gradient_accumulation_steps,
                       sasft_lambda)
    trained = trainer.model
    if args.peft_lora_r:
        trained = trained.merge_and_unload()
    return trained.eval(), log


def quiet(trainer) -> None:
    """Drop the per-step log printer that ``disable_tqdm=True`` installs (the log stays in ``state.log_history``)."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)


def training_log(history: list[dict], penalties: Sequence[float], accum: int, lam: float) -> pd.DataFrame:
    """One row per optimizer step from TRL's log history and the per-micro-batch penalties."""
    rows = [h for h in history if "loss" in h and "train_runtime" not in h]
    pen = list(penalties)
    out = []
    for i, h in enumerate(rows):
        p = pen[i * accum:(i + 1) * accum]
        pm = float(sum(p) / len(p)) if p else float("nan")
        out.append({"step": i, "lr": h.get("learning_rate"), "loss": h["loss"], "penalty": pm,
                    "ce": h["loss"] - lam * pm * accum if p else h["loss"], "grad_norm": h.get("grad_norm")})
    return pd.DataFrame(out)


# --------------------------------------------------------------------------------------------- CLI (accelerate)
def run_job(job_path: str | Path) -> None:
    """Run one SASFT job from its JSON spec (written by :func:`qscope_utils.launch.write_sasft_job`)."""
    from .launch import load_sasft_job

    job = load_sasft_job(job_path)
    model, log = train_sasft(job["model"], job["tokenizer"], job["examples"], job["args"], job["penalty"],
                             job["lambda"], output_dir=job["out"], copy_model=False)
    from accelerate import PartialState

    st = PartialState()
    if st.is_main_process:
        out = Path(job["out"])
        model.save_pretrained(out / "model")
        job["tokenizer"].save_pretrained(out / "model")
        log.to_csv(out / "train_log.csv", index=False)
        (out / "DONE").write_text(json.dumps({"lambda": job["lambda"], "steps": len(log),
                                              "processes": st.num_processes}))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="SASFT / SFT run on TRL (use under `accelerate launch`)")
    ap.add_argument("--job", required=True, help="job.json written by qscope_utils.launch.write_sasft_job")
    run_job(ap.parse_args(argv).job)


if __name__ == "__main__":
    main()
