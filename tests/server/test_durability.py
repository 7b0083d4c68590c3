"""Truth on disk: kill -9 at any moment loses nothing acknowledged; Idempotency-Key applies once."""

from __future__ import annotations

import random
import sqlite3
import threading
import time

import pytest
import requests

from moondream_nb.local import serve

from .conftest import Api, item

T = "/v1/tuning"
KEY = "md-local-durability-test-key-000000"


def integrity(data_dir) -> str:
    db = sqlite3.connect(str(data_dir / "moondream.sqlite3"))
    try:
        return db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()


class Worker:
    """Sends train steps, metrics and saves in a loop, recording what the server acknowledged."""

    def __init__(self, api: Api, fid: str):
        self.api, self.fid = api, fid
        self.steps: list[int] = []
        self.metrics: list[tuple[int, float]] = []
        self.checkpoints: dict[int, str] = {}
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        rng = random.Random(len(self.steps))
        try:
            while True:
                request, gt = item(rng.randrange(10**6))
                resp = self.api.call("POST", f"{T}/train_step", {"finetune_id": self.fid, "groups": [
                    {"mode": "sft", "request": request, "target": gt}]})
                if resp.status_code != 200:
                    return
                step = resp.json()["step"]
                self.steps.append(step)
                value = rng.random()
                if self.api.call("POST", f"{T}/finetunes/{self.fid}/metrics",
                                 {"step": step, "metrics": {"eval/x": value}}).status_code == 200:
                    self.metrics.append((step, value))
                if step % 3 == 0:
                    resp = self.api.call("POST", f"{T}/finetunes/{self.fid}/checkpoints/save")
                    if resp.status_code == 200:
                        self.checkpoints[step] = resp.json()["checkpoint"]["checkpoint_id"]
        except requests.RequestException:
            return  # the server was killed under us


def all_pages(api: Api, path: str, key: str) -> list[dict]:
    out, cursor = [], None
    while True:
        page = api.ok("GET", path, params={"limit": 100, **({"cursor": cursor} if cursor else {})})
        out += page[key]
        if not page["has_more"]:
            return out
        cursor = page["next_cursor"]


def test_kill_9_at_any_moment_keeps_everything_acknowledged(tmp_path):
    data = tmp_path / "data"
    acked_steps: list[int] = []
    acked_metrics: list[tuple[int, float]] = []
    acked_checkpoints: dict[int, str] = {}
    fid = None
    rng = random.Random(7)
    for cycle in range(3):
        srv = serve(data_dir=data, api_key=KEY, threads=1)
        try:
            api = Api(srv.url, KEY)
            if fid is None:
                fid = api.finetune("crash-test")
            # After the restart: everything acknowledged is there, steps are dense, training resumes.
            current = api.ok("GET", f"{T}/finetunes/{fid}")["finetune"]["step"]
            if acked_steps:
                assert acked_steps[-1] <= current <= acked_steps[-1] + 1  # at most the one in flight
            assert [s["step"] for s in all_pages(api, f"{T}/finetunes/{fid}/steps", "steps")] == list(
                range(1, current + 1))
            logged = {(m["step"], m["value"]) for m in all_pages(api, f"{T}/finetunes/{fid}/metrics", "metrics")}
            assert set(acked_metrics) <= logged
            listed = {c["step"]: c["checkpoint_id"] for c in all_pages(api, f"{T}/finetunes/{fid}/checkpoints",
                                                                       "checkpoints")}
            assert acked_checkpoints.items() <= listed.items()
            request, _ = item(99)
            for step in acked_checkpoints:
                api.ok("POST", "/v1/point", {"image_url": request["image_url"], "object": "star",
                                             "model": f"x/{fid}@{step}"})
            worker = Worker(api, fid)
            worker.thread.start()
            # Kill at a random moment after the first acknowledged step (a loaded machine may take a
            # while to get there), mid-step, mid-metric or mid-save.
            deadline = time.monotonic() + 60
            while not worker.steps and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 2.5))
            srv.kill()
            worker.thread.join(30)
            assert worker.steps, "no step was acknowledged before the kill"
            assert worker.steps == list(range(current + 1, current + 1 + len(worker.steps)))
            acked_steps += worker.steps
            acked_metrics += worker.metrics
            acked_checkpoints.update(worker.checkpoints)
            assert integrity(data) == "ok"
        finally:
            srv.stop()
    with serve(data_dir=data, api_key=KEY, threads=1) as srv:
        api = Api(srv.url, KEY)
        current = api.ok("GET", f"{T}/finetunes/{fid}")["finetune"]["step"]
        assert acked_steps[-1] <= current <= acked_steps[-1] + 1
        request, gt = item(5)
        nxt = api.ok("POST", f"{T}/train_step", {"finetune_id": fid, "groups": [
            {"mode": "sft", "request": request, "target": gt}]})
        assert nxt["step"] == current + 1
    assert integrity(data) == "ok"


