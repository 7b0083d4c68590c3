"""Exception hierarchy shared by the client and the local server (pure Python).

Every error raised by ``moondream_nb`` is a :class:`MoondreamError`. The class says what went
wrong, ``str(exc)`` carries the server's own message, and no API key ever appears in it:
:func:`error_from_response` scrubs any secret the server echoes back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "MoondreamError",
    "ValidationError",
    "AuthenticationError",
    "NotFoundError",
    "ConflictError",
    "RateLimitError",
    "ServerError",
    "TransportError",
    "error_from_response",
    "parse_retry_after",
    "scrub",
]

_MAX_MESSAGE_CHARS = 2000
_REDACTED = "***"


class MoondreamError(Exception):
    """Base class of every moondream_nb error.

    Attributes:
        status: HTTP status code, or None when no response was received or the check ran locally.
        message: the human-readable message (the server's own text when there was a response).
        request_id: the server's request id, when it sent one.
        param: the offending field path (e.g. ``groups[2].rewards``), when known.
        code, type: the server's machine-readable error code and type, when it sent them.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        request_id: str | None = None,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.request_id = request_id
        self.param = param
        self.code = code
        self.type = type

    def __str__(self) -> str:
        extras = []
        if self.status is not None:
            extras.append(f"HTTP {self.status}")
        if self.request_id:
            extras.append(f"request_id {self.request_id}")
        return f"{self.message} ({', '.join(extras)})" if extras else self.message

    def __repr__(self) -> str:
        fields = [repr(self.message)]
        for name in ("status", "request_id", "param"):
            value = getattr(self, name)
            if value is not None:
                fields.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(fields)})"

    def __reduce__(self):
        # Keep the keyword attributes when pickled (e.g. across a process pool).
        return (_rebuild, (type(self), self.message, dict(self.__dict__)))


def _rebuild(cls, message, state):
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)
    exc.__dict__.update(state)
    return exc


class ValidationError(MoondreamError, ValueError):
    """The request is invalid: a local check before sending, or HTTP 400/413/422."""


class AuthenticationError(MoondreamError):
    """Missing or wrong API key (HTTP 401/403)."""


class NotFoundError(MoondreamError):
    """Unknown, foreign or deleted finetune, checkpoint or batch (HTTP 404/410)."""


class ConflictError(MoondreamError):
    """The request conflicts with existing state, e.g. same finetune name with another rank (409)."""


class RateLimitError(MoondreamError):
    """Too many requests (HTTP 429). ``retry_after`` holds the server's wait hint in seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ServerError(MoondreamError):
    """The server failed (HTTP 5xx)."""


class TransportError(MoondreamError):
    """No usable response: connection refused or reset, timeout, broken stream.

    ``sent`` is False when no connection was ever made (nothing reached the server), True when the
    request may have reached it and only the answer was lost.
    """

    def __init__(self, message: str, *, sent: bool = True, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.sent = sent


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """Return ``text`` with every non-empty secret replaced by ``***``."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, _REDACTED)
    return text


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), else None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            import email.utils  # here: 9 ms of imports for a header seldom sent as a date

            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


# The one reading of an HTTP error status on both sides: the client raises the class, the local
# server answers with the type and code (API.md error bodies). 5xx not listed are ServerError.
STATUS_ERRORS: dict[int, tuple[type[MoondreamError], str, str]] = {
    400: (ValidationError, "invalid_request_error", "invalid_request"),
    401: (AuthenticationError, "authentication_error", "invalid_api_key"),
    403: (AuthenticationError, "authentication_error", "forbidden"),
    404: (NotFoundError, "not_found_error", "not_found"),
    405: (MoondreamError, "invalid_request_error", "method_not_allowed"),
    408: (MoondreamError, "invalid_request_error", "request_timeout"),
    409: (ConflictError, "conflict_error", "conflict"),
    410: (NotFoundError, "not_found_error", "gone"),
    413: (ValidationError, "invalid_request_error", "too_large"),
    422: (ValidationError, "invalid_request_error", "invalid_request"),
    429: (RateLimitError, "rate_limit_error", "server_busy"),
    500: (ServerError, "server_error", "internal_error"),
    503: (ServerError, "server_error", "unavailable"),
    507: (ServerError, "server_error", "insufficient_storage"),
}


