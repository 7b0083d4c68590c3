"""The batch API (API.md Part B §5): validate, multipart-upload JSONL, poll, fetch results."""

from __future__ import annotations

import json
import os
import re
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from .. import protocol
from ..errors import MoondreamError, ValidationError
from .images import ImageEncoder
from .transport import Transport

DEFAULT_PART_SIZE = 50 * 2**20
MAX_LINES = 100_000
TERMINAL_STATUSES = ("completed", "failed")
# A string this long made only of base64 characters is taken as an already-encoded image;
# shorter strings are paths (or data URLs).
_BARE_BASE64 = re.compile(r"[A-Za-z0-9+/=\r\n]{256,}")


def _q(segment: str) -> str:
    return urllib.parse.quote(str(segment), safe="")


def _line_image(value: Any, images: ImageEncoder, path: str) -> Any:
    if isinstance(value, str) and _BARE_BASE64.fullmatch(value):
        return value
    if value is None:
        return None
    return images.encode(value, path).base64


def encode_lines(requests: Iterable[Mapping[str, Any]], images: ImageEncoder) -> bytes:
    """Batch request dicts → validated JSONL bytes, images as bare base64.

    Raises:
        ValidationError naming the line (``lines[3].object: required for batch point lines``).
    """
    if isinstance(requests, (str, bytes, Mapping)):
        raise ValidationError("requests: must be a list of request dicts or a JSONL path", param="requests")
    out = []
    for i, req in enumerate(requests):
        line = dict(protocol.check_dict(req, f"lines[{i}]"))
        if "image" in line:
            line["image"] = _line_image(line["image"], images, f"lines[{i}].image")
        if isinstance(line.get("images"), (list, tuple)):
            line["images"] = [_line_image(v, images, f"lines[{i}].images[{j}]") for j, v in enumerate(line["images"])]
        protocol.validate_batch_line(line, i)
        out.append(json.dumps(line, allow_nan=False).encode("utf-8"))
    _check_count(len(out))
    return b"\n".join(out) + b"\n"


def check_jsonl_file(path: str | os.PathLike) -> int:
    """Validate every line of a JSONL batch file; return its size in bytes."""
    count = 0
    try:
        with open(path, "rb") as fh:
            for i, raw in enumerate(fh):
                count += 1
                if not raw.strip():
                    raise ValidationError(f"lines[{i}]: blank lines are not allowed", param=f"lines[{i}]")
                try:
                    line = json.loads(raw)
                except ValueError as exc:
                    raise ValidationError(f"lines[{i}]: not valid JSON ({exc})", param=f"lines[{i}]") from None
                protocol.validate_batch_line(line, i)
    except OSError as exc:
        raise ValidationError(f"requests: cannot read {os.fspath(path)!r} ({exc.strerror})", param="requests") from None
    _check_count(count)
    return os.path.getsize(path)


def _check_count(count: int) -> None:
    if count == 0:
        raise ValidationError("lines: the batch is empty", param="lines")
    if count > MAX_LINES:
        raise ValidationError(f"lines: at most {MAX_LINES} lines per batch (got {count})", param="lines")


def _file_parts(path: str | os.PathLike, part_size: int) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while chunk := fh.read(part_size):
            yield chunk


def submit_batch(
    transport: Transport,
    images: ImageEncoder,
    requests: Iterable[Mapping[str, Any]] | str | os.PathLike,
    *,
    model: str | None = None,
    part_size: int | None = None,
) -> "Batch":
    """Validate, upload (``mpu-create``, ``mpu-uploadpart`` ..., ``mpu-complete``) and start a batch."""
    part_size = DEFAULT_PART_SIZE if part_size is None else protocol.check_int(part_size, "part_size", 1, 100 * 2**20 - 1)
    if model is not None:
        protocol.check_model(model, "model")
    if isinstance(requests, (str, os.PathLike)):
        check_jsonl_file(requests)
        parts: Iterable[bytes] = _file_parts(requests, part_size)
    else:
        data = encode_lines(requests, images)
        parts = (data[i:i + part_size] for i in range(0, len(data), part_size))

    created = transport.json("POST", "/batch", query={"action": "mpu-create"})
    try:
        file_id, upload_id = created["fileId"], created["uploadId"]
    except KeyError as exc:
        raise MoondreamError(f"POST /batch?action=mpu-create: reply lacks {exc}") from None
    done_parts = []
    try:
        for number, chunk in enumerate(parts, 1):
            resp = transport.send(
                "PUT", f"/batch/{_q(file_id)}", body=chunk, content_type="application/octet-stream",
                query={"action": "mpu-uploadpart", "uploadId": upload_id, "partNumber": number},
            )
            etag = transport.parse_json(resp).get("etag") or resp.headers.get("ETag")
            if not etag:
                raise MoondreamError(f"upload of part {number} returned no etag", status=resp.status_code)
            done_parts.append({"partNumber": number, "etag": etag})
        body: dict[str, Any] = {"parts": done_parts}
        if model is not None:
            body["model"] = model
        started = transport.json(
            "POST", f"/batch/{_q(file_id)}", body, query={"action": "mpu-complete", "uploadId": upload_id}
        )
    except BaseException:
        try:  # best effort: do not leave a half-uploaded file behind
            transport.send("DELETE", f"/batch/{_q(file_id)}", query={"action": "mpu-abort", "uploadId": upload_id})
        except MoondreamError:
            pass
        raise
    if not isinstance(started.get("id"), str):
        raise MoondreamError("POST /batch?action=mpu-complete: reply lacks the batch id")
    return Batch(transport, started["id"], started)


