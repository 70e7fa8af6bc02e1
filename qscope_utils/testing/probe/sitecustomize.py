"""Per-cell cost probe of the paper-shape dry run (``scripts/paper_shape.py``); inert unless
``QSCOPE_PROBE_LOG`` is set and this process is a Jupyter kernel.

The driver puts this folder first on the kernel's PYTHONPATH, so Python imports it at start-up. It
then appends one JSON line per executed cell to ``$QSCOPE_PROBE_LOG``: wall seconds, peak resident
memory during the cell (sampled every 20 ms from /proc/self/statm), CUDA max allocated, bytes read by
``read()`` calls (/proc/self/io rchar), and the SAE layer files and backbone weight files the cell
loaded with their sizes; every 5 s it also rewrites ``$QSCOPE_PROBE_LOG.running`` with the running
cell's figures so far (a cell killed by a timeout still leaves its peak). The counters wrap ``qscope_utils.sae.load_layer_file`` and
``qscope_utils.generation.load_backbone`` right after those modules are imported (their code is
unchanged). A last line (``"cell": "exit"``) holds the process' ru_maxrss.
"""
from __future__ import annotations

import os
import sys

_LOG = os.environ.get("QSCOPE_PROBE_LOG")


def _is_kernel() -> bool:
    return any("ipykernel" in a for a in getattr(sys, "orig_argv", sys.argv))


if _LOG and _is_kernel():
    import atexit
    import importlib.abc
    import importlib.util
    import json
    import resource
    import threading
    import time
    from pathlib import Path

    _PAGE = os.sysconf("SC_PAGE_SIZE")
    _state = {"peak": 0, "sae": [], "model": [], "t0": None, "rchar0": 0, "cell": 0, "label": "", "running": False}
    _lock = threading.Lock()

    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE

    def _rchar() -> int:
        try:
            for line in Path("/proc/self/io").read_text().splitlines():
                if line.startswith("rchar:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def _sampler() -> None:
        n = 0
        while True:
            r = _rss()
            with _lock:
                _state["peak"] = max(_state["peak"], r)
            n += 1
            if n % 250 == 0 and _state["running"]:
                _heartbeat()
            time.sleep(0.02)

    def _record(label: str) -> dict:
        t = _cuda()
        with _lock:
            return {"cell": _state["cell"] + 1, "label": label, "seconds": time.perf_counter() - _state["t0"],
                    "peak_rss_bytes": max(_state["peak"], _rss()), "rss_end_bytes": _rss(),
                    "cuda_max_allocated_bytes": t.cuda.max_memory_allocated() if t is not None else None,
                    "rchar_bytes": _rchar() - _state["rchar0"],
                    "sae_files": list(_state["sae"]), "model_files": list(_state["model"])}

    def _heartbeat() -> None:
        tmp = _LOG + ".running.tmp"
        with open(tmp, "w") as f:
            json.dump({**_record(_state["label"]), "error": True, "stopped_in_cell": True}, f)
        os.replace(tmp, _LOG + ".running")

    def _cuda():
        t = sys.modules.get("torch")
        return t if t is not None and t.cuda.is_available() and t.cuda.is_initialized() else None

    def _label(src: str) -> str:
        return next((ln.strip() for ln in (src or "").splitlines() if ln.strip()), "")[:120]

    def _pre(info=None) -> None:
        with _lock:
            _state.update(peak=_rss(), sae=[], model=[], t0=time.perf_counter(), rchar0=_rchar(), running=True,
                          label=_label(getattr(info, "raw_cell", "")))
        if (t := _cuda()) is not None:
            t.cuda.reset_peak_memory_stats()

    def _post(result=None) -> None:
        if _state["t0"] is None:
            return
        _state["running"] = False
        rec = {**_record(_label(getattr(getattr(result, "info", None), "raw_cell", ""))),
               "error": bool(getattr(result, "error_in_exec", None))}
        _state["cell"] += 1
        with open(_LOG, "a") as f:
            f.write(json.dumps(rec) + "\n")
        try:
            os.unlink(_LOG + ".running")
        except FileNotFoundError:
            pass

    def _exit() -> None:
        with open(_LOG, "a") as f:
            f.write(json.dumps({"cell": "exit", "ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                * 1024}) + "\n")

    def _wrap_sae(mod) -> None:
        orig = mod.load_layer_file

        def load_layer_file(path, *a, **kw):
            p = Path(path)
            _state["sae"].append({"file": p.name, "repo": p.parent.parent.parent.name, "bytes": p.stat().st_size})
            return orig(path, *a, **kw)
        mod.load_layer_file = load_layer_file

    def _weights(path_or_id: str) -> list[Path]:
        d = Path(path_or_id)
        if not d.is_dir():
            from qscope_utils.hub import hub_snapshot
            d = hub_snapshot(path_or_id)
        return sorted(d.glob("*.safetensors")) if d is not None else []

    def _wrap_backbone(mod) -> None:
        orig = mod.load_backbone

        def load_backbone(path_or_id, *a, **kw):
            for p in _weights(str(path_or_id)):
                _state["model"].append({"file": p.name, "repo": str(path_or_id), "bytes": p.stat().st_size})
            return orig(path_or_id, *a, **kw)
        mod.load_backbone = load_backbone

    _PATCHES = {"qscope_utils.sae": _wrap_sae, "qscope_utils.generation": _wrap_backbone}

    class _Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name not in _PATCHES:
                return None
            sys.meta_path.remove(self)
            try:
                spec = importlib.util.find_spec(name)
            finally:
                sys.meta_path.insert(0, self)
            if spec is None or spec.loader is None:
                return spec
            exec_module, patch = spec.loader.exec_module, _PATCHES[name]

            def exec_and_patch(module):
                exec_module(module)
                patch(module)
            spec.loader.exec_module = exec_and_patch
            return spec

    sys.meta_path.insert(0, _Finder())
    threading.Thread(target=_sampler, daemon=True).start()
    atexit.register(_exit)

    def _register() -> None:
        # the IPython shell exists only once the kernel app has started: poll for it
        while True:
            try:
                from IPython import get_ipython
                ip = get_ipython()
            except Exception:
                ip = None
            if ip is not None:
                ip.events.register("pre_run_cell", _pre)
                ip.events.register("post_run_cell", _post)
                return
            time.sleep(0.05)

    threading.Thread(target=_register, daemon=True).start()
