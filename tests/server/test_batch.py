"""The batch API: multipart upload, the background worker, JSONL results, per-line errors."""

from __future__ import annotations

import pytest

import moondream_nb as md

from .conftest import Api, item, pil
from moondream_nb import connect


def test_batch_runs_every_skill_and_reports_line_errors(server):
    request, _ = item(61)
    image = pil(request["image_url"])
    vl = connect(server=server).vl()
    lines = [
        {"id": "c", "skill": "caption", "image": image, "length": "short"},
        {"id": "q", "skill": "query", "image": image, "question": "How many shapes?"},
        {"id": "p", "skill": "point", "image": image, "object": "star"},
        {"id": 4, "skill": "detect", "image": image, "object": "star"},
        {"id": "bad", "skill": "point", "image": "A" * 400, "object": "star"},  # base64, but not an image
    ]
    batch = vl.batch(lines, part_size=1024)  # several parts
    status = batch.wait(poll_interval=0.2, timeout=60)
    assert status["status"] == "completed" and status["progress"] == {"total": 5, "completed": 4, "failed": 1}
    assert status["usage"]["output_tokens"] > 0 and status["created_at"].endswith("Z")
    results = batch.results()
    assert [r["line_index"] for r in results] == [0, 1, 2, 3, 4]
    assert [r["id"] for r in results] == ["c", "q", "p", 4, "bad"]
    assert isinstance(results[0]["result"]["caption"], str)
    assert isinstance(results[1]["result"]["answer"], str) and "reasoning" in results[1]["result"]  # default on
    assert isinstance(results[2]["result"]["points"], list) and isinstance(results[3]["result"]["objects"], list)
    assert results[4]["status"] == "error" and results[4]["error"]["code"] == "image_decode_failed"
    listed = vl.list_batches(limit=100)["batches"]
    assert batch.id in [b["id"] for b in listed]


def test_batch_with_a_checkpoint_and_with_a_missing_one(server):
    request, gt = item(62)
    image = pil(request["image_url"])
    ft = connect(server=server).ft(name="batch-model", rank=8)
    ft.train_step([{"mode": "sft", "request": {"skill": "point", "image": image, "object": "star"}, "target": gt}])
    ft.save_checkpoint()
    vl = connect(server=server).vl(model=ft.model(1))
    status = vl.batch([{"skill": "point", "image": image, "object": "star"}]).wait(poll_interval=0.2, timeout=60)
    assert status["model"] == ft.model(1) and status["progress"]["completed"] == 1
    with pytest.raises(md.NotFoundError):
        vl.batch([{"skill": "point", "image": image, "object": "star"}], model=ft.model(5))


def test_batch_upload_rules(server, other):
    api = Api(server.url, server.api_key)
    created = api.ok("POST", "/v1/batch", params={"action": "mpu-create"})
    file_id, upload_id = created["fileId"], created["uploadId"]
    path = f"/v1/batch/{file_id}"
    api.fails(400, "PUT", path, data=b"x", params={"action": "mpu-uploadpart", "uploadId": "wrong", "partNumber": 1})
    api.fails(400, "PUT", path, data=b"x", params={"action": "mpu-uploadpart", "uploadId": upload_id, "partNumber": 0})
    other.fails(404, "PUT", path, data=b"x", params={"action": "mpu-uploadpart", "uploadId": upload_id,
                                                     "partNumber": 1})
    part = api.ok("PUT", path, data=b"\n\n", params={"action": "mpu-uploadpart", "uploadId": upload_id,
                                                     "partNumber": 1})
    assert part["etag"].startswith('"') and part["partNumber"] == 1
    error = api.fails(400, "POST", path, {"parts": [{"partNumber": 1, "etag": '"nope"'}]},
                      params={"action": "mpu-complete", "uploadId": upload_id})
    assert error["param"] == "parts[0].etag"
    api.fails(400, "POST", path, {"parts": [{"partNumber": 2, "etag": part["etag"]}]},
              params={"action": "mpu-complete", "uploadId": upload_id})
    done = api.ok("POST", path, {"parts": [part]}, params={"action": "mpu-complete", "uploadId": upload_id})
    assert done == {"id": file_id, "status": "chunking", "size": 2}
    batch = connect(server=server).vl().get_batch(file_id)
    with pytest.raises(md.MoondreamError) as exc:  # blank lines are a batch-level validation error
        batch.wait(poll_interval=0.2, timeout=30)
    assert exc.value.code == "validation_error"
    other.fails(404, "GET", path)
    aborted = api.ok("POST", "/v1/batch", params={"action": "mpu-create"})
    api.ok("DELETE", f"/v1/batch/{aborted['fileId']}", params={"action": "mpu-abort", "uploadId": aborted["uploadId"]})
    api.fails(404, "GET", f"/v1/batch/{aborted['fileId']}")
    api.fails(400, "POST", "/v1/batch", params={"action": "nonsense"})