def list_batches(transport: Transport, *, limit: int = 50, cursor: str | None = None) -> dict:
    protocol.validate_page(limit, cursor)
    return transport.json("GET", "/batch", query={"limit": limit, "cursor": cursor})


class Batch:
    """A submitted batch: ``.status()``, ``.wait()``, ``.results()``."""

    def __init__(self, transport: Transport, batch_id: str, last_status: dict | None = None) -> None:
        self._transport = transport
        self.id = batch_id
        self.last_status = last_status

    def __repr__(self) -> str:
        state = (self.last_status or {}).get("status", "?")
        return f"Batch(id={self.id!r}, status={state!r})"

    def status(self) -> dict:
        """The batch's status object (``GET /batch/{id}``): ``status``, ``progress``, ``outputs`` ..."""
        self.last_status = self._transport.json("GET", f"/batch/{_q(self.id)}")
        return self.last_status

    def wait(
        self,
        poll_interval: float = 10.0,
        timeout: float | None = None,
        progress: bool | Callable[[dict], Any] = False,
    ) -> dict:
        """Poll until the batch is completed; return the final status object.

        Args:
            poll_interval: seconds between polls.
            timeout: give up after this many seconds (raises ``TimeoutError``).
            progress: True for a one-line display on stderr, or a callable taking each status.

        Raises:
            MoondreamError: the batch failed (its error code in ``.code``).
        """
        protocol.check_number(poll_interval, "poll_interval", 0, lo_open=True)
        deadline = None if timeout is None else time.monotonic() + timeout
        drawn = False
        try:
            while True:
                status = self.status()
                if callable(progress):
                    progress(status)
                elif progress:
                    p = status.get("progress") or {}
                    failed = f", {p['failed']} failed" if p.get("failed") else ""
                    sys.stderr.write(f"\rbatch {self.id}: {status.get('status')} "
                                     f"{p.get('completed', 0)}/{p.get('total', '?')}{failed} ")
                    sys.stderr.flush()
                    drawn = True
                state = status.get("status")
                if state == "completed":
                    return status
                if state == "failed":
                    error = status.get("error")
                    code = error.get("code") if isinstance(error, dict) else None
                    detail = (error.get("message") or code) if isinstance(error, dict) else error
                    raise MoondreamError(f"batch {self.id} failed: {detail}", code=code)
                if deadline is not None and time.monotonic() + poll_interval > deadline:
                    raise TimeoutError(f"batch {self.id} is still {state!r} after {timeout:g} s")
                time.sleep(poll_interval)
        finally:
            if drawn:
                sys.stderr.write("\n")

    def results(self) -> list[dict]:
        """Download every output file; return the result lines sorted by ``line_index``.

        Each line is ``{"line_index", "id"?, "status": "ok", "result", "usage"}`` or
        ``{"line_index", "id"?, "status": "error", "error": {"code", "message"}}``. The API key is
        sent only to output URLs on the API's own origin.
        """
        status = self.last_status
        if not status or status.get("status") != "completed":
            status = self.status()
        if status.get("status") != "completed":
            raise MoondreamError(f"batch {self.id} is {status.get('status')!r}, not completed; call wait() first")
        lines: list[dict] = []
        outputs = sorted(status.get("outputs") or [], key=lambda o: o.get("index", 0))
        for output in outputs:
            url = urllib.parse.urljoin(self._transport.base_url + "/", output["url"])
            resp = self._transport.send("GET", url)
            for raw in resp.content.splitlines():
                if raw.strip():
                    lines.append(json.loads(raw))
        lines.sort(key=lambda line: line.get("line_index", 0))
        return lines
