"""LabelStore.put as the store grows: median time per put for the first and the last 10 % of N
labels (a real SQLite file in a temporary directory). Not part of the test suite.

    python benchmarks/label_store.py [--labels 10000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moondream_nb.data import LabelStore  # noqa: E402
from moondream_nb.data.labels import Label  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labels", type=int, default=10_000)
    n = ap.parse_args().labels
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
