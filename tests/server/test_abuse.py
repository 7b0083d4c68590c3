"""The local server under abuse (issue 22): inputs that used to get a 500, exactly once under
concurrent twins, cheap calls beside training, the documented formats only, slow clients."""

from __future__ import annotations

import base64
import io
import socket
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from PIL import Image

from .conftest import Api, item

T = "/v1/tuning"


@pytest.fixture(scope="module")
def fid(api) -> str:
    return api.finetune("abuse")


def raw_post(api: Api, path: str, text: str, **headers: str) -> requests.Response:
    return api.session.post(api.url + path, data=text.encode(), timeout=120,
                            headers={"Content-Type": "application/json", **headers})


def test_an_infinite_number_anywhere_is_a_400(api, fid):
    request, _ = item(1)
    body = ('{"finetune_id": "%s", "num_rollouts": 1, "request": {"skill": "point", "object": "star", '
            '"image_url": "%s", "extra": 1e999}}' % (fid, request["image_url"]))
    resp = raw_post(api, f"{T}/rollouts", body)
    assert resp.status_code == 400, resp.text[:300]
    assert "out of range" in resp.json()["error"]["message"] and resp.json()["error"]["param"] == "body"


@pytest.mark.parametrize("rewards", [[1.7e308, -1.7e308, 0.0, 0.0], [1e308, 9e307, 8e307, 0.0]])
def test_huge_finite_rewards_train_like_their_scaled_down_selves(api, fid, rewards):
    request, _ = item(2)
    resp = api.ok("POST", f"{T}/rollouts", {"finetune_id": fid, "num_rollouts": 4, "request": request})
    body = {"finetune_id": fid, "groups": [{"mode": "rl", "request": resp["request"], "rollouts": resp["rollouts"],
                                            "rewards": rewards}]}
    result = api.ok("POST", f"{T}/train_step", body)  # advantages are scale-free: no overflow, no blame on lr
    assert result["applied"] is True and result["reward_mean"] == pytest.approx(sum(r / 4 for r in rewards), rel=1e-9)
    assert result["reward_std"] is not None and result["reward_std"] > 0


@pytest.mark.parametrize("path", ["/finetunes", "/finetunes/{fid}/checkpoints", "/finetunes/{fid}/metrics",
                                  "/finetunes/{fid}/steps"])
def test_a_cursor_past_the_integer_range_is_a_400(api, fid, path):
    cursor = base64.urlsafe_b64encode(b'{"after": 9223372036854775808}').decode()
    error = api.fails(400, "GET", f"{T}{path.format(fid=fid)}?cursor={cursor}")
    assert error["param"] == "cursor"


@pytest.mark.parametrize("field,value", [("name", "bolts\n"), ("name", "bolts\r\n")])
def test_names_match_their_pattern_in_full(api, field, value):
    error = api.fails(400, "POST", f"{T}/finetunes", {"name": value, "rank": 8})
    assert error["param"] == "name"


def test_metric_names_match_in_full(api, fid):
    error = api.fails(400, "POST", f"{T}/finetunes/{fid}/metrics", {"step": 0, "metrics": {"loss\n": 1.0}})
    assert error["param"].startswith("metrics")


def _data_url(fmt: str, mime: str) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buf, format=fmt)
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode()


@pytest.mark.parametrize("fmt,mime", [("TIFF", "image/tiff"), ("BMP", "image/bmp"), ("ICO", "image/x-icon"),
                                      ("PNG", "text/plain"), ("PNG", "image/jpeg")])
def test_only_the_documented_image_formats_as_what_they_say_they_are(api, fid, fmt, mime):
    request = {"skill": "point", "object": "star", "image_url": _data_url(fmt, mime)}
    error = api.fails(400, "POST", f"{T}/rollouts", {"finetune_id": fid, "num_rollouts": 1, "request": request})
    assert error["param"] == "request.image_url"


@pytest.mark.parametrize("fmt,mime", [("JPEG", "image/jpeg"), ("PNG", "image/png"), ("WEBP", "image/webp"),
                                      ("GIF", "image/gif")])
def test_the_documented_formats_are_accepted(api, fid, fmt, mime):
    request = {"skill": "point", "object": "star", "image_url": _data_url(fmt, mime)}
    api.ok("POST", f"{T}/rollouts", {"finetune_id": fid, "num_rollouts": 1, "request": request})


def test_a_405_is_typed(api):
    resp = api.call("PUT", f"{T}/finetunes")
    assert resp.status_code == 405 and resp.json()["error"]["type"] == "invalid_request_error"
    assert resp.json()["error"]["code"] == "method_not_allowed"


def test_docs_are_off_the_schema_is_served(server):
    assert requests.get(server.url + "/docs", timeout=10).status_code == 404  # its scripts came from a CDN
    assert requests.get(server.url + "/openapi.json", timeout=10).json()["info"]["title"]


def _twins(n: int, fn) -> list:
    barrier = threading.Barrier(n)

    def go(_):
        barrier.wait()
        return fn()

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(go, range(n)))


