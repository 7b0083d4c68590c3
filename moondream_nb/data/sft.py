"""Labels → SFT groups ready for ``ft.train_step`` (API.md: ``{"mode": "sft", "request", "target"}``)."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

from .. import protocol
from ..client.images import ImageEncoder
from ..errors import ValidationError
from .labels import Label

__all__ = ["sft_groups"]


def _image_lookup(images: Any) -> Callable[[str], Any]:
    if isinstance(images, Mapping):
        return lambda image_id: images[image_id]
    # A Dataset: items indexed by image id.
    return lambda image_id: images[image_id].image


def sft_groups(labels: Iterable[Label], images: Any, *, encoder: ImageEncoder | None = None,
               reasoning: bool = True) -> list[dict]:
    """One SFT group per label, in order.

    Args:
        labels: point, detect and query labels.
        images: a Dataset, or a mapping ``{image_id: image}`` of anything the client accepts.
        encoder: when given, each request carries ``image_url`` (the wire format, encoded once per
            image by this :class:`~moondream_nb.ImageEncoder`, e.g. ``ft.images``); else it carries
            the PIL image under ``image``, which ``ft.train_step`` encodes itself.
        reasoning: keep query reasoning (the request then asks for it); False drops it.

    Returns:
        ``[{"mode": "sft", "request": {"skill", "image" | "image_url", "object" | "question", ...},
        "target": {...}}, ...]``.

    Raises:
        KeyError: a label's image is not in ``images``.
        ValidationError: an encoded group breaks the protocol (e.g. an image over 10 MB).
    """
    lookup = _image_lookup(images)
    groups = []
    for i, lb in enumerate(labels):
        if not isinstance(lb, Label):
            raise ValidationError(f"labels[{i}]: expected a Label, not {type(lb).__name__}", param=f"labels[{i}]")
        try:
            image = lookup(lb.image_id)
        except KeyError:
            raise KeyError(f"labels[{i}]: no image with id {lb.image_id!r}") from None
        target = dict(lb.target)
        if not reasoning:
            target.pop("reasoning", None)
        request = Label(lb.image_id, lb.skill, lb.prompt, target, lb.spatial_refs).request()
        if encoder is not None:
            request["image_url"] = encoder.encode(image, f"labels[{i}].image").image_url
        else:
            request["image"] = image
        group = {"mode": "sft", "request": request, "target": target}
        if encoder is not None:
            protocol.validate_group(group, f"groups[{i}]")
        groups.append(group)
    return groups
