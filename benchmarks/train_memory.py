"""Peak memory of the local server for the largest train steps the protocol allows.

    python benchmarks/train_memory.py [--groups 1 4 8 64] [--rollouts 32] [--points 100]

Starts a real server (``serve()``), measures its resident memory idle, then for each G sends one
RL train step of G groups x ``--rollouts`` rollouts whose outputs hold ``--points`` points each
(every field within API.md's limits) and reads the server's peak resident set during the step
(``VmHWM`` after resetting it through ``/proc/<pid>/clear_refs``) and its resident set after.
Prints MB above the idle server. Linux only; not part of the test suite.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import requests

from moondream_nb.local import learning as L
from moondream_nb.local import serve


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS


def big_group(seed: int, rollouts: int, points: int) -> dict:
    request, _gt = L.STAR_POINT.item(seed)
    rng = random.Random(seed)
    outs = [{"skill": "point", "output": {"points": [{"x": rng.random(), "y": rng.random()} for _ in range(points)]}}
            for _ in range(rollouts)]
    return {"mode": "rl", "request": request, "rollouts": outs, "rewards": [rng.random() for _ in range(rollouts)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--groups", type=int, nargs="+", default=[1, 4, 8, 64])
    ap.add_argument("--rollouts", type=int, default=32)
    ap.add_argument("--points", type=int, default=100)
    args = ap.parse_args()
    with serve(threads=2) as srv:
        pid = srv.process.pid
        session = requests.Session()
        session.headers["X-Moondream-Auth"] = srv.api_key
        fid = session.post(f"{srv.endpoint}/finetunes", json={"name": "memory", "rank": 8}, timeout=60).json()["finetune_id"]
        warm = {"finetune_id": fid, "groups": [big_group(0, 4, 4)]}
        session.post(f"{srv.endpoint}/train_step", json=warm, timeout=600).raise_for_status()
        time.sleep(1)
        idle = rss_mb(pid)
        print(f"idle server after a warm-up step: {idle:.0f} MB resident")
        print(f"{'groups':>6} {'body KB':>8} {'step s':>7} {'peak above idle MB':>19} {'after, above idle MB':>21} status")
        for g in args.groups:
            body = {"finetune_id": fid, "groups": [big_group(1000 * g + k, args.rollouts, args.points) for k in range(g)]}
            reset_peak(pid)
            t0 = time.monotonic()
            resp = session.post(f"{srv.endpoint}/train_step", json=body, timeout=3600)
            took = time.monotonic() - t0
            size = len(resp.request.body) / 1024
            time.sleep(1)
            print(f"{g:>6} {size:>8.0f} {took:>7.1f} {rss_mb(pid, 'VmHWM') - idle:>19.0f} {rss_mb(pid) - idle:>21.0f} "
                  f"{resp.status_code}{'' if resp.ok else ' ' + resp.text[:120]}", flush=True)


if __name__ == "__main__":
    main()
