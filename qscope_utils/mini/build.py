"""Build (or bring up to date) a profile's mini scope: corpus -> tokenizer -> pretrain -> SAEs.

Each stage writes a stamp file holding a hash of the config fields it depends on, chained with
the hash of the stage before it; a stage whose stamp matches is skipped, so changing ``sae_k``
rebuilds only the SAEs, changing ``vocab_size`` rebuilds tokenizer, model and SAEs, and so on.
An interrupted pretraining resumes from its last zoo checkpoint (optimizer state included); SAE
training resumes per layer. Every artefact is written atomically (temporary file, then rename;
:mod:`qscope_utils.atomic`) and each stamp is written last, listing the size of every file of its
stage: a stamped stage whose files were since truncated or deleted is rebuilt (resuming what is
intact), never trusted. CLI::

    python -m qscope_utils.mini.build --profile smoke [--force] [--seed N] [--set train_steps=8 --set zoo_steps=[4,8] ...]

``--seed N`` (or ``QSCOPE_SEED=N``) builds seed N's scope into ``data/<profile>-seedN`` (seed 0: ``data/<profile>``).

``--set FIELD=VALUE`` replaces one MiniScopeConfig field (VALUE is JSON; lists become tuples), e.g. for
a quicker build in tests; the stage hashes see the change, so such a build never passes for the profile's.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from ..atomic import atomic_dir, atomic_write_json
from ..profiles import MiniScopeConfig, Profile, _built, get_profile
from . import corpus as _corpus

__all__ = ["build_scope", "STAGES", "STAGE_FIELDS", "stage_hashes", "scope_profile", "main"]

STAGES = ("corpus", "tokenizer", "pretrain", "sae")
# config fields each stage depends on (on top of the previous stage's hash)
STAGE_FIELDS: dict[str, tuple[str, ...]] = {
    "corpus": ("max_chars_per_source", "seed"),
    "tokenizer": ("vocab_size",),
    "pretrain": ("hidden_size", "n_layers", "n_heads", "n_kv_heads", "head_dim", "intermediate_size", "seq_len",
                 "batch_size", "train_steps", "lr", "zoo_steps", "mixtures", "branch_step", "seed"),
    "sae": ("sae_expansion", "sae_k", "sae_train_tokens", "sae_batch_tokens", "sae_lr", "seed"),
}
CODE_VERSION = {"corpus": 2, "tokenizer": 1, "pretrain": 2, "sae": 1}   # bump to force a rebuild (corpus 2: ROT13 fortunes decoded; pretrain 2: mixtures after the branch point on one-thread workers)


def scope_profile(name: str, scope: MiniScopeConfig) -> Profile:
    """A built profile (paths, group name) for a possibly modified scope config."""
    return _built(name, scope)


def stage_hashes(scope: MiniScopeConfig, corpus_dir_override: str | None = None) -> dict[str, str]:
    """Chained config hash per stage."""
    out, prev = {}, ""
    d = asdict(scope)
    for st in STAGES:
        cfg = {f: d[f] for f in STAGE_FIELDS[st]}
        if st == "corpus":
            cfg["user_corpus_dir"] = str(corpus_dir_override) if corpus_dir_override else None
        blob = json.dumps({"prev": prev, "stage": st, "cfg": cfg, "code": CODE_VERSION[st]}, sort_keys=True,
                          default=list)
        prev = hashlib.sha256(blob.encode()).hexdigest()[:16]
        out[st] = prev
    return out


def _stamp_path(prof: Profile, stage: str) -> Path:
    from .sae_train import sae_group_dir

    base = {"corpus": prof.data_dir / "corpus", "tokenizer": prof.data_dir / "tokenizer",
            "pretrain": prof.data_dir / "models", "sae": sae_group_dir(prof)}[stage]
    return base / ".stamp.json"


def _stage_files(stamp: Path) -> dict[str, int]:
    """{relative path: bytes} of the files a stage produced (its stamp's directory, without the
    stamp, resume states and temporaries)."""
    root = stamp.parent
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and p != stamp and "_resume" not in rel.parts and not any(x.endswith(".tmp") for x in rel.parts):
            out[rel.as_posix()] = p.stat().st_size
    return out


def _stamp_ok(prof: Profile, stage: str, h: str) -> bool:
    """The stage's stamp carries hash ``h`` and every file it lists still has its recorded size
    (stamps of older builds list no files: only the hash is checked)."""
    p = _stamp_path(prof, stage)
    try:
        st = json.loads(p.read_text())
    except (OSError, ValueError):     # missing, or damaged by hand: the stage is rebuilt
        return False
    if st.get("hash") != h:
        return False
    root = p.parent
    return all((root / rel).is_file() and (root / rel).stat().st_size == n for rel, n in st.get("files", {}).items())


def _write_stamp(prof: Profile, stage: str, h: str, info: dict) -> None:
    p = _stamp_path(prof, stage)
    atomic_write_json(p, {"stage": stage, "hash": h, "fields": {f: getattr(prof.scope, f) for f in STAGE_FIELDS[stage]},
                          "finished": time.strftime("%Y-%m-%d %H:%M:%S"), **info, "files": _stage_files(p)},
                      default=list)


def build_scope(profile_name: str | Profile = "mini", force: bool = False, scope: MiniScopeConfig | None = None,
                corpus_dir: str | os.PathLike | None = None, progress: bool = True, threads: int | None = 2) -> dict:
    """Build every stage that is missing or stale and return a report::

        {"profile", "stages": {stage: {"status": "built"|"cached", "seconds", "hash", ...}},
         "backbone", "sae_dir", "group"}

    ``force`` rebuilds every stage; ``scope`` replaces the profile's MiniScopeConfig (tests use it
    to change one field); ``corpus_dir`` (or env QSCOPE_CORPUS_DIR) supplies the corpus text
    instead of Debian packages.
    """
    if isinstance(profile_name, Profile):
        prof = profile_name
    else:
        prof = get_profile(profile_name)
    if scope is not None:
        prof = replace(scope_profile(prof.name, scope), device=prof.device)
    if prof.scope is None:
        raise ValueError(f"profile {prof.name!r} is not built offline (no MiniScopeConfig): nothing to build")
    if threads:
        torch.set_num_threads(threads)
    user = corpus_dir or os.environ.get("QSCOPE_CORPUS_DIR") or None
    hashes = stage_hashes(prof.scope, user)
    report = {"profile": prof.name, "stages": {}, "backbone": prof.backbone}
    rebuild_rest = False
    for st in STAGES:
        h = hashes[st]
        if not force and not rebuild_rest and _stamp_ok(prof, st, h):
            report["stages"][st] = {"status": "cached", "hash": h, "seconds": 0.0}
            continue
        rebuild_rest = True    # everything after a rebuilt stage is rebuilt
        if progress:
            print(f"[build {prof.name}] stage {st} ...", file=sys.stderr, flush=True)
        t = time.time()
        info = _run_stage(prof, st, h, force, user, progress)
        dt = time.time() - t
        _write_stamp(prof, st, h, {"seconds": dt, **{k: v for k, v in info.items() if k != "report"}})
        report["stages"][st] = {"status": "built", "hash": h, "seconds": dt, **info}
        if progress:
            print(f"[build {prof.name}] stage {st} done in {dt:.1f}s", file=sys.stderr, flush=True)
    from .sae_train import register_mini_group, sae_group_dir

    report["sae_dir"] = str(sae_group_dir(prof))
    report["group"] = register_mini_group(prof).repo_id
    return report


def _run_stage(prof: Profile, st: str, h: str, force: bool, user, progress: bool) -> dict:
    scope = prof.scope
    if st == "corpus":
        out = _corpus.build_corpus(prof, corpus_dir_override=user, progress=progress)
        man = json.loads((out / "manifest.json").read_text())
        return {"n_docs": sum(s["n_docs"] for s in man["sources"]), "n_chars": sum(s["n_chars"] for s in man["sources"])}
    if st == "tokenizer":
        from .tokenizer import train_tokenizer

        docs = _corpus.load_corpus(prof, split="train")
        with atomic_dir(prof.data_dir / "tokenizer") as tmp:
            tok = train_tokenizer((d.text for d in docs), scope.vocab_size, tmp)
        return {"vocab_size": len(tok)}
    if st == "pretrain":
        from .pretrain import load_resume, pretrain

        models = prof.data_dir / "models"
        res = models / "_resume"
        keep_resume = False
        if res.exists() and not force:     # resume only a run of the same config (damaged states are dropped)
            keep_resume = any(load_resume(p, h) is not None for p in sorted(res.glob("*.pt")))
        if not keep_resume:
            shutil.rmtree(models, ignore_errors=True)
        summary = pretrain(scope, prof, prof.data_dir / "tokenizer", models, config_hash=h, progress=progress)
        return {k: summary[k] for k in ("n_params", "tokens_per_s", "train_tokens_in_corpus", "final_loss", "zoo")}
    if st == "sae":
        from .sae_train import sae_group_dir, train_all_layers

        if force:
            shutil.rmtree(sae_group_dir(prof), ignore_errors=True)
        summ = train_all_layers(prof, stamp=h, progress=progress)
        return {"layers": [{"layer": l["layer"], "heldout_fvu": l["heldout"]["fvu"], "dead_frac": l["dead_frac"],
                            "tokens_per_s": l["tokens_per_s"]} for l in summ["layers"]]}
    raise ValueError(st)


def _with_overrides(scope: MiniScopeConfig, sets: list[str]) -> MiniScopeConfig:
    """``scope`` with ``FIELD=JSON`` assignments applied (lists become tuples); unknown fields are refused."""
    known = set(asdict(scope))
    changes = {}
    for item in sets:
        field, sep, value = item.partition("=")
        if not sep or field not in known:
            raise SystemExit(f"--set {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(sorted(known))}")
        if field == "seed":   # the seed also picks the data folder: --set would build seed N into seed 0's folder
            raise SystemExit(f"--set {item!r}: choose the build seed with --seed {value} (or QSCOPE_SEED={value}), "
                             f"which also gives it its own data folder")
        v = json.loads(value)
        changes[field] = tuple(v) if isinstance(v, list) else v
    return replace(scope, **changes)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="mini", choices=["mini", "smoke"])
    ap.add_argument("--force", action="store_true", help="rebuild every stage")
    ap.add_argument("--corpus-dir", default=None, help="user text directory instead of Debian packages")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=None, help="build seed (default $QSCOPE_SEED, else 0)")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="replace a MiniScopeConfig field (JSON value), e.g. --set train_steps=8")
    a = ap.parse_args(argv)
    if a.seed is not None:
        if a.seed < 0:
            ap.error(f"--seed {a.seed}: a build seed is a non-negative integer")
        os.environ["QSCOPE_SEED"] = str(a.seed)
    t = time.time()
    scope = _with_overrides(get_profile(a.profile).scope, a.set) if a.set else None
    rep = build_scope(a.profile, force=a.force, corpus_dir=a.corpus_dir, threads=a.threads, scope=scope)
    rep["total_seconds"] = time.time() - t
    print(json.dumps(rep, indent=1, default=str))


if __name__ == "__main__":
    main()
