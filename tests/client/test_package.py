"""The package imports fast, pulls in nothing heavy, and exports the public API."""

from __future__ import annotations

import subprocess
import sys

import moondream_nb as md

HEAVY = ("torch", "pandas", "matplotlib", "ipywidgets", "numpy", "anywidget", "fastapi")


def test_import_is_light_and_fast():
    code = (
        "import sys, time; t = time.process_time(); import moondream_nb; d = time.process_time() - t; "
        f"print(d); print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[1] == ""  # no heavy module imported
    # CPU time, not wall time: a busy machine must not fail it, a heavy import still does.
    assert float(out[0]) < 0.8


def test_public_api():
    assert md.__version__ == "0.1.0"
    for name in ("ft", "vl", "Finetune", "VL", "EncodedImage", "Batch", "MoondreamError", "ValidationError",
                 "AuthenticationError", "NotFoundError", "ConflictError", "RateLimitError", "ServerError",
                 "TransportError"):
        assert name in md.__all__ and hasattr(md, name)
    assert md.ft.__doc__ and md.Finetune.rollout_stream.__doc__ and md.VL.query.__doc__
