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

# The package face loads its names on first use, so ``import moondream_nb`` alone costs almost
# nothing: the line a notebook runs first (``ft``, the client) is measured too.
STATEMENTS = ("import moondream", "import moondream_nb", "from moondream_nb import ft", "import moondream_nb.widgets")


def measure(statement: str, runs: int) -> tuple[float, int, str]:
    code = (f"import sys, time; n = len(sys.modules); t = time.perf_counter(); {statement}; "
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
    for statement in STATEMENTS:
        ms, n, loaded = measure(statement, args.runs)
        base = base or ms
        print(f"{statement:<30} {ms:7.1f} ms  {ms / base:5.2f}x  {n:4d} modules  requests/PIL loaded: {loaded}")


if __name__ == "__main__":
    main()
