"""Retries, backoff, Retry-After, idempotency keys, keep-alive, headers, environment."""

from __future__ import annotations

import email.utils
import time
import uuid

import pytest
from PIL import Image

import moondream_nb as md
from moondream_nb.client.transport import RETRY_STATUSES

from .conftest import FAST, KEY
from .peer import FINETUNE_ID, Reply

SFT = {"mode": "sft", "request": {"skill": "query", "question": "q?"}, "target": {"answer": "a"}}


@pytest.mark.parametrize("status", sorted(RETRY_STATUSES))
def test_retryable_status_is_retried(peer, tuning, status):
    peer.script("POST", r".*/rollouts", Reply(status, json={"error": "busy"}), Reply(status, body="error code"))
    result = tuning.rollouts("query", question="q?", num_rollouts=2)
    assert len(result["rollouts"]) == 2
    assert len(peer.requests("POST")) == 3
    assert {408, 425, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524} == set(RETRY_STATUSES)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 410, 413, 422, 501])
def test_non_retryable_raises_at_once(peer, tuning, status):
    peer.script("POST", r".*/train_step", Reply(status, json={"error": {"message": "no"}}))
    with pytest.raises(md.MoondreamError) as info:
        tuning.train_step([SFT])
    assert info.value.status == status
    assert len(peer.records) == 1


def test_dropped_connection_is_retried(peer, tuning):
    peer.script("POST", r".*/rollouts", Reply(drop=True), Reply(drop=True))
    assert tuning.rollouts("query", question="q?")["rollouts"]
    assert len(peer.records) == 3


def test_read_timeout_is_retried(peer):
    client = md.ft(KEY, finetune_id=FINETUNE_ID, endpoint=f"{peer.url}/v1/tuning", timeout=0.3, **FAST)
    peer.clear()
    peer.script("POST", r".*/rollouts", Reply(delay=0.8, json={"late": True}))
    assert "late" not in client.rollouts("query", question="q?")
    assert len(peer.records) == 2


def test_max_retries_respected(peer):
    client = md.ft(KEY, finetune_id=FINETUNE_ID, endpoint=f"{peer.url}/v1/tuning", max_retries=3, **FAST)
    peer.clear()
    peer.script("GET", r".*/checkpoints", *[Reply(503, body="down")] * 6)
    with pytest.raises(md.ServerError, match=r"down \(gave up after 4 attempts\)"):
        client.list_checkpoints()
    assert len(peer.records) == 4
    client._transport.max_retries = 0
    peer.clear()
    with pytest.raises(md.ServerError):
        client.list_checkpoints()
    assert len(peer.records) == 1


def test_backoff_is_exponential_full_jitter(peer):
    client = md.ft(KEY, finetune_id=FINETUNE_ID, endpoint=f"{peer.url}/v1/tuning",
                   max_retries=6, backoff_base=0.5, backoff_cap=4.0)
    sleeps: list[float] = []
    client._transport._sleep = sleeps.append
    peer.script("GET", r".*/checkpoints", *[Reply(503)] * 6)
    client.list_checkpoints()
    caps = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert len(sleeps) == 6
    assert all(0 <= s <= cap for s, cap in zip(sleeps, caps))
    assert sum(sleeps) > 0


def test_retry_after_seconds_is_a_floor(peer, tuning):
    peer.script("POST", r".*/rollouts", Reply(429, headers={"Retry-After": "1"}, json={"error": "slow down"}))
    tuning.rollouts("query", question="q?")
    first, second = peer.records
    assert second.time - first.time >= 0.95


def test_retry_after_http_date(peer, tuning):
    when = email.utils.formatdate(time.time() + 2, usegmt=True)  # whole seconds: 1-2 s from now
    peer.script("POST", r".*/rollouts", Reply(503, headers={"Retry-After": when}))
    tuning.rollouts("query", question="q?")
    first, second = peer.records
    assert second.time - first.time >= 0.9


