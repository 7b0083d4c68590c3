"""The one place that turns a storage failure (full disk, read-only or vanished data directory)
into the answer a client gets: a 507 that names the data directory, with code
``insufficient_storage`` (space ran out) or ``storage_unavailable`` (it cannot be written). Not a
503: clients retry those for a minute, and neither condition passes without a person acting.

SQLite rolls the transaction back and an interrupted weights file is a ``.tmp`` that the next
start removes, so nothing half-written is kept; the call can be retried once space returns.
"""

from __future__ import annotations

import errno
import re
import sqlite3
from pathlib import Path

from .service import Problem

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_UNWRITABLE_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}  # not ENOENT: a missing file is not the disk
# Primary SQLite result codes (the low byte of the extended code).
_SQLITE_FULL = 13
_SQLITE_UNWRITABLE = {8, 10, 14}  # READONLY, IOERR, CANTOPEN
_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def storage_problem(exc: BaseException, data_dir: Path) -> Problem | None:
    """The 507 for ``exc`` when it is a storage failure under ``data_dir``, else None."""
    kind = _kind(exc, Path(data_dir))
    if kind == "full":
        return Problem(507, f"the local server's data directory {data_dir} is full: nothing was changed; "
                            "free some space and retry", code="insufficient_storage")
    if kind == "unwritable":
        return Problem(507, f"the local server cannot write its data directory {data_dir} ({_reason(exc)}): "
                            "nothing was changed; make it writable and retry", code="storage_unavailable")
    return None


def _kind(exc: BaseException, data_dir: Path) -> str | None:
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        if primary == _SQLITE_FULL:
            return "full"
        return "unwritable" if primary in _SQLITE_UNWRITABLE else None
    if isinstance(exc, OSError):
        if exc.errno in _FULL_ERRNOS:
            return "full"
        if exc.errno in _UNWRITABLE_ERRNOS and _under(exc.filename, data_dir):
            return "unwritable"
        return None
    # safetensors (Rust) reports an I/O failure as its own error ending in "(os error N)"
    if type(exc).__name__ == "SafetensorError" and (found := _OS_ERROR.search(str(exc))):
        number = int(found[1])
        return "full" if number in _FULL_ERRNOS else "unwritable" if number in _UNWRITABLE_ERRNOS else None
    return None


def _under(filename: object, data_dir: Path) -> bool:
    if not isinstance(filename, (str, Path)):
        return False
    try:
        return Path(filename).resolve().is_relative_to(data_dir.resolve())
    except (OSError, ValueError):
        return False


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
