"""The training queue: a finetune's train steps and checkpoint saves, off the kernel's main thread.

A train step on Moondream Cloud takes seconds. A session that sent it from the button's handler
would freeze every panel for that long (the kernel handles one message at a time), so sessions
hand steps to the :class:`TrainQueue` of their finetune and show the next item at once:

* jobs run in the order they were submitted, one in flight, on one worker thread per finetune
  (two sessions on one finetune share it, so their steps never race);
* a job that fails holds the queue (the steps after it wait: order matters for training) until
  :meth:`TrainQueue.retry` or :meth:`TrainQueue.drop`; the session shows it with both buttons;
* listeners hear of every change (a job queued, started, done, failed), from the worker thread.

What a job sends is the session's business (it records its batch in the label store first, with
the Idempotency-Key to re-send it under); the queue only orders and runs.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import MoondreamError, TransportError

__all__ = ["Job", "TrainQueue", "UncertainStep", "batch_job", "queue_for", "resume_batches"]

STATES = ("queued", "running", "done", "failed", "dropped")


class Job:
    """One unit of background work: ``run()`` returns the service's answer (a dict).

    Attributes:
        label: what it is, for the panel ("train step of 4 groups").
        state: ``"queued"``, ``"running"``, ``"done"``, ``"failed"`` or ``"dropped"``.
        result: the answer once done. error: the exception once failed.
        started, finished: ``time.monotonic()`` of each, or None.
    """

    def __init__(self, label: str, run: Callable[[], Any], on_done: Callable[[Any], None] | None = None,
                 on_drop: Callable[[], None] | None = None, meta: Any = None):
        self.label, self._run, self._on_done, self._on_drop, self.meta = label, run, on_done, on_drop, meta
        self.state = "queued"
        self.answered = False  # run() returned (a failure after that was in on_done)
        self.result: Any = None
        self.error: BaseException | None = None
        self.started: float | None = None
        self.finished: float | None = None
        self._event = threading.Event()

    def wait(self, timeout: float | None = None) -> Any:
        """Block until the job is done and return its result.

        Raises:
            the job's error when it failed (the job stays failed: retry it on the queue);
            TimeoutError when ``timeout`` passed first; RuntimeError when it was dropped.
        """
        # The event is set when the job ends (done, failed, dropped) and cleared by a retry before
        # the job is queued again, so a wake-up is never lost; the deadline is one for all waits.
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._event.wait(left):
                raise TimeoutError(f"{self.label}: still {self.state} after {timeout:g} s")
            state = self.state
            if state == "done":
                return self.result
            if state == "failed" and self.error is not None:
                raise self.error
            if state == "dropped":
                raise RuntimeError(f"{self.label}: dropped")

    @property
    def seconds(self) -> float | None:
        """How long it has run (so far, while running)."""
        if self.started is None:
            return None
        return (self.finished or time.monotonic()) - self.started

    def __repr__(self) -> str:
        return f"Job({self.label!r}, {self.state})"


class TrainQueue:
    """Runs jobs in order, one at a time, on a worker thread; a failure holds the queue."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self._jobs: list[Job] = []  # queued, running or failed, in order
        self._cond = threading.Condition()
        self._listeners: list[Callable[[Job], None]] = []
        self._worker: threading.Thread | None = None

    # --- submitting and watching ------------------------------------------------------

    def submit(self, job: Job, *, first: bool = False) -> Job:
        """Queue ``job`` behind the others; it starts when they are done. ``first``: next in line,
        ahead of what is queued (a checkpoint of the step that just landed, before the next step)."""
        with self._cond:
            if first:
                running = 1 if self._jobs and self._jobs[0].state == "running" else 0
                self._jobs.insert(running, job)
            else:
                self._jobs.append(job)
            self._wake()
        self._tell(job)
        return job

    def hold(self, job: Job, error: BaseException) -> Job:
        """Queue ``job`` as failed with ``error``: it runs only when retried (e.g. a step that may
        already have been applied, which only the person can decide to send again)."""
        job.state, job.error = "failed", error
        with self._cond:
            self._jobs.append(job)
            self._cond.notify_all()
        self._tell(job)
        return job

    def listen(self, callback: Callable[[Job], None]) -> Callable[[], None]:
        """Call ``callback(job)`` on each change (from the worker thread); returns an unsubscribe."""
        with self._cond:
            self._listeners.append(callback)

        def unsubscribe() -> None:
            with self._cond:
                if callback in self._listeners:
                    self._listeners.remove(callback)

        return unsubscribe

    @property
    def jobs(self) -> list[Job]:
        """The jobs not yet done: running, queued or failed, in order."""
        with self._cond:
            return list(self._jobs)

    @property
    def failed(self) -> Job | None:
        """The failed job holding the queue, if any."""
        with self._cond:
            return next((j for j in self._jobs if j.state == "failed"), None)

    @property
    def active(self) -> int:
        """Jobs queued or running (failed ones waiting for retry/drop are not work)."""
        with self._cond:
            return sum(1 for j in self._jobs if j.state in ("queued", "running"))

    @property
    def idle(self) -> bool:
        """Nothing will run until someone acts: the queue is empty or a failed job holds it."""
        with self._cond:
            return not self._jobs or self._jobs[0].state == "failed"

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until the queue is :attr:`idle` (done, or held by a failure). Returns False when
        ``timeout`` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._jobs and self._jobs[0].state != "failed":
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left if left is not None else 0.5)
        return True

    # --- failures -----------------------------------------------------------------------

    def retry(self, job: Job | None = None) -> None:
        """Run the failed job (default: the one holding the queue) again, ahead of the rest."""
        with self._cond:
            job = job or self.failed
            if job is None or job.state != "failed":
                return
            job._event.clear()  # before it is queued again: a waiter then waits for the new end
            job.state, job.error = "queued", None
            self._wake()
        self._tell(job)

    def drop(self, job: Job | None = None) -> None:
        """Give up on a failed or queued job (default: the failed one); the queue goes on."""
        with self._cond:
            job = job or self.failed
            if job is None or job not in self._jobs or job.state == "running":
                return
            self._jobs.remove(job)
            job.state = "dropped"
            self._cond.notify_all()
            self._wake()
        if job._on_drop is not None:
            job._on_drop()
        job._event.set()
        self._tell(job)

    # --- the worker ---------------------------------------------------------------------

    def _wake(self) -> None:
        """(Under the lock.) Start the worker if there is runnable work and none is running."""
        self._cond.notify_all()
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._work, name=f"mdnb-train-{self.name}", daemon=True)
            self._worker.start()

    def _next(self) -> Job | None:
        with self._cond:
            while True:
                if not self._jobs or self._jobs[0].state == "failed":
                    self._worker = None
                    return None
                job = self._jobs[0]
                if job.state == "queued":
                    job.state, job.started, job.finished = "running", time.monotonic(), None
                    return job
                self._cond.wait(0.5)

    def _work(self) -> None:
        while (job := self._next()) is not None:
            self._tell(job)
            try:
                if not job.answered:  # a retry after the answer came (recording it failed) only records
                    job.result, job.answered = job._run(), True
                if job._on_done is not None:
                    job._on_done(job.result)
            except BaseException as exc:  # reaches the panel; the queue holds until retry/drop
                with self._cond:
                    job.state, job.error, job.finished = "failed", exc, time.monotonic()
                    self._cond.notify_all()
                job._event.set()
                self._tell(job)
                continue
            with self._cond:
                job.state, job.finished = "done", time.monotonic()
                if job in self._jobs:
                    self._jobs.remove(job)
                self._cond.notify_all()
            job._event.set()
            self._tell(job)

    def _tell(self, job: Job) -> None:
        with self._cond:
            listeners = list(self._listeners)
        for callback in listeners:
            try:
                callback(job)
            except Exception:  # a broken display must not stop training
                pass