def test_long_retry_after_raises_at_once(peer, tuning):
    peer.script("POST", r".*/rollouts", Reply(429, headers={"Retry-After": "3600"}, json={"error": "quota"}))
    with pytest.raises(md.RateLimitError) as info:
        tuning.rollouts("query", question="q?")
    assert info.value.retry_after == 3600
    assert "quota (Retry-After 3600 s exceeds max_retry_after" in str(info.value)
    assert len(peer.records) == 1
    t0 = time.monotonic()
    tuning.rollouts("query", question="q?")  # the hour is not a pace for the next call (nor another thread)
    assert time.monotonic() - t0 < 2.0


def test_idempotency_key_same_across_retries_and_new_per_call(peer, tuning):
    peer.script("POST", r".*/train_step", Reply(503), Reply(drop=True))
    tuning.train_step([SFT])
    tuning.train_step([SFT])
    keys = [r.headers.get("idempotency-key") for r in peer.requests("POST", r".*/train_step")]
    assert len(keys) == 4
    assert keys[0] == keys[1] == keys[2] != keys[3]
    uuid.UUID(keys[0])
    assert tuning.step == 2


def test_idempotency_key_only_on_mutating_calls(peer, image):
    client = md.ft(KEY, name="demo", rank=8, endpoint=f"{peer.url}/v1/tuning", **FAST)
    client.rollouts("point", image=image, object="x")
    client.train_step([SFT])
    client.log_metrics(1, {"acc": 1.0})
    client.save_checkpoint()
    client.list_checkpoints()
    client.delete_checkpoint(1)
    client.delete()
    has_key = {(r.method, r.path.rsplit("/", 1)[-1]): "idempotency-key" in r.headers for r in peer.records}
    assert has_key == {
        ("POST", "finetunes"): True, ("POST", "rollouts"): False, ("POST", "train_step"): True,
        ("POST", "metrics"): True, ("POST", "save"): True, ("GET", "checkpoints"): False,
        ("DELETE", "1"): False, ("DELETE", FINETUNE_ID): False,
    }


def test_sequential_calls_reuse_one_connection(peer, image):
    client = md.ft(KEY, finetune_id=FINETUNE_ID, endpoint=f"{peer.url}/v1/tuning")
    for _ in range(20):
        client.rollouts("point", image=image, object="x")
    conns = {r.conn for r in peer.records}
    assert len(peer.records) == 21 and len(conns) <= 2
    assert peer.connections <= 2


def test_reconnects_after_server_closes(peer, tuning):
    peer.script("GET", r".*/checkpoints", Reply(json={"checkpoints": []}, headers={"Connection": "close"}))
    tuning.list_checkpoints()
    tuning.list_checkpoints()
    assert len({r.conn for r in peer.records}) == 2


def test_headers_like_the_official_client(peer, tuning):
    tuning.rollouts("query", question="q?")
    tuning.list_checkpoints()
    tuning.save_checkpoint()
    tuning.delete()
    post, get, save, delete = peer.records
    for r in peer.records:
        assert r.headers["user-agent"] == f"moondream-nb/{md.__version__}"
        assert r.headers["x-moondream-auth"] == KEY
    assert post.headers["content-type"] == "application/json"
    assert all("content-type" not in r.headers for r in (get, save, delete))
    assert save.body == b"" and delete.body == b""


def test_no_auth_header_without_key(peer, image):
    client = md.vl(endpoint=f"{peer.url}/v1/")  # trailing slash tolerated
    client.point(image, "x")
    (r,) = peer.records
    assert r.path == "/v1/point" and "x-moondream-auth" not in r.headers


def test_environment_defaults(peer, monkeypatch, image):
    monkeypatch.setenv("MOONDREAM_API_KEY", "env-key")
    monkeypatch.setenv("MOONDREAM_ENDPOINT", f"{peer.url}/v1")
    client = md.ft(finetune_id=FINETUNE_ID)
    assert client.endpoint == f"{peer.url}/v1/tuning"
    client.vl().detect(image, "x")
    md.vl().caption(image)
    assert [r.path for r in peer.records] == [f"/v1/tuning/finetunes/{FINETUNE_ID}", "/v1/detect", "/v1/caption"]
    assert {r.headers["x-moondream-auth"] for r in peer.records} == {"env-key"}
    explicit = md.ft("k", finetune_id=FINETUNE_ID, endpoint=f"{peer.url}/v1/tuning/")
    assert explicit.endpoint == f"{peer.url}/v1/tuning" and explicit.api_key == "k"


