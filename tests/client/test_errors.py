"""Error classes from statuses and bodies; the server's message kept, the key never shown."""

from __future__ import annotations

import email.utils
import pickle
import socket
import time
from http import HTTPStatus

import pytest

import moondream_nb as md
from moondream_nb.errors import error_from_response, parse_retry_after

from .conftest import FAST, KEY
from .peer import Reply


@pytest.mark.parametrize("status,cls", [
    (400, md.ValidationError), (413, md.ValidationError), (422, md.ValidationError),
    (401, md.AuthenticationError), (403, md.AuthenticationError),
    (404, md.NotFoundError), (410, md.NotFoundError), (409, md.ConflictError),
    (429, md.RateLimitError), (500, md.ServerError), (503, md.ServerError), (524, md.ServerError),
    (418, md.MoondreamError),
])
def test_status_to_class_over_http(peer, tuning, status, cls):
    peer.script("GET", r".*/checkpoints", Reply(status, json={"error": {"message": f"server says {status}"}},
                                                headers={"X-Request-Id": f"req-{status}"}))
    tuning._transport.max_retries = 0
    with pytest.raises(md.MoondreamError) as info:
        tuning.list_checkpoints()
    exc = info.value
    assert type(exc) is cls
    assert exc.status == status
    assert f"server says {status}" in str(exc) and exc.message.startswith(f"server says {status}")
    assert exc.request_id == f"req-{status}" and f"req-{status}" in str(exc)
    assert len(peer.records) == 1


def test_every_error_class_is_exported_and_ordered():
    for cls in (md.ValidationError, md.AuthenticationError, md.NotFoundError, md.ConflictError,
                md.RateLimitError, md.ServerError, md.TransportError):
        assert issubclass(cls, md.MoondreamError)
    assert issubclass(md.ValidationError, ValueError)


@pytest.mark.parametrize("body,message,param,code", [
    ('{"error": {"message": "bad top_p", "type": "invalid_request_error", "param": "request.settings.top_p",'
     ' "code": "invalid_value"}}', "bad top_p", "request.settings.top_p", "invalid_value"),
    ('{"error": "invalid api key"}', "invalid api key", None, None),
    ('{"message": "plain message"}', "plain message", None, None),
    ('{"detail": "Not Found"}', "Not Found", None, None),
    ('{"detail": [{"loc": ["body", "groups", 2, "rewards"], "msg": "wrong length", "type": "value_error"},'
     ' {"loc": ["query", "limit"], "msg": "too big"}]}', "groups[2].rewards: wrong length; limit: too big",
     "groups[2].rewards", None),
    ("error code: 524", "error code: 524", None, None),
    ("<html>Bad Gateway</html>", "<html>Bad Gateway</html>", None, None),
    ("", HTTPStatus(422).phrase, None, None),
    ('["unexpected", "shape"]', '["unexpected", "shape"]', None, None),
])
def test_body_shapes(body, message, param, code):
    exc = error_from_response(422, body, {})
    assert exc.message == message
    assert exc.param == param
    assert exc.code == code


def test_request_id_sources():
    assert error_from_response(500, "", {"X-Request-Id": "a"}).request_id == "a"
    assert error_from_response(500, "", {"request-id": "b"}).request_id == "b"
    assert error_from_response(500, '{"error": "x", "request_id": "c"}', {}).request_id == "c"
    assert error_from_response(500, '{"error": {"message": "x", "request_id": "d"}}', None).request_id == "d"


def test_retry_after_parsing():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("0.25") == 0.25
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= parse_retry_after(later) <= 30
    exc = error_from_response(429, "slow down", {"Retry-After": "12"})
    assert isinstance(exc, md.RateLimitError) and exc.retry_after == 12.0


def test_secret_scrubbed_everywhere():
    body = f'{{"error": {{"message": "key {KEY} is wrong", "param": "{KEY}"}}, "request_id": "r-{KEY}"}}'
    exc = error_from_response(401, body, {}, secrets=[KEY, None, ""])
    for text in (str(exc), repr(exc), exc.message, exc.param, exc.request_id):
        assert KEY not in text
    assert "***" in exc.message


