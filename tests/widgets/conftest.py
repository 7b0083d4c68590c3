"""Fixtures for the widget tests: JupyterLab (or Notebook 7) + headless Chromium sessions for
browser tests."""

from __future__ import annotations

from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"

SETUP = """\
import json, random
from moondream_nb.scenes import make_scene
from moondream_nb.widgets import *
from moondream_nb import connect
scene = make_scene(7, size=(640, 480), n_objects=4)
"""


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def chromium():
    """One headless Chromium for the session, shared by every front end (Playwright's sync API
    allows one running instance per thread)."""
    from .lab import CHROMIUM, CHROMIUM_ARGS, require_chromium

    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


def _front_end(tmp_path_factory, browser, app: str):
    """One server of front end ``app`` (see ``lab.FRONTENDS``), one Chromium page, one notebook
    (``widgets.ipynb``) open in it with ``SETUP`` run in its kernel."""
    from .lab import Lab, start_lab, write_notebook

    root = tmp_path_factory.mktemp(app)
    with start_lab(root, app=app) as server:
        write_notebook(server["dir"] / "widgets.ipynb", ["# moondream-nb widget tests"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            lab = Lab(page, server)
            lab.open("widgets.ipynb")
            lab.kernel(SETUP)
            yield lab
        finally:
            page.close()


@pytest.fixture(scope="session")
def lab(tmp_path_factory, chromium):
    """One JupyterLab, one Chromium page, one notebook (``widgets.ipynb``) for the whole session."""
    yield from _front_end(tmp_path_factory, chromium, "lab")


@pytest.fixture(scope="module")
def notebook7(tmp_path_factory, chromium):
    """The same as ``lab`` in Jupyter Notebook 7 (``/notebooks/widgets.ipynb``), for one module."""
    yield from _front_end(tmp_path_factory, chromium, "notebook")


@pytest.fixture(scope="session")
def server():
    """The embedded local server (built-in model) in a subprocess, one per test session."""
    from moondream_nb.local import serve

    srv = serve(threads=1)
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def scene():
    from moondream_nb.scenes import make_scene

    return make_scene(7, size=(640, 480), n_objects=4)


@pytest.fixture(scope="session")
def responses(server, scene):
    """Real rollouts responses from the local server: detect (with ground truth), point, query."""
    from moondream_nb import connect

    ft = connect(server=server).ft(name="widget-units", rank=8)
    shape = scene.objects[0].shape
    detect = ft.rollouts("detect", image=scene.image, object=shape + "s", num_rollouts=6,
                         ground_truth={"boxes": [o.box_dict for o in scene.objects if o.shape == shape]})
    point = ft.rollouts("point", image=scene.image, object=shape + "s", num_rollouts=4)
    query = ft.rollouts("query", image=scene.image, question="how many shapes are there?", num_rollouts=3,
                        reasoning=True)
    return {"ft": ft, "detect": detect, "point": point, "query": query}
