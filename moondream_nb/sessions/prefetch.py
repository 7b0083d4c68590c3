"""The model's answers for the next items, fetched ahead on worker threads, so moving on in a
labeling session never waits for a model call (a second or more on Moondream Cloud)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ..data import Item
from .lookahead import Lookahead


class Prefetch:
    """``answer(item)`` computed ahead for the items asked for, newest wishes first.

    An answer is tagged with ``version()`` (the finetune's step) when its call starts; it is
    used while the version has moved on by at most ``max_staleness`` (an SFT step landing while
    you label does not throw away the answers fetched for the next items).

    Args:
        answer: ``item -> value``; its exceptions reach :meth:`peek` / the callbacks.
        version: the current version of what answers (an int, or None when it never changes).
        lookahead: measures each call (its latency sets how far ahead the session asks).
        max_staleness: how many versions an answer may lag.
        workers: calls in flight at once.
    """

    def __init__(self, answer: Callable[[Item], Any], version: Callable[[], int | None], *,
                 lookahead: Lookahead | None = None, max_staleness: int = 1, workers: int = 2) -> None:
        self._answer, self._version, self.max_staleness = answer, version, max_staleness
        self.lookahead = lookahead or Lookahead(4)
        self._workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._futures: dict[str, tuple[Future, int | None]] = {}
        self._waiting: dict[str, list[Callable[[Any], None]]] = {}
        self._lock = threading.Lock()

    def _fresh(self, made: int | None) -> bool:
        now = self._version()
        return made is None or now is None or now - made <= self.max_staleness

    def _call(self, item: Item, _made: int | None) -> Any:
        started = time.monotonic()
        try:
            return self._answer(item)
        finally:
            self.lookahead.call_took(time.monotonic() - started)

    def ahead(self, items: Sequence[Item]) -> None:
        """Have answers for ``items`` computed (those not started yet are cancelled when no
        longer asked for)."""
        with self._lock:
            wanted = {it.image_id for it in items}
            for image_id in [k for k, (f, _) in self._futures.items() if k not in wanted and not f.running()]:
                if image_id not in self._waiting:
                    self._futures.pop(image_id)[0].cancel()
            for item in items:
                self._ensure(item)

    def _ensure(self, item: Item) -> Future:
        """(Under the lock.) The future of ``item``'s fresh answer, started if needed."""
        known = self._futures.get(item.image_id)
        if known is not None and not known[0].cancelled() and self._fresh(known[1]):
            return known[0]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="mdnb-prefill")
        made = self._version()
        future = self._pool.submit(self._call, item, made)
        self._futures[item.image_id] = (future, made)
        future.add_done_callback(lambda f, i=item.image_id: self._done(i, f))
        return future

    def peek(self, item: Item) -> tuple[bool, Any]:
        """``(True, answer)`` when a fresh answer for ``item`` is ready, else ``(False, None)``.

        Raises:
            the call's exception, when it failed.
        """
        with self._lock:
            known = self._futures.get(item.image_id)
        if known is None or not known[0].done() or known[0].cancelled() or not self._fresh(known[1]):
            return False, None
        return True, known[0].result()

    def when_ready(self, item: Item, callback: Callable[[Any], None]) -> None:
        """Call ``callback(answer)`` once ``item``'s answer is computed (from a worker thread;
        at once if it is ready). The answer of a failed call is its exception."""
        with self._lock:
            future = self._ensure(item)
            if not future.done():
                self._waiting.setdefault(item.image_id, []).append(callback)
                return
        callback(_outcome(future))

    def _done(self, image_id: str, future: Future) -> None:
        with self._lock:
            current = self._futures.get(image_id)
            if current is None or current[0] is not future:  # replaced by a fresher call
                return
            callbacks = self._waiting.pop(image_id, [])
        if future.cancelled():
            return
        for callback in callbacks:
            callback(_outcome(future))

    def close(self) -> None:
        """Stop the workers (a running call finishes first)."""
        with self._lock:
            pool, self._pool = self._pool, None
            self._futures.clear()
            self._waiting.clear()
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def _outcome(future: Future) -> Any:
    error = future.exception()
    return error if error is not None else future.result()
