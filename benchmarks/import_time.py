"""Import time of the package beside the official client's, in the same run.

    python benchmarks/import_time.py [--runs 21]

Each import runs in a fresh interpreter (``python -c``); prints the median wall time of the
import itself and the modules it leaves loaded. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys

MODULES = ("moondream", "moondream_nb", "moondream_nb.widgets")


def measure(module: str, runs: int) -> tuple[float, int, str]:
    code = (f"import sys, time; n = len(sys.modules); t = time.perf_counter(); import {module}; "
            "print(time.perf_counter() - t, len(sys.modules) - n, "
            "','.join(m for m in ('requests', 'PIL') if m in sys.modules) or '-')")
    rows = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
            for _ in range(runs)]
    return statistics.median(float(r[0]) for r in rows) * 1000, int(rows[0][1]), rows[0][2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=21)
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"median of {args.runs} fresh interpreters")
    base = None
    for module in MODULES:
        ms, n, loaded = measure(module, args.runs)
        base = base or ms
        print(f"{module:<22} {ms:7.1f} ms  {ms / base:5.2f}x  {n:4d} modules  requests/PIL loaded: {loaded}")


if __name__ == "__main__":
    main()
