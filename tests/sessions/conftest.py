"""Fixtures for the session tests: one real local server (built-in model) per test session."""

from __future__ import annotations

import pytest
from moondream_nb import connect


@pytest.fixture(scope="session")
def server():
    from moondream_nb.local import serve

    srv = serve(threads=1)
    yield srv
    srv.stop()


@pytest.fixture
def ft(server, request):
    """A fresh finetune per test (named after it), so steps and checkpoints never mix."""
    name = "s-" + "".join(c if c.isalnum() else "-" for c in request.node.name)[-100:]
    return connect(server=server).ft(name=name, rank=8)
