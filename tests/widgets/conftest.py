"""Fixtures for the widget tests: a JupyterLab + headless Chromium session for browser tests."""

from __future__ import annotations

from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"

SETUP = """\
import json, random
from moondream_nb.data.scenes import make_scene
from moondream_nb.widgets import *
scene = make_scene(7, size=(640, 480), n_objects=4)
"""


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    """One JupyterLab, one Chromium page, one notebook (``widgets.ipynb``) for the whole session."""
    from .lab import CHROMIUM, CHROMIUM_ARGS, Lab, require_chromium, start_lab, write_notebook

    require_chromium()
    from playwright.sync_api import sync_playwright

    root = tmp_path_factory.mktemp("lab")
    with start_lab(root) as server:
        write_notebook(server["dir"] / "widgets.ipynb", ["# moondream-nb widget tests"])
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            lab = Lab(page, server)
            lab.open("widgets.ipynb")
            lab.kernel(SETUP)
            yield lab
            browser.close()


@pytest.fixture(scope="session")
def server():
    """The embedded local server (built-in model) in a subprocess, one per test session."""
    from moondream_nb.local import serve

    srv = serve(threads=1)
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def scene():
    from moondream_nb.data.scenes import make_scene

    return make_scene(7, size=(640, 480), n_objects=4)


@pytest.fixture(scope="session")
def responses(server, scene):
    """Real rollouts responses from the local server: detect (with ground truth), point, query."""
    ft = server.ft(name="widget-units", rank=8)
    shape = scene.objects[0].shape
    detect = ft.rollouts("detect", image=scene.image, object=shape + "s", num_rollouts=6,
                         ground_truth={"boxes": [o.box_dict for o in scene.objects if o.shape == shape]})
    point = ft.rollouts("point", image=scene.image, object=shape + "s", num_rollouts=4)
    query = ft.rollouts("query", image=scene.image, question="how many shapes are there?", num_rollouts=3,
                        reasoning=True)
    return {"ft": ft, "detect": detect, "point": point, "query": query}
