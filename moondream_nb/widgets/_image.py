"""Images for the front end: any image input in, display bytes out (sent once per panel).

The canvas works in normalized 0-1 coordinates, so an image shrunk for display keeps every
coordinate valid; only the pixels on the wire get smaller.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path
from typing import Any

from PIL import Image

from ..client.images import to_rgb
from ..errors import ValidationError

# Longest side sent to the browser: large enough for 2048x1536 photos unscaled, small enough
# that a 24-megapixel photo does not ship ~10 MB to the page.
MAX_DISPLAY_SIDE = 2048
JPEG_QUALITY = 90


# The decoded image's full size when it was decoded at a reduced scale (see ``to_pil``'s
# ``draft_side``): display_bytes still reports the original size, so coordinates stay exact.
FULL_SIZE = "moondream_nb.full_size"


def _open(data: bytes, path: str, what: str, draft_side: int | None = None) -> Image.Image:
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
        raise ValidationError(f"{path}: cannot decode {what} ({exc})", param=path) from exc


def to_pil(image: Any, path: str = "image", *, draft_side: int | None = None) -> Image.Image:
    """Decode any image input the client accepts: PIL image, path, bytes, numpy ``uint8`` array,
    data URL, ``EncodedImage`` (or anything with an ``image_url``).

    ``draft_side``: the picture is only shown this large, so a big JPEG may be decoded at a
    reduced scale (at least ``draft_side`` on its long side); its original size stays in
    ``image.info[FULL_SIZE]`` for :func:`display_bytes`.

    Raises:
        ValidationError: naming ``path`` when the input is not a readable image.
    """
    if isinstance(image, Image.Image):
        return image
    url = image if isinstance(image, str) and image.startswith("data:") else getattr(image, "image_url", None)
    if isinstance(url, str):
        try:
            data = base64.b64decode(url.partition(",")[2], validate=False)
        except ValueError as exc:
            raise ValidationError(f"{path}: the data URL is not valid base64 ({exc})", param=path) from exc
        return _open(data, path, "the data URL", draft_side)
    if isinstance(image, (str, os.PathLike)):
        try:
            data = Path(image).read_bytes()
        except OSError as exc:
            raise ValidationError(f"{path}: cannot read image file {str(image)!r} ({exc.strerror})", param=path) from exc
        return _open(data, path, f"image file {str(image)!r}", draft_side)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return _open(bytes(image), path, "the image bytes", draft_side)
    if type(image).__module__.split(".")[0] == "numpy" and hasattr(image, "__array_interface__"):
        if str(image.dtype) != "uint8" or image.ndim not in (2, 3):
            raise ValidationError(f"{path}: numpy images must be uint8 HxW or HxWxC (got {image.dtype}, "
                                  f"shape {tuple(image.shape)})", param=path)
        arr = image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image
        return Image.fromarray(arr)
    raise ValidationError(f"{path}: unsupported image type {type(image).__name__}; pass a PIL image, a path, "
                          "bytes, a numpy uint8 array or a data URL", param=path)


def display_bytes(image: Image.Image, max_side: int = MAX_DISPLAY_SIDE) -> tuple[bytes, str, tuple[int, int]]:
    """Encode ``image`` for display: ``(JPEG bytes, mime, (width, height) of the upright original)``.

    The picture is :func:`~moondream_nb.client.images.to_rgb` of the image, the same one the
    model gets (EXIF orientation applied, 16-bit scaled, transparency over white), so every
    mark lands where the model saw it; then shrunk to ``max_side`` on its long side.
    """
    full = image.info.get(FULL_SIZE)
    if full is not None and image.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # upright: width and height swap
        full = (full[1], full[0])
    image = to_rgb(image)
    size = image.size
    if max(size) > max_side:
        scale = max_side / max(size)
        image = image.resize((max(1, round(size[0] * scale)), max(1, round(size[1] * scale))), Image.BILINEAR,
                             reducing_gap=2.0)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue(), "image/jpeg", tuple(full) if full is not None else size


def request_image(response: Any) -> Any:
    """The image of a ``rollouts`` response (its echoed ``request.image_url``), or None."""
    req = response.get("request") if isinstance(response, dict) else None
    if isinstance(req, dict):
        if "skill" not in req and isinstance(req.get("request"), dict):  # a full /rollouts body
            req = req["request"]
        return req.get("image_url") or req.get("image")
    return None
