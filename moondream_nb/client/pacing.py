"""Pacing: one account's requests spaced out so a rate limit is met instead of hit.

Moondream Cloud limits each API key (2 requests/s on the default tier, 10/s on a funded one) and
answers 429 beyond it. Retrying each 429 on its own turns concurrency (``rollout_stream`` workers,
prefetchers, a training queue) into a storm of 429s. Instead every client in this process that
talks to the same origin with the same key shares one :class:`Pacer`, which

* learns the limit from the first 429: ``RateLimit-Policy: <n>;w=<seconds>`` when the server sends
  it, else the number of requests that got through in the second before (those that started in it
  and were not refused);
* holds every thread until ``Retry-After`` has passed, then starts requests no closer together than
  the learned interval (threads queue for their turn, first come first served);
* forgets the limit a minute after the last 429 (a limit that was lifted, or the server's own
  momentary saturation, does not slow the session forever).

Several processes with the same key (two kernels) each pace themselves: together they exceed
the limit, meet 429s, and each learns a share from what got through.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping

WINDOW = 1.0  # seconds: the window a limit without a policy header is assumed to count over
FORGET_AFTER = 60.0
_POLICY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:;.*?\bw\s*=\s*(\d+(?:\.\d+)?))?")


def policy_interval(headers: Mapping[str, str]) -> float | None:
    """Seconds between requests from a ``RateLimit-Policy`` (or ``X-RateLimit-Policy``) header."""
    value = headers.get("RateLimit-Policy") or headers.get("X-RateLimit-Policy")
    match = _POLICY.match(value or "")
    if not match or float(match[1]) <= 0:
        return None
    return float(match[2] or 1.0) / float(match[1])


class Pacer:
    """Spaces request starts for one (origin, key), across threads.

    Call :meth:`wait` before each attempt and :meth:`observe` with each answer's status.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self.interval = 0.0  # learned spacing; 0: not pacing
        self._next = 0.0  # earliest start of the next request
        self._last_429 = -float("inf")
        self._starts: deque[float] = deque()  # recent request starts
        self._refused: deque[float] = deque()  # starts of recent requests answered 429

    @property
    def rate(self) -> float | None:
        """The learned requests per second, or None when not pacing."""
        return 1.0 / self.interval if self.interval else None

    def wait(self) -> float:
        """Block until this thread may start a request; returns its start time (pass it to observe)."""
        with self._lock:
            now = self._clock()
            if self.interval and now - self._last_429 > FORGET_AFTER:
                self.interval = 0.0
            start = max(now, self._next)
            if self.interval:
                self._next = start + self.interval
            self._starts.append(start)
            self._trim(now)
        if start > now:
            self._sleep(start - now)
        return start

    def observe(self, started: float, status: int, headers: Mapping[str, str],
                retry_after: float | None = None) -> None:
        """Learn from an answer: a 429 sets the pace and holds everyone for ``retry_after``."""
        if status != 429:
            return
        with self._lock:
            now = self._clock()
            self._last_429 = now
            self._refused.append(started)
            self._trim(now)
            interval = policy_interval(headers)
            if interval is None:
                since = now - WINDOW
                passed = sum(1 for t in self._starts if t >= since) - sum(1 for t in self._refused if t >= since)
                interval = WINDOW / max(1, passed)
            # Only ever slower within an episode: a later 429 may come from a request sent before
            # the pace was set, and says the pace was too fast, never too slow.
            self.interval = max(self.interval, interval)
            hold = now + (retry_after if retry_after is not None else self.interval)
            self._next = max(self._next, hold)

    def _trim(self, now: float) -> None:
        for q in (self._starts, self._refused):
            while q and q[0] < now - 2 * WINDOW:
                q.popleft()


_pacers: dict[tuple, Pacer] = {}
_pacers_lock = threading.Lock()


def pacer_for(origin: tuple, api_key: str | None) -> Pacer:
    """The process-wide pacer of one origin and key (anonymous requests share one per origin)."""
    import hashlib

    who = hashlib.sha256(api_key.encode("utf-8", "surrogateescape")).hexdigest() if api_key else ""
    with _pacers_lock:
        return _pacers.setdefault((origin, who), Pacer())


def forget_all() -> None:
    """Forget every learned limit in this process (a new account tier, or between tests)."""
    with _pacers_lock:
        _pacers.clear()
