"""Atomic file writes and the error that points at the bad spot of a label file.

Every exporter builds its whole output in memory first (so a bad label fails before anything is
touched), then writes it through :func:`atomic_write` (temporary file in the same folder, fsync,
``os.replace``): a reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from ..errors import ValidationError

__all__ = ["FormatError", "atomic_write", "atomic_write_many", "read_json"]


class FormatError(ValidationError):
    """A label file is malformed. ``file`` names it; ``line`` (1-based) or ``param`` (a JSON path
    such as ``annotations[3].bbox``) names the spot, when known."""

    def __init__(self, file: str | os.PathLike, detail: str, *, line: int | None = None,
                 where: str | None = None) -> None:
        self.file = os.fspath(file)
        self.line = line
        spot = f"{self.file}, line {line}" if line is not None else self.file
        if where:
            spot += f": {where}"
        super().__init__(f"{spot}: {detail}", param=where)


def reraise_at(exc: ValidationError, file: str | os.PathLike, *, line: int | None = None,
               where: str | None = None) -> FormatError:
    """A :class:`FormatError` at ``file``/``line``/``where`` carrying ``exc``'s message."""
    detail = exc.message
    if where and exc.param and detail.startswith(exc.param + ": "):
        # Join the file's JSON path with the label-level path: annotations[3] + target.boxes[0].x
        where, detail = f"{where}.{exc.param}", detail[len(exc.param) + 2:]
    return FormatError(file, detail, line=line, where=where)


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; syntax errors become a :class:`FormatError` with line and column."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except UnicodeDecodeError as exc:
        raise FormatError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise FormatError(path, f"invalid JSON: {exc.msg} (column {exc.colno})", line=exc.lineno) from exc


def _fsync_dir(folder: str) -> None:
    # The rename itself must reach the disk too; directories cannot be opened on Windows.
    if os.name == "posix":
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_temp(path: str, data: str | bytes) -> str:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def atomic_write(path: str | os.PathLike, data: str | bytes) -> None:
    """Write ``data`` (str as UTF-8) to ``path`` all at once: temp file, fsync, ``os.replace``."""
    atomic_write_many({path: data})


def atomic_write_many(files: dict[str | os.PathLike, str | bytes]) -> None:
    """Write several files; every temporary file is complete before the first one is renamed,
    so a failure while writing leaves all targets untouched."""
    temps: list[tuple[str, str]] = []
    try:
        for path, data in files.items():
            temps.append((_write_temp(os.fspath(path), data), os.fspath(path)))
    except BaseException:
        for tmp, _ in temps:
            os.unlink(tmp)
        raise
    for tmp, path in temps:
        os.replace(tmp, path)
    for folder in {os.path.dirname(os.path.abspath(p)) for _, p in temps}:
        _fsync_dir(folder)
