"""Server-sent events of ``/query`` and ``/caption`` with ``stream: true``.

Parsed like the official client (``data:`` lines holding JSON; yield ``chunk``; stop on
``completed``), but robust: lines are read as they arrive, ``data:`` without the space is
accepted, an ``error`` event (or a data object carrying ``error``) raises the typed error, and
a connection lost mid-stream raises :class:`TransportError`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..errors import MoondreamError, TransportError, error_from_response


if TYPE_CHECKING:
    import requests


def _raw_chunks(resp: requests.Response) -> Iterator[bytes]:
    read1 = getattr(resp.raw, "read1", None)
    if read1 is None:  # urllib3 < 2: chunked replies still arrive piecewise this way
        yield from resp.iter_content(chunk_size=None)
        return
    while True:
        data = read1(65536)
        if not data:
            return
        yield data


def _lines(resp: requests.Response) -> Iterator[str]:
    buffer = b""
    for data in _raw_chunks(resp):
        buffer += data
        *complete, buffer = buffer.split(b"\n")
        for line in complete:
            yield line.rstrip(b"\r").decode("utf-8")
    if buffer:
        yield buffer.rstrip(b"\r").decode("utf-8")


def iter_chunks(resp: requests.Response, secrets: list[str | None]) -> Iterator[str]:
    """Yield the text chunks of an event stream until ``completed``; closes ``resp`` at the end."""
    import requests  # loaded already: the response came through it

    event = None
    try:
        for line in _lines(resp):
            if not line:
                event = None  # a blank line ends an event
                continue
            if line.startswith("event:"):
                event = line[6:].strip()
                continue
            if not line.startswith("data:"):
                continue  # comments, id:, retry:
            text = line[5:].removeprefix(" ")
            if text == "[DONE]":
                return
            data = _decode(text, resp.status_code)
            if event == "error" or (isinstance(data, dict) and data.get("error") and "chunk" not in data):
                raise error_from_response(None, text, resp.headers, secrets=secrets)
            if not isinstance(data, dict):
                continue
            if "chunk" in data:
                yield data["chunk"]
            if data.get("completed"):
                return
    except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError,
            requests.exceptions.Timeout) as exc:
        raise TransportError(f"the event stream broke off ({type(exc).__name__})") from exc
    except Exception as exc:
        # urllib3 errors (ProtocolError, ReadTimeoutError) surface raw from read1.
        if type(exc).__module__.startswith("urllib3"):
            raise TransportError(f"the event stream broke off ({exc})") from exc
        raise
    finally:
        resp.close()


def _decode(text: str, status: int) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise MoondreamError(f"malformed event in the stream: {text[:200]!r}", status=status) from None
