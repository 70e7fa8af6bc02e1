"""Plain progress lines for the mini build (visible in a terminal, a log file and a papermill log).

A tqdm bar inside a notebook kernel renders as a widget and never reaches the terminal that runs
``./run_all.sh``; these lines are printed with ``flush=True`` at most every ``every_s`` seconds
(and at the first and last step), so no stage is silent for more than a minute.
"""
from __future__ import annotations

import time

__all__ = ["ProgressLine", "fmt_seconds"]


def fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class ProgressLine:
    """``tick(step, **metrics)`` for step in ``start..stop-1``: prints
    ``[label] step i/n (p%)  k=v ...  elapsed  ETA`` when ``every_s`` seconds have passed."""

    def __init__(self, label: str, start: int, stop: int, every_s: float = 20.0, enabled: bool = True):
        self.label, self.start, self.stop, self.every_s, self.enabled = label, start, stop, every_s, enabled
        self.t0 = self.last = time.time()

    def tick(self, step: int, **metrics) -> None:
        now, done = time.time(), step + 1
        if not self.enabled or not (step == self.start or done == self.stop or now - self.last >= self.every_s):
            return
        self.last = now
        el = now - self.t0
        rate = (done - self.start) / max(el, 1e-9)
        eta = (self.stop - done) / rate if rate > 0 else float("nan")
        kv = "  ".join(f"{k} {v:,.0f}" if abs(v) >= 100 else f"{k} {v:.3f}" for k, v in metrics.items())
        print(f"[{self.label}] step {done}/{self.stop} ({100 * done / self.stop:.0f}%)  {kv}  "
              f"elapsed {fmt_seconds(el)}  ETA {fmt_seconds(eta) if eta == eta else '?'}", flush=True)
