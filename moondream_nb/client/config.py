"""Where a client sends requests and with which key: arguments first, then the environment."""

from __future__ import annotations

import os

DEFAULT_API_BASE = "https://api.moondream.ai/v1"
API_KEY_ENV = "MOONDREAM_API_KEY"
ENDPOINT_ENV = "MOONDREAM_ENDPOINT"
_TUNING = "/tuning"


def resolve_api_key(api_key: str | None) -> str | None:
    """The explicit key, else ``$MOONDREAM_API_KEY``, else None (anonymous)."""
    if api_key is not None:
        return api_key or None
    return os.environ.get(API_KEY_ENV) or None


def resolve_api_base(endpoint: str | None) -> str:
    """The inference/batch base URL: ``endpoint``, else ``$MOONDREAM_ENDPOINT``, else the cloud."""
    base = endpoint or os.environ.get(ENDPOINT_ENV) or DEFAULT_API_BASE
    return base.rstrip("/")


def resolve_tuning_endpoint(endpoint: str | None) -> str:
    """The tuning endpoint.

    An explicit ``endpoint`` IS the tuning endpoint, exactly as in the official client (trailing
    slash stripped). Otherwise ``$MOONDREAM_ENDPOINT`` is the API base and ``/tuning`` is appended
    (tolerating a base that already ends in ``/tuning``).
    """
    if endpoint:
        return endpoint.rstrip("/")
    base = resolve_api_base(None)
    return base if base.endswith(_TUNING) else base + _TUNING


def api_base_of_tuning(tuning_endpoint: str) -> str | None:
    """The API base a tuning endpoint hangs off (``.../v1/tuning`` → ``.../v1``), if recognisable."""
    if tuning_endpoint.endswith(_TUNING):
        return tuning_endpoint[: -len(_TUNING)]
    return None
