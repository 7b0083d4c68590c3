"""How far ahead a session fetches: from the latency it measures and the pace of the person."""

from __future__ import annotations

import math
import threading

SMOOTHING = 0.3  # weight of the newest measurement in the moving averages


class Lookahead:
    """Enough requests ahead that a person at their measured pace never waits for a call at its
    measured latency, plus a margin for jitter; never more than ``most``.

    Args:
        most: the bound (memory, and how stale a prefetched answer may get).
        least: fetched ahead even before anything is measured.
        latency: seconds per call assumed until one is measured.
        person: seconds per item assumed until the person is measured (2 s: a fast person takes 1.5).
    """

    def __init__(self, most: int, least: int = 2, latency: float = 1.0, person: float = 2.0) -> None:
        self.most, self.least = most, min(least, most)
        self.latency, self.person = latency, person
        self._lock = threading.Lock()

    def call_took(self, seconds: float) -> None:
        with self._lock:
            self.latency += SMOOTHING * (seconds - self.latency)

    def person_took(self, seconds: float) -> None:
        # A pause (coffee) says nothing about the pace: only plausible item times count.
        if 0.2 <= seconds <= 60:
            with self._lock:
                self.person += SMOOTHING * (seconds - self.person)

    def depth(self) -> int:
        """Requests to have sampled or in flight beyond the one on screen."""
        with self._lock:
            need = math.ceil(self.latency / max(self.person, 0.1)) + 1
        return max(self.least, min(self.most, need))
