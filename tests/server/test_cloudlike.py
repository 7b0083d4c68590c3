"""The cloud-like mode of the local server (``--latency``, ``--rate-limit``) and the idempotency
signals a client relies on to re-send after a crash: the key echoed back, equal JSON replayed."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from moondream_nb.local import serve
from moondream_nb.local.cloudlike import CLOUD, Buckets, Latency, RateLimit, kind_of

from .conftest import Api, item

T = "/v1/tuning"


def test_latency_specs_parse_and_name_what_is_wrong():
    cloud = Latency.parse("cloud")
    assert cloud.delays == CLOUD and cloud.jitter == 0.2
    assert Latency.parse("none") is None and Latency.parse(None) is None
    custom = Latency.parse("train_step=3, rollouts=0.5,save=1,jitter=0")
    assert custom.delays == {"train_step": 3.0, "rollouts": 0.5, "save": 1.0} and custom.jitter == 0
    assert custom.delay("train_step") == 3.0 and custom.delay("read") == 0.0
    for bad, words in (("train=3", "unknown kind 'train'"), ("rollouts", "not kind=seconds"),
                       ("rollouts=fast", "'fast' is not a number"), ("rollouts=-1", ">= 0"),
                       ("rollouts=1,jitter=1", "jitter must be below 1")):
        with pytest.raises(ValueError, match=words):
            Latency.parse(bad)
    jittered = Latency.parse("rollouts=1,jitter=0.2")
    draws = [jittered.delay("rollouts") for _ in range(200)]
    assert 0.8 <= min(draws) < 0.9 and 1.1 < max(draws) <= 1.2


def test_kinds_of_requests():
    assert kind_of("POST", "/v1/tuning/train_step") == "train_step"
    assert kind_of("POST", "/v1/tuning/rollouts") == "rollouts"
    assert kind_of("POST", "/v1/tuning/finetunes/x/checkpoints/save") == "save"
    assert kind_of("POST", "/v1/detect") == "inference"
    assert kind_of("POST", "/v1/tuning/finetunes/x/metrics") == "metrics"
    assert kind_of("GET", "/v1/tuning/finetunes/x/metrics") == "read"
    assert kind_of("POST", "/v1/tuning/finetunes") == "other"


def test_rate_limit_specs_and_buckets():
    assert RateLimit.parse("2/s") == RateLimit(2.0, 2.0)
    assert RateLimit.parse("120/min").per_second == 2.0 and RateLimit.parse("0.5/s").burst == 1.0
    with pytest.raises(ValueError, match="positive rate"):
        RateLimit.parse("0/s")
    with pytest.raises(ValueError, match="positive rate"):
        RateLimit.parse("fast")
    now = [0.0]
    buckets = Buckets(RateLimit.parse("2/s"), clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(2)] == [0.0, 0.0]  # a burst of one second's worth
    assert buckets.take("a") == pytest.approx(0.5) and buckets.take("b") == 0.0  # per key
    now[0] = 0.5
    assert buckets.take("a") == 0.0 and buckets.take("a") == pytest.approx(0.5)


@pytest.fixture(scope="module")
def cloudy(tmp_path_factory):
    with serve(data_dir=tmp_path_factory.mktemp("cloudy"), threads=1,
               latency="train_step=1.0,rollouts=0.4,read=0.2,jitter=0", rate_limit="4/s") as srv:
        yield srv


def test_answers_come_late_by_the_kind_of_request(cloudy):
    api = Api(cloudy.url, cloudy.api_key)
    fid = api.finetune("late")
    request, gt = item(3)
    api.ok("POST", f"{T}/rollouts", {"finetune_id": fid, "num_rollouts": 2, "request": request})  # warm
    time.sleep(1.0)  # a full bucket: this test is about latency
    t0 = time.monotonic()
    api.ok("GET", f"{T}/finetunes/{fid}")
    read = time.monotonic() - t0
    t0 = time.monotonic()
    api.ok("POST", f"{T}/rollouts", {"finetune_id": fid, "num_rollouts": 2, "request": request})
    rollouts = time.monotonic() - t0
    t0 = time.monotonic()
    api.ok("POST", f"{T}/train_step", {"finetune_id": fid, "groups": [{"mode": "sft", "request": request,
                                                                        "target": gt}]})
    train = time.monotonic() - t0
    t0 = time.monotonic()
    assert requests.get(cloudy.url + "/health", timeout=5).status_code == 200
    health = time.monotonic() - t0
    # at least the delay of its kind (the work itself comes on top; upper bounds only catch a doubled delay)
    assert 0.2 <= read < 0.2 + 1.0 and 0.4 <= rollouts < 0.4 + 2.0 and 1.0 <= train < 1.0 + 3.0
    assert health < 0.2  # /health is exempt (the launcher polls it)


def test_rate_limit_answers_429_with_retry_after_and_the_policy(cloudy):
    api = Api(cloudy.url, cloudy.api_key)
    time.sleep(1.0)
    with ThreadPoolExecutor(8) as pool:  # eight at once: four pass (one second's worth), four are refused
        answers = list(pool.map(lambda _: Api(cloudy.url, cloudy.api_key).call("GET", f"{T}/finetunes?limit=1"),
                                range(8)))
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200] * 4 + [429] * 4
    refused = next(r for r in answers if r.status_code == 429)
    assert refused.headers["Retry-After"] == "1" and refused.headers["RateLimit-Policy"] == "4;w=1"
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_error" and "4 requests per second" in error["message"]
    # another key has its own bucket; no key at all is a 401, not a 429
    assert requests.get(f"{cloudy.url}{T}/finetunes", timeout=5).status_code == 401
    # the refused request's body was read: the same connection serves the next request
    time.sleep(1.0)
    big = api.call("POST", f"{T}/rollouts", {"pad": "x" * 200_000})
    assert big.status_code in (400, 429)
    assert api.call("GET", f"{T}/finetunes?limit=1").status_code in (200, 429)


def test_an_idempotency_key_is_echoed_and_equal_json_is_a_replay(cloudy):
    api = Api(cloudy.url, cloudy.api_key)
    time.sleep(1.0)
    fid = api.finetune("echo")
    request, gt = item(4)
    body = {"finetune_id": fid, "groups": [{"mode": "sft", "request": request, "target": gt}], "lr": 2e-4}
    first = api.call("POST", f"{T}/train_step", body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 200 and first.headers["Idempotency-Key"] == "k-1"
    # the same JSON written another way (other key order, spacing) is the same request: a replay
    other = json.dumps(dict(reversed(list(body.items()))), indent=2).encode()
    again = api.session.post(cloudy.url + f"{T}/train_step", data=other, timeout=30,
                             headers={"Idempotency-Key": "k-1", "Content-Type": "application/json"})
    assert again.status_code == 200 and again.json() == first.json()
    assert api.ok("GET", f"{T}/finetunes/{fid}")["finetune"]["step"] == 1
    assert "Idempotency-Key" not in api.call("GET", f"{T}/finetunes/{fid}").headers  # no key, no echo


def test_cli_rejects_a_bad_spec_with_one_line():
    out = subprocess.run([sys.executable, "-m", "moondream_nb.cli", "serve", "--port", "0", "--latency", "fast"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip() == ("moondream-nb serve: latency: 'fast' is not kind=seconds (kinds: train_step, "
                                  "rollouts, save, inference, metrics, read, other, jitter; or a profile: cloud, none)")
    with pytest.raises(ValueError, match="rate limit"):
        serve(rate_limit="lots")
