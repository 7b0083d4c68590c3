"""The package imports fast, pulls in nothing heavy, and exports the public API."""

from __future__ import annotations

import subprocess
import sys

import moondream_nb as md

HEAVY = ("torch", "pandas", "matplotlib", "ipywidgets", "numpy", "anywidget", "fastapi")
# Loaded by the first client (requests) or the first image (PIL), not by the import (issue 25:
# requests and urllib3 were 280 of the package's 434 modules at import).
ON_USE = ("requests", "urllib3", "PIL", "sqlite3")


def test_import_is_light_and_fast():
    code = (
        "import sys, time; t = time.process_time(); import moondream_nb; d = time.process_time() - t; "
        f"print(d); print(','.join(m for m in {HEAVY + ON_USE!r} if m in sys.modules)); "
        "import moondream_nb as md; v = md.vl(endpoint='http://127.0.0.1:9/v1'); "
        "e = v.encode_image(__import__('base64').b64decode("
        "'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC')); "
        "print(','.join(m for m in ('requests', 'PIL') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[1] == ""  # nothing heavy, and neither requests nor PIL, at import
    assert out[2] == "requests,PIL"  # both arrive when used: a client, an image
    # CPU time, not wall time: a busy machine must not fail it, a heavy import still does.
    assert float(out[0]) < 0.8


def test_public_api():
    assert md.__version__ == "0.1.0"
    for name in ("ft", "vl", "Finetune", "VL", "EncodedImage", "Batch", "MoondreamError", "ValidationError",
                 "AuthenticationError", "NotFoundError", "ConflictError", "RateLimitError", "ServerError",
                 "TransportError"):
        assert name in md.__all__ and hasattr(md, name)
    assert md.ft.__doc__ and md.Finetune.rollout_stream.__doc__ and md.VL.query.__doc__
