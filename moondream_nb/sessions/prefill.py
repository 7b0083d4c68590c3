"""The model's answer for the next item, fetched one item ahead on a worker thread, so moving on
in a labeling session does not wait for a model call (a round trip to Moondream Cloud)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ..data import Item


class Prefetch:
    """``answer(item)`` computed ahead, keyed by the item and ``version()`` (e.g. the finetune's
    step: an answer from before a train step is stale and not used).

    Args:
        answer: ``item -> value``; its exceptions reach :meth:`get`.
        version: the current version of what answers (hashable).
    """

    def __init__(self, answer: Callable[[Item], Any], version: Callable[[], Hashable]) -> None:
        self._answer, self._version = answer, version
        self._pool: ThreadPoolExecutor | None = None
        self._futures: dict[tuple[str, Hashable], Future] = {}
        self._lock = threading.Lock()

    def _key(self, item: Item) -> tuple[str, Hashable]:
        return item.image_id, self._version()

    def ahead(self, item: Item | None) -> None:
        """Start computing ``item``'s answer in the background (no-op for None or when started)."""
        if item is None:
            return
        key = self._key(item)
        with self._lock:
            if key in self._futures:
                return
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mdnb-prefill")
            # Only the newest look-ahead matters: drop the others (a running call still finishes).
            for old in [k for k in self._futures if k[0] != item.image_id]:
                self._futures.pop(old).cancel()
            self._futures[key] = self._pool.submit(self._answer, item)

    def ready(self, item: Item) -> bool:
        """Whether ``item``'s answer for the current version is computed."""
        with self._lock:
            future = self._futures.get(self._key(item))
        return future is not None and future.done()

    def get(self, item: Item) -> Any:
        """``item``'s answer: the one computed ahead when it is current (waiting for it if it is
        still running), else computed now."""
        with self._lock:
            future = self._futures.pop(self._key(item), None)
        if future is not None and not future.cancelled():
            return future.result()
        return self._answer(item)

    def close(self) -> None:
        """Stop the worker (a running call finishes first)."""
        with self._lock:
            pool, self._pool = self._pool, None
            self._futures.clear()
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
