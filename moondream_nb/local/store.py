"""The local server's truth on disk: one SQLite file (WAL, ``synchronous=FULL``).

Tables: finetunes, steps (one row per applied train step with its figures), metrics,
checkpoints, idempotency (the first response to each ``Idempotency-Key``) and batches. Every
acknowledged write is committed before the server answers; a mutation and the idempotency record
of the request that caused it are committed in one transaction, so a retry after a crash either
finds both or neither. Keys are never stored: finetunes belong to an *owner*, a hash of the key.

All access goes through one connection guarded by a lock: the writes are small and fast, and one
writer is what SQLite wants anyway.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import ValidationError

ULID_PATTERN = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
IDEMPOTENCY_TTL_MS = 48 * 3600 * 1000  # kept at least 24 h (API.md Part A §3)
IDEMPOTENCY_MAX_ROWS = 200_000  # beyond this the oldest records go first, even inside the TTL
PRUNE_EVERY_MS = 10 * 60 * 1000  # a running server prunes this often ...
PRUNE_EVERY_WRITES = 1_000  # ... or after this many new records

SCHEMA = """
CREATE TABLE IF NOT EXISTS finetunes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    finetune_id TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    rank INTEGER NOT NULL,
    step INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    deleted_at_ms INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS finetunes_live_name ON finetunes(owner, name) WHERE deleted_at_ms IS NULL;
