"""Run the local server in this process (what ``moondream-nb serve`` does).

Binds the socket first (so ``--port 0`` works and connections queue while the model loads),
prints the endpoints and a machine-readable ``MOONDREAM_NB_READY port=<n>`` line once the app
has started, then serves with uvicorn until interrupted.
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
from pathlib import Path
from typing import Any

READY_PREFIX = "MOONDREAM_NB_READY port="
KEYS_ENV = "MOONDREAM_LOCAL_API_KEYS"
DEFAULT_DATA_DIR = Path("~/.moondream-nb/local")


def new_api_key() -> str:
    return "md-local-" + secrets.token_urlsafe(24)


def mask(key: str) -> str:
    """A key as it may be shown in logs: its first characters only."""
    return key[:9] + "***" if len(key) > 12 else "***"


def keys_from_env() -> list[str]:
    return [k.strip() for k in os.environ.get(KEYS_ENV, "").split(",") if k.strip()]


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted sockets only when it is
    # set, and without it every small response waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)  # listen now: requests queue until the model is loaded
    sock.set_inheritable(True)
    return sock


def run(host: str = "127.0.0.1", port: int = 2020, data_dir: str | os.PathLike | None = None,
        api_keys: list[str] | None = None, log_level: str = "warning", latency: str | None = None,
        rate_limit: str | None = None) -> int:
    """Serve until interrupted; keys from ``api_keys`` + ``$MOONDREAM_LOCAL_API_KEYS``, else a new one.

    ``latency`` / ``rate_limit``: the cloud-like mode (:mod:`moondream_nb.local.cloudlike`).
    """
    import uvicorn

    from .app import Config, create_app
    from .cloudlike import CloudLike, Latency, RateLimit

    try:
        delays, limit = Latency.parse(latency), RateLimit.parse(rate_limit)
    except ValueError as exc:
        print(f"moondream-nb serve: {exc}", file=sys.stderr)
        return 2

    keys = list(api_keys or []) + keys_from_env()
    generated = not keys
    if generated:
        keys = [new_api_key()]
    data = Path(data_dir).expanduser() if data_dir else DEFAULT_DATA_DIR.expanduser()
    try:
        sock = bind(host, port)
    except OSError as exc:
        print(f"moondream-nb serve: cannot listen on {host}:{port} ({exc.strerror})", file=sys.stderr)
        return 1
    actual = sock.getsockname()[1]
    base = f"http://{url_host(host)}:{actual}/v1"

    def ready() -> None:
        print(f"moondream-nb local server (data in {data})")
        print(f"  tuning endpoint:    {base}/tuning")
        print(f"  inference endpoint: {base}")
        if generated:
            print(f"  API key (generated, shown once): {keys[0]}")
        else:
            print(f"  API keys: {', '.join(mask(k) for k in keys)}")
        if delays is not None or limit is not None:
            rate = f"{limit.per_second:g} requests/s per key" if limit else "no rate limit"
            print(f"  cloud-like mode: latency {delays or 'none'}; {rate}")
        print(f"{READY_PREFIX}{actual}", flush=True)

    app: Any = create_app(Config(data, keys), on_ready=ready)
    if delays is not None or limit is not None:
        app = CloudLike(app, delays, limit)
    config = uvicorn.Config(app, log_level=log_level, access_log=log_level in ("info", "debug"),
                            timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
    return 0
