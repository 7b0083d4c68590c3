"""Cloud-like mode of the local server: Moondream-Cloud-like latency and a per-key rate limit.

The local server answers in a tenth of what Moondream Cloud takes, which hides how a notebook
behaves for a cloud user. ``moondream-nb serve --latency cloud --rate-limit 2/s`` (or
``serve(latency="cloud", rate_limit="2/s")``) puts both back:

* **Latency**: every answer is held back by a per-endpoint delay (added to the real work, as a
  proxy in front of the server would: the work is done, the answer is on its way), with uniform
  jitter. ``"cloud"`` is roughly what a cloud user sees; a spec such as
  ``"train_step=3,rollouts=0.5,save=1,jitter=0.2"`` sets each kind (missing kinds: no delay).
* **Rate limit**: a token bucket per API key (burst: one second's worth); a request over it gets
  429 with ``Retry-After`` (whole seconds, as HTTP wants) and ``RateLimit-Policy: <n>;w=1``
  (IETF ratelimit-headers draft), before any work is done.

Both are an ASGI middleware around the app, so the routes and the service know nothing of them.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping

KINDS = ("train_step", "rollouts", "save", "inference", "metrics", "read", "other")

#: Roughly what a Moondream Cloud user sees (seconds, before jitter).
CLOUD = {"train_step": 3.0, "rollouts": 1.0, "save": 1.0, "inference": 0.5, "metrics": 0.15, "read": 0.1,
         "other": 0.15}
PROFILES = {"cloud": CLOUD, "none": {}}
DEFAULT_JITTER = 0.2

_INFERENCE = re.compile(r"^/v1/(query|caption|point|detect)$")


def kind_of(method: str, path: str) -> str:
    """Which latency kind a request is (see :data:`KINDS`)."""
    if path.endswith("/train_step"):
        return "train_step"
    if path.endswith("/rollouts"):
        return "rollouts"
    if path.endswith("/checkpoints/save"):
        return "save"
    if _INFERENCE.match(path):
        return "inference"
    if method == "POST" and path.endswith("/metrics"):
        return "metrics"
    if method in ("GET", "HEAD"):
        return "read"
    return "other"


@dataclass(frozen=True)
class Latency:
    """Per-kind delays in seconds and a relative jitter (0.2: each delay drawn from ±20 %)."""

    delays: Mapping[str, float] = field(default_factory=dict)
    jitter: float = DEFAULT_JITTER

    @classmethod
    def parse(cls, spec: "str | Mapping[str, float] | Latency | None") -> "Latency | None":
        """``"cloud"``, ``"none"``, ``"kind=seconds,...[,jitter=f]"`` or a mapping; None stays None.

        Raises:
            ValueError: naming the part of the spec that is wrong.
        """
        if spec is None or isinstance(spec, Latency):
            return spec
        if isinstance(spec, Mapping):
            items = dict(spec)
        else:
            text = str(spec).strip()
            if text in PROFILES:
                return cls(dict(PROFILES[text])) if PROFILES[text] else None
            items = {}
            for part in filter(None, (p.strip() for p in text.split(","))):
                name, sep, value = part.partition("=")
                if not sep:
                    raise ValueError(f"latency: {part!r} is not kind=seconds (kinds: {', '.join(KINDS)}, "
                                     "jitter; or a profile: cloud, none)")
                items[name.strip()] = value.strip()
        jitter = items.pop("jitter", DEFAULT_JITTER)
        delays = {}
        for name, value in items.items():
            if name not in KINDS:
                raise ValueError(f"latency: unknown kind {name!r} (kinds: {', '.join(KINDS)}, jitter)")
            delays[name] = _seconds(value, f"latency: {name}")
        jitter = _seconds(jitter, "latency: jitter")
        if jitter >= 1:
            raise ValueError(f"latency: jitter must be below 1 (got {jitter:g})")
        return cls(delays, jitter)

    def delay(self, kind: str, rng: random.Random = random._inst) -> float:  # type: ignore[attr-defined]
        base = self.delays.get(kind, 0.0)
        return base * rng.uniform(1 - self.jitter, 1 + self.jitter) if base else 0.0

    def __str__(self) -> str:
        parts = [f"{k}={v:g}" for k, v in self.delays.items()]
        return ",".join(parts + [f"jitter={self.jitter:g}"])


def _seconds(value: Any, what: str) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: {value!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{what}: must be a number of seconds >= 0 (got {value!r})")
    return seconds


@dataclass(frozen=True)
class RateLimit:
    """``per_second`` requests per key on average, ``burst`` at once (default: one second's worth)."""

    per_second: float
    burst: float

    @classmethod
    def parse(cls, spec: "str | float | RateLimit | None") -> "RateLimit | None":
        """``"2/s"``, ``"120/min"``, ``"2"`` (per second) or a number; None stays None.

        Raises:
            ValueError: the spec is not a positive rate.
        """
        if spec is None or isinstance(spec, RateLimit):
            return spec
        text = str(spec).strip().lower()
        match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(?:/\s*(s|sec|second|m|min|minute))?", text)
        if not match or float(match[1]) <= 0:
            raise ValueError(f"rate limit: {spec!r} is not a positive rate such as 2/s or 120/min")
        rate = float(match[1]) / (60.0 if (match[2] or "s").startswith("m") else 1.0)
        return cls(rate, max(1.0, rate))


class Buckets:
    """Token buckets keyed by API key; ``take`` answers 0 (go) or the seconds until a token."""

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic):
        self.limit, self.clock = limit, clock
        self._state: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: str) -> float:
        now = self.clock()
        if len(self._state) > 10_000:
            self._forget_full(now)
        tokens, at = self._state.get(key, (self.limit.burst, now))
        tokens = min(self.limit.burst, tokens + (now - at) * self.limit.per_second)
        if tokens >= 1.0:
            self._state[key] = (tokens - 1.0, now)
            return 0.0
        self._state[key] = (tokens, now)
        return (1.0 - tokens) / self.limit.per_second

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled (any header value makes one, a wrong key included)."""
        full = [k for k, (tokens, at) in self._state.items()
                if tokens + (now - at) * self.limit.per_second >= self.limit.burst]
        for k in full:
            del self._state[k]


Send = Callable[[dict], Awaitable[None]]


async def _drain(receive: Any) -> None:
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            return


class CloudLike:
    """ASGI middleware: the rate limit first (a 429 costs no work), then the answer held back by
    the latency of its kind. ``/health`` is exempt from both."""

    def __init__(self, app: Any, latency: Latency | None = None, rate_limit: RateLimit | None = None,
                 auth_header: str = "x-moondream-auth", rng: random.Random | None = None):
        self.app, self.latency = app, latency
        self.buckets = Buckets(rate_limit) if rate_limit is not None else None
        self.auth_header = auth_header.encode()
        self.rng = rng or random.Random()

    def __getattr__(self, name: str) -> Any:  # app.state and friends stay reachable
        return getattr(self.app, name)

    async def __call__(self, scope: dict, receive: Any, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/health":
            await self.app(scope, receive, send)
            return
        if self.buckets is not None:
            key = dict(scope.get("headers") or []).get(self.auth_header)
            wait = self.buckets.take(key.decode("latin-1")) if key else 0.0
            if wait > 0:
                await _drain(receive)  # read the body: the connection stays usable for the next request
                await self._too_many(send, wait)
                return
        delay = self.latency.delay(kind_of(scope["method"], scope["path"]), self.rng) if self.latency else 0.0
        if delay <= 0:
            await self.app(scope, receive, send)
            return
        held = False

        async def late_send(message: dict) -> None:
            nonlocal held
            if not held and message["type"] == "http.response.start":
                held = True
                await asyncio.sleep(delay)
            await send(message)

        await self.app(scope, receive, late_send)

    async def _too_many(self, send: Send, wait: float) -> None:
        limit = self.buckets.limit  # type: ignore[union-attr]
        body = json.dumps({"error": {
            "message": f"rate limit exceeded: {limit.per_second:g} requests per second for this key; "
                       f"retry in {wait:.2f} s",
            "type": "rate_limit_error", "param": None, "code": "rate_limit_exceeded"}}).encode()
        quota = f"{limit.per_second:g};w=1" if limit.per_second >= 1 else f"1;w={1 / limit.per_second:g}"
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"retry-after", str(max(1, math.ceil(wait))).encode()),
                   (b"ratelimit-policy", quota.encode()), (b"ratelimit-remaining", b"0"),
                   (b"ratelimit-reset", str(max(1, math.ceil(wait))).encode())]
        await send({"type": "http.response.start", "status": 429, "headers": headers})
        await send({"type": "http.response.body", "body": body})