CREATE TABLE IF NOT EXISTS steps (
    finetune_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    lr REAL NOT NULL,
    rl_groups INTEGER NOT NULL,
    sft_groups INTEGER NOT NULL,
    kl REAL, grad_norm REAL, reward_mean REAL, reward_std REAL, sft_loss REAL,
    PRIMARY KEY (finetune_id, step)
);
CREATE TABLE IF NOT EXISTS metrics (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    finetune_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    name TEXT NOT NULL,
    value REAL NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS metrics_by_finetune ON metrics(finetune_id, id);
CREATE TABLE IF NOT EXISTS checkpoints (
    finetune_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    checkpoint_id TEXT NOT NULL UNIQUE,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    deleted_at_ms INTEGER,
    PRIMARY KEY (finetune_id, step)
);
CREATE TABLE IF NOT EXISTS idempotency (
    owner TEXT NOT NULL,
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (owner, scope, key)
);
CREATE INDEX IF NOT EXISTS idempotency_age ON idempotency (created_at_ms);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_id TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    upload_id TEXT NOT NULL,
    status TEXT NOT NULL,
    model TEXT,
    size INTEGER,
    total INTEGER NOT NULL DEFAULT 0,
    completed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    created_at_ms INTEGER NOT NULL,
    completed_at_ms INTEGER
);
"""

STEP_FIGURES = ("kl", "grad_norm", "reward_mean", "reward_std", "sft_loss")


def now_ms() -> int:
    return int(time.time() * 1000)


def new_ulid() -> str:
    """A ULID: 48-bit millisecond time + 80 random bits, Crockford base32 (sorts by creation)."""
    value = (now_ms() << 80) | secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(26)))


def is_ulid(value: Any) -> bool:
    return isinstance(value, str) and bool(ULID_PATTERN.match(value))


def encode_cursor(value: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(value, separators=(",", ":")).encode()).decode()


def decode_cursor(cursor: str | None, key: str) -> int | None:
    """The integer under ``key`` in an opaque cursor we issued; ValidationError for anything else."""
    if cursor is None:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))[key]
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63:  # SQLite's INTEGER
            return value
    except (ValueError, TypeError, KeyError, UnicodeError):
        pass
    raise ValidationError("cursor: not a cursor this server issued (pass next_cursor back unchanged)", param="cursor")


@dataclass(frozen=True)
class Idem:
    """The idempotency record a request would create: who, where, which key, what body."""

    owner: str
    scope: str
    key: str
    request_hash: str


class IdempotencyMismatch(Exception):
    """The key was first used with a different request body."""


@dataclass
class Finetune:
    finetune_id: str
    owner: str
    name: str
    rank: int
    step: int
    created_at_ms: int
    updated_at_ms: int

    def info(self) -> dict[str, Any]:
        return {"finetune_id": self.finetune_id, "name": self.name, "rank": self.rank, "step": self.step,
                "created_at_ms": self.created_at_ms, "updated_at_ms": self.updated_at_ms}


def checkpoint_info(row: sqlite3.Row) -> dict[str, Any]:
    return {"checkpoint_id": row["checkpoint_id"], "finetune_id": row["finetune_id"], "step": row["step"],
            "created_at_ms": row["created_at_ms"], "updated_at_ms": row["updated_at_ms"], "expires_at_ms": None}


def page(rows: list[Any], limit: int, make_cursor) -> tuple[list[Any], str | None, bool]:
    """Split ``limit + 1`` fetched rows into (page, next_cursor, has_more)."""
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (make_cursor(rows[-1]) if more else None), more


class Store:
    """Typed queries over the SQLite file ``path``."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        self._idem_writes = 0
        self.prune_idempotency()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE … COMMIT, rolled back on error)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _all(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _one(self, sql: str, *args: Any) -> sqlite3.Row | None:
        rows = self._all(sql, *args)
        return rows[0] if rows else None

    def integrity_check(self) -> str:
        return self._one("PRAGMA integrity_check")[0]

    # --- idempotency ---------------------------------------------------------------------

    def idem_get(self, idem: Idem | None) -> dict | None:
        """The stored first response for ``idem``; IdempotencyMismatch if the body differed."""
        if idem is None:
            return None
        row = self._one("SELECT request_hash, response FROM idempotency WHERE owner=? AND scope=? AND key=?",
                        idem.owner, idem.scope, idem.key)
        if row is None:
            return None
        if row["request_hash"] != idem.request_hash:
            raise IdempotencyMismatch()
        return json.loads(row["response"])

    @staticmethod
    def _idem_hit(db: sqlite3.Connection, idem: Idem | None) -> dict | None:
        """(Inside a write transaction.) The recorded answer of ``idem``, if a twin committed one."""
        if idem is None:
            return None
        row = db.execute("SELECT request_hash, response FROM idempotency WHERE owner=? AND scope=? AND key=?",
                         (idem.owner, idem.scope, idem.key)).fetchone()
        if row is None:
            return None
        if row["request_hash"] != idem.request_hash:
            raise IdempotencyMismatch()
        return json.loads(row["response"])

    def once(self, idem: Idem | None, effect: Callable[[sqlite3.Connection], dict]) -> dict:
        """``effect(db)`` and the record of its answer under ``idem`` in one write transaction.

        The key is looked up inside the same transaction (writers are serialized by BEGIN
        IMMEDIATE), so of concurrent twins exactly one has the effect; the others get its answer.
        """
        with self.tx() as db:
            hit = self._idem_hit(db, idem)
            if hit is not None:
                return hit
            response = effect(db)
            self._idem_put(db, idem, response)
        return response

    def _idem_put(self, db: sqlite3.Connection, idem: Idem | None, response: dict) -> None:
        if idem is None:
            return
        db.execute("INSERT OR IGNORE INTO idempotency VALUES (?, ?, ?, ?, ?, ?)",
                   (idem.owner, idem.scope, idem.key, idem.request_hash, json.dumps(response), now_ms()))
        self._idem_writes += 1
        if self._idem_writes >= PRUNE_EVERY_WRITES or now_ms() - self._pruned_at >= PRUNE_EVERY_MS:
            self._prune(db)

    def idem_put(self, idem: Idem | None, response: dict) -> dict:
        """Record ``response`` unless a concurrent twin got there first; return the one that counts."""
        if idem is None:
            return response
        with self.tx() as db:
            self._idem_put(db, idem, response)
        return self.idem_get(idem) or response

    def prune_idempotency(self) -> None:
        """Forget records past the TTL and the oldest beyond the row cap (also done as records arrive)."""
        with self.tx() as db:
            self._prune(db)

    def _prune(self, db: sqlite3.Connection) -> None:
        db.execute("DELETE FROM idempotency WHERE created_at_ms < ?", (now_ms() - IDEMPOTENCY_TTL_MS,))
        db.execute("DELETE FROM idempotency WHERE rowid IN (SELECT rowid FROM idempotency "
                   "ORDER BY created_at_ms DESC LIMIT -1 OFFSET ?)", (IDEMPOTENCY_MAX_ROWS,))
        self._idem_writes, self._pruned_at = 0, now_ms()

    # --- finetunes ----------------------------------------------------------------------

    def finetune(self, owner: str, finetune_id: Any) -> Finetune | None:
        """The caller's live finetune, or None (unknown, deleted, another key's, malformed id)."""
        if not is_ulid(finetune_id):
            return None
        row = self._one("SELECT * FROM finetunes WHERE finetune_id=? AND owner=? AND deleted_at_ms IS NULL",
                        finetune_id, owner)
        return _finetune(row) if row else None

    def create_finetune(self, owner: str, name: str, rank: int, idem: Idem | None) -> tuple[dict, Finetune | None]:
        """Get-or-create by name: (response, None) or, when the name has another rank, ({}, existing)."""
        with self.tx() as db:
            row = db.execute("SELECT * FROM finetunes WHERE owner=? AND name=? AND deleted_at_ms IS NULL",
                             (owner, name)).fetchone()
            if row is not None and row["rank"] != rank:
                return {}, _finetune(row)
            if row is None:
                t = now_ms()
                fid = new_ulid()
                db.execute("INSERT INTO finetunes (finetune_id, owner, name, rank, step, created_at_ms, updated_at_ms)"
                           " VALUES (?, ?, ?, ?, 0, ?, ?)", (fid, owner, name, rank, t, t))
                row = db.execute("SELECT * FROM finetunes WHERE finetune_id=?", (fid,)).fetchone()
            ft = _finetune(row)
            response = {"finetune_id": ft.finetune_id, "finetune": ft.info()}
            self._idem_put(db, idem, response)
        return response, None

    def list_finetunes(self, owner: str, limit: int, cursor: str | None) -> dict:
        after = decode_cursor(cursor, "after") or 0
        rows = self._all("SELECT * FROM finetunes WHERE owner=? AND deleted_at_ms IS NULL AND seq>? ORDER BY seq LIMIT ?",
                         owner, after, limit + 1)
        rows, nxt, more = page(rows, limit, lambda r: encode_cursor({"after": r["seq"]}))
        return {"finetunes": [_finetune(r).info() for r in rows], "next_cursor": nxt, "has_more": more}

    def delete_finetune(self, finetune_id: str, idem: Idem | None = None) -> dict:
        response = {"ok": True}
        with self.tx() as db:
            t = now_ms()
            db.execute("UPDATE finetunes SET deleted_at_ms=?, updated_at_ms=? WHERE finetune_id=?", (t, t, finetune_id))
            db.execute("UPDATE checkpoints SET deleted_at_ms=? WHERE finetune_id=? AND deleted_at_ms IS NULL",
                       (t, finetune_id))
            self._idem_put(db, idem, response)
        return response

    def live_finetune_ids(self) -> set[str]:
        return {r[0] for r in self._all("SELECT finetune_id FROM finetunes WHERE deleted_at_ms IS NULL")}

    # --- steps and metrics --------------------------------------------------------------

    def commit_step(self, finetune_id: str, step: int, lr: float, rl_groups: int, sft_groups: int,
                    figures: dict[str, float | None], response: dict, idem: Idem | None) -> None:
        """Record applied step ``step`` (its weights are already on disk) and advance the counter."""
        with self.tx() as db:
            t = now_ms()
            db.execute("INSERT INTO steps VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (finetune_id, step, t, lr, rl_groups, sft_groups, *(figures.get(k) for k in STEP_FIGURES)))
            db.execute("UPDATE finetunes SET step=?, updated_at_ms=? WHERE finetune_id=?", (step, t, finetune_id))
            self._idem_put(db, idem, response)

    def list_steps(self, finetune_id: str, limit: int, cursor: str | None) -> dict:
        after = decode_cursor(cursor, "s") or 0
        rows = self._all("SELECT * FROM steps WHERE finetune_id=? AND step>? ORDER BY step LIMIT ?",
                         finetune_id, after, limit + 1)
        rows, nxt, more = page(rows, limit, lambda r: encode_cursor({"s": r["step"]}))
        steps = [{k: r[k] for k in ("step", "created_at_ms", "lr", "rl_groups", "sft_groups", *STEP_FIGURES)}
                 for r in rows]
        return {"steps": steps, "next_cursor": nxt, "has_more": more}

    def log_metrics(self, finetune_id: str, step: int, metrics: dict[str, float], idem: Idem | None) -> dict:
        def effect(db: sqlite3.Connection) -> dict:
            t = now_ms()
            db.executemany("INSERT INTO metrics (finetune_id, step, name, value, created_at_ms) VALUES (?, ?, ?, ?, ?)",
                           [(finetune_id, step, name, float(value), t) for name, value in metrics.items()])
            return {"ok": True, "step": step, "logged_count": len(metrics)}

        return self.once(idem, effect)

    def list_metrics(self, finetune_id: str, limit: int, cursor: str | None) -> dict:
        after = decode_cursor(cursor, "m") or 0
        rows = self._all("SELECT * FROM metrics WHERE finetune_id=? AND id>? ORDER BY id LIMIT ?",
                         finetune_id, after, limit + 1)
        rows, nxt, more = page(rows, limit, lambda r: encode_cursor({"m": r["id"]}))
        metrics = [{"step": r["step"], "name": r["name"], "value": r["value"], "created_at_ms": r["created_at_ms"]}
                   for r in rows]
        return {"metrics": metrics, "next_cursor": nxt, "has_more": more}

    # --- checkpoints --------------------------------------------------------------------

    def save_checkpoint(self, finetune_id: str, step: int, idem: Idem | None) -> dict:
        """Save ``step`` (idempotent: the same step returns the same checkpoint; a deleted one comes back)."""
        def effect(db: sqlite3.Connection) -> dict:
            t = now_ms()
            row = db.execute("SELECT * FROM checkpoints WHERE finetune_id=? AND step=?", (finetune_id, step)).fetchone()
            if row is None:
                db.execute("INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?, NULL)", (finetune_id, step, new_ulid(), t, t))
            elif row["deleted_at_ms"] is not None:
                db.execute("UPDATE checkpoints SET deleted_at_ms=NULL, updated_at_ms=? WHERE finetune_id=? AND step=?",
                           (t, finetune_id, step))
            row = db.execute("SELECT * FROM checkpoints WHERE finetune_id=? AND step=?", (finetune_id, step)).fetchone()
            return {"ok": True, "checkpoint": checkpoint_info(row)}

        return self.once(idem, effect)

    def checkpoint_state(self, finetune_id: str, step: int) -> str | None:
        """``"saved"``, ``"deleted"`` or None (never saved)."""
        row = self._one("SELECT deleted_at_ms FROM checkpoints WHERE finetune_id=? AND step=?", finetune_id, step)
        if row is None:
            return None
        return "saved" if row["deleted_at_ms"] is None else "deleted"

    def delete_checkpoint(self, finetune_id: str, step: int) -> None:
        with self.tx() as db:
            db.execute("UPDATE checkpoints SET deleted_at_ms=? WHERE finetune_id=? AND step=? AND deleted_at_ms IS NULL",
                       (now_ms(), finetune_id, step))

    def saved_steps(self, finetune_id: str) -> set[int]:
        return {r[0] for r in self._all("SELECT step FROM checkpoints WHERE finetune_id=? AND deleted_at_ms IS NULL",
                                        finetune_id)}

    def list_checkpoints(self, finetune_id: str, limit: int, cursor: str | None) -> dict:
        after = decode_cursor(cursor, "s")
        rows = self._all("SELECT * FROM checkpoints WHERE finetune_id=? AND deleted_at_ms IS NULL AND step>? "
                         "ORDER BY step LIMIT ?", finetune_id, -1 if after is None else after, limit + 1)
        rows, nxt, more = page(rows, limit, lambda r: encode_cursor({"s": r["step"]}))
        return {"checkpoints": [checkpoint_info(r) for r in rows], "next_cursor": nxt, "has_more": more}

    # --- batches ------------------------------------------------------------------------

    def create_batch(self, owner: str, upload_id: str, idem: Idem | None,
                     respond: Callable[[str], dict]) -> dict:
        """A new batch row and ``respond(batch_id)``, once per Idempotency-Key (see :meth:`once`)."""
        def effect(db: sqlite3.Connection) -> dict:
            batch_id = new_ulid()
            db.execute("INSERT INTO batches (batch_id, owner, upload_id, status, created_at_ms) VALUES (?, ?, ?, ?, ?)",
                       (batch_id, owner, upload_id, "uploading", now_ms()))
            return respond(batch_id)

        return self.once(idem, effect)

    def complete_batch(self, batch_id: str, model: str | None, size: int, idem: Idem | None,
                       response: dict) -> dict:
        """Mark an upload complete (status ``chunking``) and record ``response`` under ``idem``, together."""
        def effect(db: sqlite3.Connection) -> dict:
            db.execute("UPDATE batches SET status='chunking', model=?, size=? WHERE batch_id=?", (model, size, batch_id))
            return response

        return self.once(idem, effect)

    def batch(self, owner: str | None, batch_id: Any) -> sqlite3.Row | None:
        if not is_ulid(batch_id):
            return None
        row = self._one("SELECT * FROM batches WHERE batch_id=?", batch_id)
        if row is None or (owner is not None and row["owner"] != owner):
            return None
        return row

    def update_batch(self, batch_id: str, **fields: Any) -> None:
        names = ", ".join(f"{k}=?" for k in fields)
        with self.tx() as db:
            db.execute(f"UPDATE batches SET {names} WHERE batch_id=?", (*fields.values(), batch_id))

    def list_batches(self, owner: str, limit: int, cursor: str | None) -> tuple[list[sqlite3.Row], str | None, bool]:
        after = decode_cursor(cursor, "after") or 0
        rows = self._all("SELECT * FROM batches WHERE owner=? AND status NOT IN ('uploading', 'aborted') AND seq>? "
                         "ORDER BY seq LIMIT ?", owner, after, limit + 1)
        return page(rows, limit, lambda r: encode_cursor({"after": r["seq"]}))

    def unfinished_batches(self) -> list[str]:
        return [r[0] for r in self._all("SELECT batch_id FROM batches WHERE status IN ('chunking', 'processing') ORDER BY seq")]


def _finetune(row: sqlite3.Row) -> Finetune:
    return Finetune(row["finetune_id"], row["owner"], row["name"], row["rank"], row["step"],
                    row["created_at_ms"], row["updated_at_ms"])
