"""Bad input never reaches a 5xx: every malformed request gets a 4xx JSON error naming the field."""

from __future__ import annotations

import base64
import io

import pytest
import requests
from PIL import Image

from .conftest import Api, item

T = "/v1/tuning"


def _png(width: int, height: int) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (10, 20, 30)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


GOOD_URL = item(5)[0]["image_url"]
BOMB = _png(5000, 4000)  # 20 MP decoded from a few kB: over the 16 MP limit
NOT_AN_IMAGE = "data:image/png;base64," + base64.b64encode(b"just some text, no pixels").decode()
TRUNCATED = GOOD_URL[: len(GOOD_URL) // 2].rstrip("=")
TRUNCATED = TRUNCATED[: len(TRUNCATED) - len(TRUNCATED) % 4]


@pytest.fixture(scope="module")
def fid(api) -> str:
    return api.finetune("errors")


@pytest.fixture(scope="module")
def rollout(api, fid) -> dict:
    request, _ = item(6)
    return api.ok("POST", f"{T}/rollouts", {"finetune_id": fid, "num_rollouts": 2, "request": request})


def point(**changes):
    return {"skill": "point", "image_url": GOOD_URL, "object": "star", **changes}


def rollouts_body(fid, request=None, **changes):
    return {"finetune_id": fid, "num_rollouts": 2, "request": request or point(), **changes}


def rl(rollout, **changes):
    return {"mode": "rl", "request": rollout["request"], "rollouts": rollout["rollouts"], "rewards": [1.0, 0.0],
            **changes}


def tampered(rollout, **fields):
    bad = [dict(rollout["rollouts"][0], **fields), rollout["rollouts"][1]]
    return rl(rollout, rollouts=bad)


def sft(**changes):
    return {"mode": "sft", "request": point(), "target": {"points": [{"x": 0.5, "y": 0.5}]}, **changes}


def step_body(fid, *groups, **changes):
    return {"finetune_id": fid, "groups": list(groups), **changes}


# (id, method, path, body(fid, rollout), status, param)
CASES = [
    ("rank not allowed", "POST", f"{T}/finetunes", lambda f, r: {"name": "x", "rank": 12}, 400, "rank"),
    ("rank wrong type", "POST", f"{T}/finetunes", lambda f, r: {"name": "x", "rank": "8"}, 400, "rank"),
    ("name characters", "POST", f"{T}/finetunes", lambda f, r: {"name": "a b/../c", "rank": 8}, 400, "name"),
    ("name missing", "POST", f"{T}/finetunes", lambda f, r: {"rank": 8}, 400, "name"),
    ("body not an object", "POST", f"{T}/finetunes", lambda f, r: [1, 2], 400, "body"),
    ("num_rollouts 0", "POST", f"{T}/rollouts", lambda f, r: rollouts_body(f, num_rollouts=0), 400, "num_rollouts"),
    ("num_rollouts 17", "POST", f"{T}/rollouts", lambda f, r: rollouts_body(f, num_rollouts=17), 400, "num_rollouts"),
    ("num_rollouts type", "POST", f"{T}/rollouts", lambda f, r: rollouts_body(f, num_rollouts="8"), 400, "num_rollouts"),
    ("finetune_id missing", "POST", f"{T}/rollouts", lambda f, r: {"num_rollouts": 1, "request": point()}, 400,
     "finetune_id"),
    ("unknown skill", "POST", f"{T}/rollouts", lambda f, r: rollouts_body(f, point(skill="segment")), 400,
     "request.skill"),
    ("object missing", "POST", f"{T}/rollouts", lambda f, r: rollouts_body(f, point(object=None)), 400,
     "request.object"),
    ("top_p 0", "POST", f"{T}/rollouts", lambda f, r: rollouts_body(f, point(settings={"top_p": 0})), 400,
     "request.settings.top_p"),
    ("unknown setting", "POST", f"{T}/rollouts", lambda f, r: rollouts_body(f, point(settings={"temp": 1})), 400,
     "request.settings.temp"),
    ("max_tokens too large", "POST", f"{T}/rollouts",
     lambda f, r: rollouts_body(f, point(settings={"max_tokens": 10**6})), 400, "request.settings.max_tokens"),
    ("ground truth on query", "POST", f"{T}/rollouts",
     lambda f, r: rollouts_body(f, {"skill": "query", "question": "q"}, ground_truth={"boxes": []}), 400,
     "ground_truth"),
    ("ground truth box min>max", "POST", f"{T}/rollouts",
     lambda f, r: rollouts_body(f, ground_truth={"boxes": [{"x_min": 0.5, "y_min": 0, "x_max": 0.1, "y_max": 1}]}),
     400, "ground_truth.boxes[0]"),
    ("spatial ref out of range", "POST", f"{T}/rollouts",
     lambda f, r: rollouts_body(f, {"skill": "query", "question": "q", "image_url": GOOD_URL,
                                    "spatial_refs": [[1.5, 0.2]]}), 400, "request.spatial_refs[0][0]"),
    ("bad base64", "POST", f"{T}/rollouts", lambda f, r: rollouts_body(f, point(image_url="data:image/png;base64,@@@")),
     400, "request.image_url"),
    ("not an image", "POST", f"{T}/rollouts", lambda f, r: rollouts_body(f, point(image_url=NOT_AN_IMAGE)), 400,
     "request.image_url"),
    ("truncated image", "POST", f"{T}/rollouts", lambda f, r: rollouts_body(f, point(image_url=TRUNCATED)), 400,
     "request.image_url"),
    ("not a data url", "POST", f"{T}/rollouts", lambda f, r: rollouts_body(f, point(image_url="http://x/y.png")), 400,
     "request.image_url"),
    ("decompression bomb", "POST", f"{T}/rollouts", lambda f, r: rollouts_body(f, point(image_url=BOMB)), 413,
     "request.image_url"),
    ("question over the context", "POST", f"{T}/rollouts",
     lambda f, r: rollouts_body(f, {"skill": "query", "question": "why " * 250}), 400, "request.question"),
    ("question too long", "POST", f"{T}/rollouts",
     lambda f, r: rollouts_body(f, {"skill": "query", "question": "x" * 1001}), 400, "request.question"),
    ("lone surrogate", "POST", f"{T}/rollouts",
     lambda f, r: rollouts_body(f, {"skill": "query", "question": "bad \ud800 text"}), 400, "request.question"),
    ("rewards length", "POST", f"{T}/train_step", lambda f, r: step_body(f, rl(r, rewards=[1.0])), 400,
     "groups[0].rewards"),
    ("rewards type", "POST", f"{T}/train_step", lambda f, r: step_body(f, rl(r, rewards=[1.0, "x"])), 400,
     "groups[0].rewards[1]"),
    ("rewards missing", "POST", f"{T}/train_step", lambda f, r: step_body(f, rl(r, rewards=None)), 400,
     "groups[0].rewards"),
    ("mode unknown", "POST", f"{T}/train_step", lambda f, r: step_body(f, rl(r, mode="ppo")), 400, "groups[0].mode"),
    ("groups empty", "POST", f"{T}/train_step", lambda f, r: step_body(f), 400, "groups"),
    ("too many groups", "POST", f"{T}/train_step", lambda f, r: step_body(f, *[sft()] * 65), 400, "groups"),
    ("lr zero", "POST", f"{T}/train_step", lambda f, r: step_body(f, sft(), lr=0), 400, "lr"),
    ("lr too large", "POST", f"{T}/train_step", lambda f, r: step_body(f, sft(), lr=2), 400, "lr"),
    ("tampered answer_tokens", "POST", f"{T}/train_step", lambda f, r: step_body(f, tampered(r, answer_tokens="x")),
     400, "groups[0].rollouts[0].answer_tokens"),
    ("negative token id", "POST", f"{T}/train_step", lambda f, r: step_body(f, tampered(r, answer_tokens=[5, -1])),
     400, "groups[0].rollouts[0].answer_tokens[1]"),
    ("tampered finish_reason", "POST", f"{T}/train_step", lambda f, r: step_body(f, tampered(r, finish_reason=3)),
     400, "groups[0].rollouts[0].finish_reason"),
    ("tampered output point", "POST", f"{T}/train_step",
     lambda f, r: step_body(f, tampered(r, output={"points": [{"x": 2, "y": 0.5}]})), 400,
     "groups[0].rollouts[0].output.points[0].x"),
    ("output of another skill", "POST", f"{T}/train_step",
     lambda f, r: step_body(f, tampered(r, output={"objects": []})), 400, "groups[0].rollouts[0].output.points"),
    ("rollout skill mismatch", "POST", f"{T}/train_step", lambda f, r: step_body(f, tampered(r, skill="detect")),
     400, "groups[0].rollouts[0].skill"),
    ("too many target points", "POST", f"{T}/train_step",
     lambda f, r: step_body(f, sft(target={"points": [{"x": 0.5, "y": 0.5}] * 101})), 400, "groups[0].target.points"),
    ("target over the context", "POST", f"{T}/train_step",
     lambda f, r: step_body(f, sft(request={"skill": "query", "question": "q"}, target={"answer": "x" * 400})), 400,
     "groups[0].target"),
    ("sft target and targets", "POST", f"{T}/train_step",
     lambda f, r: step_body(f, sft(target={"points": []}, targets=[{"points": []}])), 400, "groups[0].target"),
    ("sft target missing", "POST", f"{T}/train_step", lambda f, r: step_body(f, sft(target=None)), 400,
     "groups[0].target"),
    ("sft reasoning mismatch", "POST", f"{T}/train_step",
     lambda f, r: step_body(f, sft(request={"skill": "query", "question": "q", "reasoning": True},
                                   target={"answer": "a"})), 400, "groups[0].target.reasoning"),
    ("sft bad image", "POST", f"{T}/train_step", lambda f, r: step_body(f, sft(), sft(request=point(image_url=BOMB))),
     413, "groups[1].request.image_url"),
    ("metrics step negative", "POST", f"{T}/finetunes/{{fid}}/metrics", lambda f, r: {"step": -1, "metrics": {"a": 1}},
     400, "step"),
    ("metrics step huge", "POST", f"{T}/finetunes/{{fid}}/metrics", lambda f, r: {"step": 10**30, "metrics": {"a": 1}},
     400, "step"),
    ("metrics empty", "POST", f"{T}/finetunes/{{fid}}/metrics", lambda f, r: {"step": 0, "metrics": {}}, 400, "metrics"),
    ("metric value", "POST", f"{T}/finetunes/{{fid}}/metrics", lambda f, r: {"step": 0, "metrics": {"a": "x"}}, 400,
     "metrics['a']"),
    ("metric value huge int", "POST", f"{T}/finetunes/{{fid}}/metrics",
     lambda f, r: {"step": 0, "metrics": {"a": 10**400}}, 400, "metrics['a']"),
    ("point without object", "POST", "/v1/point", lambda f, r: {"image_url": GOOD_URL}, 400, "object"),
    ("caption length", "POST", "/v1/caption", lambda f, r: {"image_url": GOOD_URL, "length": "huge"}, 400, "length"),
    ("stream on point", "POST", "/v1/point", lambda f, r: {"image_url": GOOD_URL, "object": "x", "stream": True}, 400,
     "stream"),
    ("model malformed", "POST", "/v1/detect", lambda f, r: {"image_url": GOOD_URL, "object": "x", "model": "gpt"}, 400,
     "model"),
    ("model traversal", "POST", "/v1/detect",
     lambda f, r: {"image_url": GOOD_URL, "object": "x", "model": "a/../../etc@1"}, 400, "model"),
    ("model unknown finetune", "POST", "/v1/detect",
     lambda f, r: {"image_url": GOOD_URL, "object": "x", "model": "a/01ARZ3NDEKTSV4RRFFQ69G5FAV@1"}, 404, "model"),
    ("checkpoint step not a number", "DELETE", f"{T}/finetunes/{{fid}}/checkpoints/abc", None, 400, "step"),
    ("checkpoint step huge", "DELETE", f"{T}/finetunes/{{fid}}/checkpoints/99999999999999999999", None, 400, "step"),
    ("limit zero", "GET", f"{T}/finetunes?limit=0", None, 400, "limit"),
    ("limit text", "GET", f"{T}/finetunes?limit=ten", None, 400, "limit"),
    ("cursor forged", "GET", f"{T}/finetunes?cursor=bm90LWEtY3Vyc29y", None, 400, "cursor"),
    ("traversal finetune path", "GET", f"{T}/finetunes/..%2F..%2Fmoondream.sqlite3", None, 404, None),
    ("traversal finetune body", "POST", f"{T}/rollouts",
     lambda f, r: rollouts_body("../../finetunes"), 404, "finetune_id"),
    ("traversal batch", "GET", "/v1/batch/..%2F..%2Fmoondream.sqlite3", None, 404, None),
    ("unknown endpoint", "GET", "/v1/nothing-here", None, 404, None),
    ("wrong method", "PATCH", f"{T}/finetunes", None, 405, None),
]


@pytest.mark.parametrize("name,method,path,make,status,param", CASES, ids=[c[0] for c in CASES])
def test_malformed_requests_get_a_4xx_naming_the_field(api, fid, rollout, name, method, path, make, status, param):
    body = make(fid, rollout) if make else None
    error = api.fails(status, method, path.format(fid=fid), body)
    assert error["param"] == param, error
    assert api.ok("GET", f"{T}/finetunes/{fid}")["finetune"]["step"] == 0  # nothing was applied


@pytest.mark.parametrize("raw,why", [
    (b"{not json", "not valid JSON"), (b"", "required"), (b'{"rank": NaN, "name": "x"}', "not valid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"), (b"\xff\xfe{}", "not valid JSON"),
])
def test_unparseable_bodies_are_400(api, raw, why):
    resp = api.session.post(api.url + f"{T}/finetunes", data=raw, headers={"Content-Type": "application/json"})
    assert resp.status_code == 400 and why in resp.json()["error"]["message"]


def test_oversized_body_is_413_before_parsing(api, fid):
    body = b'{"finetune_id": "' + fid.encode() + b'", "pad": "' + b"x" * (33 * 2**20) + b'"}'
    resp = api.session.post(api.url + f"{T}/rollouts", data=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 413 and resp.json()["error"]["param"] == "body"


def test_oversized_image_field_is_413(api, fid):
    huge = "data:image/jpeg;base64," + "A" * (14 * 2**20)
    error = api.fails(413, "POST", f"{T}/rollouts", rollouts_body(fid, point(image_url=huge)))
    assert error["param"] == "request.image_url"


@pytest.mark.parametrize("headers", [{}, {"X-Moondream-Auth": "wrong-key"}, {"X-Moondream-Auth": ""}])
@pytest.mark.parametrize("method,path", [("GET", f"{T}/finetunes"), ("POST", f"{T}/rollouts"),
                                         ("POST", "/v1/query"), ("GET", "/v1/batch")])
def test_missing_or_wrong_key_is_401(server, headers, method, path):
    resp = requests.request(method, server.url + path, headers=headers, json={"question": "q"}, timeout=30)
    assert resp.status_code == 401 and resp.json()["error"]["type"] == "authentication_error"
    assert server.api_key not in resp.text


def test_no_key_is_ever_logged(server, api, fid):
    api.fails(404, "POST", f"{T}/rollouts", rollouts_body("01ARZ3NDEKTSV4RRFFQ69G5FAV"))
    Api(server.url, "a-wrong-key-that-must-not-be-logged").fails(401, "GET", f"{T}/finetunes")
    log = server.log_path.read_text()
    assert server.api_key not in log and "a-wrong-key-that-must-not-be-logged" not in log
