"""Integration tests of the local server: a real server process on 127.0.0.1, real HTTP, a real
SQLite file in a temporary data directory. Each module starts its own server."""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest
import requests
from PIL import Image

from moondream_nb.local import learning as L
from moondream_nb.local import serve

BASE_MODEL = "moondream3-preview"
OTHER_KEY = "md-local-another-user-key-0123456789"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serve(data_dir=tmp_path_factory.mktemp("data"), extra_keys=[OTHER_KEY], threads=1) as srv:
        yield srv


class Api:
    """requests against one server with one key; ``ok``/``fails`` assert the status and body shape."""

    def __init__(self, url: str, key: str | None):
        self.url = url
        self.session = requests.Session()
        if key is not None:
            self.session.headers["X-Moondream-Auth"] = key

    def call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        if body is not None:
            kwargs["json"] = body
        return self.session.request(method, self.url + path, timeout=120, **kwargs)

    def ok(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        resp = self.call(method, path, body, **kwargs)
        assert resp.status_code == 200, resp.text[:500]
        return resp.json()

    def fails(self, status: int, method: str, path: str, body: Any = None, **kwargs: Any) -> dict:
        """Assert a JSON error of ``status`` in the protocol's shape; return its ``error`` object."""
        resp = self.call(method, path, body, **kwargs)
        assert resp.status_code == status, (resp.status_code, resp.text[:500])
        assert resp.headers["content-type"].startswith("application/json")
        error = resp.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]
        assert "Traceback" not in resp.text
        return error

    def finetune(self, name: str, rank: int = 8) -> str:
        return self.ok("POST", "/v1/tuning/finetunes", {"name": name, "rank": rank})["finetune_id"]


@pytest.fixture(scope="module")
def api(server) -> Api:
    return Api(server.url, server.api_key)


@pytest.fixture(scope="module")
def other(server) -> Api:
    """A second user of the same server."""
    return Api(server.url, OTHER_KEY)


def item(seed: int, concept: L.Concept = L.STAR_POINT) -> tuple[dict, dict]:
    """(skill request with image_url, ground truth) for a fresh scene."""
    return concept.item(seed)


def pil(image_url: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(image_url.split(",", 1)[1])))


def png_url(image: Image.Image) -> str:
    return L.data_url(image)


def rl_group(resp: dict, rewards: list[float] | None = None) -> dict:
    rewards = rewards if rewards is not None else [float(i % 2) for i in range(len(resp["rollouts"]))]
    return {"mode": "rl", "request": resp["request"], "rollouts": resp["rollouts"], "rewards": rewards}
