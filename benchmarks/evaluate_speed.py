"""Evaluating checkpoints over HTTP: wall time of ``evaluate`` against the sum of its calls.

    python benchmarks/evaluate_speed.py [--images 200] [--checkpoints 3] [--concurrency 1 4 8]

Starts real servers (``serve()``): one as it is (the model's own time per call) and one cloud-like
(``latency="inference=0.5"``: each inference call waits 0.5 s as Moondream Cloud's do, the model
still runs). Saves ``--checkpoints`` checkpoints of one finetune, labels ``--images`` generated
scenes, then runs ``evaluate`` over all checkpoints at each concurrency (no cache). Prints, per
server and concurrency: wall time, the sum of the per-call times and their ratio (the
concurrency gain: calls overlapping; 1.0 = one after another), and the speedup over the first
concurrency's wall time (what a person waits; lower than the gain where each call slows under
load, as on a 2-core local server). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import moondream_nb as md
from moondream_nb.data import Dataset, Label
from moondream_nb.scenes import make_scene
from moondream_nb.local import serve


def dataset(n: int) -> Dataset:
    scenes = [make_scene(seed, size=(320, 240), n_objects=4) for seed in range(n)]
    ids = [f"scene-{i:04d}" for i in range(n)]
    labels = [Label(i, "detect", s.objects[0].shape + "s",
                    {"boxes": [o.box_dict for o in s.objects if o.shape == s.objects[0].shape]})
              for i, s in zip(ids, scenes)]
    return Dataset.from_images([s.image for s in scenes], ids=ids, cache_size=n).with_labels(labels)


def run(latency: str | None, ds: Dataset, n_checkpoints: int, concurrency: list[int]) -> None:
    with serve(threads=2, latency=latency) as srv:
        ft = srv.ft(name="bench-eval", rank=8)
        for k in range(n_checkpoints):
            item = ds[k]
            label = item.labels[0]
            ft.train_step([{"mode": "sft", "request": {"skill": "detect", "image": item.image, "object": label.prompt},
                            "target": label.target}])
            ft.save_checkpoint()
        serial = None
        for c in concurrency:
            started = time.perf_counter()
            ev = md.evaluate(ft, ds, "detect", max_concurrency=c, cache=False)
            wall = time.perf_counter() - started
            calls = sum(ev.ms.values()) / 1000
            serial = serial or wall  # the first concurrency's wall time
            print(f"{latency or 'as is':>15} | {c:>11} | {len(ev.outputs):>5} | {wall:6.1f} s | {calls:10.1f} s | "
                  f"{calls / wall:5.2f}x | {serial / wall:7.2f}x | "
                  f"{1000 * wall / len(ev.outputs):6.0f} ms", flush=True)
        print(ev.summary.round(3).to_string(), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--checkpoints", type=int, default=3)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--latency", nargs="+", default=["", "inference=0.5"])
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{args.checkpoints} checkpoints x {args.images} images, detect")
    print(f"{'server':>15} | concurrency | calls | wall     | sum of calls | gain  | speedup | per call")
    ds = dataset(args.images)
    for latency in args.latency:
        run(latency or None, ds, args.checkpoints, args.concurrency)


if __name__ == "__main__":
    main()
