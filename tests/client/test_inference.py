"""vl(): calls, model ids, retries, SSE streaming, and the batch API end to end."""

from __future__ import annotations

import base64
import io
import json
import time

import pytest
from PIL import Image

import moondream_nb as md

from .conftest import FAST, KEY
from .peer import FINETUNE_ID, Reply


def test_calls_and_return_shapes(peer, inference, image):
    assert inference.query(image, "what?") == {"answer": "a cat", "request_id": "req-q"}
    assert inference.query(image, "why?", reasoning=True)["reasoning"] == {"text": "fur", "grounding": []}
    assert inference.caption(image, length="long")["caption"] == "a long caption"
    assert inference.point(image, "eye")["points"] == [{"x": 0.5, "y": 0.5}]
    assert inference.detect(image, "cat")["objects"][0]["x_min"] == 0.1
    assert [r.path for r in peer.records] == ["/v1/query", "/v1/query", "/v1/caption", "/v1/point", "/v1/detect"]
    assert all("model" not in r.json for r in peer.records)


def test_model_from_constructor_and_per_call(peer, tuning, image):
    client = tuning.vl(model=tuning.model(5))
    client.point(image, "x")
    client.detect(image, "x", model=tuning.model(step=9))
    client.query(image, "q", model="moondream3-preview")
    models = [r.json["model"] for r in peer.records]
    assert models == [f"moondream3-preview/{FINETUNE_ID}@5", f"moondream3-preview/{FINETUNE_ID}@9", "moondream3-preview"]
    assert client.endpoint == f"{peer.url}/v1" and client.api_key == KEY


def test_inference_retries_and_typed_errors(peer, inference, image):
    peer.script("POST", "/v1/detect", Reply(503), Reply(drop=True))
    assert inference.detect(image, "x")["objects"]
    assert len(peer.records) == 3
    peer.script("POST", "/v1/point", Reply(413, json={"error": {"message": "image too large", "code": "too_large"}}))
    with pytest.raises(md.ValidationError, match="image too large") as info:
        inference.point(image, "x")
    assert info.value.status == 413 and info.value.code == "too_large"


def test_stream_chunks_arrive_as_sent(peer, inference, image):
    peer.script("POST", "/v1/query", Reply(headers={"Content-Type": "text/event-stream"}, chunks=[
        (0.0, b'data: {"chunk": "first", "completed": false}\n\n'),
        (0.6, b'data: {"chunk": " second", "completed": false}\n\n'),
        (0.0, b'data: {"chunk": "", "completed": true}\n\n'),
        (0.0, b'data: {"chunk": "after completion is ignored"}\n\n'),
    ]))
    start = time.monotonic()
    answer = inference.query(image, "q", stream=True)["answer"]
    first = next(answer)
    first_at = time.monotonic() - start
    rest = list(answer)
    assert (first, rest) == ("first", [" second", ""])
    assert first_at < 0.4  # not buffered until the end of the body (0.6 s later)
    assert peer.records[0].json["stream"] is True


def test_stream_tolerates_sse_variants(peer, inference, image):
    peer.script("POST", "/v1/caption", Reply(chunks=[(0.0, b": comment\r\nevent: message\r\nid: 1\r\n"
                                                           b'data:{"chunk": "no space"}\r\n\r\n'
                                                           b'data: {"chunk": " crlf"}\r\n\r\ndata: [DONE]\n\n')]))
    assert list(inference.caption(image, stream=True)["caption"]) == ["no space", " crlf"]


@pytest.mark.parametrize("events,cls,text", [
    (b'event: error\ndata: {"error": {"message": "model crashed"}}\n\n', md.ServerError, "model crashed"),
    (b'data: {"error": {"message": "slow down", "status": 429}}\n\n', md.RateLimitError, "slow down"),
    (b'data: {"error": "bad question", "status": 400}\n\n', md.ValidationError, "bad question"),
    (b"data: {not json\n\n", md.MoondreamError, "malformed event"),
])
def test_stream_errors_are_typed(peer, inference, image, events, cls, text):
    peer.script("POST", "/v1/query", Reply(chunks=[(0.0, b'data: {"chunk": "ok"}\n\n'), (0.0, events)]))
    answer = inference.query(image, "q", stream=True)["answer"]
    assert next(answer) == "ok"
    with pytest.raises(cls, match=text) as info:
        next(answer)
    assert type(info.value) is cls


