"""Labels as COCO object-detection JSON (``images``, ``annotations``, ``categories``).

Import: every annotation's ``bbox`` (``[x, y, width, height]`` in pixels) becomes a box of the
detect label for (image ``file_name``, category ``name``), normalized by the image's size; the
image size and COCO ids go into ``label.meta``. Export writes detect labels (and point labels
that hold boxes) back, so COCO → labels → COCO keeps every box. Images without annotations
carry no label and are not round-tripped.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Iterable, Mapping

from .. import protocol
from ..errors import ValidationError
from .fileio import FormatError, atomic_write, read_json, reraise_at
from .labels import Label

__all__ = ["read_coco", "write_coco"]

SizeLookup = Callable[[str], tuple[int, int]]


def _need(obj: Any, key: str, path: str, file: str, check: Callable[[Any], bool], rule: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise FormatError(file, "required", where=f"{path}.{key}")
    value = obj[key]
    if not check(value):
        raise FormatError(file, f"{rule} (got {value!r:.60})", where=f"{path}.{key}")
    return value


def _is_size(v: Any) -> bool:
    return protocol.is_number(v) and v > 0


def read_coco(path: str | os.PathLike) -> list[Label]:
    """Read a COCO detection file into detect labels, one per (image, category), file order.

    ``label.image_id`` is the image's ``file_name``; ``label.meta`` holds ``width``, ``height``,
    ``coco_image_id``, ``category_id`` and ``annotation_ids``. Boxes reaching past the image
    edge are clipped to it (the protocol's 0–1 range); ``segmentation``, ``iscrowd`` and the
    rest are ignored.

    Raises:
        FormatError: invalid JSON (file, line) or a bad field (file and JSON path, e.g.
            ``coco.json: annotations[3].bbox: must be [x, y, width, height] ...``).
    """
    file = os.fspath(path)
    data = read_json(file)
    if not isinstance(data, dict):
        raise FormatError(file, f"must be a JSON object with images, annotations and categories, not {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise FormatError(file, "required (a list)", where=key)
    categories: dict[Any, str] = {}
    for i, cat in enumerate(data["categories"]):
        cid = _need(cat, "id", f"categories[{i}]", file, lambda v: protocol.is_int(v) or isinstance(v, str), "must be an id")
        name = _need(cat, "name", f"categories[{i}]", file, lambda v: isinstance(v, str) and v.strip() != "",
                     "must be a non-empty string")
        if cid in categories:
            raise FormatError(file, f"duplicate category id {cid!r}", where=f"categories[{i}].id")
        categories[cid] = name
    images: dict[Any, dict] = {}
    for i, img in enumerate(data["images"]):
        where = f"images[{i}]"
        iid = _need(img, "id", where, file, lambda v: protocol.is_int(v) or isinstance(v, str), "must be an id")
        if iid in images:
            raise FormatError(file, f"duplicate image id {iid!r}", where=f"{where}.id")
        images[iid] = {
            "file_name": _need(img, "file_name", where, file, lambda v: isinstance(v, str) and v != "", "must be a non-empty string"),
            "width": _need(img, "width", where, file, _is_size, "must be a positive number"),
            "height": _need(img, "height", where, file, _is_size, "must be a positive number"),
            "id": iid,
        }
    groups: dict[tuple[Any, Any], dict] = {}
    for i, ann in enumerate(data["annotations"]):
        where = f"annotations[{i}]"
        iid = _need(ann, "image_id", where, file, lambda v: v in images, "must be the id of an entry in images")
        cid = _need(ann, "category_id", where, file, lambda v: v in categories, "must be the id of an entry in categories")
        bbox = _need(ann, "bbox", where, file,
                     lambda v: isinstance(v, list) and len(v) == 4 and all(map(protocol.is_number, v)) and v[2] >= 0 and v[3] >= 0,
                     "must be [x, y, width, height] with width, height >= 0")
        img = images[iid]
        w, h = img["width"], img["height"]
        x, y, bw, bh = bbox
        box = {"x_min": min(max(x / w, 0.0), 1.0), "y_min": min(max(y / h, 0.0), 1.0),
               "x_max": min(max((x + bw) / w, 0.0), 1.0), "y_max": min(max((y + bh) / h, 0.0), 1.0)}
        group = groups.setdefault((iid, cid), {"boxes": [], "ann_ids": [], "first": where})
        group["boxes"].append(box)
        group["ann_ids"].append(ann.get("id"))
    labels = []
    for (iid, cid), g in groups.items():
        img = images[iid]
        meta = {"width": img["width"], "height": img["height"], "coco_image_id": iid, "category_id": cid,
                "annotation_ids": g["ann_ids"]}
        try:
            labels.append(Label(img["file_name"], "detect", categories[cid], {"boxes": g["boxes"]}, meta=meta))
        except ValidationError as exc:
            raise reraise_at(exc, file, where=g["first"]) from exc
    return labels


def _size_lookup(sizes: Mapping[str, tuple[int, int]] | Any | None) -> SizeLookup | None:
    if sizes is None:
        return None
    if isinstance(sizes, Mapping):
        return lambda image_id: sizes[image_id]
    # A Dataset (anything indexable by image id whose items have .size).
    return lambda image_id: sizes[image_id].size


def write_coco(path: str | os.PathLike, labels: Iterable[Label], *,
               sizes: Mapping[str, tuple[int, int]] | Any | None = None,
               categories: Iterable[str] | None = None) -> dict:
    """Write the box labels (detect, and point labels that hold boxes) as COCO JSON, atomically.

    Args:
        labels: labels of any skill; those without boxes are left out.
        sizes: ``{image_id: (width, height)}`` or a Dataset (item sizes read from the files);
            falls back to ``label.meta["width"/"height"]`` (set by :func:`read_coco`).
        categories: category names in id order (ids from 1); default: names sorted.

    Returns:
        The COCO dict that was written. Every label's image is listed in ``images``, also those
        whose label holds no box. Image ids follow ``meta["coco_image_id"]`` when all labels
        carry one, else 1, 2, ...; category ids likewise from ``meta["category_id"]``.

    Raises:
        ValidationError: an image size is unknown, or a category is missing from ``categories``.
    """
    lookup = _size_lookup(sizes)
    box_labels = [lb for lb in labels if "boxes" in lb.target]
    names = list(categories) if categories is not None else sorted({lb.prompt for lb in box_labels})
    cat_ids = _ids(names, {lb.prompt: lb.meta.get("category_id") for lb in box_labels})
    unknown = sorted({lb.prompt for lb in box_labels} - set(cat_ids))
    if unknown:
        raise ValidationError(f"categories: {', '.join(map(repr, unknown))} not listed", param="categories")
    image_order = list(dict.fromkeys(lb.image_id for lb in box_labels))
    image_ids = _ids(image_order, {lb.image_id: lb.meta.get("coco_image_id") for lb in box_labels})
    images, size_of = [], {}
    meta_sizes: dict[str, tuple[int, int]] = {}  # the first label that knows an image's size
    for lb in box_labels:
        if lb.image_id not in meta_sizes and "width" in lb.meta and "height" in lb.meta:
            meta_sizes[lb.image_id] = (lb.meta["width"], lb.meta["height"])
    for image_id in image_order:
        size = _image_size(image_id, lookup, meta_sizes)
        size_of[image_id] = size
        images.append({"id": image_ids[image_id], "file_name": image_id, "width": size[0], "height": size[1]})
    annotations = []
    for lb in box_labels:
        w, h = size_of[lb.image_id]
        for b in lb.target["boxes"]:
            bw, bh = (b["x_max"] - b["x_min"]) * w, (b["y_max"] - b["y_min"]) * h
            annotations.append({"id": len(annotations) + 1, "image_id": image_ids[lb.image_id],
                                "category_id": cat_ids[lb.prompt], "bbox": [b["x_min"] * w, b["y_min"] * h, bw, bh],
                                "area": bw * bh, "iscrowd": 0})
    coco = {"images": images, "annotations": annotations,
            "categories": [{"id": cat_ids[n], "name": n} for n in names]}
    atomic_write(path, json.dumps(coco, indent=1, ensure_ascii=False, allow_nan=False))
    return coco


def _ids(names: list[str], given: Mapping[str, Any]) -> dict[str, Any]:
    """Keep the original COCO ids when every name has a distinct one, else number from 1."""
    ids = [given.get(n) for n in names]
    if ids and all(i is not None for i in ids) and len(set(ids)) == len(ids):
        return dict(zip(names, ids))
    return {n: k + 1 for k, n in enumerate(names)}


def _image_size(image_id: str, lookup: SizeLookup | None, meta_sizes: Mapping[str, tuple[int, int]]) -> tuple[int, int]:
    # One dict lookup per image (it scanned every label per image: 4.5 s at 10,000 labels)
    if lookup is not None:
        try:
            w, h = lookup(image_id)
            return w, h
        except KeyError:
            pass
    if image_id in meta_sizes:
        return meta_sizes[image_id]
    raise ValidationError(f"image {image_id!r}: size unknown; pass sizes={{image_id: (width, height)}} or the dataset",
                          param="sizes")
