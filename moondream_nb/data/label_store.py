"""The label store: every label, item status, reward and train-step result, on disk as it is made.

One SQLite file (WAL journal, ``synchronous=FULL``): each call that writes commits before it
returns, so once a method returns the data survives a kernel restart, a crash or a killed
process. Reopening the same file resumes: which items are done or skipped, the next one to do,
saved session state. Everything is keyed by the dataset's stable ``image_id``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, Sequence

from .. import protocol
from ..errors import ValidationError
from .labels import Label

__all__ = ["BatchRecord", "LabelStore", "Progress", "RewardRecord", "StepRecord"]

SCHEMA_VERSION = 2  # v2: train batches (v1 files are upgraded in place)
STATUSES = ("done", "skipped")
_IMAGE_KEYS = ("image", "image_url")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS labels (
    image_id TEXT NOT NULL, skill TEXT NOT NULL, prompt TEXT NOT NULL, refs TEXT NOT NULL DEFAULT '',
    target TEXT NOT NULL, meta TEXT NOT NULL DEFAULT '{}', seq INTEGER NOT NULL, updated_at REAL NOT NULL,
    PRIMARY KEY (image_id, skill, prompt, refs));
CREATE INDEX IF NOT EXISTS labels_by_seq ON labels (seq);  -- MAX(seq) per put: a lookup, not a scan
CREATE TABLE IF NOT EXISTS items (
    image_id TEXT PRIMARY KEY, status TEXT NOT NULL, updated_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS items_by_time ON items (updated_at);  -- the last marks, for the rate
CREATE TABLE IF NOT EXISTS rewards (
    id INTEGER PRIMARY KEY AUTOINCREMENT, image_id TEXT, request TEXT NOT NULL, rollouts TEXT NOT NULL,
    rewards TEXT NOT NULL, source TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS steps (
    id INTEGER PRIMARY KEY AUTOINCREMENT, finetune_id TEXT, step INTEGER, result TEXT NOT NULL,
    created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY AUTOINCREMENT, finetune_id TEXT NOT NULL, idempotency_key TEXT NOT NULL,
    groups TEXT NOT NULL, image_ids TEXT NOT NULL, lr REAL NOT NULL, source TEXT NOT NULL,
    state TEXT NOT NULL, created_at REAL NOT NULL, sent_at REAL);
"""


@dataclass(frozen=True)
class Progress:
    """How far a dataset is: ``done`` + ``skipped`` of ``total``; ``rate`` = items marked per
    minute over the recent marks (None with fewer than two)."""

    done: int
    skipped: int
    total: int
    rate: float | None = None

    @property
    def remaining(self) -> int:
        return self.total - self.done - self.skipped

    @property
    def fraction(self) -> float:
        return (self.done + self.skipped) / self.total if self.total else 1.0

    def __str__(self) -> str:
        rate = f", {self.rate:.1f}/min" if self.rate else ""
        return f"{self.done} done, {self.skipped} skipped of {self.total} ({self.fraction:.0%}{rate})"


@dataclass(frozen=True)
class RewardRecord:
    """Rewards given to one request's rollouts (an RL group without its image)."""

    id: int
    image_id: str | None
    request: dict
    rollouts: list
    rewards: list[float]
    source: str
    created_at: float

    def group(self, image: Any = None) -> dict:
        """The RL group for ``train_step``; pass the item's image (it was not stored)."""
        request = _with_image(self.request, image) if image is not None else dict(self.request)
        return {"mode": "rl", "request": request, "rollouts": self.rollouts, "rewards": list(self.rewards)}


@dataclass(frozen=True)
class StepRecord:
    """One train-step response as it was received."""

    id: int
    finetune_id: str | None
    step: int | None
    result: dict
    created_at: float


