"""Run the §7 / §8 trainers under ``accelerate launch`` from a notebook, or read a finished run.

A job is a folder: ``job.json`` (everything the trainer needs: model path, settings, data, SAE layer
files) written here, then ``accelerate launch --config_file configs/accelerate/<cfg>.yaml -m
qscope_utils.<sasft|dapo>_trainer --job <dir>/job.json``. The trainer writes ``<dir>/model`` (the trained
weights), ``<dir>/train_log.csv`` and, last, ``<dir>/DONE``. A notebook with ``launch=False`` only reads a
folder that has ``DONE`` (runs of hours are started outside and read back), so papermill stays the front door.
"""
from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import pandas as pd
import torch

__all__ = ["ACCELERATE_CONFIGS", "PolicyStore", "accelerate_command", "run_launch", "obtain", "Launch", "finished", "read_run",
           "write_sasft_job", "load_sasft_job", "write_dapo_job", "load_dapo_job"]

ACCELERATE_CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "accelerate"


def accelerate_command(module: str, job: str | Path, config: str | None = None, num_processes: int | None = None,
                       cpu: bool = False) -> list[str]:
    """argv that runs ``python -m qscope_utils.<module> --job <job>`` on several processes.

    GPUs: ``accelerate launch --config_file configs/accelerate/<config>`` (``ddp_1.7b.yaml``, ``zero3_8b.yaml``,
    ``fsdp_8b.yaml``, or a path). CPU (``cpu=True``): ``torch.distributed.run`` with ``num_processes`` workers;
    accelerate's state picks up its environment and joins a gloo group (``accelerate launch --cpu`` alone
    starts a single process)."""
    if cpu:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={num_processes or 2}",
                "-m", f"qscope_utils.{module}", "--job", str(job)]
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if config:
        p = Path(config)
        p = p if p.is_file() else ACCELERATE_CONFIGS / config
        if not p.is_file():
            raise FileNotFoundError(f"accelerate config {config!r} not found; choose one of "
                                    f"{sorted(x.name for x in ACCELERATE_CONFIGS.glob('*.yaml'))}")
        cmd += ["--config_file", str(p)]
    if num_processes:
        cmd += ["--num_processes", str(num_processes)]
    return cmd + ["-m", f"qscope_utils.{module}", "--job", str(job)]


def run_launch(cmd: Sequence[str], log: str | Path, timeout: float | None = None) -> None:
    """Run a launch command (stdout + stderr to ``log``); raise with the log's tail on failure."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent.parent),
                                                                      os.environ.get("PYTHONPATH")]))}
    with open(log, "w") as fh:
        rc = subprocess.run(list(cmd), stdout=fh, stderr=subprocess.STDOUT, env=env, timeout=timeout).returncode
    if rc:
        tail = Path(log).read_text()[-3000:]
        raise RuntimeError(f"launch failed (exit {rc}): {' '.join(cmd)}\n--- log tail ---\n{tail}")


def obtain(name: str, mode: str, run_dir: str | Path | None, module: str, inline, write_job,
           config: str | None = None, num_processes: int | None = None, cpu: bool = False):
    """(model, train_log) of one run, by ``mode``:

    ``"inline"``: ``inline()`` in this process (mini / smoke, one GPU); ``"launch"``: ``write_job(dir)`` then
    ``accelerate launch`` (or a CPU gloo launch with ``cpu=True``) of ``qscope_utils.<module>``, then read the
    result; ``"read"``: read a finished run from ``run_dir/name`` (started outside the notebook)."""
    if mode == "inline":
        return inline()
    if run_dir is None:
        raise ValueError(f"launch={mode!r} needs run_dir (a folder for the run's job, model and log)")
    d = Path(run_dir) / name
    if mode == "launch":
        job = write_job(d)
        run_launch(accelerate_command(module, job, config, num_processes, cpu), d / "launch.log")
    elif mode != "read":
        raise ValueError(f"launch must be 'inline', 'launch' or 'read', not {mode!r}")
    model, _, log = read_run(d)
    return model, log


@dataclass(frozen=True)
class Launch:
    """How a notebook's training runs are obtained (the notebook parameters of :func:`obtain`)."""

    mode: str = "inline"
    """inline | launch | read."""
    run_dir: str | None = None
    """launch / read: folder with one sub-folder per run."""
    config: str | None = None
    """launch: a file of ``configs/accelerate``."""
    num_processes: int | None = None
    """launch: processes (None: the config file's)."""
    cpu: bool = True
    """launch on CPU (gloo) instead of GPUs."""

    def obtain(self, name: str, module: str, inline, write_job):
        """(model, train_log) of run ``name`` (:func:`obtain` with these settings)."""
        return obtain(name, self.mode, self.run_dir, module, inline, write_job, self.config, self.num_processes,
                      self.cpu)

    def workers(self, device: str, requested: int | None = None) -> int:
        """Worker processes for these runs: :func:`qscope_utils.workers.default_workers` when training inline;
        1 when runs are launched or read (``accelerate launch`` brings its own processes)."""
        from .workers import default_workers

        return default_workers(device, requested) if self.mode == "inline" else 1


