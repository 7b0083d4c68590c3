"""moondream-nb: a Jupyter-native toolkit for fine-tuning Moondream.

``ft(...)`` is a drop-in for ``moondream.ft`` and ``vl(...)`` for ``moondream.vl``, with typed
errors, validation before sending, keep-alive connections, retries and images encoded once.
Importing this package loads neither requests nor pillow: the first client and the first image do.
"""

from ._version import __version__
from .connection import Connection, connect
from .client import Batch, EncodedImage, Finetune, Finetunes, ImageEncoder, VL, finetunes, ft, vl
from .errors import (
    AuthenticationError,
    ConflictError,
    MoondreamError,
    NotFoundError,
    RateLimitError,
    ServerError,
    TransportError,
    ValidationError,
)

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
    # evaluate / Evaluation load their modules on first use (a tenth of the import time otherwise)
    if name in ("evaluate", "Evaluation"):
        from . import evaluation

        return getattr(evaluation, name)
    raise AttributeError(f"module 'moondream_nb' has no attribute {name!r}")
