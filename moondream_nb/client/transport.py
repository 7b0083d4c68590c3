"""HTTP transport: one pooled keep-alive session per client, retries, pacing, typed errors.

Headers follow the official client: ``X-Moondream-Auth`` (only when a key is set),
``User-Agent: moondream-nb/<version>``, ``Content-Type`` only when there is a body.

Retries, by what the failure says:

* 502/503/504/408/425/520-524 and a connection lost mid-request: the long budget
  (``max_retries``), exponential backoff with full jitter (``uniform(0, min(cap, base * 2**n))``),
  ``Retry-After`` as a floor;
* 429: the same budget, but the wait is the :mod:`pacing` of the key (shared by every client
  of this process), which also spaces out the other threads' requests;
* 500: a short budget (``SERVER_ERROR_RETRIES``): a deterministic bug answers the same again;
* failing to connect at all (refused, unknown host, connect timeout): retried for
  ``connect_budget`` seconds from the call's start, then a ``TransportError`` saying nothing listens.

Redirects are not followed: the auth header is custom, so requests would forward it to any host.
"""

from __future__ import annotations

import logging
import os
import random
import time
import urllib.parse
import uuid
from typing import TYPE_CHECKING, Any, Iterable

from .._version import __version__
from ..errors import (AuthenticationError, MoondreamError, TransportError, ValidationError, error_from_response,
                      parse_retry_after, scrub)
from . import jsonbody
from .config import API_KEY_ENV, DEFAULT_API_BASE
from .images import EncodedImage
from .pacing import Pacer, pacer_for

if TYPE_CHECKING:
    import requests

# requests (and urllib3 under it: ~280 modules, ~65 ms) is imported when the first client is
# made, not with the package: `import moondream_nb` stays light for notebooks that only label.

log = logging.getLogger("moondream_nb.client")

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524})
SERVER_ERROR_RETRIES = 2  # a 500 is retried this many times at most
CONNECT_TIMEOUT = 5.0  # seconds to establish a connection (the read timeout is the client's own)
DEFAULT_CONNECT_BUDGET = 2.0
USER_AGENT = f"moondream-nb/{__version__}"
AUTH_HEADER = "X-Moondream-Auth"
IDEMPOTENCY_HEADER = "Idempotency-Key"


def _reason(exc: BaseException) -> str:
    """The innermost readable cause of a requests/urllib3 exception."""
    inner: Any = exc.args[0] if exc.args else exc
    reason = getattr(inner, "reason", None) or inner
    text = str(reason)
    if text.startswith("<") and ">: " in text:  # "<HTTPConnection object at 0x..>: Failed to ..."
        text = text.split(">: ", 1)[1]
    return text


def _connect_failure(exc: BaseException) -> str | None:
    """Why no connection could be made at all (nothing was sent), or None for other failures."""
    import requests
    import urllib3

    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connect timed out"
    inner: Any = exc.args[0] if exc.args else None
    reason = getattr(inner, "reason", inner)
    if isinstance(reason, urllib3.exceptions.NameResolutionError) or "Name or service not known" in str(reason):
        return "unknown host"
    if isinstance(reason, urllib3.exceptions.NewConnectionError):
        return "connection refused" if "refused" in str(reason).lower() else _reason(exc)
    return None


def _read_body(resp: requests.Response) -> None:
    """Read the whole body in one call (requests' ``.content`` reads 10 KiB at a time)."""
    resp._content = resp.raw.read(decode_content=True)
    resp._content_consumed = True


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


