"""moondream-nb: a Jupyter-native toolkit for fine-tuning Moondream.

``ft(...)`` is a drop-in for ``moondream.ft`` and ``vl(...)`` for ``moondream.vl``, with typed
errors, validation before sending, keep-alive connections, retries and images encoded once.
Importing this package loads neither requests nor pillow: the first client and the first image do.
"""

from typing import TYPE_CHECKING

from ._version import __version__

# Every name loads its module on first use (PEP 562): importing any submodule, the local server's
# included, runs only what that submodule needs, never the whole client.
_LAZY = {
    "connect": "connection", "Connection": "connection",
    "ft": "client", "vl": "client", "finetunes": "client", "Finetune": "client", "Finetunes": "client",
    "VL": "client", "Batch": "client", "EncodedImage": "client", "ImageEncoder": "client",
    "evaluate": "evaluation", "Evaluation": "evaluation",
    **{name: "errors" for name in ("MoondreamError", "ValidationError", "AuthenticationError", "NotFoundError",
                                   "ConflictError", "RateLimitError", "ServerError", "TransportError")},
}

__all__ = [
    "__version__",
    "connect",
    "Connection",
    "ft",
    "vl",
    "finetunes",
    "evaluate",
    "Evaluation",
    "Finetune",
    "Finetunes",
    "VL",
    "Batch",
    "EncodedImage",
    "ImageEncoder",
    "MoondreamError",
    "ValidationError",
    "AuthenticationError",
    "NotFoundError",
    "ConflictError",
    "RateLimitError",
    "ServerError",
    "TransportError",
]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'moondream_nb' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # for type checkers and IDEs: the names above, eagerly
    from .client import Batch, EncodedImage, Finetune, Finetunes, ImageEncoder, VL, finetunes, ft, vl  # noqa: F401
    from .connection import Connection, connect  # noqa: F401
    from .errors import (AuthenticationError, ConflictError, MoondreamError, NotFoundError,  # noqa: F401
                         RateLimitError, ServerError, TransportError, ValidationError)
    from .evaluation import Evaluation, evaluate  # noqa: F401
