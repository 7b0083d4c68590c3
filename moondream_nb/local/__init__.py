"""The embedded local server and the built-in model behind it.

``serve()`` starts the server in a subprocess (see :mod:`moondream_nb.local.launcher`). Importing
this package stays light: torch and FastAPI load only in the server process.
"""

from __future__ import annotations

from typing import Any

__all__ = ["serve", "LocalServer"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import launcher

        return getattr(launcher, name)
    raise AttributeError(f"module 'moondream_nb.local' has no attribute {name!r}")
