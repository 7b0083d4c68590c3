"""Every finetune of an API key: ``GET /finetunes`` with its cursor paging (the official client
has no method for it), so a notebook can pick a finetune up by name after a restart."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .. import protocol
from ..errors import MoondreamError
from .config import resolve_api_key, resolve_tuning_endpoint
from .transport import Transport


class Finetunes:
    """The finetunes of one key on one tuning endpoint (see :func:`finetunes`)."""

    def __init__(self, api_key: str | None = None, *, endpoint: str | None = None, max_retries: int = 10,
                 timeout: float = 60.0) -> None:
        self._transport = Transport(resolve_tuning_endpoint(endpoint), resolve_api_key(api_key),
                                    max_retries=max_retries, timeout=timeout)

    def page(self, limit: int = 20, cursor: str | None = None) -> dict:
        """One page, oldest first: ``{"finetunes": [info, ...], "next_cursor", "has_more"}``.

        ``info`` is ``{finetune_id, name, rank, created_at_ms, updated_at_ms}`` (our local server
        adds ``step``).

        Raises:
            ValidationError: ``limit`` outside 1-100 or a malformed ``cursor`` (before sending).
        """
        protocol.validate_page(limit, cursor)
        result = self._transport.json("GET", "/finetunes", query={"limit": limit, "cursor": cursor})
        if not isinstance(result.get("finetunes"), list):
            raise MoondreamError("GET /finetunes: reply lacks a finetunes list")
        return result

    def __iter__(self) -> Iterator[dict]:
        """Every finetune, following ``next_cursor`` across pages of 100."""
        cursor = None
        while True:
            page = self.page(limit=100, cursor=cursor)
            yield from page["finetunes"]
            cursor = page.get("next_cursor")
            if not page.get("has_more") or not cursor:
                return

    def named(self, name: str) -> dict | None:
        """The finetune called ``name`` (names are unique per key), or None."""
        protocol.check_text(name, "name")
        return next((f for f in self if f.get("name") == name), None)

    def frame(self, checkpoints: bool = True) -> Any:
        """A pandas table of every finetune (see :func:`moondream_nb.dataframes.finetunes_frame`);
        ``checkpoints`` adds each one's saved checkpoints (one listing per finetune)."""
        from ..dataframes import finetunes_frame
        from .tuning import Finetune

        infos = list(self)
        saved = None
        if checkpoints:
            saved = {}
            for info in infos:
                handle = Finetune(api_key=self._transport.api_key, endpoint=self._transport.base_url,
                                  finetune_id=info["finetune_id"])
                try:
                    saved[info["finetune_id"]] = [c["step"] for c in handle.iter_checkpoints()]
                finally:
                    handle.close()
        return finetunes_frame(infos, saved)

    def close(self) -> None:
        self._transport.close()

    def __repr__(self) -> str:
        return f"Finetunes(endpoint={self._transport.base_url!r}, api_key={'***' if self._transport.api_key else None})"


def finetunes(api_key: str | None = None, *, endpoint: str | None = None, limit: int = 20,
              cursor: str | None = None, **transport: Any) -> dict:
    """One page of the key's finetunes, oldest first, as ``GET /finetunes`` returns it.

    Args:
        api_key: default ``$MOONDREAM_API_KEY``.
        endpoint: the TUNING endpoint (as for :func:`~moondream_nb.ft`).
        limit: 1-100 per page. cursor: the previous page's ``next_cursor``.
        transport: ``max_retries``, ``timeout``.

    Returns:
        ``{"finetunes": [{finetune_id, name, rank, created_at_ms, updated_at_ms, ...}], "next_cursor", "has_more"}``;
        ``Finetunes(api_key, endpoint=...)`` iterates every page, and
        :func:`moondream_nb.dataframes.finetunes_frame` makes a table of them.
    """
    client = Finetunes(api_key, endpoint=endpoint, **transport)
    try:
        return client.page(limit=limit, cursor=cursor)
    finally:
        client.close()
