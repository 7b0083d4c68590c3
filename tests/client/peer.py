"""A scripted HTTP/1.1 peer for client tests: records every request, replies from a script.

Real sockets on 127.0.0.1 (keep-alive, Content-Length always set), so the client under test
runs its real transport. Each request is recorded with the id of the TCP connection it came on.
Replies come from one-shot queues (``peer.script(...)``) first, then from routes; the default
routes (``moondream_routes``) behave like a tiny deterministic Moondream server.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


@dataclass
class Reply:
    status: int = 200
    json: Any = None
    body: bytes | str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before replying
    drop: bool = False  # close the connection without replying
    chunks: list[tuple[float, bytes]] | None = None  # (pause before, bytes) written piecewise


@dataclass
class Record:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    conn: int
    time: float

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @property
    def params(self) -> dict[str, str]:
        return {k: v[-1] for k, v in self.query.items()}


Handler = Callable[[Record], "Reply | dict | None"]


class Peer:
    def __init__(self) -> None:
        self.records: list[Record] = []
        self.connections = 0  # opened since the last clear()
        self._conn_seq = 0  # connection ids, never reused
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._queues: list[tuple[str, re.Pattern, list[Reply]]] = []
        self._routes: list[tuple[str, re.Pattern, Handler]] = []
        peer = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Like real servers: no Nagle delay between the header and body writes.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with peer._lock:
                    peer.connections += 1
                    peer._conn_seq += 1
                    self.conn_id = peer._conn_seq

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                split = urllib.parse.urlsplit(self.path)
                record = Record(
                    self.command, split.path, urllib.parse.parse_qs(split.query),
                    {k.lower(): v for k, v in self.headers.items()}, body, self.conn_id, time.monotonic(),
                )
                with peer._lock:
                    peer.records.append(record)
                    peer.in_flight += 1
                    peer.max_in_flight = max(peer.max_in_flight, peer.in_flight)
                try:
                    reply = peer._reply_for(record)
                    self._write(reply)
                finally:
                    with peer._lock:
                        peer.in_flight -= 1

            def _write(self, reply: Reply) -> None:
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.drop:
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return
                if reply.chunks is not None:
                    pieces = reply.chunks
                else:
                    data = reply.body if reply.body is not None else (
                        json.dumps(reply.json).encode() if reply.json is not None else b"")
                    pieces = [(0.0, data.encode() if isinstance(data, str) else data)]
                try:
                    self.send_response(reply.status)
                    # A scripted Content-Length larger than the body simulates a reply cut short.
                    headers = {"Content-Type": "application/json",
                               "Content-Length": str(sum(len(p) for _, p in pieces)), **reply.headers}
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    for pause, piece in pieces:
                        if pause:
                            time.sleep(pause)
                        self.wfile.write(piece)
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

        class _Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # clients that time out or vanish are part of the tests

        self._server = _Server(("127.0.0.1", 0), _Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.01,), name="peer", daemon=True)
        self._thread.start()

    # --- scripting ------------------------------------------------------------------------

    def script(self, method: str, path: str, *replies: Reply) -> None:
        """Queue one-shot replies for requests matching ``method`` and the ``path`` regex."""
        with self._lock:
            self._queues.append((method, re.compile(path), list(replies)))

    def route(self, method: str, path: str, handler: Handler) -> None:
        """Answer matching requests with ``handler(record)`` (later routes take precedence)."""
        with self._lock:
            self._routes.insert(0, (method, re.compile(path), handler))

    def _reply_for(self, record: Record) -> Reply:
        with self._lock:
            for method, pattern, queue in self._queues:
                if method == record.method and pattern.fullmatch(record.path) and queue:
                    return queue.pop(0)
            routes = list(self._routes)
        for method, pattern, handler in routes:
            if method == record.method and pattern.fullmatch(record.path):
                try:
                    reply = handler(record)
                except Exception as exc:  # a broken test route: surface it, and do not invite retries
                    return Reply(599, json={"error": {"message": f"peer route failed: {exc!r}"}})
                return reply if isinstance(reply, Reply) else Reply(json=reply)
        return Reply(404, json={"error": {"message": f"no route for {record.method} {record.path}"}})

    # --- inspection -----------------------------------------------------------------------

    def requests(self, method: str | None = None, path: str | None = None) -> list[Record]:
        with self._lock:
            return [r for r in self.records
                    if (method is None or r.method == method) and (path is None or re.fullmatch(path, r.path))]

    def clear(self) -> None:
        with self._lock:
            self.records.clear()
            self.connections = 0
            self.max_in_flight = 0

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# --- a tiny deterministic Moondream -----------------------------------------------------------

FINETUNE_ID = "01HXFINETUNE"


def _rollout(skill: str, i: int) -> dict:
    output = {"query": {"answer": f"answer {i}"},
              "point": {"points": [{"x": 0.25, "y": 0.5}]},
              "detect": {"objects": [{"x_min": 0.1, "y_min": 0.1, "x_max": 0.4, "y_max": 0.5}]}}[skill]
    return {"skill": skill, "finish_reason": "stop", "output": output, "answer_tokens": [5, 17, 6],
            "thinking_tokens": [], "has_answer_separator": False, "coords": [], "sizes": []}


def sse(*events: dict, pause: float = 0.0) -> list[tuple[float, bytes]]:
    """Event-stream pieces, one ``data:`` event each."""
    return [(pause, f"data: {json.dumps(e)}\n\n".encode()) for e in events]


def moondream_routes(peer: Peer) -> None:
    state = {"step": 0, "checkpoints": []}
    base = "/v1/tuning"
    ft = rf"{base}/finetunes/(?P<id>[^/]+)"

    def finetune_of(record: Record) -> str:
        return record.path.split("/")[4]

    peer.route("POST", rf"{base}/finetunes", lambda r: {"finetune_id": FINETUNE_ID})
    peer.route("GET", ft, lambda r: {"finetune": {"finetune_id": finetune_of(r), "name": "demo", "rank": 8,
                                                  "created_at_ms": 1, "updated_at_ms": 2}})
    peer.route("DELETE", ft, lambda r: {"ok": True})

    def rollouts(r: Record) -> dict:
        body = r.json
        skill = body["request"]["skill"]
        n = body["num_rollouts"]
        rewards = [round(1 / (i + 1), 3) for i in range(n)] if "ground_truth" in body else None
        return {"request": body["request"], "rollouts": [_rollout(skill, i) for i in range(n)], "rewards": rewards}

    peer.route("POST", rf"{base}/rollouts", rollouts)

    def train_step(r: Record) -> dict:
        state["step"] += 1
        return {"step": state["step"], "applied": True, "kl": 0.01, "router_kl": None, "grad_norm": 0.5,
                "reward_mean": 0.5, "reward_std": 0.1, "sft_loss": None, "internal_metric": 7}

    peer.route("POST", rf"{base}/train_step", train_step)
    peer.route("POST", rf"{ft}/metrics",
               lambda r: {"ok": True, "step": r.json["step"], "logged_count": len(r.json["metrics"])})

    def save(r: Record) -> dict:
        info = {"checkpoint_id": f"ck{state['step']}", "finetune_id": finetune_of(r), "step": state["step"],
                "expires_at_ms": None, "created_at_ms": 1, "updated_at_ms": 1}
        state["checkpoints"].append(info)
        return {"ok": True, "checkpoint": info}

    peer.route("POST", rf"{ft}/checkpoints/save", save)

    def list_checkpoints(r: Record) -> dict:
        limit = int(r.params.get("limit", 50))
        cursor = r.params.get("cursor", "0")
        start = int(cursor) if cursor.isdigit() else 0
        page = state["checkpoints"][start:start + limit]
        more = start + limit < len(state["checkpoints"])
        return {"checkpoints": page, "next_cursor": str(start + limit) if more else None, "has_more": more}

    peer.route("GET", rf"{ft}/checkpoints", list_checkpoints)
    peer.route("DELETE", rf"{ft}/checkpoints/\d+", lambda r: {"ok": True})

    def query(r: Record) -> Reply | dict:
        if r.json.get("stream"):
            return Reply(headers={"Content-Type": "text/event-stream"},
                         chunks=sse({"chunk": "It is ", "completed": False}, {"chunk": "a cat.", "completed": False},
                                    {"chunk": "", "completed": True, "request_id": "req-s"}))
        out = {"request_id": "req-q", "answer": "a cat"}
        if r.json.get("reasoning"):
            out["reasoning"] = {"text": "fur", "grounding": []}
        return out

    peer.route("POST", "/v1/query", query)

    def caption(r: Record) -> Reply | dict:
        if r.json.get("stream"):
            return Reply(headers={"Content-Type": "text/event-stream"},
                         chunks=sse({"chunk": "A cat", "completed": False}, {"chunk": "", "completed": True}))
        return {"request_id": "req-c", "caption": f"a {r.json['length']} caption", "finish_reason": "stop"}

    peer.route("POST", "/v1/caption", caption)
    peer.route("POST", "/v1/point", lambda r: {"request_id": "req-p", "points": [{"x": 0.5, "y": 0.5}]})
    peer.route("POST", "/v1/detect", lambda r: {"request_id": "req-d", "objects": [
        {"x_min": 0.1, "y_min": 0.2, "x_max": 0.3, "y_max": 0.4}]})
