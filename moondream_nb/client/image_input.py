"""Image inputs → PIL images: the one reading of every image a user hands us.

Client, widgets and datasets all read images here, so "normalized coordinates mean the same
picture everywhere" holds by construction: :func:`read_image` decodes any accepted input,
:func:`upright` applies the EXIF orientation, :func:`to_rgb` is what the model (and every panel)
sees, and :func:`displayed_size` the upright size from a file's header alone.

Accepted: a PIL image, a path (str or ``os.PathLike``), encoded file bytes, a numpy ``uint8``
array (HxW, HxWx1, HxWx3 or HxWx4), a ``data:`` URL, or anything with an ``image_url`` string
attribute (an :class:`~moondream_nb.client.images.EncodedImage`, the official client's
``Base64EncodedImage``). Errors are :class:`~moondream_nb.errors.ValidationError` naming ``path``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Hashable

from ..errors import ValidationError

if TYPE_CHECKING:
    from PIL import Image

# PIL is imported where an image is decoded, not with the package (a PIL image passed in means
# PIL is loaded already: see is_pil).

EXIF_ORIENTATION = 0x0112
_TRANSPOSED = (5, 6, 7, 8)  # EXIF orientations that swap width and height
# The decoded image's full size when it was decoded at a reduced scale (``draft_side``), so a
# display copy still reports the original size and coordinates stay exact.
FULL_SIZE = "moondream_nb.full_size"
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N"}


def is_pil(obj: Any) -> bool:
    pil = sys.modules.get("PIL.Image")
    return pil is not None and isinstance(obj, pil.Image)


def is_ndarray(obj: Any) -> bool:
    return type(obj).__module__.split(".")[0] == "numpy" and hasattr(obj, "__array_interface__")


@dataclass(frozen=True)
class ImageInput:
    """One image input, its kind checked (nothing decoded yet).

    ``kind``: ``"pil"``, ``"data_url"``, ``"path"``, ``"bytes"`` or ``"array"``; ``value``: the PIL
    image, the URL string, the absolute file name, the bytes or the contiguous uint8 array.
    """

    kind: str
    value: Any
    path: str

    def key(self) -> Hashable:
        """A cache key that changes when the content does (a file's mtime and size; a hash of bytes
        or pixels); a PIL image's is its identity."""
        if self.kind == "pil":
            return ("pil", id(self.value))
        if self.kind == "path":
            st = os.stat(self.value)
            return ("path", self.value, st.st_mtime_ns, st.st_size)
        if self.kind == "array":
            return ("array", self.value.shape, hashlib.blake2b(memoryview(self.value).cast("B"), digest_size=20).digest())
        return (self.kind, hashlib.blake2b(self._bytes(), digest_size=20).digest())

    def open(self, *, draft_side: int | None = None) -> Image.Image:
        """The decoded image (its first frame), orientation not yet applied.

        ``draft_side``: the picture is only needed this large, so a big JPEG may be decoded at a
        reduced scale (at least ``draft_side`` on its long side; ``info[FULL_SIZE]`` keeps the original).
        """
        if self.kind == "pil":
            return self.value
        if self.kind == "array":
            from PIL import Image

            return Image.fromarray(self.value)
        return _decode(self._bytes(), self.path, self._what(), draft_side)

    def _bytes(self) -> bytes:
        if self.kind == "bytes":
            return self.value
        if self.kind == "data_url":
            try:
                return base64.b64decode(self.value.partition(",")[2], validate=False)
            except (binascii.Error, ValueError) as exc:
                raise ValidationError(f"{self.path}: the data URL is not valid base64 ({exc})", param=self.path) from exc
        try:
            with open(self.value, "rb") as fh:  # read whole: no file handle outlives the decode
                return fh.read()
        except OSError as exc:
            raise ValidationError(f"{self.path}: cannot read image file {self.value!r} ({exc.strerror})",
                                  param=self.path) from exc

    def _what(self) -> str:
        if self.kind == "path":  # a dataset names the image by its file already: say it once
            return "image" if self.path == self.value else f"image file {self.value!r}"
        return {"bytes": "the image bytes", "data_url": "the data URL"}[self.kind]


