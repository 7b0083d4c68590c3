"""The panels in marimo (``mo.ui.anywidget``), in headless Chromium: real clicks and drags reach
Python and re-run the cells that depend on the panel; what marimo shows as the panel's value is
its useful state (rewards, layers), never the image bytes.

The marimo app is a real file run by ``marimo run``; its dependent cells print what Python holds
(``rewards = [...]``), so the page shows kernel-side state after each interaction.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from .lab import free_port, stop_process, wait_for_server

marimo = pytest.importorskip("marimo")  # a dev dependency: CI installs it

APP = textwrap.dedent('''\
    import marimo

    app = marimo.App(width="full")


    @app.cell
    def _():
        import json, os
        import marimo as mo
        from PIL import Image
        from skimage import data
        from moondream_nb.widgets import RolloutReviewer, TargetEditor

        response = json.loads(open(os.environ["MDNB_RESPONSE"]).read())
        photo = Image.fromarray(data.astronaut())
        submitted = []
        return RolloutReviewer, TargetEditor, json, mo, photo, response, submitted


    @app.cell
    def _(RolloutReviewer, mo, response, submitted):
        reviewer = mo.ui.anywidget(RolloutReviewer(response))
        reviewer.widget.on_submit(lambda rv: submitted.append(rv.group()))
        reviewer
        return (reviewer,)


    @app.cell
    def _(json, mo, reviewer):
        mo.md(f"`rewards = {json.dumps(reviewer.value['rewards'])}`")
        return


    @app.cell
    def _(TargetEditor, mo, photo):
        editor = mo.ui.anywidget(TargetEditor(photo, "detect", object="faces"))
        editor
        return (editor,)


    @app.cell
    def _(editor, json, mo):
        mo.md(f"`target = {json.dumps(editor.target)}`")
        return


    if __name__ == "__main__":
        app.run()
''')


@pytest.fixture(scope="module")
def marimo_page(tmp_path_factory, chromium, responses):
    """``marimo run`` of ``APP`` over a real detect rollouts response (with ground-truth rewards); one Chromium page on it."""
    root = tmp_path_factory.mktemp("marimo")
    (root / "app.py").write_text(APP)
    (root / "response.json").write_text(json.dumps(responses["detect"]))
    repo = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, MDNB_RESPONSE=str(root / "response.json"),
               PYTHONPATH=os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p))
    port = free_port()
    log = open(root / "marimo.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "marimo", "run", str(root / "app.py"), "--headless",
                             "--host", "127.0.0.1", "--port", str(port), "--no-token"],
                            env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for_server(proc, url, root / "marimo.log", "marimo", 60)
        page = chromium.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url)
        page.get_by_text("rewards = ").wait_for(timeout=60_000)
        page.locator(".mdnb-reviewer.mdnb-painted").wait_for(timeout=30_000)
        page.locator(".mdnb-target .mdnb-painted").first.wait_for(timeout=30_000)
        yield page, errors
        page.close()
    finally:
        stop_process(proc)
        log.close()


def _wait_until(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _shown(page, name: str):
    """The JSON after "name = " in a dependent cell's output (what Python holds)."""
    return json.loads(page.get_by_text(f"{name} = ").first.inner_text().split("=", 1)[1])


def test_a_click_in_a_marimo_reviewer_reaches_python_and_reruns_the_dependent_cell(marimo_page, artifacts, responses):
    page, errors = marimo_page
    start = responses["detect"]["rewards"]  # the server's ground-truth rewards are the defaults
    assert _shown(page, "rewards") == start
    panel = page.locator(".mdnb-reviewer")
    assert panel.locator("img.mdnb-img").evaluate("img => img.naturalWidth") > 0  # the image arrived
    panel.locator('.mdnb-item[data-r="1"]').click()  # toggles rollout 2: good <-> bad
    flipped = list(start)
    flipped[1] = 0.0 if start[1] >= 0.5 else 1.0
    _wait_until(lambda: _shown(page, "rewards") == flipped)  # Python re-ran the cell with the new rewards
    page.keyboard.press("Enter")  # a custom message: the submit callback runs in Python, its status comes back
    panel.locator(".mdnb-status", has_text="submitted").wait_for(timeout=10_000)
    panel.screenshot(path=str(artifacts / "marimo_rollout_reviewer.png"))
    assert not errors, errors


def test_a_box_drawn_in_marimo_is_the_target_python_sees(marimo_page, artifacts):
    page, errors = marimo_page
    stage = page.locator(".mdnb-target .mdnb-stage")
    stage.scroll_into_view_if_needed()
    box = stage.locator("svg.mdnb-svg").bounding_box()
    at = lambda nx, ny: (box["x"] + nx * box["width"], box["y"] + ny * box["height"])  # noqa: E731
    page.mouse.move(*at(0.35, 0.1))
    page.mouse.down()
    page.mouse.move(*at(0.6, 0.45), steps=6)
    page.mouse.up()
    _wait_until(lambda: _shown(page, "target").get("boxes"))  # Python re-ran the cell with the drawn box
    target = _shown(page, "target")
    assert len(target["boxes"]) == 1
    assert tuple(target["boxes"][0].values()) == pytest.approx((0.35, 0.1, 0.6, 0.45), abs=0.01)
    page.locator(".mdnb-target").screenshot(path=str(artifacts / "marimo_target_editor.png"))
    assert not errors, errors


def test_marimo_shows_the_useful_state_as_the_value_not_the_image(responses):
    """``mo.ui.anywidget(panel).value`` is the panel's state: the rewards and layers a person set;
    the image is a reference to the model that holds its bytes (it was 100s of KB of JPEG)."""
    from PIL import Image
    from skimage import data

    from moondream_nb.widgets import RolloutReviewer, TargetEditor

    reviewer = marimo.ui.anywidget(RolloutReviewer(responses["detect"]))
    editor = marimo.ui.anywidget(TargetEditor(Image.fromarray(data.astronaut()), "detect", object="faces"))
    for element in (reviewer, editor):
        value = element.value
        assert not [k for k, v in value.items() if isinstance(v, (bytes, bytearray, memoryview))]
        assert str(value["_image"]).startswith("IPY_MODEL_")
        assert len(json.dumps(value, default=str)) < 20_000
    assert reviewer.value["rewards"] == responses["detect"]["rewards"]
    assert editor.value["layers"] == []
