"""Local server speed over HTTP: medians of the calls a tuning loop makes.

    python benchmarks/server_speed.py [--repeats 30] [--threads N]

Starts a real server (``moondream_nb.local.serve``) on loopback and times, after a warm-up:
rollouts with num_rollouts=8 for point and detect, one RL train step on a group of 8, one SFT
step on 8 examples, and inference calls. The finetune takes one SFT step first, so its rollouts
run with the adapter active, as in a training loop (a finetune with no step yet is the base model:
that is timed too, on a second finetune, for comparison). Targets: issue 25's in-process goals
plus 10 % for HTTP (rollouts of 8: 55 ms, RL step on 8: 165 ms, SFT step on 8: 275 ms) and 50 ms for
inference, on the 2-core reference machine. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import statistics
import time

import requests

from moondream_nb.local import learning as L
from moondream_nb.local import serve

TARGETS_MS = {"rollouts point n=8": 55, "rollouts detect n=8": 55, "rollouts point n=8, no step": 55,
              "train_step RL group of 8": 165, "train_step SFT 8 examples": 275, "inference /v1/point": 50,
              "inference /v1/query": 50}


def median_ms(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=None, help="server torch threads (default: up to 2)")
    args = ap.parse_args()
    with serve(threads=args.threads) as srv:
        http = requests.Session()
        http.headers["X-Moondream-Auth"] = srv.api_key

        def post(path: str, body: dict) -> dict:
            resp = http.post(srv.url + path, json=body, timeout=120)
            resp.raise_for_status()
            return resp.json()

        fid = post("/v1/tuning/finetunes", {"name": "speed", "rank": 8})["finetune_id"]
        fresh = post("/v1/tuning/finetunes", {"name": "speed-no-step", "rank": 8})["finetune_id"]
        point, point_gt = L.STAR_POINT.item(1)
        detect, detect_gt = L.KNOWN_DETECT.item(2)
        sft = [{"mode": "sft", "request": req, "target": gt} for req, gt in (L.STAR_POINT.item(10 + k) for k in range(8))]
        post("/v1/tuning/train_step", {"finetune_id": fid, "groups": sft})  # the adapter is live from here on
        rollouts = post("/v1/tuning/rollouts", {"finetune_id": fid, "num_rollouts": 8, "request": point})
        rl = [{"mode": "rl", "request": rollouts["request"], "rollouts": rollouts["rollouts"],
               "rewards": [float(i % 2) for i in range(8)]}]
        calls = {
            "rollouts point n=8": lambda: post("/v1/tuning/rollouts", {"finetune_id": fid, "num_rollouts": 8,
                                                                       "request": point, "ground_truth": point_gt}),
            "rollouts detect n=8": lambda: post("/v1/tuning/rollouts", {"finetune_id": fid, "num_rollouts": 8,
                                                                        "request": detect, "ground_truth": detect_gt}),
            "rollouts point n=8, no step": lambda: post("/v1/tuning/rollouts", {
                "finetune_id": fresh, "num_rollouts": 8, "request": point, "ground_truth": point_gt}),
            "train_step RL group of 8": lambda: post("/v1/tuning/train_step", {"finetune_id": fid, "groups": rl}),
            "train_step SFT 8 examples": lambda: post("/v1/tuning/train_step", {"finetune_id": fid, "groups": sft}),
            "inference /v1/point": lambda: post("/v1/point", {"image_url": point["image_url"], "object": "star"}),
            "inference /v1/query": lambda: post("/v1/query", {"image_url": point["image_url"],
                                                              "question": "How many shapes are there?"}),
        }
        print(f"local server speed, medians of {args.repeats} calls over HTTP (threads={args.threads or 'default'})")
        for name, fn in calls.items():
            ms = median_ms(fn, args.repeats)
            verdict = "ok" if ms < TARGETS_MS[name] else "OVER"
            print(f"  {name:30s} {ms:8.1f} ms   target < {TARGETS_MS[name]} ms   {verdict}")


if __name__ == "__main__":
    main()
