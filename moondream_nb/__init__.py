"""moondream-nb: a Jupyter-native toolkit for fine-tuning Moondream.

``ft(...)`` is a drop-in for ``moondream.ft`` and ``vl(...)`` for ``moondream.vl``, with typed
errors, validation before sending, keep-alive connections, retries and images encoded once.
Importing this package loads only requests and pillow.
"""

from ._version import __version__
from .connection import Connection, connect
from .client import Batch, EncodedImage, Finetune, Finetunes, ImageEncoder, VL, finetunes, ft, vl
from .evaluation import Evaluation, evaluate
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
