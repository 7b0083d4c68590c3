"""Images for the front end: any image input in, display bytes out (sent once per panel).

The canvas works in normalized 0-1 coordinates, so an image shrunk for display keeps every
coordinate valid; only the pixels on the wire get smaller.
"""

from __future__ import annotations

import io
from typing import Any, Mapping

from PIL import Image

from .. import protocol
from ..client.image_input import FULL_SIZE, to_rgb, upright_size

# Longest side sent to the browser: large enough for 2048x1536 photos unscaled, small enough
# that a 24-megapixel photo does not ship ~10 MB to the page.
MAX_DISPLAY_SIDE = 2048
JPEG_QUALITY = 90


def display_bytes(image: Image.Image, max_side: int = MAX_DISPLAY_SIDE) -> tuple[bytes, str, tuple[int, int]]:
    """Encode ``image`` for display: ``(JPEG bytes, mime, (width, height) of the upright original)``.

    The picture is :func:`~moondream_nb.client.image_input.to_rgb` of the image, the same one the
    model gets (EXIF orientation applied, 16-bit scaled, transparency over white), so every
    mark lands where the model saw it; then shrunk to ``max_side`` on its long side.
    """
    full = upright_size(image) if FULL_SIZE in image.info else None
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
    req = protocol.skill_request_of(response.get("request")) if isinstance(response, Mapping) else None
    if isinstance(req, Mapping):
        return req.get("image_url") or req.get("image")
    return None