def test_concurrent_twins_of_one_metrics_call_store_it_once(server, fid):
    for round_ in range(8):
        key = f"metrics-twin-{round_}"
        body = {"step": round_, "metrics": {f"twin/r{round_}": float(round_)}}
        answers = _twins(6, lambda: Api(server.url, server.api_key).call(
            "POST", f"{T}/finetunes/{fid}/metrics", body, headers={"Idempotency-Key": key}))
        assert {a.status_code for a in answers} == {200} and len({a.text for a in answers}) == 1
    logged = Api(server.url, server.api_key).ok("GET", f"{T}/finetunes/{fid}/metrics?limit=100")["metrics"]
    names = [name for row in logged for name in (row.get("metrics") or {row.get("name"): 0})]
    assert sorted(n for n in names if str(n).startswith("twin/")) == sorted(f"twin/r{r}" for r in range(8))


def test_concurrent_twins_of_a_batch_creation_make_one_batch(server):
    import sqlite3

    def rows() -> int:
        with sqlite3.connect(server.data_dir / "moondream.sqlite3") as db:
            return db.execute("SELECT COUNT(*) FROM batches").fetchone()[0]

    before = rows()
    for round_ in range(5):
        answers = _twins(5, lambda: Api(server.url, server.api_key).call(
            "POST", "/v1/batch?action=mpu-create", headers={"Idempotency-Key": f"batch-twin-{round_}"}))
        assert {a.status_code for a in answers} == {200} and len({a.text for a in answers}) == 1
    assert rows() == before + 5  # one batch per key: no orphan rows


def test_slow_clients_are_timed_out(server):
    sockets = []
    try:
        for _ in range(5):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            s.sendall(b"POST /v1/tuning/finetunes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"X-Moondream-Auth: " + server.api_key.encode() + b"\r\nContent-Length: 100\r\n\r\n{\"na")
            sockets.append(s)
        t0 = time.monotonic()
        for s in sockets:
            data = s.recv(4096)  # the server gives up on the body and says so, then closes
            assert b" 408 " in data.split(b"\r\n", 1)[0], data[:200]
        assert time.monotonic() - t0 < 25
    finally:
        for s in sockets:
            s.close()


def test_cheap_calls_do_not_wait_behind_four_train_steps(api):
    """Four trainers keep the model busy; a GET and a log_metrics answer in milliseconds meanwhile
    (they used to queue in the same pool: 0.8 s median, 2.5 s worst)."""
    fids = [api.finetune(f"busy-{i}") for i in range(4)]
    probe_fid = api.finetune("busy-probe")
    groups = []
    for seed in range(6):
        request, gt = item(100 + seed)
        resp = api.ok("POST", f"{T}/rollouts", {"finetune_id": fids[0], "num_rollouts": 8, "request": request})
        groups.append({"mode": "rl", "request": resp["request"], "rollouts": resp["rollouts"],
                       "rewards": [0.1 * i for i in range(8)]})
    stop, steps = threading.Event(), []

    def trainer(fid: str) -> None:
        trainer_api = Api(api.url, api.session.headers["X-Moondream-Auth"])
        while not stop.is_set():
            trainer_api.ok("POST", f"{T}/train_step", {"finetune_id": fid, "groups": groups})
            steps.append(fid)

    threads = [threading.Thread(target=trainer, args=(f,)) for f in fids]
    for t in threads:
        t.start()
    times = []
    try:
        time.sleep(1.0)
        for n in range(40):
            t0 = time.perf_counter()
            api.ok("GET", f"{T}/finetunes/{probe_fid}")
            api.ok("POST", f"{T}/finetunes/{probe_fid}/metrics", {"step": n, "metrics": {"probe": 1.0}})
            times.append((time.perf_counter() - t0) / 2)
            time.sleep(0.05)
        busy = len(steps)
    finally:
        stop.set()
        for t in threads:
            t.join()
    times.sort()
    assert busy >= 2, "the trainers did not keep the model busy"
    assert statistics.median(times) < 0.05 and times[int(0.9 * len(times))] < 0.1, times


def test_concurrent_twins_of_a_batch_completion_run_it_once(server):
    import json

    api = Api(server.url, server.api_key)
    request, _ = item(31)
    created = api.ok("POST", "/v1/batch", params={"action": "mpu-create"})
    path = f"/v1/batch/{created['fileId']}"
    line = {"id": "a", "skill": "caption", "image": request["image_url"].split(",", 1)[1], "length": "short"}
    part = api.ok("PUT", path, data=(json.dumps(line) + "\n").encode(),
                  params={"action": "mpu-uploadpart", "uploadId": created["uploadId"], "partNumber": 1})
    answers = _twins(4, lambda: Api(server.url, server.api_key).call(
        "POST", path, {"parts": [part]}, params={"action": "mpu-complete", "uploadId": created["uploadId"]},
        headers={"Idempotency-Key": "complete-twin"}))
    assert {a.status_code for a in answers} == {200}, [a.text[:200] for a in answers]
    assert len({a.text for a in answers}) == 1
    deadline = time.monotonic() + 60
    while api.ok("GET", path)["status"] != "completed" and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # a second run of the same batch would fail it now (its input is gone)
    status = api.ok("GET", path)
    assert status["status"] == "completed" and status["progress"] == {"total": 1, "completed": 1, "failed": 0}, status
