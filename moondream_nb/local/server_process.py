"""Run the local server in this process (what ``moondream-nb serve`` does).

Binds the socket first (so ``--port 0`` works and connections queue while the model loads),
prints the endpoints and a machine-readable ``MOONDREAM_NB_READY port=<n>`` line once the app
has started, then serves with uvicorn until interrupted.
"""

from __future__ import annotations

import errno
import faulthandler
import ipaddress
import os
import secrets
import socket
import sys
import tempfile
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


MIN_SHARED_KEY_LENGTH = 16  # a key that guards a port other machines can reach


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def unwritable(data: Path) -> str | None:
    """Why the server could not store anything in ``data`` (None when it can), in one line."""
    try:
        data.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=data):
            pass
        for name in ("moondream.sqlite3", "moondream.sqlite3-wal", "moondream.sqlite3-shm"):
            path = data / name
            if path.exists() and not os.access(path, os.W_OK):
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
    except OSError as exc:
        where = exc.filename or data
        return f"data directory {data} is not writable ({exc.strerror or exc} at {where}); " \
               "pass --data-dir with a writable directory"
    return None


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
    faulthandler.enable()  # a fatal signal (SIGBUS from a vanished WAL file, SIGSEGV) leaves its reason in the log
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
    if not is_loopback(host):
        short = [k for k in keys if len(k) < MIN_SHARED_KEY_LENGTH]
        if short:
            print(f"moondream-nb serve: refusing to listen on {host} with a {len(short[0])}-character API key: other "
                  f"machines can reach it; use keys of at least {MIN_SHARED_KEY_LENGTH} characters (or none, and "
                  "one is generated)", file=sys.stderr)
            return 2
    data = Path(data_dir).expanduser() if data_dir else DEFAULT_DATA_DIR.expanduser()
    if (why := unwritable(data)) is not None:
        print(f"moondream-nb serve: {why}", file=sys.stderr)
        return 1
    try:
        sock = bind(host, port)
    except OSError as exc:
        print(f"moondream-nb serve: cannot listen on {host}:{port} ({exc.strerror})", file=sys.stderr)
        return 1
    actual = sock.getsockname()[1]
    base = f"http://{url_host(host)}:{actual}/v1"

    def ready() -> None:
        print(f"moondream-nb local server (data in {data})")
        if not is_loopback(host):
            print(f"  warning: listening on {host}, reachable from other machines: anyone with the key can "
                  "train, read and delete its finetunes", file=sys.stderr, flush=True)
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