_queues: dict[tuple[str, str], TrainQueue] = {}
_queues_lock = threading.Lock()


def queue_for(ft: Any) -> TrainQueue:
    """The one queue of a finetune in this process (by endpoint and id), created on first use."""
    key = (str(getattr(ft, "endpoint", "")), str(ft.finetune_id))
    with _queues_lock:
        if key not in _queues:
            _queues[key] = TrainQueue(str(ft.finetune_id)[-6:])
        return _queues[key]


class UncertainStep(MoondreamError):
    """A train step was sent but its answer never came (the kernel stopped), and the service is not
    known to recognise a repeated Idempotency-Key: sending it again might train on it twice."""


def batch_job(label: str, ft: Any, lr: float, *, store: Any = None, batch: Any = None,
              groups: Sequence[dict] | None = None, image_of: Callable[[str], Any] | None = None,
              on_result: Callable[[dict], None] | None = None) -> Job:
    """The job that sends one train step: ``groups`` (or the recorded ``batch``'s groups with
    ``image_of(image_id)`` putting the images back), under the batch's Idempotency-Key.

    With a ``store`` and ``batch``: the batch is marked sent just before sending and, when the
    answer comes, saved as a step and removed in one transaction; dropping the job forgets it.
    Then ``on_result(result)`` (once, whatever is retried). An answer lost after sending (a timeout,
    a dropped connection) from a service not known to record keys fails as :class:`UncertainStep`:
    a retry may then train twice, and the person is told so.
    """
    key = batch.key if batch is not None else str(uuid.uuid4())
    progress = {"recorded": False, "notified": False}

    def run() -> dict:
        sent = list(groups) if groups is not None else batch.train_groups(image_of)
        if store is not None:
            store.batch_sent(batch.id)  # from here on the service may have applied it
        try:
            return ft.train_step(sent, lr=lr, idempotency_key=key)
        except TransportError as exc:
            if exc.sent and not getattr(ft, "honours_idempotency", None):
                raise UncertainStep(f"its answer was lost ({exc}); the service may have applied it, and it is "
                                    "not known to recognise the repeated Idempotency-Key: retry may train on it "
                                    "twice, drop forgets it") from exc
            raise

    def done(result: dict) -> None:
        if store is not None and not progress["recorded"]:
            store.batch_done(batch.id, result)
            if getattr(ft, "honours_idempotency", None):  # remembered for a resume after a restart
                store.set_state(honours_key(ft), True)
        progress["recorded"] = True
        if on_result is not None and not progress["notified"]:
            progress["notified"] = True
            on_result(result)

    def dropped() -> None:
        if store is not None and not progress["recorded"]:
            store.drop_batch(batch.id)

    return Job(label, run, done, dropped, meta=(store.key if store is not None else None,
                                                batch.id if batch is not None else key))