def test_server_echoing_key_over_http(peer, tuning):
    peer.script("POST", r".*/train_step", Reply(401, body=f"invalid api key {KEY}"))
    with pytest.raises(md.AuthenticationError) as info:
        tuning.train_step([{"mode": "sft", "request": {"skill": "query", "question": "q"}, "target": {"answer": "a"}}])
    exc = info.value
    assert KEY not in str(exc) and KEY not in repr(exc) and "invalid api key ***" in str(exc)
    assert KEY not in repr(tuning) and KEY not in str(tuning._transport)
    assert len(peer.records) == 1


def test_pickle_keeps_attributes():
    exc = error_from_response(429, '{"error": {"message": "slow", "param": "p"}}', {"Retry-After": "3", "X-Request-Id": "r"})
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is md.RateLimitError
    assert (back.message, back.status, back.param, back.request_id, back.retry_after) == ("slow", 429, "p", "r", 3.0)


def test_connection_refused_is_transport_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = md.Finetune(api_key=KEY, endpoint=f"http://127.0.0.1:{port}/v1/tuning", finetune_id="f",
                         max_retries=2, **FAST)
    with pytest.raises(md.TransportError) as info:
        client.save_checkpoint()
    exc = info.value
    assert exc.status is None
    assert "nothing listens at" in str(exc) and "(connection refused)" in str(exc) and "gave up after" in str(exc)
    assert KEY not in str(exc) and KEY not in repr(exc)


def test_timeout_is_transport_error(peer):
    client = md.ft(KEY, finetune_id="f", endpoint=f"{peer.url}/v1/tuning", timeout=0.2, max_retries=0)
    peer.script("POST", r".*/rollouts", Reply(delay=0.6, json={}))
    with pytest.raises(md.TransportError, match="timed out after 0.2 s"):
        client.rollouts("query", question="q")


def test_redirect_is_not_followed(peer, tuning):
    peer.script("POST", r".*/checkpoints/save", Reply(307, headers={"Location": "http://evil.example/steal"}))
    with pytest.raises(md.MoondreamError, match="unexpected redirect") as info:
        tuning.save_checkpoint()
    assert info.value.status == 307
    assert len(peer.records) == 1


def test_non_json_success_body(peer, tuning):
    peer.script("GET", r".*/checkpoints", Reply(200, body="<html>captive portal</html>"))
    with pytest.raises(md.MoondreamError, match="not JSON"):
        tuning.list_checkpoints()


@pytest.mark.parametrize("body", ["[1, 2]", '"ok"', "null", "3"])
def test_a_success_whose_json_is_not_an_object_is_a_moondream_error(peer, tuning, body):
    peer.script("GET", r".*/checkpoints", Reply(200, body=body, headers={"Content-Type": "application/json"}))
    with pytest.raises(md.MoondreamError, match="not an object") as info:
        tuning.list_checkpoints()  # was an AttributeError from deep inside the client
    assert info.value.status == 200


def test_a_non_json_success_body_is_quoted_without_the_key(peer, tuning):
    peer.script("GET", r".*/checkpoints", Reply(200, body=f"<html>proxy saw key {KEY}</html>"))
    with pytest.raises(md.MoondreamError, match="not JSON") as info:
        tuning.list_checkpoints()
    assert KEY not in str(info.value) and "***" in str(info.value)


def test_a_redirect_location_is_quoted_without_the_key(peer, tuning):
    peer.script("POST", r".*/checkpoints/save", Reply(302, headers={"Location": f"http://proxy.example/?k={KEY}"}))
    with pytest.raises(md.MoondreamError, match="unexpected redirect") as info:
        tuning.save_checkpoint()
    assert KEY not in str(info.value) and "proxy.example" in str(info.value)
