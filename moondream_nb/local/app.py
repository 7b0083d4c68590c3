"""The local server's HTTP layer: FastAPI routes for tuning, inference and batch (API.md).

Bodies are read here (size limit → 413 before parsing, bad JSON → 400) and handed, as parsed
JSON, to :class:`~moondream_nb.local.service.Service`, which validates them with
:mod:`moondream_nb.protocol`. Every error, including FastAPI's own 404/405 and anything
unexpected, leaves as ``{"error": {"message", "type", "param", "code"}}``; no traceback ever
reaches a client. Blocking work runs in two thread pools: *heavy* (the model: train steps,
rollouts, inference) and *light* (SQLite reads and writes), so a few-millisecond call never waits
behind seconds of training.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import json
import logging
import math
import os
import re
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .._version import __version__
from .. import protocol
from ..errors import ValidationError
from . import openapi as oa
from .disk import storage_problem
from .service import Problem
from .store import Idem, IdempotencyMismatch

log = logging.getLogger("moondream_nb.local")

MAX_BODY_BYTES = 32 * 2**20
MAX_PENDING = 128  # queued model jobs before the server answers 429
LIGHT_WORKERS = 8  # store calls are short; a few of them may wait on a finetune's lock (checkpoint saves)
BODY_IDLE_TIMEOUT = 10.0  # seconds a request body may go without a byte before it is a 408
AUTH_HEADER = "x-moondream-auth"
IDEMPOTENCY_HEADER = "idempotency-key"
THREADS_ENV = "MOONDREAM_NB_THREADS"
TUNING = "/v1/tuning"
FINETUNE = TUNING + "/finetunes/{finetune_id}"


@dataclass
class Config:
    """What a server needs: where its data lives and which keys it accepts."""

    data_dir: Path
    api_keys: list[str]
    threads: int = field(default_factory=lambda: default_threads())


def default_threads() -> int:
    """Torch threads (and blocking workers): ``$MOONDREAM_NB_THREADS``, at most 2 by default."""
    raw = os.environ.get(THREADS_ENV, "")
    return max(1, int(raw)) if raw.isdigit() else min(2, os.cpu_count() or 1)


def owner_of(api_key: str) -> str:
    """The owner id stored for a key: a hash, so the database never holds a key."""
    return hashlib.sha256(api_key.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    text = json.dumps(payload, separators=(",", ":"), allow_nan=False)
    return Response(text, status_code=status, media_type="application/json", headers=headers)


def problem_response(problem: Problem) -> Response:
    headers = {"Retry-After": "1"} if problem.status == 429 else {}
    if problem.status in (408, 500):  # the request may be half read: the connection starts afresh
        headers["Connection"] = "close"
    return json_response(problem.body(), problem.status, headers or None)


class Server:
    """The running parts behind the routes (filled in at startup)."""

    def __init__(self, config: Config):
        self.config = config
        self.keys = [(k.encode("utf-8", "surrogateescape"), owner_of(k)) for k in config.api_keys]
        # Every torch call runs on this one thread, the model's load included. Two threads running
        # torch each get an OpenMP team, and one team's spinning workers starve the other's on a
        # small machine: an SFT step took 270 ms on the thread that loaded the model and 450 ms on
        # any other, also on the first once a second had run one (benchmarks/server_speed.py).
        # On 2 cores two concurrent steps were no faster than two in a row anyway.
        self.heavy = ThreadPoolExecutor(max_workers=1, thread_name_prefix="moondream-model")
        self.light = ThreadPoolExecutor(max_workers=LIGHT_WORKERS, thread_name_prefix="moondream-store")
        self.pending = 0
        self.service: Any = None
        self.batches: Any = None
        self.store: Any = None

    def start(self) -> None:
        import torch

        from .batch import Batches
        from .engine import Engine
        from .finetunes import Registry
        from .service import Service
        from .store import Store

        def load() -> Engine:
            torch.set_num_threads(self.config.threads)
            return Engine()

        data = Path(self.config.data_dir)
        data.mkdir(parents=True, exist_ok=True)
        engine = self.heavy.submit(load).result()  # on the model thread: see __init__
        self.store = Store(data / "moondream.sqlite3")
        registry = Registry(engine, self.store, data / "finetunes")
        registry.sweep(self.store.live_finetune_ids())
        self.service = Service(engine, self.store, registry)
        self.batches = Batches(self.service, self.store, data / "batches",
                               on_model_thread=lambda fn: self.heavy.submit(fn).result())
        self.batches.start()

    def stop(self) -> None:
        if self.batches is not None:
            self.batches.stop()
        self.heavy.shutdown(wait=True, cancel_futures=True)
        self.light.shutdown(wait=True, cancel_futures=True)
        if self.store is not None:
            self.store.close()

    def owner(self, request: Request) -> str:
        """The caller's owner id; 401 for a missing or unknown key (compared in constant time)."""
        key = request.headers.get(AUTH_HEADER)
        if not key:
            raise Problem(401, f"missing {AUTH_HEADER} header: send the API key the server printed at start")
        raw = key.encode("utf-8", "surrogateescape")
        for known, owner in self.keys:
            if hmac.compare_digest(raw, known):
                return owner
        raise Problem(401, "invalid API key")

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a short blocking ``fn(*args)`` (store reads and writes) in the light pool."""
        return await self._call(self.light, functools.partial(fn, *args, **kwargs))

    async def model(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args)``, which uses the model, in the heavy pool; 429 when too much is queued."""
        if self.pending >= MAX_PENDING:
            raise Problem(429, "the local server is saturated; retry shortly")
        self.pending += 1
        try:
            return await self._call(self.heavy, functools.partial(fn, *args, **kwargs))
        finally:
            self.pending -= 1

    async def _call(self, pool: ThreadPoolExecutor, fn: functools.partial) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, fn)
        except Exception as exc:
            # A storage failure becomes its 507 here, as a Problem: raised past this point, Starlette's
            # catch-all would answer and then drop the keep-alive connection.
            if isinstance(exc, Problem) or (problem := storage_problem(exc, self.config.data_dir)) is None:
                raise
            log.warning("%s: %s (%s)", getattr(fn.func, "__qualname__", fn.func), problem.message, exc)
            raise problem from None

    def replayable(self, idem: Idem | None, fn: Callable[..., dict], *args: Any,
                   echoed: tuple[str, Any] | None = None) -> dict:
        """``fn(*args)``, or the first answer to the same Idempotency-Key (for side-effect-free POSTs).

        ``echoed``: (key, value) of a part of the answer that repeats the request (the rollouts'
        ``request`` with its image); the record leaves it out and a replay puts it back, since the
        same key only replays for the same body. A call without side effects still answers when its
        key cannot be recorded (a full disk): a retry then computes a new answer, all the key saves.
        """
        if (hit := self.store.idem_get(idem)) is not None:
            return {echoed[0]: echoed[1], **hit} if echoed else hit
        response = fn(*args)
        try:
            if echoed:
                kept = self.store.idem_put(idem, {k: v for k, v in response.items() if k != echoed[0]})
                return {echoed[0]: response[echoed[0]], **kept}
            return self.store.idem_put(idem, response)
        except Exception as exc:
            if storage_problem(exc, self.config.data_dir) is None:
                raise
            log.warning("answering without recording Idempotency-Key: %s", exc)
            return response


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The raw body; 413 as soon as it is known to exceed ``limit`` (before parsing anything)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Problem(413, f"body: {int(declared)} bytes, over the {limit} byte limit", "body")
    chunks, size = [], 0
    stream = request.stream().__aiter__()
    while True:
        try:  # a client that stops sending (a slow or stuck client) does not hold a connection forever
            chunk = await asyncio.wait_for(stream.__anext__(), BODY_IDLE_TIMEOUT)
        except StopAsyncIteration:
            break
        except asyncio.TimeoutError:
            raise Problem(408, f"body: no data for {BODY_IDLE_TIMEOUT:g} s after {size} bytes; send the whole "
                               "body promptly", "body") from None
        size += len(chunk)
        if size > limit:
            raise Problem(413, f"body: over the {limit} byte limit", "body")
        chunks.append(chunk)
    return b"".join(chunks)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses to inf, which no answer could carry back
        raise ValueError(f"number {text} is out of range")
    return value