def finished(run_dir: str | Path) -> bool:
    return (Path(run_dir) / "DONE").is_file()


def read_run(run_dir: str | Path, device: str = "cpu"):
    """(model, tokenizer, train_log DataFrame) of a finished run folder."""
    from .generation import load_backbone

    d = Path(run_dir)
    if not finished(d):
        raise FileNotFoundError(f"{d} has no DONE marker: the run is not finished (launch it, or set launch=True)")
    model, tok = load_backbone(str(d / "model"), device=device)
    return model, tok, pd.read_csv(d / "train_log.csv")


def _write(job: dict, run_dir: str | Path) -> Path:
    d = Path(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    (d / "DONE").unlink(missing_ok=True)
    tmp = d / "job.json.tmp"
    tmp.write_text(json.dumps(job, indent=1))
    tmp.replace(d / "job.json")
    return d / "job.json"


def _sae_files(saes: Mapping[int, object], layers: Sequence[int], run_dir: Path) -> dict:
    from .sae import save_layer_file

    out = {}
    for l in layers:
        sae = saes[l]
        src = getattr(sae, "source_path", None)
        out[str(l)] = {"path": str(src) if src else str(save_layer_file(sae, run_dir / f"layer{l}.sae.pt")),
                       "k": int(sae.k)}
    return out


# --------------------------------------------------------------------------------------------- SASFT
def write_sasft_job(run_dir: str | Path, model_dir: str, examples, features: pd.DataFrame, saes: Mapping[int, object],
                    args, sasft_lambda: float) -> Path:
    """job.json of one SASFT / SFT run (examples inline, feature table, SAE layer files of the hooked layers)."""
    d = Path(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    job = {"kind": "sasft", "model_dir": str(model_dir), "lambda": float(sasft_lambda), "args": asdict(args),
           "examples": [asdict(e) for e in examples], "features": features.to_dict("records"),
           "saes": _sae_files(saes, sorted({int(l) for l in features.layer}), d), "out": str(d)}
    return _write(job, d)


def _load_sae(spec: dict):
    from .sae import TopKSAE

    sd = torch.load(spec["path"], map_location="cpu", weights_only=True)
    return TopKSAE.from_state_dict(sd, k=int(spec["k"]))


def load_sasft_job(path: str | Path) -> dict:
    from .generation import load_backbone
    from .sasft import SASFTPenalty, SFTExample
    from .sasft_trainer import SASFTTrainArgs

    job = json.loads(Path(path).read_text())
    model, tok = load_backbone(job["model_dir"])
    feats = pd.DataFrame(job["features"])
    saes = {int(l): _load_sae(s) for l, s in job["saes"].items()}
    return {"model": model, "tokenizer": tok, "examples": [SFTExample(**e) for e in job["examples"]],
            "args": SASFTTrainArgs(**job["args"]), "penalty": SASFTPenalty(saes, feats) if len(feats) else None,
            "lambda": job["lambda"], "out": job["out"]}


# --------------------------------------------------------------------------------------------- DAPO
def write_dapo_job(run_dir: str | Path, model_dir: str, cfg, steer: Mapping[int, torch.Tensor] | None,
                   variant: Mapping | None = None) -> Path:
    """job.json of one DAPO arm: the DAPOConfig, the steering vectors (saved beside it) and the SAE-arm variant."""
    d = Path(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    if steer:
        torch.save({int(k): v.detach().cpu() for k, v in steer.items()}, d / "steer.pt")
    job = {"kind": "dapo", "model_dir": str(model_dir), "cfg": asdict(cfg), "steer": bool(steer),
           "variant": dict(variant or {}), "out": str(d)}
    return _write(job, d)


def load_dapo_job(path: str | Path) -> dict:
    from .dapo import DAPOConfig
    from .generation import load_backbone

    job = json.loads(Path(path).read_text())
    model, tok = load_backbone(job["model_dir"])
    cfg = job["cfg"]
    for f in fields(DAPOConfig):       # JSON gave lists where the config holds tuples
        if isinstance(cfg.get(f.name), list):
            cfg[f.name] = tuple(tuple(x) if isinstance(x, list) else x for x in cfg[f.name])
    steer = torch.load(Path(job["out"]) / "steer.pt", weights_only=True) if job["steer"] else None
    return {"model": model, "tokenizer": tok, "cfg": DAPOConfig(**cfg), "steer": steer, "variant": job["variant"],
            "out": job["out"]}


# --------------------------------------------------------------------------------------------- trained policies
class PolicyStore:
    """The trained policies of a notebook, by name, with at most ONE alive at a time when spilled.

    ``spill=False`` (mini / smoke default): policies stay in memory, exactly as before. ``spill=True``
    (paper default): :meth:`put` writes every unique parameter AND buffer (non-persistent ones too, e.g.
    Qwen3's rotary ``inv_freq``, which ``state_dict`` leaves out) by name, in the policy's own dtype (lossless),
    to ``<folder>/<i>.safetensors``, then frees the module's storage (``module.to("meta")``); :meth:`load`
    frees any other loaded policy, then ``to_empty(device)`` + copies the saved tensors back, re-tying shared
    weights (tied embeddings stay one tensor). Disk: one file of the policy's size per arm (an fp32 8B policy
    is 30.5 GiB). A caller must not keep a loaded policy past the next :meth:`load` / :meth:`items` step:
    it is freed there (its tensors become ``meta``)."""

    def __init__(self, spill: bool = False, folder: str | Path | None = None):
        self.spill = bool(spill)
        self._tmp = tempfile.TemporaryDirectory(prefix="qscope_policies_") if spill and folder is None else None
        self.folder = Path(self._tmp.name if self._tmp else folder) if spill else None
        self._models: dict[str, torch.nn.Module] = {}
        self._meta: dict[str, dict] = {}
        self._loaded: str | None = None

    @classmethod
    def for_profile(cls, profile: str, keep: str | None = None, folder: str | Path | None = None) -> "PolicyStore":
        """``keep``: "memory" | "disk" | None (= "disk" on the paper profile, "memory" on mini / smoke);
        ``folder``: where spilled policies go (None: a temporary folder removed with the store)."""
        keep = keep or ("disk" if profile == "paper" else "memory")
        if keep not in ("memory", "disk"):
            raise ValueError(f"keep_policies must be 'memory', 'disk' or None (profile default), not {keep!r}")
        return cls(spill=keep == "disk", folder=Path(folder) / "policies" if keep == "disk" and folder else None)

    def __contains__(self, name: str) -> bool:
        return name in self._models

    def __len__(self) -> int:
        return len(self._models)

    def keys(self) -> list[str]:
        return list(self._models)

    def alive(self) -> list[str]:
        """Names of the policies whose weights are in memory now."""
        return [n for n, m in self._models.items() if _has_storage(m)]

    def put(self, name: str, model: torch.nn.Module) -> None:
        """Keep ``model`` as ``name`` (spilled: written to disk and freed; do not use ``model`` afterwards)."""
        if name in self._models:
            raise ValueError(f"policy {name!r} is already stored")
        self._models[name] = model
        if not self.spill:
            return
        from safetensors.torch import save_file

        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{len(self._meta)}.safetensors"
        tensors, aliases = _unique_tensors(model)
        tmp = path.with_suffix(".tmp")
        save_file({k: t.detach().contiguous() for k, t in tensors.items()}, str(tmp))
        tmp.replace(path)
        device = next((t.device for t in tensors.values()), torch.device("cpu"))
        self._meta[name] = {"path": path, "aliases": aliases, "device": device}
        del tensors
        self._free(name)

    def load(self, name: str) -> torch.nn.Module:
        """The policy ``name``, weights in memory (spilled: any other loaded policy is freed first)."""
        if name not in self._models:
            raise KeyError(f"no policy {name!r}; stored: {self.keys()}")
        m = self._models[name]
        if not self.spill or self._loaded == name:
            return m
        if self._loaded is not None:
            self._free(self._loaded)
        from safetensors import safe_open

        meta = self._meta[name]
        m.to_empty(device=meta["device"])
        _retie(m, meta["aliases"])
        with safe_open(str(meta["path"]), framework="pt", device="cpu") as f, torch.no_grad():
            for key, t in _unique_tensors(m)[0].items():
                t.copy_(f.get_tensor(key))
        self._loaded = name
        return m

    def release(self, name: str) -> None:
        """Free the weights of ``name`` (spilled; no-op in memory)."""
        if self.spill and self._loaded == name:
            self._free(name)

    def items(self) -> Iterator[tuple[str, torch.nn.Module]]:
        """(name, policy) in insertion order, one loaded at a time (each freed before the next loads)."""
        for name in self.keys():
            yield name, self.load(name)
            self.release(name)

    def _free(self, name: str) -> None:
        self._models[name].to("meta")
        if self._loaded == name:
            self._loaded = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _tensor_slots(model: torch.nn.Module):
    """(qualified name, owning module, attribute, tensor) of every parameter and buffer, shared ones repeated."""
    for mod_name, mod in model.named_modules(remove_duplicate=False):
        for table in (mod._parameters, mod._buffers):
            for attr, t in table.items():
                if t is not None:
                    yield (f"{mod_name}.{attr}" if mod_name else attr), mod, attr, t


def _unique_tensors(model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """({first name: tensor} of each distinct parameter / buffer object, {alias name: first name})."""
    first: dict[int, str] = {}
    tensors, aliases = {}, {}
    for name, _, _, t in _tensor_slots(model):
        if id(t) in first:
            if first[id(t)] != name:
                aliases[name] = first[id(t)]
            continue
        first[id(t)] = name
        tensors[name] = t
    return tensors, aliases


def _retie(model: torch.nn.Module, aliases: Mapping[str, str]) -> None:
    """Point every alias slot back at its source tensor (``to_empty`` gives each slot its own copy)."""
    if not aliases:
        return
    slots = {name: (mod, attr, t) for name, mod, attr, t in _tensor_slots(model)}
    for alias, src in aliases.items():
        mod, attr, _ = slots[alias]
        table = mod._parameters if attr in mod._parameters else mod._buffers
        table[attr] = slots[src][2]


def _has_storage(model: torch.nn.Module) -> bool:
    return any(not t.is_meta for _, _, _, t in _tensor_slots(model))