def _class_for(status: int) -> type[MoondreamError]:
    if status in STATUS_ERRORS:
        return STATUS_ERRORS[status][0]
    return ServerError if 500 <= status <= 599 else MoondreamError


def _header(headers: Mapping[str, str] | None, *names: str) -> str | None:
    if not headers:
        return None
    lowered = {str(k).lower(): v for k, v in headers.items()}
    for name in names:
        value = lowered.get(name.lower())
        if value:
            return str(value)
    return None


def _loc_path(loc: Any) -> str:
    """FastAPI/pydantic ``loc`` (e.g. ``["body", "groups", 2, "rewards"]``) → ``groups[2].rewards``."""
    if not isinstance(loc, (list, tuple)):
        return str(loc)
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path"):
        parts = parts[1:]
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def _parse_body(body_text: str) -> dict[str, Any]:
    """Pull message/param/code/type/request_id out of any error body shape we know."""
    out: dict[str, Any] = {}
    text = (body_text or "").strip()
    try:
        data = json.loads(text) if text else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        if text:
            out["message"] = text
        return out
    if isinstance(data.get("request_id"), str):
        out["request_id"] = data["request_id"]
    for holder in (data, data.get("error")):
        if isinstance(holder, dict) and isinstance(holder.get("status"), int) and 400 <= holder["status"] <= 599:
            out["status"] = holder["status"]
    error = data.get("error")
    if isinstance(error, dict):
        for key in ("message", "param", "code", "type"):
            if error.get(key) is not None:
                out[key] = str(error[key])
        if isinstance(error.get("request_id"), str):
            out.setdefault("request_id", error["request_id"])
    elif isinstance(error, str):
        out["message"] = error
    if "message" not in out and isinstance(data.get("message"), str):
        out["message"] = data["message"]
    detail = data.get("detail")
    if "message" not in out and detail is not None:
        if isinstance(detail, list):
            items = []
            for item in detail:
                if isinstance(item, dict):
                    where = _loc_path(item.get("loc", ()))
                    msg = str(item.get("msg", item))
                    items.append(f"{where}: {msg}" if where else msg)
                    if where and "param" not in out:
                        out["param"] = where
                else:
                    items.append(str(item))
            out["message"] = "; ".join(items)
        else:
            out["message"] = str(detail)
    if "message" not in out:
        out["message"] = text
    return out


def error_from_response(
    status: int | None,
    body_text: str,
    headers: Mapping[str, str] | None = None,
    *,
    secrets: Iterable[str | None] = (),
) -> MoondreamError:
    """Build the typed error for an HTTP error response.

    Args:
        status: the HTTP status code; None for an error reported inside a 200 event stream, in
            which case a ``status`` number in the body picks the class (else ServerError).
        body_text: the response body, decoded (JSON in any known shape, or raw text).
        headers: the response headers (for ``X-Request-Id``/``Request-Id`` and ``Retry-After``).
        secrets: strings (the API key) that must not appear in the error; they become ``***``.

    Returns:
        An instance of the :class:`MoondreamError` subclass that matches ``status``.
    """
    secrets = [s for s in secrets if s]
    fields = _parse_body(body_text)
    if status is None:
        status = fields.pop("status", None)
    fields.pop("status", None)
    message = fields.pop("message", "") or ""
    if not message:
        try:
            from http import HTTPStatus

            message = HTTPStatus(status).phrase  # type: ignore[arg-type]
        except (ValueError, TypeError):
            message = "error"
    if len(message) > _MAX_MESSAGE_CHARS:
        message = message[:_MAX_MESSAGE_CHARS] + "…"
    request_id = _header(headers, "X-Request-Id", "Request-Id") or fields.pop("request_id", None)
    fields.pop("request_id", None)
    clean = {k: (scrub(v, secrets) if isinstance(v, str) else v) for k, v in fields.items()}
    cls = _class_for(status) if status is not None else ServerError
    kwargs: dict[str, Any] = dict(
        status=status,
        request_id=scrub(request_id, secrets) if request_id else None,
        **clean,
    )
    if cls is RateLimitError:
        kwargs["retry_after"] = parse_retry_after(_header(headers, "Retry-After"))
    return cls(scrub(message, secrets), **kwargs)