@pytest.fixture(scope="module")
def durable(tmp_path_factory):
    return tmp_path_factory.mktemp("idem")


def _post(api: Api, path: str, body, key: str) -> requests.Response:
    return api.call("POST", path, body, headers={"Idempotency-Key": key})


def test_repeated_idempotency_key_returns_the_first_answer_and_applies_once(durable):
    request, gt = item(8)
    with serve(data_dir=durable, api_key=KEY, threads=1) as srv:
        api = Api(srv.url, KEY)
        created = _post(api, f"{T}/finetunes", {"name": "idem", "rank": 8}, "create-1").json()
        assert _post(api, f"{T}/finetunes", {"name": "idem", "rank": 8}, "create-1").json() == created
        fid = created["finetune_id"]
        body = {"finetune_id": fid, "groups": [{"mode": "sft", "request": request, "target": gt}]}
        first = _post(api, f"{T}/train_step", body, "step-1")
        again = _post(api, f"{T}/train_step", body, "step-1")
        assert first.status_code == again.status_code == 200 and first.json() == again.json()
        assert first.json()["step"] == 1
        assert api.ok("GET", f"{T}/finetunes/{fid}")["finetune"]["step"] == 1
        assert _post(api, f"{T}/train_step", body, "step-2").json()["step"] == 2  # a new key is a new step

        metrics = {"step": 2, "metrics": {"eval/acc": 0.5}}
        assert _post(api, f"{T}/finetunes/{fid}/metrics", metrics, "m-1").json()["logged_count"] == 1
        _post(api, f"{T}/finetunes/{fid}/metrics", metrics, "m-1")
        assert len(api.ok("GET", f"{T}/finetunes/{fid}/metrics")["metrics"]) == 1

        saved = _post(api, f"{T}/finetunes/{fid}/checkpoints/save", None, "save-1").json()
        changed = dict(body, lr=1e-3)
        error = api.fails(409, "POST", f"{T}/train_step", changed, headers={"Idempotency-Key": "step-1"})
        assert error["code"] == "idempotency_key_reused"
        # Keys are scoped to the API key: another user's identical key is unrelated.
        srv_key_other = Api(srv.url, "unknown")
        srv_key_other.fails(401, "POST", f"{T}/train_step", body, headers={"Idempotency-Key": "step-1"})
    # Kept across a restart.
    with serve(data_dir=durable, api_key=KEY, threads=1) as srv:
        api = Api(srv.url, KEY)
        assert _post(api, f"{T}/train_step", body, "step-1").json() == first.json()
        assert _post(api, f"{T}/finetunes/{fid}/checkpoints/save", None, "save-1").json() == saved
        assert api.ok("GET", f"{T}/finetunes/{fid}")["finetune"]["step"] == 2


def test_concurrent_twins_of_one_key_apply_once(durable):
    request, gt = item(9)
    with serve(data_dir=durable, api_key=KEY, threads=1) as srv:
        api = Api(srv.url, KEY)
        fid = api.finetune("twins")
        body = {"finetune_id": fid, "groups": [{"mode": "sft", "request": request, "target": gt}] * 8}
        answers: list[dict] = []
        threads = [threading.Thread(target=lambda: answers.append(
            Api(srv.url, KEY).ok("POST", f"{T}/train_step", body, headers={"Idempotency-Key": "twin"})))
            for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(answers) == 4 and all(a == answers[0] for a in answers) and answers[0]["step"] == 1
        assert api.ok("GET", f"{T}/finetunes/{fid}")["finetune"]["step"] == 1