@dataclass(frozen=True)
class BatchRecord:
    """The groups of one train step, recorded before it is sent, so a crash loses none of them.

    Attributes:
        key: the step's ``Idempotency-Key``: re-sending with it is answered with the first
            result by a service that records keys, instead of training twice.
        groups: the train-step groups without their images; ``image_ids[i]`` says whose image
            group ``i`` had (None: it had none).
        state: ``"queued"`` (never sent: safe to send) or ``"sent"`` (sent, no answer recorded:
            the service may have applied it).
    """

    id: int
    finetune_id: str
    key: str
    groups: list
    image_ids: list
    lr: float
    source: str
    state: str
    created_at: float
    sent_at: float | None

    def train_groups(self, image_of: Any) -> list[dict]:
        """The groups ready for ``train_step``: ``image_of(image_id)`` puts each image back."""
        out = []
        for group, image_id in zip(self.groups, self.image_ids):
            group = dict(group)
            if image_id is not None:
                group["request"] = _with_image(group["request"], image_of(image_id))
            out.append(group)
        return out


def _with_image(request: Mapping[str, Any], image: Any) -> dict:
    """``request`` with ``image`` where it was stripped from (a full /rollouts body: its inner request)."""
    return protocol.replace_skill_request(request, lambda req: {**req, "image": image})


def _dumps(value: Any, what: str) -> str:
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{what}: must be JSON-serializable ({exc})", param=what) from exc


def _strip_images(request: Mapping[str, Any]) -> dict:
    """A request without its image (the image id says which one); nested /rollouts bodies too."""
    return protocol.replace_skill_request(request, lambda req: {k: v for k, v in req.items() if k not in _IMAGE_KEYS})