def test_stream_broken_off_is_transport_error(peer, inference, image):
    # The reply promises 500 bytes, sends one event, and the server closes the connection.
    peer.script("POST", "/v1/query", Reply(chunks=[(0.0, b'data: {"chunk": "a"}\n\n')],
                                           headers={"Content-Length": "500", "Connection": "close"}))
    answer = inference.query(image, "q", stream=True)["answer"]
    assert next(answer) == "a"
    with pytest.raises(md.TransportError, match="broke off"):
        list(answer)


def test_stream_status_error_raises_at_call_and_is_retried_before_streaming(peer, inference, image):
    peer.script("POST", "/v1/query", Reply(503), Reply(401, json={"error": "invalid api key"}))
    with pytest.raises(md.AuthenticationError, match="invalid api key"):
        inference.query(image, "q", stream=True)
    assert len(peer.records) == 2


# --- batch -----------------------------------------------------------------------------------


class FakeBatch:
    """Routes for the multipart batch flow; results on two output files, one on another origin."""

    def __init__(self, peer, statuses=("processing", "completed"), error=None):
        self.peer, self.parts, self.lines, self.statuses = peer, {}, [], list(statuses)
        self.error = error
        other_origin = peer.url.replace("127.0.0.1", "localhost")
        self.outputs = [{"index": 1, "url": f"{other_origin}/files/out-1.jsonl"},
                        {"index": 0, "url": "/files/out-0.jsonl"}]  # relative: same origin
        peer.route("POST", "/v1/batch", self.create)
        peer.route("PUT", "/v1/batch/F1", self.upload)
        peer.route("POST", "/v1/batch/F1", self.complete)
        peer.route("GET", "/v1/batch/B1", self.status)
        peer.route("GET", r"/files/out-(\d)\.jsonl", self.output)
        peer.route("GET", "/v1/batch", lambda r: {"batches": [{"id": "B1"}], "next_cursor": None, "has_more": False})

    def create(self, r):
        assert r.params == {"action": "mpu-create"} and r.body == b""
        return {"fileId": "F1", "uploadId": "U1", "key": "requests/org/F1.jsonl"}

    def upload(self, r):
        n = int(r.params["partNumber"])
        assert r.params["action"] == "mpu-uploadpart" and r.params["uploadId"] == "U1"
        self.parts[n] = r.body
        return {"etag": f'"etag-{n}"', "partNumber": n}

    def complete(self, r):
        assert r.params == {"action": "mpu-complete", "uploadId": "U1"}
        data = b"".join(self.parts[p["partNumber"]] for p in r.json["parts"])
        self.lines = [json.loads(x) for x in data.splitlines()]
        return {"id": "B1", "status": "chunking", "size": len(data)}

    def status(self, r):
        state = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        out = {"id": "B1", "status": state, "model": "moondream3-preview",
               "progress": {"total": len(self.lines), "completed": 0 if state != "completed" else len(self.lines)}}
        if state == "completed":
            out["outputs"] = self.outputs
        if state == "failed":
            out["error"] = self.error
        return out

    def output(self, r):
        half = (len(self.lines) + 1) // 2
        index = int(r.path[-7])
        chosen = range(half) if index == 0 else range(half, len(self.lines))
        rows = [{"line_index": i, "id": self.lines[i].get("id"), "status": "ok",
                 "result": {"skill": self.lines[i]["skill"]}} for i in reversed(chosen)]
        return Reply(body="\n".join(json.dumps(x) for x in rows) + "\n", headers={"Content-Type": "application/x-ndjson"})


