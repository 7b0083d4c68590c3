"""``serve()``: start the local server as a subprocess from Python or a notebook.

    with moondream_nb.local.serve() as server:
        conn = moondream_nb.connect(server=server)
        ft = conn.ft(name="bolts", rank=8)
        ...

A server handle holds facts (endpoint, key, data dir, process), never clients: ``local/`` does not
import the client, and :func:`moondream_nb.connect` is the one place that turns facts into clients.

The child runs ``python -m moondream_nb.cli serve --port 0``; its key travels by environment,
never on the command line. The server stops with ``.stop()``, at the end of a ``with`` block, or
when this interpreter exits.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import IO, Any, Sequence

from .server_process import KEYS_ENV, READY_PREFIX, is_loopback, mask, new_api_key, unwritable, url_host

LOG_NAME = "server.log"


class LocalServer:
    """A running local server: ``endpoint`` (tuning), ``inference_endpoint``, ``api_key``."""

    def __init__(self, process: subprocess.Popen, port: int, host: str, api_key: str, data_dir: Path,
                 owns_data_dir: bool):
        self.process, self.port, self.host, self.api_key = process, port, host, api_key
        self.data_dir, self._owns_data_dir = data_dir, owns_data_dir
        self.url = f"http://{url_host(host)}:{port}"
        self.inference_endpoint = f"{self.url}/v1"
        self.endpoint = f"{self.inference_endpoint}/tuning"
        atexit.register(self.stop)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"LocalServer(endpoint={self.endpoint!r}, api_key={mask(self.api_key)!r}, {state})"

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_NAME

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and remove its data dir if ``serve`` made it."""
        if self.running:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self._owns_data_dir = False
        atexit.unregister(self.stop)

    def kill(self) -> None:
        """SIGKILL the server, as a crash would (the data dir is kept)."""
        if self.running:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> "LocalServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _read_ready(stream: IO[str], deadline: float, process: subprocess.Popen) -> int | None:
    """The port from the child's ready line (None if it exits or the deadline passes)."""
    found: list[int] = []

    def reader() -> None:
        for line in stream:
            if line.startswith(READY_PREFIX) and not found:
                found.append(int(line[len(READY_PREFIX):].strip()))
        # keep draining so the child never blocks on a full pipe

    threading.Thread(target=reader, name="moondream-serve-stdout", daemon=True).start()
    while time.monotonic() < deadline and not found and process.poll() is None:
        time.sleep(0.02)
    return found[0] if found else None


def _answers(url: str, deadline: float) -> bool:
    import requests

    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.05)
    return False


def serve(port: int = 0, data_dir: str | os.PathLike | None = None, *, host: str = "127.0.0.1",
          api_key: str | None = None, extra_keys: Sequence[str] = (), threads: int | None = None,
          latency: str | None = None, rate_limit: str | None = None, timeout: float = 60.0) -> LocalServer:
    """Start the local server in a subprocess and wait until it answers.

    Args:
        port: TCP port; 0 picks a free one.
        data_dir: where finetunes live; default a temporary directory removed by ``stop()``.
        host: interface to listen on (loopback by default).
        api_key: the key to accept; default a new random one (``.api_key``).
        extra_keys: more keys to accept (other users of the same server; each sees only its own finetunes).
        threads: torch threads of the server (default ``$MOONDREAM_NB_THREADS`` or up to 2).
        latency: cloud-like delays, ``"cloud"`` or a spec such as ``"train_step=3,rollouts=0.5"``
            (:mod:`moondream_nb.local.cloudlike`); default none.
        rate_limit: a per-key limit such as ``"2/s"`` (429 with ``Retry-After`` beyond it); default none.
        timeout: seconds to wait for the first answer.

    Raises:
        ValueError: ``latency`` or ``rate_limit`` is not a valid spec (checked before starting).
        OSError: ``data_dir`` is not writable (the message names it).

    Returns:
        A :class:`LocalServer`; also a context manager.
    """
    from .cloudlike import Latency, RateLimit

    Latency.parse(latency), RateLimit.parse(rate_limit)  # a bad spec fails here, not in the child's log
    owns = data_dir is None
    data = Path(tempfile.mkdtemp(prefix="moondream-nb-")) if owns else Path(data_dir).expanduser()
    if (why := unwritable(data)) is not None:
        raise OSError(why)
    if not is_loopback(host):
        warnings.warn(f"the local server listens on {host}, reachable from other machines: anyone with the key can "
                      "train, read and delete its finetunes", stacklevel=2)
    key = api_key or new_api_key()
    env = dict(os.environ, **{KEYS_ENV: ",".join([key, *extra_keys]), "PYTHONUNBUFFERED": "1"})
    if threads is not None:
        env["MOONDREAM_NB_THREADS"] = str(threads)
    cmd = [sys.executable, "-m", "moondream_nb.cli", "serve", "--host", host, "--port", str(port),
           "--data-dir", str(data)]
    if latency is not None:
        cmd += ["--latency", str(latency)]
    if rate_limit is not None:
        cmd += ["--rate-limit", str(rate_limit)]
    log = open(data / LOG_NAME, "ab")
    try:
        process = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                                   text=True)
    finally:
        log.close()
    deadline = time.monotonic() + timeout
    actual = _read_ready(process.stdout, deadline, process)
    server = LocalServer(process, actual or 0, host, key, data, owns)
    if actual is None or not _answers(server.url, deadline):
        tail = (data / LOG_NAME).read_text(errors="replace")[-2000:]
        server.stop()
        raise RuntimeError(f"the local server did not start within {timeout:g} s; its log ends with:\n{tail}")
    return server