def parse_json(raw: bytes) -> Any:
    if not raw.strip():
        raise Problem(400, "body: required (a JSON object)", "body")
    try:
        return json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        detail = str(exc).splitlines()[0][:200] if isinstance(exc, ValueError) else "nested too deeply"
        raise Problem(400, f"body: not valid JSON ({detail})", "body") from None


def idem_of(request: Request, owner: str, body: Any, scope: str = "") -> Idem | None:
    """The Idempotency-Key of this request, scoped to key + path (+ finetune).

    ``body`` is the parsed JSON (hashed canonically: the same JSON sent with other spacing or key
    order is the same request) or the raw bytes of a body that is not JSON.
    """
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    if not 1 <= len(key) <= 255:
        raise Problem(400, "Idempotency-Key: must be 1 to 255 characters", "Idempotency-Key")
    if not isinstance(body, bytes):
        body = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")
    return Idem(owner, f"{request.method} {request.url.path}|{scope}", key, hashlib.sha256(body).hexdigest())


class EchoIdempotencyKey:
    """ASGI middleware: a 2xx answer to a request with an ``Idempotency-Key`` carries the key back,
    which tells a client this server records keys (a repeat returns the first answer), so it may
    re-send an unanswered call with the same key after a crash."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        key = None
        if scope["type"] == "http":
            key = next((v for k, v in scope.get("headers") or [] if k == IDEMPOTENCY_HEADER.encode()), None)
        if key is None:
            await self.app(scope, receive, send)
            return

        async def echo(message: dict) -> None:
            if message["type"] == "http.response.start" and 200 <= message["status"] < 300:
                message = dict(message, headers=[*message.get("headers", []), (b"idempotency-key", key)])
            await send(message)

        await self.app(scope, receive, echo)


def _scope(body: Any) -> str:
    return str(body.get("finetune_id")) if isinstance(body, dict) else ""


def sse(text: str, final: dict[str, Any]) -> StreamingResponse:
    """``data: {"chunk", "completed": false}`` per word of ``text``, then ``final`` with ``completed: true``."""
    pieces = re.findall(r"\s*\S+", text) or [text]

    async def events() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield f"data: {json.dumps({'chunk': piece, 'completed': False})}\n\n".encode()
        yield f"data: {json.dumps({'chunk': '', 'completed': True, **final})}\n\n".encode()

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> Response:
        return problem_response(exc)

    @app.exception_handler(ValidationError)
    async def _invalid(request: Request, exc: ValidationError) -> Response:
        status = 413 if exc.code == protocol.TOO_LARGE else 400
        return problem_response(Problem(status, exc.message, exc.param))

    @app.exception_handler(IdempotencyMismatch)
    async def _reused(request: Request, exc: IdempotencyMismatch) -> Response:
        return problem_response(Problem(409, "Idempotency-Key: already used with a different request body",
                                        "Idempotency-Key", "idempotency_key_reused"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        message = {404: f"no such endpoint: {request.method} {request.url.path}",
                   405: f"method {request.method} not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
        return problem_response(Problem(exc.status_code, message))

    @app.exception_handler(RequestValidationError)
    async def _request(request: Request, exc: RequestValidationError) -> Response:
        return problem_response(Problem(400, "invalid request"))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return problem_response(Problem(500, "internal error in the local server (see its log)"))


def create_app(config: Config, on_ready: Callable[[], None] | None = None) -> FastAPI:
    """The FastAPI app serving API.md on ``config.data_dir`` for ``config.api_keys``."""
    srv = Server(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.get_running_loop().run_in_executor(None, srv.start)
        if on_ready is not None:
            on_ready()
        try:
            yield
        finally:
            srv.stop()

    # No /docs or /redoc: their pages load scripts from a CDN (broken offline); /openapi.json stays.
    app = FastAPI(title="moondream-nb local server", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None,
                  description="The Moondream tuning, inference and batch APIs on a built-in model (API.md).")
    app.state.server = srv
    app.add_middleware(EchoIdempotencyKey)
    install_error_handlers(app)
    add_tuning_routes(app, srv)
    add_inference_routes(app, srv)
    add_batch_routes(app, srv)
    return app


def add_tuning_routes(app: FastAPI, srv: Server) -> None:
    svc = lambda: srv.service  # noqa: E731  (filled in at startup)

    @app.get("/health", include_in_schema=False)
    async def health() -> Response:
        return json_response({"ok": True, "version": __version__})

    @app.post(TUNING + "/finetunes", openapi_extra=oa.body(oa.CREATE))
    async def create_finetune(request: Request) -> Response:
        owner = srv.owner(request)
        raw = await read_body(request)
        body = parse_json(raw)
        return json_response(await srv.run(svc().create_finetune, owner, body, idem_of(request, owner, body)))

    @app.get(TUNING + "/finetunes", openapi_extra=oa.query("limit", "cursor"))
    async def list_finetunes(request: Request) -> Response:
        owner = srv.owner(request)
        return json_response(await srv.run(svc().list_finetunes, owner, dict(request.query_params)))

    @app.get(FINETUNE)
    async def get_finetune(request: Request, finetune_id: str) -> Response:
        return json_response(await srv.run(svc().get_finetune, srv.owner(request), finetune_id))

    @app.delete(FINETUNE)
    async def delete_finetune(request: Request, finetune_id: str) -> Response:
        return json_response(await srv.run(svc().delete_finetune, srv.owner(request), finetune_id))

    @app.post(TUNING + "/rollouts", openapi_extra=oa.body(oa.ROLLOUTS))
    async def rollouts(request: Request) -> Response:
        owner = srv.owner(request)
        raw = await read_body(request)
        body = parse_json(raw)
        idem = idem_of(request, owner, body, _scope(body))
        echoed = ("request", body.get("request")) if isinstance(body, dict) else None
        return json_response(await srv.model(srv.replayable, idem, svc().rollouts, owner, body, echoed=echoed))

    @app.post(TUNING + "/train_step", openapi_extra=oa.body(oa.TRAIN_STEP))
    async def train_step(request: Request) -> Response:
        owner = srv.owner(request)
        raw = await read_body(request)
        body = parse_json(raw)
        return json_response(await srv.model(svc().train_step, owner, body, idem_of(request, owner, body, _scope(body))))

    @app.post(FINETUNE + "/metrics", openapi_extra=oa.body(oa.METRICS))
    async def log_metrics(request: Request, finetune_id: str) -> Response:
        owner = srv.owner(request)
        raw = await read_body(request)
        body = parse_json(raw)
        return json_response(await srv.run(svc().log_metrics, owner, finetune_id, body, idem_of(request, owner, body)))

    @app.get(FINETUNE + "/metrics", openapi_extra=oa.query("limit", "cursor"))
    async def list_metrics(request: Request, finetune_id: str) -> Response:
        """Local extension: the metrics logged so far, oldest first."""
        owner = srv.owner(request)
        return json_response(await srv.run(svc().list_metrics, owner, finetune_id, dict(request.query_params)))

    @app.get(FINETUNE + "/steps", openapi_extra=oa.query("limit", "cursor"))
    async def list_steps(request: Request, finetune_id: str) -> Response:
        """Local extension: every applied train step with its figures, by step."""
        owner = srv.owner(request)
        return json_response(await srv.run(svc().list_steps, owner, finetune_id, dict(request.query_params)))

    @app.get(FINETUNE + "/checkpoints", openapi_extra=oa.query("limit", "cursor"))
    async def list_checkpoints(request: Request, finetune_id: str) -> Response:
        owner = srv.owner(request)
        return json_response(await srv.run(svc().list_checkpoints, owner, finetune_id, dict(request.query_params)))

    @app.post(FINETUNE + "/checkpoints/save")
    async def save_checkpoint(request: Request, finetune_id: str) -> Response:
        owner = srv.owner(request)
        raw = await read_body(request)  # no body is expected; drain whatever came
        return json_response(await srv.run(svc().save_checkpoint, owner, finetune_id, idem_of(request, owner, raw)))

    @app.delete(FINETUNE + "/checkpoints/{step}")
    async def delete_checkpoint(request: Request, finetune_id: str, step: str) -> Response:
        return json_response(await srv.run(svc().delete_checkpoint, srv.owner(request), finetune_id, step))


def add_inference_routes(app: FastAPI, srv: Server) -> None:
    def route(kind: str) -> None:
        async def infer(request: Request) -> Response:
            owner = srv.owner(request)
            raw = await read_body(request)
            body = parse_json(raw)
            if isinstance(body, dict) and body.get("stream") is True:
                result = await srv.model(srv.service.infer, owner, kind, body)
                text_key = "answer" if kind == "query" else "caption"
                final = {k: v for k, v in result.items() if k != text_key}
                return sse(result[text_key], final)
            idem = idem_of(request, owner, body)
            return json_response(await srv.model(srv.replayable, idem, srv.service.infer, owner, kind, body))

        app.post(f"/v1/{kind}", name=kind, openapi_extra=oa.body(oa.INFERENCE[kind]))(infer)

    for kind in oa.INFERENCE:
        route(kind)

    @app.api_route("/v1/segment", methods=["GET", "POST"], include_in_schema=False)
    @app.api_route("/v1/chat/completions", methods=["GET", "POST"], include_in_schema=False)
    async def out_of_scope(request: Request) -> Response:
        raise Problem(404, f"{request.url.path} is out of scope for the local server (API.md Part A §12); "
                           "use Moondream Cloud for it", code="out_of_scope")


def add_batch_routes(app: FastAPI, srv: Server) -> None:
    from .batch import MAX_PART_BYTES

    batch_id_path = "/v1/batch/{batch_id}"

    def base_url(request: Request) -> str:
        return str(request.base_url)

    def action(request: Request, expected: str) -> None:
        got = request.query_params.get("action")
        if got != expected:
            raise Problem(400, f"action: must be {expected!r} for {request.method} {request.url.path}", "action")

    @app.post("/v1/batch", openapi_extra=oa.query(action="mpu-create"))
    async def create(request: Request) -> Response:
        owner = srv.owner(request)
        action(request, "mpu-create")
        raw = await read_body(request)
        return json_response(await srv.run(srv.batches.create, owner, idem_of(request, owner, raw)))

    @app.get("/v1/batch", openapi_extra=oa.query("limit", "cursor"))
    async def list_batches(request: Request) -> Response:
        owner = srv.owner(request)
        return json_response(await srv.run(srv.batches.list, owner, dict(request.query_params), base_url(request)))

    @app.put(batch_id_path, openapi_extra=oa.merge(oa.query("uploadId", "partNumber", action="mpu-uploadpart"),
                                                   oa.body({"type": "string", "format": "binary"},
                                                           "application/octet-stream")))
    async def upload_part(request: Request, batch_id: str) -> Response:
        owner = srv.owner(request)
        action(request, "mpu-uploadpart")
        data = await read_body(request, MAX_PART_BYTES)
        query = dict(request.query_params)
        return json_response(await srv.run(srv.batches.upload_part, owner, batch_id, query, data))

    @app.post(batch_id_path, openapi_extra=oa.merge(oa.query("uploadId", action="mpu-complete"),
                                                    oa.body(oa.BATCH_COMPLETE)))
    async def complete(request: Request, batch_id: str) -> Response:
        owner = srv.owner(request)
        action(request, "mpu-complete")
        raw = await read_body(request)
        body = parse_json(raw)
        idem = idem_of(request, owner, body)
        query = dict(request.query_params)
        return json_response(await srv.run(srv.batches.complete, owner, batch_id, query, body, idem))

    @app.delete(batch_id_path, openapi_extra=oa.query("uploadId", action="mpu-abort"))
    async def abort(request: Request, batch_id: str) -> Response:
        owner = srv.owner(request)
        action(request, "mpu-abort")
        return json_response(await srv.run(srv.batches.abort, owner, batch_id, dict(request.query_params)))

    @app.get(batch_id_path)
    async def status(request: Request, batch_id: str) -> Response:
        owner = srv.owner(request)
        return json_response(await srv.run(srv.batches.status, owner, batch_id, base_url(request)))

    @app.get(batch_id_path + "/outputs/{index}")
    async def output(request: Request, batch_id: str, index: str) -> Response:
        owner = srv.owner(request)
        path = await srv.run(srv.batches.output, owner, batch_id, index)
        return FileResponse(path, media_type="application/x-ndjson")
