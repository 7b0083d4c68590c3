"""How long cheap calls take on the local server while train steps run.

    python benchmarks/cheap_calls.py [--trainers 4] [--seconds 20] [--groups 8]

Starts a real server (``serve()``), then ``--trainers`` threads each send RL train steps of
``--groups`` groups x 8 rollouts to their own finetune, back to back, for ``--seconds``. Meanwhile
one prober sends, every 100 ms, a ``GET /v1/tuning/finetunes/{id}`` and a ``log_metrics`` and
records each call's wall time. Prints the median, p99 and worst per call and the train steps done.
Not part of the test suite (tests/server/test_abuse.py holds the bar).
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import requests

from moondream_nb.local import learning as L
from moondream_nb.local import serve


def group(session: requests.Session, endpoint: str, fid: str, seed: int) -> dict:
    request, gt = L.STAR_POINT.item(seed)
    resp = session.post(f"{endpoint}/rollouts", json={"finetune_id": fid, "num_rollouts": 8, "request": request,
                                                      "ground_truth": gt}, timeout=120).json()
    return {"mode": "rl", "request": resp["request"], "rollouts": resp["rollouts"],
            "rewards": [0.1 * i for i in range(8)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trainers", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--groups", type=int, default=8)
    args = ap.parse_args()
    with serve(threads=2) as srv:
        def session() -> requests.Session:
            s = requests.Session()
            s.headers["X-Moondream-Auth"] = srv.api_key
            return s

        main_s = session()
        fids = [main_s.post(f"{srv.endpoint}/finetunes", json={"name": f"cheap-{i}", "rank": 8}, timeout=60)
                .json()["finetune_id"] for i in range(args.trainers + 1)]
        bodies = [{"finetune_id": f, "groups": [group(main_s, srv.endpoint, f, 10 * i + g) for g in range(args.groups)]}
                  for i, f in enumerate(fids[:-1])]
        t0 = time.perf_counter()
        main_s.post(f"{srv.endpoint}/train_step", json=bodies[0], timeout=600).raise_for_status()
        print(f"one train step of {args.groups} groups x 8 alone: {time.perf_counter() - t0:.2f} s")
        stop = threading.Event()
        steps = [0] * args.trainers

        def trainer(i: int) -> None:
            s = session()
            while not stop.is_set():
                s.post(f"{srv.endpoint}/train_step", json=bodies[i], timeout=600).raise_for_status()
                steps[i] += 1

        threads = [threading.Thread(target=trainer, args=(i,)) for i in range(args.trainers)]
        for t in threads:
            t.start()
        time.sleep(2.0)  # every trainer has a step in flight
        probe, times = session(), {"GET finetune": [], "log_metrics": []}
        target = fids[-1]
        end = time.perf_counter() + args.seconds
        n = 0
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            probe.get(f"{srv.endpoint}/finetunes/{target}", timeout=120).raise_for_status()
            times["GET finetune"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            probe.post(f"{srv.endpoint}/finetunes/{target}/metrics", json={"step": n, "metrics": {"x": 1.0}},
                       timeout=120).raise_for_status()
            times["log_metrics"].append(time.perf_counter() - t0)
            n += 1
            time.sleep(0.1)
        stop.set()
        for t in threads:
            t.join()
        print(f"{args.trainers} trainers, {sum(steps)} train steps done in the probe window")
        for name, ts in times.items():
            ms = sorted(1000 * t for t in ts)
            p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
            print(f"{name:>13}: n={len(ms)} median {statistics.median(ms):.1f} ms, p99 {p99:.1f} ms, worst {ms[-1]:.1f} ms")


if __name__ == "__main__":
    main()