def honours_key(ft: Any) -> str:
    """The label store's state key for "this endpoint records Idempotency-Keys"."""
    return f"service/{getattr(ft, 'endpoint', '')}/honours_idempotency"


def resume_batches(queue: TrainQueue, store: Any, ft: Any, source: str, has_image: Callable[[str], bool],
                   make_job: Callable[[Any], Job]) -> int:
    """Queue the batches of ``source`` a previous session recorded and never saw answered.

    Never sent: queued. Sent, answer lost: queued again under the same key where the service is
    known to record keys (``ft.honours_idempotency``, or remembered in the store from an earlier
    answer), else held for the person to retry or drop (:class:`UncertainStep`). Batches with
    images this dataset lacks belong to another session (another notebook on the same store and
    finetune) and are left alone, as are those this process is still sending.

    Returns:
        How many batches were left alone for another dataset.
    """
    in_queue = {job.meta for job in queue.jobs}
    honours = getattr(ft, "honours_idempotency", None) or store.get_state(honours_key(ft), False)
    others = 0
    for batch in store.batches(ft.finetune_id, source=source):
        if (store.key, batch.id) in in_queue:
            continue
        if any(i is not None and not has_image(i) for i in batch.image_ids):
            others += 1
            continue
        job = make_job(batch)
        if batch.state == "queued" or honours:
            queue.submit(job)
        else:
            queue.hold(job, UncertainStep(
                "it was in flight when the kernel stopped, and this service may have applied it; retry "
                "sends it again (with the same Idempotency-Key), drop forgets it"))
    return others
