"""Datasets from tables: a pandas DataFrame or a Hugging Face ``datasets.Dataset``.

Neither library is imported here: a DataFrame is read through ``to_dict("records")``, and
``datasets`` is imported only when :func:`from_hf` is given a dataset *name* (or must re-read an
image column without decoding it). Rows that share an image become one item whose labels are
gathered from every row, so "one row per box" and "one row per question" tables both work.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Iterable, Mapping, Sequence

from ..errors import ValidationError
from .dataset import Dataset, Item, _ImageCache, image_id_for, load_image, source_item
from .labels import Label

__all__ = ["from_frame", "from_hf"]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _row_labels(row: Mapping[str, Any], image_id: str, where: str, *, question: str | None,
                answer: str | None, object: str | None, points: str | None, boxes: str | None) -> list[Label]:
    """The labels one row carries: a query (question + answer), a point (object + points) and/or
    a detect label (object + boxes). Empty cells mean "no label of that kind in this row"."""
    out = []
    try:
        if question and answer and not _missing(row.get(question)) and not _missing(row.get(answer)):
            out.append(Label.query(image_id, row[question], str(row[answer])))
        obj = row.get(object) if object else None
        if not _missing(obj):
            if points and not _missing(row.get(points)):
                out.append(Label.point(image_id, obj, list(row[points])))
            if boxes and not _missing(row.get(boxes)):
                out.append(Label.detect(image_id, obj, list(row[boxes])))
    except ValidationError as exc:
        raise ValidationError(f"{where}: {exc.message}", param=where) from exc
    except TypeError as exc:  # e.g. a number where a list of points belongs
        raise ValidationError(f"{where}: {exc}", param=where) from exc
    return out


def _check_columns(have: Sequence[str], wanted: Mapping[str, str | None], what: str) -> None:
    for arg, column in wanted.items():
        if column is not None and column not in have:
            raise ValidationError(f"{arg}={column!r}: no such column in the {what} (columns: {', '.join(map(str, have))})",
                                  param=arg)


def _gather(rows: Iterable[tuple[int, Mapping[str, Any]]], make_item: Callable[[int, Mapping[str, Any]], Item],
            label_args: dict, what: str) -> list[Item]:
    """Group rows by image id (first row wins for the image and meta), collecting labels."""
    items: dict[str, Item] = {}
    labels: dict[str, list[Label]] = {}
    for i, row in rows:
        item = make_item(i, row)
        if item.image_id not in items:
            items[item.image_id] = item
            labels[item.image_id] = []
        for lb in _row_labels(row, item.image_id, f"{what} row {i}", **label_args):
            if lb not in labels[item.image_id]:
                labels[item.image_id].append(lb)
    return [Item(it.image_id, it.loader, tuple(labels[k]), it.meta, it.path, it._cache) for k, it in items.items()]


def from_frame(frame: Any, *, image: str = "image", image_id: str | None = None, root: str | os.PathLike | None = None,
               question: str | None = None, answer: str | None = None, object: str | None = None,
               points: str | None = None, boxes: str | None = None, meta: Sequence[str] = (),
               cache_size: int = 8) -> Dataset:
    """A dataset from a pandas DataFrame (any object with ``columns`` and ``to_dict("records")``).

    Args:
        image: column of image paths, PIL images or encoded bytes.
        image_id: column of ids; default: path (relative to ``root``) or content hash.
        question, answer: columns that make a query label per row (both non-empty).
        object, points, boxes: an object column plus a column of point lists (``(x, y)`` or
            ``{"x", "y"}``) and/or box lists (``(x_min, y_min, x_max, y_max)`` or dicts), normalized.
        meta: columns copied into ``item.meta`` (from the image's first row).

    Returns:
        A Dataset with one item per distinct image id, in order of first appearance.

    Raises:
        ValidationError: a named column is missing, or a row's cell is invalid ("frame row 3: ...").
    """
    if not hasattr(frame, "to_dict") or not hasattr(frame, "columns"):
        raise ValidationError(f"frame: expected a pandas DataFrame, not {type(frame).__name__}", param="frame")
    columns = [str(c) for c in frame.columns]
    _check_columns(columns, {"image": image, "image_id": image_id, "question": question, "answer": answer,
                             "object": object, "points": points, "boxes": boxes}, "frame")
    _check_columns(columns, {f"meta[{m!r}]": m for m in meta}, "frame")
    cache = _ImageCache(cache_size)

    def make_item(i: int, row: Mapping[str, Any]) -> Item:
        given = None if image_id is None or _missing(row.get(image_id)) else str(row[image_id])
        return source_item(row[image], f"frame row {i}", cache, image_id=given, root=root,
                           meta={m: row[m] for m in meta})

    rows = enumerate(frame.to_dict("records"))
    args = dict(question=question, answer=answer, object=object, points=points, boxes=boxes)
    return Dataset(_gather(rows, make_item, args, "frame"))


def from_hf(data: Any, *, split: str | None = None, image: str = "image", image_id: str | None = None,
            question: str | None = None, answer: str | None = None, object: str | None = None,
            points: str | None = None, boxes: str | None = None, meta: Sequence[str] = (),
            cache_size: int = 8) -> Dataset:
    """A dataset from a Hugging Face ``datasets.Dataset`` (or a dataset name and ``split``).

    Images are decoded only when an item's ``image`` is used. Column arguments as in
    :func:`from_frame`. image_id: the ``image_id`` column when given; else the image file's path
    when the column is a path, else a content hash of the stored image bytes (the table is read
    once without decoding the images).

    Raises:
        ImportError: a name was given and the ``datasets`` package is not installed.
        ValidationError: a named column is missing or a row's cell is invalid.
    """
    if isinstance(data, str):
        try:
            import datasets
        except ImportError as exc:
            raise ImportError("from_hf needs the Hugging Face datasets package: pip install datasets") from exc
        data = datasets.load_dataset(data, split=split)
    if not hasattr(data, "column_names") or not hasattr(data, "features"):
        raise ValidationError(f"data: expected a datasets.Dataset (pick a split, e.g. ds['train']), "
                              f"not {type(data).__name__}", param="data")
    columns = list(data.column_names)
    _check_columns(columns, {"image": image, "image_id": image_id, "question": question, "answer": answer,
                             "object": object, "points": points, "boxes": boxes}, "dataset")
    _check_columns(columns, {f"meta[{m!r}]": m for m in meta}, "dataset")
    cache = _ImageCache(cache_size)
    # Every column but the image is read eagerly (small); the image column without decoding.
    table = data.remove_columns([image]).to_list() if len(columns) > 1 else [{} for _ in range(len(data))]
    raw_images = _undecoded(data, image)

    def make_item(i: int, row: Mapping[str, Any]) -> Item:
        raw = raw_images[i]
        given = None if image_id is None or _missing(row.get(image_id)) else str(row[image_id])
        item_meta = {m: row[m] for m in meta}
        if isinstance(raw, str):  # a column of file paths
            return source_item(raw, f"dataset row {i}", cache, image_id=given, meta=item_meta)
        if isinstance(raw, Mapping) and (raw.get("bytes") or raw.get("path")):
            data_bytes, path = raw.get("bytes"), raw.get("path")
            key = given or (image_id_for(data_bytes) if data_bytes else _posix_id(path))
            load = (lambda b=data_bytes: load_image(b)) if data_bytes else (lambda p=path: load_image(p))
            return Item(key, load, meta=item_meta, path=None if data_bytes else path, _cache=cache)
        # Anything else (an already decoded PIL image): decode-on-access via the table itself.
        if given is None:
            given = image_id_for(data[i][image])
        return Item(given, lambda i=i: data[i][image], meta=item_meta, _cache=cache)

    args = dict(question=question, answer=answer, object=object, points=points, boxes=boxes)
    return Dataset(_gather(enumerate(table), make_item, args, "dataset"))


def _posix_id(path: str) -> str:
    return os.path.normpath(path).replace(os.sep, "/")


def _undecoded(data: Any, column: str) -> list[Any]:
    """The image column as stored: ``{"bytes", "path"}`` dicts for an ``Image`` feature, else as is."""
    feature = data.features[column]
    if type(feature).__name__ == "Image" and getattr(feature, "decode", False):
        import datasets  # present: we were handed one of its datasets

        data = data.cast_column(column, datasets.Image(decode=False))
    return data[column]
