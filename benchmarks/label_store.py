"""LabelStore as it grows (a real SQLite file in a temporary directory). Not part of the test suite.

    python benchmarks/label_store.py [--labels 10000] [--items 100000]

put: median time per put for the first and the last 10 % of ``--labels`` labels.
write_coco: 1,000 and 10,000 box labels with sizes from label metadata (linear: ~10x).
next_item / progress: a labeling session's Enter over a Dataset of ``--items`` items, half of
them already marked: mark the current item, find the next, read the progress; medians of 200
Enters, beside the old algorithms (every mark read back from the file per call) in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moondream_nb.data import Dataset, LabelStore  # noqa: E402
from moondream_nb.data.dataset import Item  # noqa: E402
from moondream_nb.data.labels import Label  # noqa: E402


def old_next_item(store: LabelStore, dataset, after):
    marked = dict(store._read("SELECT image_id, status FROM items"))
    ids = [x.image_id for x in dataset]
    start = ids.index(after) + 1 if after is not None and after in ids else 0
    for k in range(len(ids)):
        i = (start + k) % len(ids)
        if ids[i] not in marked:
            return dataset[i]
    return None


def old_progress(store: LabelStore, dataset, window: int = 20):
    rows = store._read("SELECT image_id, status, updated_at FROM items ORDER BY updated_at")
    wanted = {x.image_id for x in dataset}
    rows = [r for r in rows if r[0] in wanted]
    return sum(1 for r in rows if r[1] == "done"), len(rows)


def enter_loop(store: LabelStore, ds, find, progress, n: int = 200) -> tuple[float, float]:
    current = store.next_item(ds)
    t_next, t_prog = [], []
    for _ in range(n):
        store.mark(current.image_id)
        t0 = time.perf_counter()
        nxt = find(store, ds, current.image_id)
        t1 = time.perf_counter()
        progress(store, ds)
        t2 = time.perf_counter()
        t_next.append(t1 - t0)
        t_prog.append(t2 - t1)
        current = nxt
    return 1000 * statistics.median(t_next), 1000 * statistics.median(t_prog)


def export(n: int) -> float:
    """Seconds to write_coco ``n`` box labels whose sizes come from label metadata."""
    from moondream_nb.data.coco import write_coco

    labels = [Label(f"img{i:06d}", "detect", "star", {"boxes": [{"x_min": 0.1, "y_min": 0.1, "x_max": 0.3,
                                                                  "y_max": 0.4}]}, meta={"width": 640, "height": 480})
              for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_coco(Path(tmp) / "labels.coco.json", labels)
        return time.perf_counter() - t0


def sessions(n_items: int) -> None:
    ds = Dataset([Item(f"img{i:06d}", loader=lambda: None) for i in range(n_items)])
    with tempfile.TemporaryDirectory() as tmp:
        store = LabelStore(Path(tmp) / "labels.sqlite")
        with store._write() as cur:  # half the dataset marked already (a session resumed)
            for i in range(0, n_items, 2):
                store._mark(cur, f"img{i:06d}", "done")
        new = enter_loop(store, ds, lambda s, d, a: s.next_item(d, a), lambda s, d: s.progress(d))
        old = enter_loop(store, ds, old_next_item, old_progress, n=20)
        store.close()
    print(f"Enter over {n_items} items (half marked): next_item {new[0]:.3f} ms (old {old[0]:.1f} ms, "
          f"{old[0] / new[0]:.0f}x), progress {new[1]:.3f} ms (old {old[1]:.1f} ms, {old[1] / new[1]:.0f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labels", type=int, default=10_000)
    ap.add_argument("--items", type=int, default=100_000)
    args = ap.parse_args()
    n = args.labels
    sessions(args.items)
    small, big = export(1000), export(10_000)
    print(f"write_coco with sizes from label metadata: 1,000 labels {small:.3f} s, 10,000 labels {big:.3f} s "
          f"({big / small:.1f}x for 10x the labels)")
    with tempfile.TemporaryDirectory() as tmp:
        store = LabelStore(Path(tmp) / "labels.sqlite")
        times = []
        for i in range(n):
            label = Label(image_id=f"img{i:06d}", skill="point", prompt="star", target={"points": [{"x": 0.5, "y": 0.5}]})
            t0 = time.perf_counter()
            store.put(label)
            times.append(time.perf_counter() - t0)
        store.close()
    tenth = max(1, n // 10)
    print(f"put over {n} labels: first 10 % median {1000 * statistics.median(times[:tenth]):.2f} ms, "
          f"last 10 % median {1000 * statistics.median(times[-tenth:]):.2f} ms")


if __name__ == "__main__":
    main()