class LabelStore:
    """Labels and session progress in one SQLite file.

    Args:
        path: the database file (created with its folder if needed), e.g. ``"labels.sqlite"``.

    Use as a context manager or call :meth:`close`. Safe to share between threads (one lock)
    and between processes (SQLite locking; ``timeout`` seconds of waiting for a writer).
    """

    def __init__(self, path: str | os.PathLike, *, timeout: float = 10.0) -> None:
        self.path = os.fspath(path)
        self.key = os.path.realpath(self.path)  # the same file however its path is written
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        self._lock = threading.RLock()
        # The items table mirrored in memory ({image_id: status}) with per-dataset tallies, so
        # next_item and progress cost O(1) per call, not O(items). Rebuilt when another connection
        # wrote the file (PRAGMA data_version moves), updated in place by our own commits.
        self._marks: dict[str, str] | None = None
        self._marks_version: int | None = None
        self._tallies: dict[int, _Tally] = {}
        self._changes: list[tuple[str, str | None]] = []  # item marks of the open transaction
        # isolation_level=None: we open every transaction ourselves (BEGIN IMMEDIATE), so a
        # write is one explicit transaction that is committed — and fsynced — before we return.
        self._conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            with self._write() as cur:
                version = cur.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise ValidationError(f"{self.path}: label store schema v{version} is newer than this "
                                          f"moondream-nb understands (v{SCHEMA_VERSION}); upgrade moondream-nb")
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        cur.execute(statement)
                cur.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            self.close()
            raise ValidationError(f"{self.path}: not a label store ({exc})") from exc
        except BaseException:
            self.close()
            raise

    # -- plumbing --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction: committed (and so fsynced) when the block ends, rolled back on error."""
        with self._lock:
            if self._conn is None:
                raise ValidationError("the label store is closed")
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            self._changes = []
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                self._changes = []
                raise
            else:
                cur.execute("COMMIT")
                changes, self._changes = self._changes, []
                for image_id, status in changes:
                    self._mirror(image_id, status)
            finally:
                cur.close()

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        with self._lock:
            if self._conn is None:
                raise ValidationError("the label store is closed")
            return self._conn.execute(sql, args).fetchall()

    def close(self) -> None:
        """Close the database (everything is already on disk)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None  # type: ignore[assignment]

    def __enter__(self) -> "LabelStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._conn is None:
            return f"LabelStore({self.path!r}, closed)"
        return f"LabelStore({self.path!r}, {len(self)} labels, {len(self.statuses())} items marked)"

    # -- labels ----------------------------------------------------------------------------

    def put(self, label: Label, *, done: bool = False, state: Mapping[str, Any] | None = None) -> None:
        """Save ``label``, replacing the one with the same key (image, skill, prompt, refs).

        ``done``: also mark its item done; ``state``: session state to write — in the same
        transaction, so a crash cannot leave an item done that no session will train on.
        """
        self.put_many([label], done=done, state=state)

    def put_many(self, labels: Iterable[Label], *, done: bool = False, state: Mapping[str, Any] | None = None) -> int:
        """Save several labels in one transaction (all or none; ``done``/``state`` as for
        :meth:`put`). Returns how many."""
        rows = []
        now = time.time()
        for lb in labels:
            if not isinstance(lb, Label):
                raise ValidationError(f"expected a Label, not {type(lb).__name__}", param="label")
            rows.append((*lb.key, _dumps(lb.target, "target"), _dumps(lb.meta, "meta"), now))
        with self._write() as cur:
            seq = cur.execute("SELECT COALESCE(MAX(seq), 0) FROM labels").fetchone()[0]
            for k, row in enumerate(rows):
                cur.execute(
                    "INSERT INTO labels (image_id, skill, prompt, refs, target, meta, updated_at, seq) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (image_id, skill, prompt, refs) DO UPDATE SET "
                    "target=excluded.target, meta=excluded.meta, updated_at=excluded.updated_at, seq=excluded.seq",
                    (*row, seq + k + 1))
                if done:
                    self._mark(cur, row[0], "done")
            for key, value in (state or {}).items():
                self._set_state(cur, key, value)
        return len(rows)

    def delete(self, label: Label) -> bool:
        """Remove the label with ``label``'s key. Returns whether one was there."""
        with self._write() as cur:
            cur.execute("DELETE FROM labels WHERE image_id=? AND skill=? AND prompt=? AND refs=?", label.key)
            return cur.rowcount > 0

    def labels(self, image_id: str | None = None, *, skill: str | None = None,
               prompt: str | None = None) -> list[Label]:
        """Saved labels, oldest save first, filtered by image, skill and prompt when given."""
        where, args = [], []
        for column, value in (("image_id", image_id), ("skill", skill), ("prompt", prompt)):
            if value is not None:
                where.append(f"{column}=?")
                args.append(value)
        sql = "SELECT image_id, skill, prompt, refs, target, meta FROM labels"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self._read(sql + " ORDER BY seq", args)
        return [Label(i, s, p, json.loads(t), [tuple(r) for r in json.loads(refs)] if refs else None, json.loads(m))
                for i, s, p, refs, t, m in rows]

    def __len__(self) -> int:
        return self._read("SELECT COUNT(*) FROM labels")[0][0]

    def __iter__(self) -> Iterator[Label]:
        return iter(self.labels())

    def labelled_ids(self) -> set[str]:
        """Ids of the images that have at least one label."""
        return {r[0] for r in self._read("SELECT DISTINCT image_id FROM labels")}

    # -- item status and resuming ----------------------------------------------------------

    def mark(self, image_id: str, status: str = "done") -> None:
        """Record that the item is ``"done"`` or ``"skipped"`` (replaces an earlier mark)."""
        if status not in STATUSES:
            protocol.fail("status", "must be 'done' or 'skipped'", status)
        with self._write() as cur:
            self._mark(cur, image_id, status)

    def _mark(self, cur: sqlite3.Cursor, image_id: str, status: str) -> None:
        cur.execute("INSERT INTO items (image_id, status, updated_at) VALUES (?, ?, ?) ON CONFLICT (image_id) "
                    "DO UPDATE SET status=excluded.status, updated_at=excluded.updated_at",
                    (image_id, status, time.time()))
        self._changes.append((image_id, status))

    def unmark(self, image_id: str) -> None:
        """Forget the item's status (it is pending again); its labels stay."""
        with self._write() as cur:
            cur.execute("DELETE FROM items WHERE image_id=?", (image_id,))
            self._changes.append((image_id, None))

    def _marked(self) -> dict[str, str]:
        """The mirror of the items table (reloaded when another connection changed the file)."""
        with self._lock:
            version = self._read("PRAGMA data_version")[0][0]
            if self._marks is None or version != self._marks_version:
                self._marks = dict(self._read("SELECT image_id, status FROM items"))
                self._marks_version = version
                self._tallies.clear()
            return self._marks

    def _mirror(self, image_id: str, status: str | None) -> None:
        if self._marks is None:
            return
        old = self._marks.pop(image_id, None) if status is None else self._marks.get(image_id)
        if status is not None:
            self._marks[image_id] = status
        for tally in list(self._tallies.values()):
            tally.move(image_id, old, status)

    def _tally(self, dataset: Any) -> "_Tally | None":
        """Done/skipped counts of a Dataset, kept up to date by every mark (None for other sequences)."""
        index = getattr(dataset, "positions", None)
        if not isinstance(index, Mapping):
            return None
        marks = self._marked()
        tally = self._tallies.get(id(dataset))
        if tally is None or tally.ref() is not dataset:
            tally = _Tally(dataset, index, marks)
            key = id(dataset)
            tally.ref = weakref.ref(dataset, lambda _r, k=key: self._tallies.pop(k, None))
            self._tallies[key] = tally
        return tally

    def status(self, image_id: str) -> str | None:
        """``"done"``, ``"skipped"`` or None (pending)."""
        rows = self._read("SELECT status FROM items WHERE image_id=?", (image_id,))
        return rows[0][0] if rows else None

    def statuses(self) -> dict[str, str]:
        """Every marked item: ``{image_id: "done" | "skipped"}``."""
        return dict(self._marked())

    def pending(self, ids: Iterable[Any]) -> list[Any]:
        """The items (or ids) of ``ids`` not yet done or skipped, in order. Accepts a Dataset."""
        marked = self._marked()
        return [x for x in ids if _id_of(x) not in marked]

    def next_item(self, dataset: Sequence[Any], after: str | None = None) -> Any | None:
        """The first pending item of ``dataset`` after the one with id ``after`` (wrapping
        around; from the start when None), or None when every item is done or skipped.

        O(1) per call for a ``Dataset`` whose next item is pending (the usual case); the walk
        past marked items stops at the first pending one."""
        marked = self._marked()
        n = len(dataset)
        index = getattr(dataset, "positions", None)
        if isinstance(index, Mapping):  # a Dataset: positions by id, no list of ids to build
            start = index[after] + 1 if after is not None and after in index else 0
            tally = self._tally(dataset)
            if tally is not None and tally.done + tally.skipped >= n:
                return None
        else:
            ids = [_id_of(x) for x in dataset]
            start = ids.index(after) + 1 if after is not None and after in ids else 0
        with self._lock:
            for k in range(n):
                item = dataset[(start + k) % n]
                if _id_of(item) not in marked:
                    return item
        return None

    def progress(self, dataset: Sequence[Any] | None = None, *, window: int = 20) -> Progress:
        """Done/skipped/total over ``dataset`` (or over everything marked when None), and the
        labelling rate over the last ``window`` marks (of the dataset's items).

        O(1) per call for a ``Dataset`` (its counts are kept as items are marked) plus an
        indexed read of the last marks."""
        marked = self._marked()
        tally = self._tally(dataset) if dataset is not None else None
        if dataset is None:
            done = sum(1 for v in marked.values() if v == "done")
            skipped, total, wanted = len(marked) - done, len(marked), None
        elif tally is not None:
            done, skipped, total, wanted = tally.done, tally.skipped, len(dataset), tally.index
        else:
            wanted = {_id_of(x) for x in dataset}
            statuses = [marked[i] for i in wanted if i in marked]
            done = statuses.count("done")
            skipped, total = len(statuses) - done, len(wanted)
        times: list[float] = []
        offset, batch = 0, max(window, 1) * 4
        while len(times) < window:  # the newest marks first, until `window` of the dataset's
            rows = self._read("SELECT image_id, updated_at FROM items ORDER BY updated_at DESC LIMIT ? OFFSET ?",
                              (batch, offset))
            times += [t for i, t in rows if wanted is None or i in wanted][: window - len(times)]
            if len(rows) < batch:
                break
            offset, batch = offset + batch, batch * 4
        times.reverse()
        rate = (len(times) - 1) / (times[-1] - times[0]) * 60 if len(times) > 1 and times[-1] > times[0] else None
        return Progress(done, skipped, total, rate)

    # -- session state ---------------------------------------------------------------------

    def set_state(self, key: str, value: Any) -> None:
        """Save a JSON-able ``value`` under ``key`` (e.g. the finetune id, the current item)."""
        with self._write() as cur:
            self._set_state(cur, key, value)

    @staticmethod
    def _set_state(cur: sqlite3.Cursor, key: str, value: Any) -> None:
        cur.execute("INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value=excluded.value",
                    (key, _dumps(value, f"state[{key!r}]")))

    def get_state(self, key: str, default: Any = None) -> Any:
        """The value saved under ``key``, else ``default``."""
        rows = self._read("SELECT value FROM state WHERE key=?", (key,))
        return json.loads(rows[0][0]) if rows else default

    # -- rewards and train steps -------------------------------------------------------------

    def add_rewards(self, group: Mapping[str, Any], *, image_id: str | None = None, source: str = "human",
                    done: bool = False, state: Mapping[str, Any] | None = None) -> int:
        """Save an RL group (``request``, ``rollouts``, ``rewards``) as the rewards are given.

        The request's image is not stored (``image_id`` says which it was). source: who scored
        it, e.g. ``"human"`` or ``"ground_truth"``. ``done``: also mark the item done; ``state``:
        session state to write — all in one transaction, so a crash cannot leave an item done
        whose rewards no session will send. ``state`` may be a function of the new record id.
        Returns the record id.
        Raises ValidationError when the group is not a valid RL group (rewards one per rollout, finite).
        """
        protocol.check_dict(group, "group")
        request = _strip_images(protocol.check_dict(group.get("request"), "group.request"))
        view = protocol.validate_group({"mode": "rl", "request": request, "rollouts": group.get("rollouts"),
                                        "rewards": group.get("rewards")}, "group", imageless=True)
        rewards = list(view.rewards)
        with self._write() as cur:
            cur.execute("INSERT INTO rewards (image_id, request, rollouts, rewards, source, created_at) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (image_id, _dumps(request, "request"), _dumps(list(group["rollouts"]), "rollouts"),
                         _dumps(rewards, "rewards"), source, time.time()))
            record_id = int(cur.lastrowid)
            if done and image_id is not None:
                self._mark(cur, image_id, "done")
            values = state(record_id) if callable(state) else (state or {})
            for k, v in values.items():
                self._set_state(cur, k, v)
            return record_id

    def rewards(self, image_id: str | None = None) -> list[RewardRecord]:
        """Saved reward records, oldest first (of one image when given)."""
        sql = "SELECT id, image_id, request, rollouts, rewards, source, created_at FROM rewards"
        rows = self._read(sql + (" WHERE image_id=? ORDER BY id" if image_id is not None else " ORDER BY id"),
                          (image_id,) if image_id is not None else ())
        return [RewardRecord(i, img, json.loads(req), json.loads(ro), json.loads(rw), src, t)
                for i, img, req, ro, rw, src, t in rows]

    def add_step(self, result: Mapping[str, Any], *, finetune_id: str | None = None) -> int:
        """Save a ``train_step`` response (``step``, ``applied``, ``kl``, ...). Returns the record id."""
        with self._write() as cur:
            return self._insert_step(cur, result, finetune_id)

    @staticmethod
    def _insert_step(cur: sqlite3.Cursor, result: Mapping[str, Any], finetune_id: str | None) -> int:
        protocol.check_dict(result, "result")
        step = result.get("step")
        finite = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in result.items()}
        cur.execute("INSERT INTO steps (finetune_id, step, result, created_at) VALUES (?, ?, ?, ?)",
                    (finetune_id, step if protocol.is_int(step) else None, _dumps(finite, "result"), time.time()))
        return int(cur.lastrowid)

    def add_batch(self, finetune_id: str, groups: Sequence[Mapping[str, Any]], image_ids: Sequence[str | None],
                  lr: float, *, key: str | None = None, source: str = "",
                  state: Mapping[str, Any] | None = None) -> BatchRecord:
        """Record the groups of a train step before sending it (``"queued"``); images are stripped.

        Args:
            key: its Idempotency-Key (default: a new one).
            state: session state to write in the same transaction (e.g. the list of scored
                groups not yet in a batch, now empty), so no group is both batched and pending.
        """
        import uuid

        if len(groups) != len(image_ids):
            protocol.fail("image_ids", f"one per group ({len(groups)})", len(image_ids))
        stripped = [dict(g, request=_strip_images(protocol.check_dict(g.get("request"), f"groups[{i}].request")))
                    for i, g in enumerate(groups)]
        key = key or str(uuid.uuid4())
        now = time.time()
        with self._write() as cur:
            cur.execute("INSERT INTO batches (finetune_id, idempotency_key, groups, image_ids, lr, source, state, "
                        "created_at) VALUES (?, ?, ?, ?, ?, ?, 'queued', ?)",
                        (finetune_id, key, _dumps(stripped, "groups"), _dumps(list(image_ids), "image_ids"),
                         float(lr), source, now))
            batch_id = int(cur.lastrowid)
            for k, v in (state or {}).items():
                self._set_state(cur, k, v)
        return BatchRecord(batch_id, finetune_id, key, stripped, list(image_ids), float(lr), source, "queued", now, None)

    def batch_sent(self, batch_id: int) -> None:
        """Mark a batch as sent (call just before sending: from here on it may be applied)."""
        with self._write() as cur:
            cur.execute("UPDATE batches SET state='sent', sent_at=? WHERE id=?", (time.time(), batch_id))

    def batch_done(self, batch_id: int, result: Mapping[str, Any]) -> int:
        """The batch's train step answered: its result is saved as a step and the batch removed,
        in one transaction. Returns the step record id."""
        with self._write() as cur:
            row = cur.execute("SELECT finetune_id FROM batches WHERE id=?", (batch_id,)).fetchone()
            step_id = self._insert_step(cur, result, row[0] if row else None)
            cur.execute("DELETE FROM batches WHERE id=?", (batch_id,))
        return step_id

    def drop_batch(self, batch_id: int) -> None:
        """Forget a batch without training on it (its rewards and labels stay in the store)."""
        with self._write() as cur:
            cur.execute("DELETE FROM batches WHERE id=?", (batch_id,))

    def batches(self, finetune_id: str | None = None, *, source: str | None = None) -> list[BatchRecord]:
        """Batches recorded and not yet answered, oldest first (of one finetune / source when given)."""
        where, args = [], []
        for column, value in (("finetune_id", finetune_id), ("source", source)):
            if value is not None:
                where.append(f"{column}=?")
                args.append(value)
        sql = ("SELECT id, finetune_id, idempotency_key, groups, image_ids, lr, source, state, created_at, sent_at "
               "FROM batches" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id")
        return [BatchRecord(i, f, k, json.loads(g), json.loads(ids), lr, src, st, c, sent)
                for i, f, k, g, ids, lr, src, st, c, sent in self._read(sql, args)]

    def steps(self, finetune_id: str | None = None) -> list[StepRecord]:
        """Saved train-step results, oldest first (of one finetune when given)."""
        sql = "SELECT id, finetune_id, step, result, created_at FROM steps"
        rows = self._read(sql + (" WHERE finetune_id=? ORDER BY id" if finetune_id is not None else " ORDER BY id"),
                          (finetune_id,) if finetune_id is not None else ())
        return [StepRecord(i, f, s, json.loads(r), t) for i, f, s, r, t in rows]


class _Tally:
    """Done and skipped counts of one dataset's items, moved by each mark."""

    def __init__(self, dataset: Any, index: Mapping[str, int], marks: Mapping[str, str]) -> None:
        self.index = index
        self.ref: Any = None
        statuses = ([s for i, s in marks.items() if i in index] if len(marks) < len(index)  # the smaller side
                    else [marks[i] for i in index if i in marks])
        self.done = statuses.count("done")
        self.skipped = len(statuses) - self.done

    def move(self, image_id: str, old: str | None, new: str | None) -> None:
        if image_id not in self.index or old == new:
            return
        for status, step in ((old, -1), (new, 1)):
            if status == "done":
                self.done += step
            elif status == "skipped":
                self.skipped += step


def _id_of(x: Any) -> str:
    return x if isinstance(x, str) else x.image_id