class Transport:
    """Sends requests to ``base_url`` with the key, retry policy and connection pool of a client.

    Args:
        base_url: URL that request paths are appended to (no trailing slash).
        api_key: sent as ``X-Moondream-Auth`` when set; never shown in repr or errors.
        max_retries: retries after the first attempt (0 disables retrying).
        timeout: seconds for connecting and for each blocking read.
        backoff_base, backoff_cap: full-jitter backoff parameters, in seconds.
        max_retry_after: a ``Retry-After`` longer than this is not waited for; the error is
            raised at once (with ``retry_after`` set) instead of blocking a notebook for minutes.
        pool_size: connections kept alive per host (grown by :meth:`ensure_pool`).
        connect_budget: seconds from a call's start during which failures to connect (refused,
            unknown host) are retried; after it the call fails saying nothing listens there.

    Attributes:
        pacer: the :class:`~moondream_nb.client.pacing.Pacer` of this origin and key.
        honours_idempotency: True once the service echoed an ``Idempotency-Key`` back (it
            records keys: a repeat returns the first answer); False once a keyed call succeeded
            without the echo (Moondream Cloud does not document the header); None before either.

    Raises:
        AuthenticationError: on a call, when there is no key and the base URL is Moondream Cloud.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        max_retries: int = 10,
        timeout: float = 60.0,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        max_retry_after: float = 120.0,
        pool_size: int = 10,
        connect_budget: float = DEFAULT_CONNECT_BUDGET,
    ) -> None:
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValidationError(f"max_retries: must be an integer >= 0 (got {max_retries!r})", param="max_retries")
        for name, value in (("timeout", timeout), ("backoff_base", backoff_base), ("backoff_cap", backoff_cap),
                            ("connect_budget", connect_budget)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValidationError(f"{name}: must be a number > 0 (got {value!r})", param=name)
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key or None
        self.max_retries = max_retries
        self.timeout = float(timeout)
        self.backoff_base = float(backoff_base)
        self.backoff_cap = float(backoff_cap)
        self.max_retry_after = float(max_retry_after)
        self.connect_budget = float(connect_budget)
        self.honours_idempotency: bool | None = None
        self.pacer: Pacer = pacer_for(_origin(self.base_url), self._api_key)
        self._sleep = time.sleep
        import requests

        self._session = requests.Session()
        self._session.headers["User-Agent"] = USER_AGENT
        # requests re-reads proxy variables on every request (a measurable share of a call's
        # CPU); read them once per origin instead, and honour the CA-bundle variables as it would.
        self._session.trust_env = False
        self._session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        self._proxies: dict[tuple, dict[str, str]] = {}
        self._pool_size = 0
        self.ensure_pool(pool_size)

    @property
    def api_key(self) -> str | None:
        return self._api_key

    def __repr__(self) -> str:
        key = "'***'" if self._api_key else "None"
        return f"Transport(base_url={self.base_url!r}, api_key={key}, max_retries={self.max_retries})"

    def ensure_pool(self, size: int) -> None:
        """Keep at least ``size`` connections per host alive (e.g. a stream's concurrency)."""
        if size <= self._pool_size:
            return
        from requests.adapters import HTTPAdapter

        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=size, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._pool_size = size

    def close(self) -> None:
        self._session.close()

    # --- requests --------------------------------------------------------------------

    def json(
        self,
        method: str,
        path: str,
        payload: Any = None,
        *,
        query: dict | None = None,
        timeout: float | None = None,
        idempotent: bool = False,
        idempotency_key: str | None = None,
        images: Iterable[EncodedImage] = (),
    ) -> dict:
        """Send a JSON request (no body when ``payload`` is None) and return the parsed reply.

        ``images`` are the encoded images referenced by ``payload``; their bytes are spliced
        into the body instead of being re-serialised. An empty 2xx body reads as ``{}``.
        ``idempotency_key``: the key of an idempotent call (default: a new one per call).
        """
        images = [img for img in images if img.raw is not None]
        body = None if payload is None else self.encode_body(payload, images)
        resp = self.send(
            method,
            path,
            body=body,
            content_type="application/json" if body is not None else None,
            query=query,
            timeout=timeout,
            idempotent=idempotent,
            idempotency_key=idempotency_key,
        )
        return self.parse_json(resp, images)

    @staticmethod
    def encode_body(payload: Any, images: Iterable[EncodedImage] = ()) -> bytes:
        """The JSON body of ``payload``, byte-identical to ``json.dumps(payload).encode()``."""
        known = {id(img.image_url): img for img in images if img.raw is not None}

        def lookup(s: str) -> bytes | None:
            img = known.get(id(s))
            return img.raw if img is not None and img.image_url is s else None

        return jsonbody.dumps(payload, lookup)

    def parse_json(self, resp: requests.Response, images: Iterable[EncodedImage] = ()) -> dict:
        """The reply's JSON object (``{}`` when empty); echoed ``images`` come back as the same objects.

        Raises:
            MoondreamError: the reply is not JSON, or JSON that is not an object (the text is scrubbed).
        """
        content = resp.content
        if not content.strip():
            return {}
        try:
            value = jsonbody.loads(content, [(img.image_url, img.raw) for img in images if img.raw is not None])
        except ValueError:
            value, what = None, "not JSON"
        else:
            what = None if isinstance(value, dict) else f"JSON {type(value).__name__ if value is not None else 'null'}" \
                                                         ", not an object"
        if what is None:
            return value
        text = scrub(content[:200].decode("utf-8", "replace"), [self._api_key])
        raise MoondreamError(f"{resp.request.method} {resp.url.split('?', 1)[0]}: the server's reply is {what}: "
                             f"{text!r}", status=resp.status_code)

    def url(self, path: str, query: dict | None = None) -> str:
        """``base_url + path`` with the query encoded like the official client (None dropped)."""
        url = path if path.startswith(("http://", "https://")) else f"{self.base_url}{path}"
        if query:
            items = [(k, v) for k, v in query.items() if v is not None]
            if items:
                url = f"{url}?{urllib.parse.urlencode(items)}"
        return url

    def same_origin(self, url: str) -> bool:
        return _origin(url) == _origin(self.base_url)

    def _proxies_for(self, url: str) -> dict[str, str]:
        origin = _origin(url)
        if origin not in self._proxies:
            import requests.utils

            self._proxies[origin] = requests.utils.get_environ_proxies(url)
        return self._proxies[origin]

    def send(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        content_type: str | None = None,
        query: dict | None = None,
        timeout: float | None = None,
        idempotent: bool = False,
        idempotency_key: str | None = None,
        stream: bool = False,
        auth: bool = True,
    ) -> requests.Response:
        """Send one logical request, retrying as the policy allows; return the 2xx response.

        ``path`` may be an absolute URL; the key is then sent only when ``auth`` is true and the
        URL has this transport's origin. With ``stream=True`` the caller must close the response.
        ``idempotent``: send an ``Idempotency-Key`` (``idempotency_key``, else a new one), the
        same on every retry of this call.

        Raises:
            the :class:`MoondreamError` subclass of the final failure.
        """
        import requests
        import urllib3

        url = self.url(path, query)
        shown = f"{method} {url.split('?', 1)[0]}"
        self._check_key(url)
        headers = {}
        if self._api_key and auth and self.same_origin(url):
            headers[AUTH_HEADER] = self._api_key
        if content_type is not None:
            headers["Content-Type"] = content_type
        key = None
        if idempotent:
            key = idempotency_key or str(uuid.uuid4())  # one key for every retry of this call
            headers[IDEMPOTENCY_HEADER] = key
        timeout = self.timeout if timeout is None else timeout
        attempts = self.max_retries + 1
        began = time.monotonic()
        server_errors = 0
        for attempt in range(attempts):
            retry_after = None
            started = self.pacer.wait()
            try:
                resp = self._session.request(
                    method, url, data=body, headers=headers, timeout=(min(timeout, CONNECT_TIMEOUT), timeout),
                    allow_redirects=False, stream=True, proxies=self._proxies_for(url),
                )
                if not stream:
                    _read_body(resp)  # inside the try: a body cut short is a transport error
            except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                    requests.exceptions.InvalidSchema) as exc:
                raise ValidationError(f"endpoint: invalid URL {url!r} ({exc})", param="endpoint") from None
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                    requests.exceptions.ChunkedEncodingError, urllib3.exceptions.HTTPError) as exc:
                why = _connect_failure(exc)
                if why is not None:
                    if time.monotonic() - began >= self.connect_budget or attempt == attempts - 1:
                        raise self._unreachable(url, shown, why, time.monotonic() - began) from exc
                    self._sleep(min(0.1 * 2**attempt, 0.5))
                    continue
                if isinstance(exc, (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError)):
                    error: MoondreamError = TransportError(f"{shown}: timed out after {timeout:g} s")
                else:
                    error = TransportError(f"{shown}: connection failed ({_reason(exc)})")
                cause: BaseException | None = exc
            else:
                if 200 <= resp.status_code < 300:
                    if key is not None and self.honours_idempotency is not True:
                        self.honours_idempotency = resp.headers.get(IDEMPOTENCY_HEADER) == key
                    return resp
                error, cause = self._http_error(resp, shown), None
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                # A wait longer than we would ever sit through (a daily quota) is not a pace for the
                # other threads: this call raises, theirs meet their own 429s.
                hold = retry_after if retry_after is None or retry_after <= self.max_retry_after else None
                self.pacer.observe(started, resp.status_code, resp.headers, hold)
                if resp.status_code not in RETRY_STATUSES:
                    raise error
                if resp.status_code == 500:
                    server_errors += 1
                    if server_errors > SERVER_ERROR_RETRIES:
                        error.message += f" (gave up after {server_errors} answers of 500)"
                        raise error
            error.message = scrub(error.message, [self._api_key])
            too_long = retry_after is not None and retry_after > self.max_retry_after
            if too_long:
                error.message += f" (Retry-After {retry_after:g} s exceeds max_retry_after; not waiting)"
                raise error from cause
            if attempt == attempts - 1:
                if attempts > 1:
                    error.message += f" (gave up after {attempts} attempts)"
                raise error from cause
            if error.status == 429:
                delay = 0.0  # the pacer holds this thread (and every other) for as long as needed
            else:
                delay = random.uniform(0.0, min(self.backoff_cap, self.backoff_base * 2**attempt))
                if retry_after is not None:
                    delay = max(delay, retry_after)
            log.info("%s failed: %s; retry %d/%d in %.2f s", shown, error, attempt + 1, self.max_retries, delay)
            if delay:
                self._sleep(delay)
        raise AssertionError("unreachable")

    def _check_key(self, url: str) -> None:
        if self._api_key is None and _origin(url) == _origin(DEFAULT_API_BASE):
            raise AuthenticationError(
                f"no API key for Moondream Cloud ({DEFAULT_API_BASE}): set ${API_KEY_ENV}, pass api_key=, "
                "or use the local server: conn = moondream_nb.connect() (conn.ft(...), conn.vl(...))")

    def _unreachable(self, url: str, shown: str, why: str, waited: float) -> TransportError:
        scheme, host, port = _origin(url)
        where = f"{scheme}://{host}:{port}"
        if why == "unknown host":
            text = f"{shown}: unknown host {host!r}; check the endpoint"
        else:
            text = f"{shown}: nothing listens at {where} ({why}); is the server running and the endpoint right?"
        return TransportError(scrub(f"{text} (gave up after {waited:.1f} s)", [self._api_key]), sent=False)

    def _http_error(self, resp: requests.Response, shown: str) -> MoondreamError:
        import requests

        try:
            text = resp.content.decode("utf-8", "replace")
        except requests.exceptions.RequestException:
            text = ""
        finally:
            resp.close()
        if 300 <= resp.status_code < 400:
            where = scrub(resp.headers.get("Location", "?"), [self._api_key])
            return MoondreamError(f"{shown}: unexpected redirect to {where}; check the endpoint",
                                  status=resp.status_code)
        return error_from_response(resp.status_code, text, resp.headers, secrets=[self._api_key])
