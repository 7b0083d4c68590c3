"""The client core: tuning (:func:`ft`), inference (:func:`vl`), batch, images, transport.

Depends only on requests, pillow and the standard library (numpy only when given an array).
"""

from .batch import Batch
from .finetunes import Finetunes, finetunes
from .images import EncodedImage, ImageEncoder
from .inference import VL, vl
from .transport import Transport
from .tuning import Finetune, ft

__all__ = ["Batch", "EncodedImage", "Finetune", "Finetunes", "ImageEncoder", "Transport", "VL", "finetunes", "ft",
           "vl"]
