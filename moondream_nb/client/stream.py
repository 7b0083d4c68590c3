"""Concurrent calls over a lazy input, yielded as they complete (or in input order).

This is the machinery behind ``Finetune.rollout_stream``. Guarantees:

* at most ``max_concurrency`` calls in flight, and at most ``buffer_size + max_concurrency``
  inputs taken but not yet handed to the consumer (back-pressure, in both orders);
* the context of each item is passed through untouched;
* the first error (from a call or from the input iterator) stops the workers from starting
  anything new and is re-raised to the consumer after the results that precede it;
* closing the generator (``break``) stops new calls at once and joins every worker before
  ``close()`` returns; a worker in the middle of a call finishes that call first.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from ..errors import ValidationError

_POLL = 0.05  # seconds; how quickly idle workers notice a stop


class _Failure:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class _Progress:
    """Calls ``progress(done, total)`` or draws a one-line ``\\r`` bar on stderr."""

    def __init__(self, progress: bool | Callable[[int, int | None], Any], total: int | None, label: str):
        self.callback = progress if callable(progress) else None
        self.enabled = bool(progress)
        self.total, self.label, self.start, self.drawn = total, label, time.monotonic(), False

    def update(self, done: int) -> None:
        if self.callback is not None:
            self.callback(done, self.total)
        elif self.enabled:
            rate = done / max(time.monotonic() - self.start, 1e-9)
            of = f"/{self.total}" if self.total is not None else ""
            sys.stderr.write(f"\r{self.label}: {done}{of} done, {rate:.1f}/s ")
            sys.stderr.flush()
            self.drawn = True

    def finish(self) -> None:
        if self.drawn:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _check_positive(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(f"{name}: must be an integer >= 1 (got {value!r})", param=name)


def stream_calls(
    call: Callable[..., Any],
    items: Iterable[tuple[Any, Mapping[str, Any]]],
    *,
    max_concurrency: int = 4,
    buffer_size: int = 8,
    ordered: bool = False,
    progress: bool | Callable[[int, int | None], Any] = False,
    label: str = "rollouts",
    thread_name: str = "moondream-nb-stream",
) -> Iterator[tuple[Any, Any]]:
    """Run ``call(**kwargs)`` for each ``(context, kwargs)`` of ``items`` on worker threads.

    Yields ``(context, result)``; raises the first error. See the module docstring.
    Arguments are checked when this function is called, not on first iteration.
    """
    _check_positive(max_concurrency, "max_concurrency")
    _check_positive(buffer_size, "buffer_size")
    total = len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]
    return _run(call, iter(items), max_concurrency, buffer_size, ordered,
                _Progress(progress, total, label), thread_name)


def _run(call, source: Iterator, max_concurrency: int, buffer_size: int, ordered: bool,
         progress: _Progress, thread_name: str) -> Iterator[tuple[Any, Any]]:
    cond = threading.Condition()
    slots = threading.Semaphore(buffer_size + max_concurrency)
    source_lock = threading.Lock()
    stop = threading.Event()
    ready: dict[int, Any] = {}      # ordered: index -> (context, result) or _Failure
    queue: deque = deque()          # unordered: completion order
    state = {"next_index": 0, "failed_at": None, "live": max_concurrency}

    def publish(index: int, item: Any) -> None:
        with cond:
            failed_at = state["failed_at"]
            if isinstance(item, _Failure):
                if failed_at is not None and failed_at <= index:
                    return  # an earlier failure is what the consumer will see
                state["failed_at"] = index
                stop.set()
            elif failed_at is not None and (not ordered or index > failed_at):
                return  # results after the failure are dropped
            if ordered:
                ready[index] = item
            else:
                queue.append(item)
            cond.notify_all()

    def take_slot() -> bool:
        while not stop.is_set():
            if slots.acquire(timeout=_POLL):
                return True
        return False

    def worker() -> None:
        try:
            while take_slot():
                with source_lock:
                    if stop.is_set():
                        return
                    index = state["next_index"]
                    try:
                        item = next(source)
                    except StopIteration:
                        return
                    except BaseException as exc:  # the input iterator failed
                        state["next_index"] += 1
                        publish(index, _Failure(exc))
                        return
                    state["next_index"] += 1
                try:
                    context, kwargs = _unpack(item, index)
                    result = call(**kwargs)
                except BaseException as exc:
                    publish(index, _Failure(exc))
                    return
                publish(index, (context, result))
        finally:
            with cond:
                state["live"] -= 1
                cond.notify_all()

    threads = [threading.Thread(target=worker, name=f"{thread_name}-{i}", daemon=True)
               for i in range(max_concurrency)]
    for t in threads:
        t.start()

    done = 0
    try:
        emitted = 0
        while True:
            with cond:
                while True:
                    if ordered and emitted in ready:
                        item = ready.pop(emitted)
                        break
                    if not ordered and queue:
                        item = queue.popleft()
                        break
                    if state["live"] == 0:
                        return
                    cond.wait(_POLL)  # a timeout keeps Ctrl-C responsive
            emitted += 1
            if isinstance(item, _Failure):
                raise item.error
            slots.release()
            done += 1
            progress.update(done)
            yield item
    finally:
        stop.set()
        for t in threads:
            t.join()
        progress.finish()


def _unpack(item: Any, index: int) -> tuple[Any, Mapping[str, Any]]:
    if not isinstance(item, tuple) or len(item) != 2 or not isinstance(item[1], Mapping):
        raise ValidationError(
            f"requests[{index}]: must be a (context, kwargs) tuple with kwargs a dict of rollouts() "
            f"arguments (got {type(item).__name__})",
            param=f"requests[{index}]",
        )
    return item[0], item[1]
