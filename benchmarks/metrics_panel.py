"""MetricsPanel.refresh after one new step: bytes sent to the page and the time it takes, by history length.

    python benchmarks/metrics_panel.py

A panel over a plain history list (no kernel: ipywidgets' DummyComm, whose ``send`` is wrapped to
count the JSON bytes of every message). Beside it, in the same run, the baseline: the bytes of a
full ``series`` state (what every refresh sent before updates became append-only). Medians of 5
refreshes, each after one new step. Not part of the test suite.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time

from moondream_nb.widgets import MetricsPanel


def row(s: int) -> dict:
    return {"kind": "train_step", "step": s, "time": float(s), "applied": True, "kl": 0.01 * s, "reward_mean": 0.5,
            "reward_std": 0.1, "grad_norm": 1.0, "sft_loss": None, "groups": 1, "rl_groups": 1, "sft_groups": 0,
            "rollouts": 8, "lr": 2e-4, "skills": "point"}


def main() -> None:
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"{'steps':>6} | {'bytes per step':>14} | {'full state':>10} | {'ratio':>6} | refresh")
    for n in (10, 500, 2000, 10000):
        history = [row(s) for s in range(1, n + 1)]
        panel = MetricsPanel(history, live=False)
        sent: list[int] = []
        send = panel.comm.send

        def counting(data=None, **kw):
            sent.append(len(json.dumps(data, default=str)))
            return send(data=data, **kw)

        panel.comm.send = counting
        sizes, times = [], []
        for k in range(5):
            sent.clear()
            history.append(row(n + 1 + k))
            started = time.perf_counter()
            panel.refresh()
            times.append((time.perf_counter() - started) * 1000)
            sizes.append(sum(sent))
        full = len(json.dumps({"series": panel.series}))
        per = statistics.median(sizes)
        print(f"{n:>6} | {per:>14.0f} | {full:>10} | {full / per:>5.0f}x | {statistics.median(times):.2f} ms")


if __name__ == "__main__":
    main()
