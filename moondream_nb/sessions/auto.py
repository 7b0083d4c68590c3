"""Unattended mode: ground-truth answers stand in for the person, so notebooks run in CI."""

from __future__ import annotations

import os

AUTO_ENV = "MOONDREAM_NB_AUTO"


def auto_default(auto: bool | None = None) -> bool:
    """``auto`` when given, else whether ``$MOONDREAM_NB_AUTO`` is set to a true value (1, true, yes, on)."""
    if auto is not None:
        return bool(auto)
    return os.environ.get(AUTO_ENV, "").strip().lower() in ("1", "true", "yes", "on")
