"""Model outputs kept per (endpoint, model, skill, image, prompt, settings), in memory or in a
SQLite file, so an evaluation run again (or after a kernel restart, with a file) only calls the
API for what it has not seen.

A checkpoint's model id names fixed weights, so its outputs can be kept; the base model's are
kept too (pass ``cache=False`` to ``evaluate`` to ask again).
"""

from __future__ import annotations

import json
import os
import threading
import time
import warnings
from typing import Any, Mapping

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outputs (
    key TEXT PRIMARY KEY, output TEXT NOT NULL, ms REAL NOT NULL, created_at REAL NOT NULL);
"""


def cache_key(endpoint: str, model: str | None, skill: str, image: str, prompt: str,
              settings: Mapping[str, Any] | None) -> str:
    """The key of one call's output (a JSON list: stable, readable in the file)."""
    return json.dumps([endpoint, model or "", skill, image, prompt, dict(settings or {})], sort_keys=True)


class EvalCache:
    """Outputs by :func:`cache_key`: a dict, written through to ``path`` (SQLite) when given.

    Thread-safe. A write that fails (disk full, read-only file) warns once and keeps the output
    in memory: an evaluation never fails because its cache could not be saved.

    Args:
        path: a SQLite file to keep outputs across sessions (created if missing); None: memory only.
    """

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = os.fspath(path) if path is not None else None
        self._lock = threading.Lock()
        self._memory: dict[str, tuple[dict, float]] = {}
        self._warned = False
        self._db = None
        if self.path is not None:
            import sqlite3  # here, so importing the package does not load it

            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.executescript(_SCHEMA)
            for key, output, ms in self._db.execute("SELECT key, output, ms FROM outputs"):
                self._memory[key] = (json.loads(output), ms)

    @classmethod
    def at(cls, path: str | os.PathLike) -> "EvalCache":
        """The cache of file ``path``, opened once per process (later calls share it)."""
        key = os.path.abspath(os.fspath(path))
        with _OPEN_LOCK:
            cache = _OPEN.get(key)
            if cache is None or cache._db is None:
                cache = _OPEN[key] = cls(key)
            return cache

    def __len__(self) -> int:
        return len(self._memory)

    def __repr__(self) -> str:
        return f"EvalCache(path={self.path!r}, outputs={len(self)})"

    def get(self, key: str) -> tuple[dict, float] | None:
        """``(output, milliseconds the call took)`` or None."""
        with self._lock:
            return self._memory.get(key)

    def put(self, key: str, output: Mapping[str, Any], ms: float) -> None:
        """Keep ``output`` (and the call's time) under ``key``."""
        output = dict(output)
        with self._lock:
            self._memory[key] = (output, ms)
            if self._db is None:
                return
            try:
                self._db.execute("INSERT OR REPLACE INTO outputs VALUES (?, ?, ?, ?)",
                                 (key, json.dumps(output), ms, time.time()))
            except Exception as exc:  # sqlite3.Error: disk full, read-only file, locked
                if not self._warned:
                    self._warned = True
                    warnings.warn(f"evaluation cache {self.path}: cannot save outputs ({exc}); "
                                  "they are kept in memory for this session", RuntimeWarning, stacklevel=2)

    def clear(self) -> None:
        """Forget every output (and delete them from the file)."""
        with self._lock:
            self._memory.clear()
            if self._db is not None:
                self._db.execute("DELETE FROM outputs")

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


_OPEN: dict[str, EvalCache] = {}
_OPEN_LOCK = threading.Lock()

#: The cache ``evaluate`` uses by default: this process's memory.
DEFAULT = EvalCache()