def test_batch_end_to_end(peer, inference, image, tmp_path):
    fake = FakeBatch(peer)
    path = tmp_path / "cat.png"
    image.save(path)
    requests = [
        {"id": "a", "skill": "point", "image": image, "object": "eye"},
        {"id": "b", "skill": "caption", "image": str(path), "length": "short"},
        {"id": "c", "skill": "query", "images": [image, path], "question": "same?", "reasoning": False},
        {"id": "d", "skill": "detect", "image": image, "object": "cat"},
        {"id": "e", "skill": "query", "image": image, "question": "color?", "settings": {"temperature": 0}},
    ]
    batch = inference.batch(requests, model="moondream3-preview/x@3", part_size=700)
    assert batch.id == "B1"
    complete = peer.requests("POST", "/v1/batch/F1")[0].json
    assert complete["model"] == "moondream3-preview/x@3"
    assert [p["partNumber"] for p in complete["parts"]] == list(range(1, len(fake.parts) + 1)) and len(fake.parts) > 1
    assert complete["parts"][0]["etag"] == '"etag-1"'
    assert all(r.headers["content-type"] == "application/octet-stream" for r in peer.requests("PUT"))
    assert [x["id"] for x in fake.lines] == ["a", "b", "c", "d", "e"]
    for line in fake.lines:
        for b64 in line.get("images", [line.get("image")]):
            assert Image.open(io.BytesIO(base64.b64decode(b64))).size == (64, 48)
    assert inference.images.encodes == 2  # the PIL image and the file, each once

    seen = []
    final = batch.wait(poll_interval=0.01, progress=seen.append)
    assert final["status"] == "completed" and [s["status"] for s in seen] == ["processing", "completed"]
    results = batch.results()
    assert [r["line_index"] for r in results] == [0, 1, 2, 3, 4]
    assert [r["id"] for r in results] == ["a", "b", "c", "d", "e"]
    downloads = {r.path: r.headers.get("x-moondream-auth") for r in peer.requests("GET", r"/files/.*")}
    assert downloads == {"/files/out-0.jsonl": KEY, "/files/out-1.jsonl": None}  # key only to our origin
    assert inference.list_batches(limit=5)["batches"] == [{"id": "B1"}]
    assert peer.requests("GET", "/v1/batch")[-1].params == {"limit": "5"}
    assert repr(inference.get_batch("B1")) == "Batch(id='B1', status='?')"


def test_batch_from_jsonl_file_uploads_it_verbatim(peer, inference, tmp_path):
    fake = FakeBatch(peer, statuses=("completed",))
    b64 = base64.b64encode(b"\x89PNG fake").decode()
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"id": i, "skill": "caption", "image": b64}) + "\n" for i in range(3)))
    batch = inference.batch(str(path))
    assert b"".join(fake.parts[n] for n in sorted(fake.parts)) == path.read_bytes()
    assert "model" not in peer.requests("POST", "/v1/batch/F1")[0].json
    assert len(batch.wait(poll_interval=0.01)["outputs"]) == 2


def test_batch_failure_timeout_and_abort(peer, inference, image):
    FakeBatch(peer, statuses=("failed",), error={"code": "invalid_model", "message": "no such model"})
    batch = inference.batch([{"skill": "caption", "image": image}])
    with pytest.raises(md.MoondreamError, match="no such model") as info:
        batch.wait(poll_interval=0.01)
    assert info.value.code == "invalid_model"
    with pytest.raises(md.MoondreamError, match="not completed"):
        batch.results()

    FakeBatch(peer, statuses=("processing",))
    with pytest.raises(TimeoutError, match="still 'processing'"):
        inference.batch([{"skill": "caption", "image": image}]).wait(poll_interval=0.02, timeout=0.05)

    peer.script("PUT", "/v1/batch/F1", Reply(400, json={"error": {"message": "part rejected"}}))
    with pytest.raises(md.ValidationError, match="part rejected"):
        inference.batch([{"skill": "caption", "image": image}])
    abort = peer.requests("DELETE", "/v1/batch/F1")
    assert len(abort) == 1 and abort[0].params == {"action": "mpu-abort", "uploadId": "U1"}


def test_vl_repr_and_encode_image(peer, image):
    client = md.vl(KEY, f"{peer.url}/v1", model="m", **FAST)
    assert KEY not in repr(client) and "model='m'" in repr(client)
    encoded = client.encode_image(image)
    client.detect(encoded, "x")
    assert peer.records[0].json["image_url"] == encoded.image_url