def image_input(image: Any, path: str = "image") -> ImageInput:
    """Check what kind of image input ``image`` is (see the module doc); nothing is decoded.

    Raises:
        ValidationError: naming ``path``: an unsupported type, a remote URL, a file that cannot be
        read, a numpy array that is not uint8 HxW / HxWx1 / HxWx3 / HxWx4.
    """
    if is_pil(image):
        return ImageInput("pil", image, path)
    url = image if isinstance(image, str) and image.startswith("data:") else getattr(image, "image_url", None)
    if isinstance(url, str):
        return ImageInput("data_url", url, path)
    if isinstance(image, str) and image.startswith(("http://", "https://")):
        raise ValidationError(f"{path}: remote image URLs are not supported; pass the image, a path or bytes",
                              param=path)
    if isinstance(image, (str, os.PathLike)):
        filename = os.path.abspath(os.fspath(image))
        if not os.path.isfile(filename):
            reason = "No such file or directory" if not os.path.exists(filename) else "not a file"
            raise ValidationError(f"{path}: cannot read image file {filename!r} ({reason})", param=path)
        return ImageInput("path", filename, path)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return ImageInput("bytes", bytes(image), path)
    if is_ndarray(image):
        return ImageInput("array", _checked_array(image, path), path)
    raise ValidationError(f"{path}: unsupported image type {type(image).__name__}; pass a PIL image, a path, "
                          "bytes, a numpy uint8 array or a data URL", param=path)


def read_image(image: Any, path: str = "image", *, draft_side: int | None = None) -> Image.Image:
    """Decode any accepted image input (orientation not yet applied; see :func:`upright`).

    Raises:
        ValidationError: naming ``path`` when the input is not a readable image.
    """
    return image_input(image, path).open(draft_side=draft_side)


def upright(img: Image.Image) -> Image.Image:
    """``img`` with its EXIF orientation applied (itself when there is none to apply)."""
    if img.getexif().get(EXIF_ORIENTATION, 1) in (1, None):
        return img  # exif_transpose copies the whole image: only pay that for a rotation
    from PIL import ImageOps

    return ImageOps.exif_transpose(img)


def to_rgb(img: Image.Image) -> Image.Image:
    """The upright 8-bit RGB picture of ``img``: what the model sees and every panel draws on.

    EXIF orientation applied (a phone photo is upright, so normalized coordinates mean the same
    spot everywhere); 16-bit and 32-bit images scaled to 8 bits (a plain ``convert`` saturates
    them to white); transparency composited over white (``convert`` keeps whatever colour the
    transparent pixels hold); CMYK, palette and grayscale converted. An RGB image is returned as is.
    """
    from PIL import Image

    img = upright(img)
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in _SIXTEEN_BIT or mode in ("I", "F"):
        lo, hi = img.getextrema() if mode in ("I", "F") else (0, 65535)
        if mode in _SIXTEEN_BIT or hi > 255:
            full = 65535 if hi <= 65535 else hi
            img = img.convert("I" if mode != "F" else "F").point(lambda v: v * (255.0 / full))
        elif mode == "F" and hi <= 1.0:
            img = img.point(lambda v: v * 255.0)
        return img.convert("L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def upright_size(img: Image.Image) -> tuple[int, int]:
    """The (width, height) of ``img`` once upright: its original size when decoded at reduced scale."""
    w, h = img.info.get(FULL_SIZE) or img.size
    return (h, w) if img.getexif().get(EXIF_ORIENTATION, 1) in _TRANSPOSED else (w, h)


def displayed_size(filename: str | os.PathLike, path: str | None = None) -> tuple[int, int]:
    """(width, height) of an image file as displayed (EXIF rotation applied), from its header only."""
    from PIL import Image

    where = path or os.fspath(filename)
    try:
        with Image.open(filename) as img:
            return upright_size(img)
    except OSError as exc:
        raise ValidationError(f"{where}: cannot open image ({exc})", param=path) from exc


def _checked_array(arr: Any, path: str) -> Any:
    import numpy as np  # only ever reached when the caller already holds a numpy array

    if arr.dtype != np.uint8:
        raise ValidationError(f"{path}: numpy images must be uint8 (got {arr.dtype}); e.g. (a * 255).astype('uint8')",
                              param=path)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))) or 0 in arr.shape:
        raise ValidationError(f"{path}: numpy images must be HxW, HxWx3 or HxWx4 (got shape {tuple(arr.shape)})",
                              param=path)
    return np.ascontiguousarray(arr)


def _decode(data: bytes, path: str, what: str, draft_side: int | None) -> Image.Image:
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(data))
        full = img.size
        if draft_side and img.format == "JPEG" and max(full) >= 2 * draft_side:
            # libjpeg decodes at 1/2, 1/4 or 1/8 scale directly: a 12 MP photo for a 1280 px
            # panel decodes in a fraction of the time. Never below draft_side on the long side.
            scale = draft_side / max(full)
            img.draft("RGB", (max(1, int(full[0] * scale + 0.999)), max(1, int(full[1] * scale + 0.999))))
            if img.size != full:
                img.info[FULL_SIZE] = full
        img.load()  # the first frame of animated files
        return img
    except Exception as exc:
        raise ValidationError(f"{path}: cannot {'open' if what == 'image' else 'decode'} {what} ({exc})",
                              param=path) from exc
