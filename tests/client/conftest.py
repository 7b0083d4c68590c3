from __future__ import annotations

import pytest
from PIL import Image

import moondream_nb as md
from moondream_nb.client.pacing import forget_all

from .peer import FINETUNE_ID, Peer, moondream_routes

KEY = "sk-test-SECRET-key-0123456789"
FAST = dict(backoff_base=0.001, backoff_cap=0.005)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("MOONDREAM_API_KEY", raising=False)
    monkeypatch.delenv("MOONDREAM_ENDPOINT", raising=False)
    forget_all()  # a peer's port may be reused: a limit learned in one test must not pace the next


@pytest.fixture
def peer():
    p = Peer()
    moondream_routes(p)
    yield p
    p.close()


@pytest.fixture
def tuning(peer):
    """Our Finetune loaded by id against the peer, with tiny backoff; peer records cleared."""
    client = md.ft(KEY, finetune_id=FINETUNE_ID, endpoint=f"{peer.url}/v1/tuning", **FAST)
    peer.clear()
    yield client
    client.close()


@pytest.fixture
def inference(peer):
    client = md.vl(KEY, endpoint=f"{peer.url}/v1", **FAST)
    yield client
    client.close()


@pytest.fixture
def image():
    img = Image.new("RGB", (64, 48), (200, 30, 30))
    img.paste((20, 20, 220), (10, 10, 40, 30))
    return img
