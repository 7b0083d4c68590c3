"""Labels as CSV, one row per point, box or answer (the shape spreadsheets and pandas like).

Columns: ``image_id, skill, prompt, answer, reasoning, x, y, x_min, y_min, x_max, y_max,
spatial_refs``. A label with several points has one row each; a point/detect label with no
objects is one row with empty coordinates; ``spatial_refs`` is JSON (query only). Rows with the
same ``image_id, skill, prompt, spatial_refs`` form one label, in file order.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from typing import Any, Iterable

from .. import protocol
from ..errors import ValidationError
from .fileio import FormatError, atomic_write, reraise_at
from .labels import Label

__all__ = ["read_csv", "write_csv", "CSV_COLUMNS"]

CSV_COLUMNS = ("image_id", "skill", "prompt", "answer", "reasoning", "x", "y",
               "x_min", "y_min", "x_max", "y_max", "spatial_refs")
_POINT, _BOX = protocol.POINT_KEYS, protocol.BOX_KEYS
_REQUIRED = ("image_id", "skill", "prompt")


def _number(row: dict, column: str, path: str, line: int) -> float:
    text = row[column].strip()
    try:
        value = float(text)
    except ValueError:
        raise FormatError(path, f"must be a number (got {text!r})", line=line, where=column) from None
    if not math.isfinite(value):
        raise FormatError(path, f"must be a finite number (got {text!r})", line=line, where=column)
    return value


def _check_at(check, value: dict, path: str | os.PathLike, line: int) -> None:
    """Check one row's point or box where it stands, so the error names its own line."""
    try:
        check(value, "")
    except ValidationError as exc:
        raise FormatError(path, exc.message, line=line) from exc


def _filled(row: dict, columns: tuple) -> int:
    return sum(1 for c in columns if (row.get(c) or "").strip())


def read_csv(path: str | os.PathLike) -> list[Label]:
    """Read labels from a CSV file written by :func:`write_csv` (or by hand in that shape).

    Raises:
        FormatError: a missing column or a bad row; the message names file, line and column,
            e.g. ``labels.csv, line 5: x: must be a number (got 'abc')``.
    """
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            text = fh.read()
    except UnicodeDecodeError as exc:
        raise FormatError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    missing = [c for c in _REQUIRED if c not in header]
    if missing:
        raise FormatError(path, f"missing column(s) {', '.join(missing)} (columns: {', '.join(CSV_COLUMNS)})", line=1)
    groups: dict[tuple, dict[str, Any]] = {}
    try:
        for row in reader:
            line = reader.line_num
            if None in row:  # more cells than header columns
                raise FormatError(path, f"{len(header) + len(row[None])} cells for {len(header)} columns", line=line)
            row = {k: (v or "") for k, v in row.items()}
            for c in _REQUIRED:
                if not row[c].strip():
                    raise FormatError(path, "must not be empty", line=line, where=c)
            skill = row["skill"].strip()
            refs_text = row.get("spatial_refs", "").strip()
            key = (row["image_id"], skill, row["prompt"], refs_text)
            group = groups.setdefault(key, {"line": line, "points": [], "boxes": [], "answer": None, "reasoning": None})
            n_point, n_box = _filled(row, _POINT), _filled(row, _BOX)
            if n_point and n_box:
                raise FormatError(path, "a row holds either a point (x, y) or a box (x_min ... y_max), not both", line=line)
            if n_point:
                if n_point != 2:
                    raise FormatError(path, "a point needs both x and y", line=line)
                point = {c: _number(row, c, path, line) for c in _POINT}
                _check_at(protocol.check_point, point, path, line)
                group["points"].append(point)
            elif n_box:
                if n_box != 4:
                    raise FormatError(path, "a box needs x_min, y_min, x_max and y_max", line=line)
                box = {c: _number(row, c, path, line) for c in _BOX}
                _check_at(protocol.check_box, box, path, line)
                group["boxes"].append(box)
            if row.get("answer", "") != "" or skill == "query":
                if group["answer"] is not None:
                    raise FormatError(path, f"a second answer for the same question (first on line {group['line']})",
                                      line=line, where="answer")
                group["answer"] = row.get("answer", "")
                group["reasoning"] = row.get("reasoning", "") or None
            group["last_line"] = line
    except csv.Error as exc:
        raise FormatError(path, f"invalid CSV: {exc}", line=reader.line_num) from exc
    labels = []
    for (image_id, skill, prompt, refs_text), g in groups.items():
        try:
            refs = json.loads(refs_text) if refs_text else None
        except json.JSONDecodeError as exc:
            raise FormatError(path, f"invalid JSON ({exc.msg})", line=g["line"], where="spatial_refs") from exc
        if skill == "query":
            target: dict[str, Any] = {"answer": g["answer"]}
            if g["reasoning"]:
                target["reasoning"] = {"text": g["reasoning"]}
            if g["points"] or g["boxes"]:
                raise FormatError(path, "a query label has an answer, not coordinates", line=g["line"])
        elif g["points"] and g["boxes"]:
            raise FormatError(path, "a point label holds points or boxes, not both", line=g["last_line"])
        elif skill == "detect" and g["points"]:
            raise FormatError(path, "a detect label holds boxes (x_min, y_min, x_max, y_max), not points", line=g["line"])
        else:
            target = {"boxes": g["boxes"]} if g["boxes"] or skill == "detect" else {"points": g["points"]}
        try:
            labels.append(Label(image_id, skill, prompt, target, refs))
        except ValidationError as exc:
            raise reraise_at(exc, path, line=g["line"]) from exc
    return labels


def _rows(lb: Label) -> list[dict[str, Any]]:
    base = {"image_id": lb.image_id, "skill": lb.skill, "prompt": lb.prompt, "spatial_refs": lb.refs_key}
    if lb.skill == "query":
        reasoning = (lb.target.get("reasoning") or {}).get("text", "")
        return [{**base, "answer": lb.target["answer"], "reasoning": reasoning}]
    kind = "points" if "points" in lb.target else "boxes"
    items = lb.target[kind]
    if not items:
        return [dict(base)]
    return [{**base, **{k: repr(float(v)) for k, v in item.items()}} for item in items]


def write_csv(path: str | os.PathLike, labels: Iterable[Label]) -> int:
    """Write ``labels`` as CSV (header + one row per point/box/answer), atomically.

    Coordinates are written with ``repr`` so they read back bit for bit. Returns the row count.
    """
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    n = 0
    for lb in labels:
        if not isinstance(lb, Label):
            raise ValidationError(f"expected a Label, not {type(lb).__name__}", param="labels")
        for row in _rows(lb):
            writer.writerow(row)
            n += 1
    atomic_write(path, buf.getvalue())
    return n
