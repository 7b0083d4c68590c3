"""``moondream_nb.connect()``: the configured endpoint when a key is set, else a local server."""

from __future__ import annotations

import pytest
import requests

import moondream_nb as md
from moondream_nb.local import learning as L

KEY = "md-secret-key-that-must-not-show-0123456789"


def test_with_a_key_it_uses_the_configured_endpoint_and_starts_nothing(monkeypatch):
    monkeypatch.setenv("MOONDREAM_API_KEY", KEY)
    monkeypatch.setenv("MOONDREAM_ENDPOINT", "https://example.invalid/v1")
    conn = md.connect()
    assert conn.server is None and not conn.is_local
    assert conn.endpoint == "https://example.invalid/v1/tuning"
    assert KEY not in repr(conn) and KEY not in str(conn)


def test_local_false_without_a_key_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("MOONDREAM_API_KEY", raising=False)
    with pytest.raises(ValueError, match="MOONDREAM_API_KEY"):
        md.connect(local=False)


def test_without_a_key_it_starts_a_local_server_and_both_clients_work(monkeypatch, tmp_path):
    monkeypatch.delenv("MOONDREAM_API_KEY", raising=False)
    with md.connect(data_dir=tmp_path) as conn:
        assert conn.is_local and conn.server.running
        assert conn.server.api_key not in repr(conn)
        ft = conn.ft(name="connect-test", rank=8)
        request, gt = L.STAR_POINT.item(3)
        resp = ft.rollouts("point", image=request["image_url"], object=request["object"], num_rollouts=2,
                           ground_truth=gt)
        assert len(resp["rollouts"]) == 2 and len(resp["rewards"]) == 2
        assert "points" in conn.vl().point(request["image_url"], request["object"])
        url = conn.server.url
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/health", timeout=2)
    assert (tmp_path / "moondream.sqlite3").exists()  # a given data dir is kept
