"""Labels as YOLO txt: one file per image, one ``class x_center y_center width height`` line per box.

Coordinates are normalized 0–1 (as ours are); the class is an index into a list of names
(``classes.txt``, one name a line). A label file ``sub/a.txt`` belongs to the image whose id
without its extension is ``sub/a``.
"""

from __future__ import annotations

import os
from typing import Iterable, Sequence

from .. import protocol
from ..errors import ValidationError
from .fileio import FormatError, atomic_write_many, reraise_at
from .labels import Label

__all__ = ["read_yolo", "write_yolo", "read_classes"]


def read_classes(path: str | os.PathLike) -> list[str]:
    """Class names from a ``classes.txt`` (one per line, blank lines ignored)."""
    with open(path, encoding="utf-8") as fh:
        names = [line.strip() for line in fh if line.strip()]
    if not names:
        raise FormatError(path, "no class names")
    return names


def _stem(image_id: str) -> str:
    return os.path.splitext(image_id)[0]


def read_yolo(folder: str | os.PathLike, classes: Sequence[str] | str | os.PathLike, *,
              image_ids: Iterable[str] | None = None) -> list[Label]:
    """Read every ``*.txt`` under ``folder`` (except ``classes.txt``) into detect labels.

    Args:
        classes: the class names, or the path of a ``classes.txt``.
        image_ids: the dataset's ids (e.g. ``ds.ids``); a label file ``sub/a.txt`` maps to the id
            ``sub/a.<any extension>``. Without them the id is the file's relative path with
            ``.jpg`` in place of ``.txt``.

    Returns:
        One detect label per (image, class) with at least one box, prompt = the class name; an
        empty label file gives no label.

    Raises:
        FormatError: a bad line (file and line named) or a file that matches no image id.
    """
    root = os.fspath(folder)
    names = read_classes(classes) if isinstance(classes, (str, os.PathLike)) else list(classes)
    by_stem: dict[str, str] | None = None
    if image_ids is not None:
        by_stem = {}
        for image_id in image_ids:
            stem = _stem(image_id)
            if stem in by_stem:
                raise ValidationError(f"image ids {by_stem[stem]!r} and {image_id!r} share the label file {stem}.txt",
                                      param="image_ids")
            by_stem[stem] = image_id
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files += [os.path.join(dirpath, f) for f in filenames if f.endswith(".txt") and f != "classes.txt"]
    labels = []
    for file in sorted(files):
        stem = os.path.relpath(file, root)[:-4].replace(os.sep, "/")
        if by_stem is None:
            image_id = stem + ".jpg"
        elif stem in by_stem:
            image_id = by_stem[stem]
        else:
            raise FormatError(file, f"no image in the dataset has the id {stem}.<ext>")
        boxes: dict[int, list[dict]] = {}
        first_line: dict[int, int] = {}
        with open(file, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 5:
                    raise FormatError(file, f"expected 'class x_center y_center width height' (5 values), got {len(parts)}",
                                      line=n)
                try:
                    cls = int(parts[0])
                    cx, cy, w, h = map(float, parts[1:])
                except ValueError:
                    raise FormatError(file, f"expected an integer class and four numbers, got {line.strip()!r}", line=n) from None
                if not 0 <= cls < len(names):
                    raise FormatError(file, f"class {cls} is not in the {len(names)} classes (0-{len(names) - 1})", line=n)
                for value, what in ((cx, "x_center"), (cy, "y_center"), (w, "width"), (h, "height")):
                    if not protocol.is_number(value) or not 0 <= value <= 1:
                        raise FormatError(file, f"{what} must be a normalized number in [0, 1] (got {value})", line=n)
                # Half-widths can stick out of the image by rounding; the box is the visible part.
                box = {"x_min": max(cx - w / 2, 0.0), "y_min": max(cy - h / 2, 0.0),
                       "x_max": min(cx + w / 2, 1.0), "y_max": min(cy + h / 2, 1.0)}
                boxes.setdefault(cls, []).append(box)
                first_line.setdefault(cls, n)
        for cls in sorted(boxes):
            try:
                labels.append(Label(image_id, "detect", names[cls], {"boxes": boxes[cls]}))
            except ValidationError as exc:
                raise reraise_at(exc, file, line=first_line[cls]) from exc
    return labels


def write_yolo(folder: str | os.PathLike, labels: Iterable[Label], *,
               classes: Sequence[str] | None = None) -> list[str]:
    """Write the box labels as YOLO txt files under ``folder`` plus ``classes.txt``.

    One file per image id (``sub/a.jpg`` → ``folder/sub/a.txt``); labels of other kinds are left
    out. Every file is prepared before the first is replaced, and each is written atomically.

    Args:
        classes: class names in index order; default: the prompts, sorted.

    Returns:
        The class names in index order.

    Raises:
        ValidationError: a label's prompt is not in ``classes``, or an image id would escape ``folder``.
    """
    root = os.fspath(folder)
    box_labels = [lb for lb in labels if "boxes" in lb.target]
    names = list(classes) if classes is not None else sorted({lb.prompt for lb in box_labels})
    if any("\n" in n or not n.strip() for n in names):
        raise ValidationError("classes: names must be non-empty single lines", param="classes")
    index = {n: i for i, n in enumerate(names)}
    lines: dict[str, list[str]] = {}
    for lb in box_labels:
        if lb.prompt not in index:
            raise ValidationError(f"classes: {lb.prompt!r} (image {lb.image_id!r}) is not listed", param="classes")
        rel = _stem(lb.image_id) + ".txt"
        target = os.path.normpath(os.path.join(root, rel))
        if os.path.isabs(rel) or os.path.relpath(target, root).startswith(os.pardir):
            raise ValidationError(f"image id {lb.image_id!r} would be written outside {root!r}", param="image_id")
        if os.path.relpath(target, root) == "classes.txt":
            raise ValidationError(f"image id {lb.image_id!r} would overwrite classes.txt", param="image_id")
        out = lines.setdefault(target, [])
        for b in lb.target["boxes"]:
            cx, cy = (b["x_min"] + b["x_max"]) / 2, (b["y_min"] + b["y_max"]) / 2
            out.append(f"{index[lb.prompt]} {cx!r} {cy!r} {b['x_max'] - b['x_min']!r} {b['y_max'] - b['y_min']!r}\n")
    files: dict[str, str] = {p: "".join(ls) for p, ls in lines.items()}
    files[os.path.join(root, "classes.txt")] = "".join(n + "\n" for n in names)
    atomic_write_many(files)  # type: ignore[arg-type]
    return names
