"""The batch API (API.md Part B §5) on the local server: multipart upload, a worker, JSONL results.

Files live in ``<root>/<batch_id>/``: ``part-<n>.bin`` while uploading, ``input.jsonl`` once
complete, ``output-0.jsonl`` when done. The batch row in SQLite holds status and progress; a
batch left unfinished by a crash is run again from its input at the next start.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import re
import secrets
import shutil
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from .. import protocol
from ..errors import ValidationError
from .engine import ImageError
from .service import Problem, Service, not_found, parse_page
from .store import Store, now_ms

log = logging.getLogger("moondream_nb.local.batch")

MAX_PART_BYTES = 100 * 2**20 - 1  # "part size must be < 100 MB"
MAX_PART_NUMBER = 10_000
MAX_FILE_BYTES = 2 * 2**30
MAX_LINES = 100_000
MAX_LINE_BYTES = 10 * 2**20
RESULT_KEY = {"caption": "caption", "query": "answer", "detect": "objects", "point": "points"}


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class BatchError(Exception):
    """A whole batch fails with one of the documented batch-level codes."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class Batches:
    """Uploads, status and the background worker that runs batch lines through the service."""

    def __init__(self, service: Service, store: Store, root: Path,
                 on_model_thread: Callable[[Callable[[], Any]], Any] = lambda fn: fn()):
        self.service = service
        self._on_model_thread = on_model_thread  # the server's one torch thread (app.Server.heavy)
        self.store = store
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._completing = threading.Lock()

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        for batch_id in self.store.unfinished_batches():  # interrupted by a crash: run again
            self._queue.put(batch_id)
        self._thread = threading.Thread(target=self._work, name="moondream-batch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _dir(self, batch_id: str) -> Path:
        return self.root / batch_id  # batch ids reach here only after store.batch() matched a ULID

    def _upload(self, owner: str, file_id: str, upload_id: Any) -> Any:
        row = self.store.batch(owner, file_id)
        if row is None or row["status"] != "uploading":
            raise not_found(f"no upload in progress with fileId {file_id[:64]!r}")
        if not isinstance(upload_id, str) or not secrets.compare_digest(upload_id, row["upload_id"]):
            raise ValidationError("uploadId: does not belong to this fileId", param="uploadId")
        return row

    # --- upload -------------------------------------------------------------------------

    def create(self, owner: str, idem: Any = None) -> dict:
        """A new upload; concurrent twins of one Idempotency-Key make one batch."""
        upload_id = secrets.token_hex(16)
        response = self.store.create_batch(owner, upload_id, idem, lambda batch_id: {
            "fileId": batch_id, "uploadId": upload_id, "key": f"requests/local/{batch_id}.jsonl"})
        self._dir(response["fileId"]).mkdir(parents=True, exist_ok=True)
        return response

    def upload_part(self, owner: str, file_id: str, query: dict[str, str], data: bytes) -> dict:
        self._upload(owner, file_id, query.get("uploadId"))
        raw = query.get("partNumber", "")
        number = protocol.check_int(int(raw) if re.fullmatch(r"\d{1,6}", raw) else raw, "partNumber", 1,
                                    MAX_PART_NUMBER)
        etag = f'"{hashlib.md5(data).hexdigest()}"'
        path = self._dir(file_id) / f"part-{number}.bin"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        return {"etag": etag, "partNumber": number}

    def complete(self, owner: str, file_id: str, query: dict[str, str], body: Any, idem: Any = None) -> dict:
        """Assemble the parts and queue the batch, once per Idempotency-Key: concurrent twins wait
        for the first and get its answer (they used to see 404 and run the batch twice)."""
        with self._completing:
            if (hit := self.store.idem_get(idem)) is not None:
                return hit
            return self._complete(owner, file_id, query, body, idem)

    def _complete(self, owner: str, file_id: str, query: dict[str, str], body: Any, idem: Any) -> dict:
        self._upload(owner, file_id, query.get("uploadId"))
        protocol.check_dict(body, "body")
        parts = protocol.check_list(body.get("parts"), "parts", min_len=1, max_len=MAX_PART_NUMBER)
        model = body.get("model")
        if model is not None:
            protocol.check_model(model, "model")
            self._on_model_thread(lambda: self.service.adapter_for(owner, model))  # fail now, not hours later
        directory = self._dir(file_id)
        files, last = [], 0
        for i, part in enumerate(parts):
            where = f"parts[{i}]"
            protocol.check_dict(part, where)
            number = protocol.check_int(part.get("partNumber"), f"{where}.partNumber", last + 1, MAX_PART_NUMBER)
            last = number
            path = directory / f"part-{number}.bin"
            if not path.is_file():
                raise ValidationError(f"{where}.partNumber: part {number} was not uploaded", param=f"{where}.partNumber")
            etag = f'"{hashlib.md5(path.read_bytes()).hexdigest()}"'
            if part.get("etag") != etag:
                raise ValidationError(f"{where}.etag: does not match the uploaded part (send it back as received)",
                                      param=f"{where}.etag")
            files.append(path)
        size = sum(p.stat().st_size for p in files)
        if size > MAX_FILE_BYTES:
            raise Problem(413, f"parts: the batch file is {size} bytes, over {MAX_FILE_BYTES}", "parts")
        with open(directory / "input.jsonl", "wb") as out:
            for path in files:
                with open(path, "rb") as part_file:
                    shutil.copyfileobj(part_file, out)
        response = self.store.complete_batch(file_id, model, size, idem,
                                             {"id": file_id, "status": "chunking", "size": size})
        for path in directory.glob("part-*"):  # after the commit: a crash before it can still complete
            path.unlink(missing_ok=True)
        self._queue.put(file_id)
        return response

    def abort(self, owner: str, file_id: str, query: dict[str, str]) -> dict:
        self._upload(owner, file_id, query.get("uploadId"))
        self.store.update_batch(file_id, status="aborted")
        shutil.rmtree(self._dir(file_id), ignore_errors=True)
        return {"ok": True}

    # --- status -------------------------------------------------------------------------

    def _row(self, owner: str, batch_id: str) -> Any:
        row = self.store.batch(owner, batch_id)
        if row is None or row["status"] in ("uploading", "aborted"):
            raise not_found(f"batch {batch_id[:64]!r} not found")
        return row

    def status(self, owner: str, batch_id: str, base_url: str) -> dict:
        return self._status(self._row(owner, batch_id), base_url)

    def _status(self, row: Any, base_url: str) -> dict:
        out: dict[str, Any] = {
            "id": row["batch_id"], "status": row["status"], "model": row["model"] or "moondream3-preview",
            "progress": {"total": row["total"], "completed": row["completed"], "failed": row["failed"]},
            "usage": {"input_tokens": row["input_tokens"], "output_tokens": row["output_tokens"]},
            "created_at": iso(row["created_at_ms"]), "completed_at": iso(row["completed_at_ms"]),
            "expires_at": None,  # local results are kept until the data directory is removed
        }
        if row["status"] == "completed":
            out["outputs"] = [{"index": 0, "url": f"{base_url.rstrip('/')}/v1/batch/{row['batch_id']}/outputs/0"}]
        if row["error"]:
            out["error"] = json.loads(row["error"])
        return out

    def list(self, owner: str, query: dict[str, str], base_url: str) -> dict:
        rows, nxt, more = self.store.list_batches(owner, *parse_page(query))
        return {"batches": [self._status(r, base_url) for r in rows], "next_cursor": nxt, "has_more": more}

    def output(self, owner: str, batch_id: str, index: str) -> Path:
        row = self._row(owner, batch_id)
        path = self._dir(row["batch_id"]) / "output-0.jsonl"
        if row["status"] != "completed" or index != "0" or not path.is_file():
            raise not_found(f"batch {batch_id[:64]!r} has no output {index[:8]!r}")
        return path

    # --- the worker ---------------------------------------------------------------------

    def _work(self) -> None:
        while not self._stop.is_set():
            batch_id = self._queue.get()
            if batch_id is None:
                return
            try:
                self._run(batch_id)
            except BatchError as exc:
                self.store.update_batch(batch_id, status="failed", completed_at_ms=now_ms(),
                                        error=json.dumps({"code": exc.code, "message": str(exc)}))
            except Exception:
                log.exception("batch %s failed", batch_id)
                self.store.update_batch(batch_id, status="failed", completed_at_ms=now_ms(),
                                        error=json.dumps({"code": "processing_failed", "message": "internal error"}))

    def _lines(self, path: Path) -> list[bytes]:
        lines = path.read_bytes().split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        if not lines:
            raise BatchError("empty_batch", "the batch file has no lines")
        if len(lines) > MAX_LINES:
            raise BatchError("limit_exceeded", f"{len(lines)} lines, over {MAX_LINES}")
        for i, line in enumerate(lines):
            if not line.strip():
                raise BatchError("validation_error", f"line {i} is blank")
            if len(line) > MAX_LINE_BYTES:
                raise BatchError("limit_exceeded", f"line {i} is over {MAX_LINE_BYTES} bytes")
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                raise BatchError("validation_error", f"line {i} is not UTF-8") from None
        return lines

    def _run(self, batch_id: str) -> None:
        row = self.store.batch(None, batch_id)
        directory = self._dir(batch_id)
        lines = self._lines(directory / "input.jsonl")
        try:
            adapter = self._on_model_thread(lambda: self.service.adapter_for(row["owner"], row["model"]))
        except (Problem, ValidationError) as exc:
            raise BatchError("invalid_model", str(exc)) from None
        self.store.update_batch(batch_id, status="processing", total=len(lines), completed=0, failed=0,
                                input_tokens=0, output_tokens=0)
        counts = {"completed": 0, "failed": 0, "input_tokens": 0, "output_tokens": 0}
        tmp = directory / "output-0.jsonl.tmp"
        with open(tmp, "w", encoding="utf-8") as out:
            for i, raw in enumerate(lines):
                if self._stop.is_set():
                    return  # picked up again at the next start
                result = self._line(raw, i, adapter)
                usage = result.get("usage") or {}
                counts["completed" if result["status"] == "ok" else "failed"] += 1
                counts["input_tokens"] += usage.get("input_tokens", 0)
                counts["output_tokens"] += usage.get("output_tokens", 0)
                out.write(json.dumps(result) + "\n")
                if i % 16 == 15:
                    self.store.update_batch(batch_id, **counts)
        tmp.replace(directory / "output-0.jsonl")
        (directory / "input.jsonl").unlink(missing_ok=True)  # inputs are deleted after processing
        self.store.update_batch(batch_id, status="completed", completed_at_ms=now_ms(), **counts)

    def _line(self, raw: bytes, index: int, adapter: Any) -> dict:
        out: dict[str, Any] = {"line_index": index}
        try:
            line = json.loads(raw)
        except ValueError:
            return {**out, "status": "error", "error": {"code": "invalid_request", "message": "not valid JSON"}}
        if isinstance(line, dict) and "id" in line:
            out["id"] = line["id"]
        try:
            protocol.validate_batch_line(line, index)
            skill = line["skill"]
            body = self._body(line, index)
            self.service.engine.check_fits(dict(body, skill=skill), f"lines[{index}]")
            result = self._on_model_thread(lambda: self.service.engine.infer(skill, body, adapter))
        except ValidationError as exc:
            code = "unknown_skill" if (exc.param or "").endswith(".skill") else "invalid_request"
            return {**out, "status": "error", "error": {"code": code, "message": str(exc)}}
        except ImageError as exc:
            return {**out, "status": "error", "error": {"code": "image_decode_failed", "message": str(exc)}}
        except Exception:
            log.exception("batch line %d failed", index)
            return {**out, "status": "error", "error": {"code": "processing_error", "message": "internal error"}}
        usage = result.pop("usage")
        key = RESULT_KEY[skill]
        payload = {key: result[key]}
        if skill == "query" and result.get("reasoning") is not None:
            payload["reasoning"] = result["reasoning"]
        return {**out, "status": "ok", "result": payload, "usage": usage}

    @staticmethod
    def _body(line: dict, index: int) -> dict:
        """A batch line → an inference body (bare base64 image as ``image_url``; query reasons by default)."""
        images = line.get("images") or [line.get("image")]
        if len(images) != 1:
            raise ValidationError(f"lines[{index}].images: the built-in model reads one image per query",
                                  param=f"lines[{index}].images")
        body = {k: v for k, v in line.items() if k not in ("image", "images", "id", "skill")}
        body["image_url"] = images[0]
        if line["skill"] == "query":
            body.setdefault("reasoning", True)
        return body