def test_empty_success_body_reads_as_empty_dict(peer, tuning):
    peer.script("POST", r".*/checkpoints/save", Reply(200, body=b""))
    peer.script("DELETE", r".*/checkpoints/\d+", Reply(204, body=b""))
    assert tuning.save_checkpoint() == {}
    assert tuning.delete_checkpoint(3) is None


def test_repr_never_shows_key(peer, tuning, inference):
    for obj in (tuning, inference, tuning._transport, inference._transport):
        assert KEY not in repr(obj) and "***" in repr(obj)
    assert "api_key=None" in repr(md.vl(endpoint=peer.url))


def test_transport_arguments_validated():
    with pytest.raises(md.ValidationError, match="max_retries"):
        md.vl(endpoint="http://127.0.0.1:1", max_retries=-1)
    with pytest.raises(md.ValidationError, match="timeout"):
        md.ft("k", finetune_id="f", endpoint="http://127.0.0.1:1", timeout=0)
    with pytest.raises(md.ValidationError, match="endpoint"):
        md.ft("k", finetune_id="f", endpoint="not a url")


def _closed_port() -> int:
    import socket

    with socket.socket() as s:  # bound then closed: nothing listens there
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_nothing_listening_fails_fast_and_says_so():
    endpoint = f"http://127.0.0.1:{_closed_port()}/v1"
    t0 = time.monotonic()
    with pytest.raises(md.TransportError, match=r"nothing listens at http://127\.0\.0\.1:\d+ \(connection refused\)"):
        md.ft(KEY, name="bolts", rank=8, endpoint=endpoint + "/tuning")
    assert time.monotonic() - t0 < 3.5  # the connect budget (2 s), not the long retry budget (~96 s)
    t0 = time.monotonic()
    with pytest.raises(md.TransportError, match="nothing listens"):
        md.vl(KEY, endpoint=endpoint).caption(Image.new("RGB", (8, 8)))
    assert time.monotonic() - t0 < 3.5


def test_unknown_host_fails_fast():
    t0 = time.monotonic()
    with pytest.raises(md.TransportError, match=r"unknown host 'no-such-host\.invalid'"):
        md.ft(KEY, finetune_id=FINETUNE_ID, endpoint="http://no-such-host.invalid/v1/tuning")
    assert time.monotonic() - t0 < 3.5


def test_no_key_and_no_endpoint_says_what_to_set_without_sending(monkeypatch):
    monkeypatch.delenv("MOONDREAM_API_KEY", raising=False)
    monkeypatch.delenv("MOONDREAM_ENDPOINT", raising=False)
    t0 = time.monotonic()
    with pytest.raises(md.AuthenticationError, match=r"no API key for Moondream Cloud.*\$MOONDREAM_API_KEY.*"
                                                      r"moondream_nb\.connect\(\)"):
        md.ft(name="bolts", rank=8)
    with pytest.raises(md.AuthenticationError, match="MOONDREAM_API_KEY"):
        md.vl().caption(Image.new("RGB", (8, 8)))
    assert time.monotonic() - t0 < 0.5


def test_a_500_is_retried_briefly_a_503_long(peer, tuning):
    peer.script("GET", r".*/checkpoints", *[Reply(500, json={"error": {"message": "bug"}})] * 3)
    with pytest.raises(md.ServerError, match=r"bug \(gave up after 3 answers of 500\)"):
        tuning.list_checkpoints()
    assert len(peer.records) == 3
    peer.clear()
    peer.script("POST", r".*/checkpoints/save", *[Reply(503)] * 5)
    tuning.save_checkpoint()  # five 503s, then the answer: the long budget
    assert len(peer.records) == 6


def test_the_service_honours_keys_when_it_echoes_them(peer, tuning):
    assert tuning.honours_idempotency is None  # nothing keyed was sent yet
    tuning.train_step([SFT])
    assert tuning.honours_idempotency is False  # this peer records no keys (as far as we can tell)
    peer.script("POST", r".*/train_step", Reply(json={"step": 1, "applied": True},
                                                       headers={"Idempotency-Key": "mine-1"}))
    tuning.train_step([SFT], idempotency_key="mine-1")
    assert peer.records[-1].headers["idempotency-key"] == "mine-1"
    assert tuning.honours_idempotency is True
