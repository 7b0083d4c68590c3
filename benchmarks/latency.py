"""What a person feels against a cloud-like service: sessions, pacing and failing fast.

    python benchmarks/latency.py [--runs 3] [--items 16] [--pace 1.5] [--skip-official]

Starts the local server in its cloud-like mode (``serve(latency=..., rate_limit=...)``: train_step
3 s, rollouts 0.5 s (and a second run with 1 s), checkpoint save 1 s, ±20 % jitter) and plays a
fast person who takes ``--pace`` seconds per item:

* ``ReviewSession`` (every item needs the person, a train step every 4, a checkpoint every 2
  steps) and ``LabelingSession`` (pre-filled from the finetune, an SFT step every 4 labels):
  the time from Enter (``submit()`` / ``next()``) until the next item is on screen, median and
  worst over all items of all runs, counting separately the items where a step was due; and the
  constructor's time.
* ``rollout_stream`` of 16 requests, 4 workers, under a 2 requests/s limit: wall time and the
  answers of 429, ours next to the official ``moondream`` 2.6.1 client in the same run.
* A dead endpoint (nothing listens): how long ``ft()`` takes to fail, ours and the official
  client's (the official one is given up on after 30 s).

Prints a table; not part of the test suite (medians and worst cases, the machine noted).
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import threading
import time
from collections import Counter
from dataclasses import replace

from moondream_nb.client.pacing import forget_all
from moondream_nb.data import Dataset, demo_dataset
from moondream_nb.local import serve
from moondream_nb.sessions import LabelingSession, ReviewSession

CLOUD = "train_step=3,rollouts={rollouts},save=1,read=0.1,metrics=0.15,other=0.15,jitter=0.2"


def shown_after(session, before) -> float:
    """Seconds until an item other than ``before`` is on screen (0 when it already is)."""
    t0 = time.monotonic()
    while session.pending is None or session.pending is before:
        if session.finished:
            return 0.0
        time.sleep(0.002)
    return time.monotonic() - t0


def review_run(srv, items: int, pace: float, seed: int) -> tuple[float, list[tuple[float, bool]]]:
    ft = srv.ft(name=f"bench-review-{seed}-{time.time_ns()}", rank=8)
    data = Dataset([replace(it, labels=()) for it in demo_dataset(items, seed=seed, concepts=["star"])])
    t0 = time.monotonic()
    session = ReviewSession(ft, data, skill="point", prompt="star", num_rollouts=8, group_size=4,
                            checkpoint_every=2, metrics=False, auto=False)
    built = time.monotonic() - t0
    session.wait()
    out = []
    for k in range(items):
        time.sleep(pace)  # the person looks and clicks
        pending = session.pending
        pending.reviewer.rewards = [float(i % 2) for i in range(len(pending.response["rollouts"]))]
        due = (k + 1) % 4 == 0
        t0 = time.monotonic()
        pending.reviewer.submit()  # Enter
        took = time.monotonic() - t0
        out.append((took + (shown_after(session, pending) if k < items - 1 else 0.0), due))
    session.close()  # waits for the last steps and checkpoints
    return built, out


def labeling_run(srv, items: int, pace: float, seed: int, path: str) -> tuple[float, list[tuple[float, bool]], int]:
    ft = srv.ft(name=f"bench-label-{seed}-{time.time_ns()}", rank=8)
    data = demo_dataset(items, seed=seed, concepts=["purple"])
    t0 = time.monotonic()
    session = LabelingSession(data, path, "detect", ft=ft, train_every=4)
    built = time.monotonic() - t0
    out, prefilled = [], 0
    for k in range(items):
        time.sleep(pace)  # the person corrects the boxes
        prefilled += session._prefilled is not None  # the model's answer was there in time
        session.set_target(data[k].labels_for("detect")[0].target)
        due = (k + 1) % 4 == 0
        t0 = time.monotonic()
        session.next()  # Enter
        out.append((time.monotonic() - t0, due))
    session.close()
    return built, out, prefilled


def stream_run(make_client, items) -> tuple[float, int]:
    """(seconds, answers of 429) for one rollout_stream of ``items`` with 4 workers."""
    import requests as rq

    counts: Counter = Counter()
    real = rq.Session.send
    real_urlopen = __import__("urllib.request", fromlist=["x"]).OpenerDirector.open

    def send(self, request, **kw):  # our client (requests)
        resp = real(self, request, **kw)
        counts[resp.status_code] += 1
        return resp

    def urlopen(self, *a, **kw):  # the official client (urllib)
        try:
            resp = real_urlopen(self, *a, **kw)
            counts[resp.status] += 1
            return resp
        except Exception as exc:
            counts[getattr(exc, "code", "error")] += 1
            raise

    client = make_client()
    time.sleep(1.2)  # a full bucket
    rq.Session.send = send
    __import__("urllib.request", fromlist=["x"]).OpenerDirector.open = urlopen
    try:
        t0 = time.monotonic()
        n = sum(1 for _ in client.rollout_stream(items, max_concurrency=4))
        elapsed = time.monotonic() - t0
    finally:
        rq.Session.send = real
        __import__("urllib.request", fromlist=["x"]).OpenerDirector.open = real_urlopen
    assert n == len(items)
    return elapsed, counts[429]


def dead_endpoint(make, cap: float = 30.0) -> float | None:
    """Seconds until ``make()`` raises; None when it had not after ``cap``."""
    done: list[float] = []

    def run() -> None:
        t0 = time.monotonic()
        try:
            make()
        except Exception:
            done.append(time.monotonic() - t0)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(cap)
    return done[0] if done else None


def summary(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1000:6.1f} ms, worst {max(values) * 1000:6.1f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--items", type=int, default=16)
    ap.add_argument("--pace", type=float, default=1.5, help="seconds the person takes per item")
    ap.add_argument("--skip-official", action="store_true")
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"a person at {args.pace:g} s per item, {args.items} items, {args.runs} runs\n")

    import tempfile

    for rollouts in (0.5, 1.0):
        spec = CLOUD.format(rollouts=rollouts)
        with serve(threads=2, latency=spec) as srv:
            built_r, enter_r, built_l, enter_l, prefilled = [], [], [], [], 0
            for run in range(args.runs):
                b, e = review_run(srv, args.items, args.pace, 100 + run)
                built_r.append(b)
                enter_r += e
                with tempfile.TemporaryDirectory() as d:
                    b, e, p = labeling_run(srv, args.items, args.pace, 200 + run, os.path.join(d, "l.sqlite"))
                built_l.append(b)
                enter_l += e
                prefilled += p
        print(f"cloud-like server: {spec}")
        for name, built, enter in (("ReviewSession", built_r, enter_r), ("LabelingSession", built_l, enter_l)):
            print(f"  {name:16} constructor {summary(built)}")
            print(f"  {'':16} Enter -> next shown, every item:     {summary([t for t, _ in enter])}")
            print(f"  {'':16} Enter -> next shown, a step was due: {summary([t for t, d in enter if d])}")
        print(f"  LabelingSession pre-filled in time: {prefilled} of {args.runs * args.items} items\n")

    data = demo_dataset(16, seed=300, concepts=["star"])
    with serve(threads=2, latency="rollouts=0.5,jitter=0.2", rate_limit="2/s") as srv:
        items = [(i, dict(it.labels_for("point")[0].request(it.image), num_rollouts=4)) for i, it in enumerate(data)]
        ours, official = [], []
        for run in range(args.runs):
            forget_all()
            ours.append(stream_run(lambda: srv.ft(name=f"bench-stream-{run}", rank=8), items))
            if not args.skip_official:
                import moondream

                official.append(stream_run(lambda: moondream.ft(srv.api_key, name=f"bench-official-{run}", rank=8,
                                                                endpoint=srv.endpoint), items))
    print("rollout_stream of 16, 4 workers, 2 requests/s limit, rollouts 0.5 s:")
    for name, rows in (("moondream_nb", ours), ("official 2.6.1", official)):
        if rows:
            print(f"  {name:15} wall median {statistics.median(r[0] for r in rows):5.1f} s "
                  f"(worst {max(r[0] for r in rows):5.1f}), answers of 429 median "
                  f"{statistics.median(r[1] for r in rows):4.0f} (worst {max(r[1] for r in rows)})")

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1/tuning"
    import moondream_nb as md

    ours_dead = dead_endpoint(lambda: md.ft("k" * 20, name="x", rank=8, endpoint=dead))
    print("\nft() against an endpoint where nothing listens:")
    print(f"  moondream_nb    fails after {ours_dead:.1f} s")
    if not args.skip_official:
        import moondream

        theirs = dead_endpoint(lambda: moondream.ft("k" * 20, name="x", rank=8, endpoint=dead))
        print("  official 2.6.1  " + (f"fails after {theirs:.1f} s" if theirs is not None else "still retrying after 30 s"))


if __name__ == "__main__":
    main()
