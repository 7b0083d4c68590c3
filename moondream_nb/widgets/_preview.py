"""Fast static previews with Pillow: the fallback picture a panel adds to its display output.

Pillow rather than matplotlib here because this runs on every display of a panel: a few
milliseconds, no matplotlib import. ``plots.py`` has the matplotlib figures (``to_figure()``).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from PIL import Image, ImageDraw

from ..client.image_input import to_rgb

PREVIEW_SIDE = 640


def overlay(image: Image.Image, shapes: Sequence[dict], max_side: int = PREVIEW_SIDE,
            faded: Sequence[int] = ()) -> Image.Image:
    """``image`` shrunk to ``max_side`` with ``shapes`` drawn on it (``faded`` groups drawn thin)."""
    rgb = to_rgb(image)  # upright and 8-bit, the picture the model sees
    img = rgb.copy() if rgb is image else rgb
    # thumbnail() with a reducing gap shrinks by whole factors first: several times faster than
    # one resize of a 2048-px image, and a preview does not need better.
    img.thumbnail((max_side, max_side), Image.BILINEAR, reducing_gap=2.0)
    draw = ImageDraw.Draw(img)
    w, h = img.size
    faded = set(faded)
    for shape in shapes:
        color = shape.get("color") or "#ffcc00"
        width = 1 if shape.get("group") in faded else 2
        if shape["type"] == "point":
            x, y, r = shape["x"] * w, shape["y"] * h, 4
            draw.ellipse((x - r, y - r, x + r, y + r), fill=color, outline="white")
        else:
            draw.rectangle((shape["x_min"] * w, shape["y_min"] * h, shape["x_max"] * w, shape["y_max"] * h),
                           outline=color, width=width)
        if shape.get("label"):
            x = (shape["x"] if shape["type"] == "point" else shape["x_min"]) * w
            y = (shape["y"] if shape["type"] == "point" else shape["y_min"]) * h
            draw.text((x + 3, max(0, y - 12)), str(shape["label"]), fill=color)
    return img


def jpeg_bytes(img: Image.Image, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def overlay_jpeg(image: Any, shapes: Sequence[dict], faded: Sequence[int] = ()) -> tuple[str, bytes]:
    """``("image/jpeg", bytes)`` of :func:`overlay`: the fallback picture of a panel over a photo."""
    return "image/jpeg", jpeg_bytes(overlay(image, shapes, faded=faded))
