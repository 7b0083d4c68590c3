"""Labels as JSON Lines: one :meth:`Label.to_dict` object per line.

``{"image_id": "cats/01.jpg", "skill": "point", "prompt": "cat", "target": {"points": [{"x": 0.4, "y": 0.6}]}}``
"""

from __future__ import annotations

import json
import os
from typing import Iterable

from ..errors import ValidationError
from .fileio import FormatError, atomic_write, reraise_at
from .labels import Label

__all__ = ["read_jsonl", "write_jsonl"]


def read_jsonl(path: str | os.PathLike) -> list[Label]:
    """Read labels from a JSONL file (blank lines are skipped).

    Raises:
        FormatError: a line is not JSON or not a valid label; the message names file and line,
            e.g. ``labels.jsonl, line 7: target.boxes[0].x_min: must be a number >= 0 ...``.
    """
    labels = []
    try:
        with open(path, encoding="utf-8") as fh:
            lines = list(fh)
    except UnicodeDecodeError as exc:
        raise FormatError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise FormatError(path, f"invalid JSON: {exc.msg} (column {exc.colno})", line=n) from exc
        try:
            labels.append(Label.from_dict(data))
        except ValidationError as exc:
            raise reraise_at(exc, path, line=n) from exc
    return labels


def write_jsonl(path: str | os.PathLike, labels: Iterable[Label]) -> int:
    """Write ``labels`` as JSONL, atomically (the old file stays whole on any error).

    Returns the number of labels written.
    """
    lines = []
    for lb in labels:
        if not isinstance(lb, Label):
            raise ValidationError(f"expected a Label, not {type(lb).__name__}", param="labels")
        lines.append(json.dumps(lb.to_dict(), ensure_ascii=False, allow_nan=False) + "\n")
    atomic_write(path, "".join(lines))
    return len(lines)
