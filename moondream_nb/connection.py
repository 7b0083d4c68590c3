"""``connect()``: the first line of every notebook — Moondream Cloud (or any endpoint) when a key
is configured, the embedded local server otherwise, with the same ``.ft()`` / ``.vl()`` either way.

    conn = moondream_nb.connect()
    ft = conn.ft(name="bolts", rank=8)
    model = conn.vl(model=ft.model(step))

``moondream-nb lab`` starts the local server and hands its endpoint and key to the notebooks
through ``MOONDREAM_ENDPOINT`` / ``MOONDREAM_API_KEY``, so ``connect()`` finds it there.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from .client.config import API_KEY_ENV, resolve_api_base, resolve_api_key

DATA_DIR_ENV = "MOONDREAM_NB_DATA_DIR"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class Connection:
    """Where ``ft()`` and ``vl()`` go: ``endpoint`` (tuning), ``inference_endpoint``, ``is_local``."""

    def __init__(self, api_key: str | None, inference_endpoint: str, server: Any = None):
        self._api_key = api_key
        self.inference_endpoint = inference_endpoint.rstrip("/")
        self.endpoint = self.inference_endpoint + "/tuning"
        self.server = server  # the LocalServer this connection started, if any

    @property
    def is_local(self) -> bool:
        """True for the embedded server (started here or by ``moondream-nb lab``) on loopback."""
        return self.server is not None or urlsplit(self.inference_endpoint).hostname in LOOPBACK

    def ft(self, **kwargs: Any):
        """``moondream_nb.ft(...)`` on this connection (``name``/``rank`` or ``finetune_id``)."""
        from .client import ft

        kwargs.setdefault("api_key", self._api_key)
        kwargs.setdefault("endpoint", self.endpoint)
        return ft(**kwargs)

    def vl(self, **kwargs: Any):
        """``moondream_nb.vl(...)`` on this connection (``model=ft.model(step)`` for a checkpoint)."""
        from .client import vl

        kwargs.setdefault("api_key", self._api_key)
        kwargs.setdefault("endpoint", self.inference_endpoint)
        return vl(**kwargs)

    def finetunes(self, **kwargs: Any):
        """Every finetune of this connection's key: a :class:`~moondream_nb.Finetunes` (iterate it,
        ``.page(limit, cursor)``, ``.named(name)``, ``.frame()``)."""
        from .client import Finetunes

        kwargs.setdefault("endpoint", self.endpoint)
        return Finetunes(self._api_key, **kwargs)

    def stop(self) -> None:
        """Stop the local server this connection started (nothing otherwise)."""
        if self.server is not None:
            self.server.stop()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = "local" if self.is_local else "remote"
        return f"Connection({where}, endpoint={self.endpoint!r}, api_key={'***' if self._api_key else None})"


def connect(*, local: bool | None = None, data_dir: str | os.PathLike | None = None, server: Any = None,
            **serve_options: Any) -> Connection:
    """Connect to Moondream: the configured endpoint, or a freshly started local server.

    Args:
        local: None (default): use ``$MOONDREAM_API_KEY`` (with ``$MOONDREAM_ENDPOINT``, default
            Moondream Cloud) when set, else start the local server. True: always start the local
            server. False: never (raise if no key is configured).
        data_dir: the local server's data directory (default ``$MOONDREAM_NB_DATA_DIR``, else a
            temporary one removed when the connection stops).
        server: a running :class:`~moondream_nb.local.LocalServer` (from
            ``moondream_nb.local.serve()``) to connect to instead; ``.stop()`` stops it.
        **serve_options: passed to ``moondream_nb.local.serve`` when a server is started
            (``latency="cloud"``, ``rate_limit="2/s"``, ``threads``, ...).

    Returns:
        A :class:`Connection`.

    Raises:
        ValueError: ``local=False`` and no key is configured, or ``server`` with ``local=False``.
        RuntimeError: the local server did not start (its log tail is in the message).
    """
    if server is not None:
        if local is False:
            raise ValueError("server: a local server cannot be used with local=False")
        return Connection(server.api_key, server.inference_endpoint, server)
    key = resolve_api_key(None)
    if local is False or (local is None and key):
        if not key:
            raise ValueError(f"local=False needs an API key: set ${API_KEY_ENV}")
        return Connection(key, resolve_api_base(None))
    from .local import serve  # the "local" extra; imported only when a server is started

    server = serve(data_dir=data_dir or os.environ.get(DATA_DIR_ENV) or None, **serve_options)
    return Connection(server.api_key, server.inference_endpoint, server)
