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
