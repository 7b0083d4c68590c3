"""Spliced JSON bodies are byte-identical to json.dumps; echoed images come back as our objects."""

from __future__ import annotations

import json

import pytest

import moondream_nb as md
from moondream_nb.client import jsonbody
from moondream_nb.client.images import ImageEncoder


@pytest.fixture
def encoded(image):
    big = image.resize((640, 480))
    enc = ImageEncoder().encode(big)
    assert len(enc.image_url) > jsonbody.MIN_SPLICE_CHARS and enc.raw == enc.image_url.encode()
    return enc


def test_dumps_is_byte_identical(encoded):
    url = encoded.image_url
    payload = {"a": "é ✓ \"quoted\" \\ \n", "groups": [{"request": {"image_url": url}, "tokens": [1, 2]},
                                                     {"request": {"image_url": url}}],
               "n": 1.5, "none": None, "t": (1, 2), "long_text": "x" * 5000, "lookalike": f"@@{'0' * 32}:0@@"}
    lookup = lambda s: encoded.raw if s is url else None
    assert jsonbody.dumps(payload, lookup) == json.dumps(payload).encode()
    with pytest.raises(md.ValidationError, match="NaN"):
        jsonbody.dumps({"x": float("nan")})


def test_loads_restores_only_whole_string_values(encoded):
    url = encoded.image_url
    copy = "".join(url)  # equal but a different object, as json.loads would produce
    body = json.dumps({"request": {"image_url": copy}, "again": [copy], "inside": "x" + copy,
                       "other": "data:image/jpeg;base64," + "B" * 5000}).encode()
    data = jsonbody.loads(body, [(url, encoded.raw), (url, encoded.raw)])
    assert data["request"]["image_url"] is url and data["again"][0] is url
    assert data["inside"] == "x" + url and data["other"].endswith("B" * 10)
    assert data == json.loads(body)


def test_echoed_request_is_shared_and_spliced_back(peer, tuning, image):
    big = image.resize((640, 480))
    r = tuning.rollouts("point", image=big, object="x", num_rollouts=2)
    echoed = r["request"]["image_url"]
    assert echoed is tuning.images.encode(big).image_url  # no second megabyte-sized copy per response
    tuning.train_step([{"mode": "rl", "request": r["request"], "rollouts": r["rollouts"], "rewards": [1, 0]}])
    sent = peer.requests("POST", r".*/train_step")[0]
    assert sent.json["groups"][0]["request"]["image_url"] == echoed


def test_a_train_step_splices_echoed_images_instead_of_scanning_them(peer, tuning, image, monkeypatch):
    """The echoed image_url strings of RL groups go into the body as the encoder's bytes (train_step
    CPU with 4 groups over 1.5 MB images: 20.8 ms with json.dumps scanning each, 4.3 ms spliced; the
    raw send is ~3 ms); a string from elsewhere (a stored group) is spliced too, after one check."""
    big = image.resize((640, 480))
    r = tuning.rollouts("point", image=big, object="x", num_rollouts=2)
    group = {"mode": "rl", "request": r["request"], "rollouts": r["rollouts"], "rewards": [1, 0]}
    stored = dict(group, request=dict(r["request"], image_url="".join(r["request"]["image_url"])))  # equal, not ours
    spliced = []
    dumps = jsonbody.dumps

    def recording(payload, lookup=lambda s: None):
        urls = {id(g["request"]["image_url"]): g["request"]["image_url"] for g in payload["groups"]}
        spliced.extend(lookup(u) is not None for u in urls.values())
        return dumps(payload, lookup)

    monkeypatch.setattr(jsonbody, "dumps", recording)
    tuning.train_step([group, group, stored])
    assert spliced == [True, True]  # each distinct string once, none scanned by json.dumps
    sent = peer.requests("POST", r".*/train_step")[-1]
    assert sent.body == json.dumps(sent.json).encode() and len(sent.json["groups"]) == 3
    assert tuning.images.of_url(r["request"]["image_url"]) is tuning.images.encode(big)
