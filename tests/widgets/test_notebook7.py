"""Real browser tests in Jupyter Notebook 7 (the ``notebook`` package, issue 4): the same harness
as the JupyterLab tests (``lab.py``, started with ``app="notebook"``), a notebook opened at
``/notebooks/widgets.ipynb``, real clicks and keys in headless Chromium, then the kernel-side state
(``.layers``, ``.rewards``) read back. Screenshots go to ``tests/artifacts/``.
"""

from __future__ import annotations

import pytest

from .test_browser import _drag_on_image, _svg_point, draw_target_box, drive_checkpoint_browser, drive_metrics_panel


def test_notebook7_front_end(notebook7):
    """Guard: these tests really drive Notebook 7's single-document UI, not JupyterLab."""
    page = notebook7.page
    assert "/notebooks/widgets.ipynb" in page.url
    assert page.evaluate("() => window.jupyterapp.name") == "Jupyter Notebook"
    assert page.locator("#jp-NotebookPanel-toolbar, .jp-NotebookPanel-toolbar").count() >= 1
    assert page.locator(".jp-LabShell").count() == 0


def test_notebook7_canvas_click(notebook7, artifacts):
    nb = notebook7
    out = nb.run_cell("canvas = ImageCanvas(scene.image, mode='point')\ncanvas")
    assert nb.value("canvas.layers") == []  # nothing there before the click
    stage = out.locator(".mdnb-stage")
    page = nb.page
    page.mouse.click(*_svg_point(stage, 0.5, 0.25))
    page.wait_for_timeout(300)
    layers = nb.value("canvas.layers")
    assert len(layers) == 1 and layers[0]["type"] == "point"
    assert (layers[0]["x"], layers[0]["y"]) == pytest.approx((0.5, 0.25), abs=0.01)
    # a key reaches the widget too (not Notebook's shortcuts): box mode, then a drag draws a box
    n_cells = page.evaluate("() => window.jupyterapp.shell.currentWidget.content.model.cells.length")
    page.keyboard.press("b")
    _drag_on_image(page, stage, (0.2, 0.4), (0.6, 0.8))
    assert nb.value("canvas.mode") == "box"
    # ... and Notebook 7's command-mode "b" (insert cell below) did not also fire
    assert page.evaluate("() => window.jupyterapp.shell.currentWidget.content.model.cells.length") == n_cells
    box = nb.value("canvas.layers")[-1]
    assert box["type"] == "box"
    assert (box["x_min"], box["y_min"], box["x_max"], box["y_max"]) == pytest.approx((0.2, 0.4, 0.6, 0.8), abs=0.01)
    assert stage.locator(".mdnb-shape").count() == 2  # the view shows what the kernel holds
    out.locator(".mdnb-canvas").screenshot(path=str(artifacts / "notebook7_image_canvas.png"))


@pytest.fixture(scope="module")
def nb7_resp(notebook7):
    """A real ``rollouts`` response from the local server (built-in model) in the kernel: ``resp``."""
    notebook7.kernel(
        "from moondream_nb import connect\n"
        "from moondream_nb.local import serve\n"
        "server = serve(threads=1)\n"
        "ft = connect(server=server).ft(name='widgets-nb7', rank=8)\n"
        "target = scene.objects[0].shape\n"
        "gt = {'boxes': [o.box_dict for o in scene.objects if o.shape == target]}\n"
        "resp = ft.rollouts('detect', image=scene.image, object=target + 's', num_rollouts=6, ground_truth=gt)\n")
    yield
    notebook7.kernel("server.stop()")


def test_notebook7_reviewer_click_and_keys(notebook7, artifacts, nb7_resp):
    nb = notebook7
    out = nb.run_cell("rv = RolloutReviewer(resp)\nsubmitted = []\nrv.on_submit(lambda r: submitted.append(r.group()))\nrv")
    start = nb.value("rv.rewards")
    assert start == nb.value("resp['rewards']")
    page = nb.page
    panel = out.locator(".mdnb-reviewer")
    # a real click on legend row 2 toggles it (good <-> bad)
    panel.locator('.mdnb-item[data-r="1"]').click()
    page.wait_for_timeout(300)
    assert nb.value("rv.rewards[1]") == (0.0 if start[1] >= 0.5 else 1.0)
    # keys: select rollout 3, give it the reward it does not have yet (1 good / 0 bad); then
    # Notebook's command-mode shortcuts (b/a insert cells, m markdown, d d delete) must not fire
    flip3 = "0" if start[2] >= 0.5 else "1"
    cells = "() => window.jupyterapp.shell.currentWidget.content.model.cells.length"
    n_cells = page.evaluate(cells)
    for key in ("3", flip3, "Escape", "b", "a", "m", "d", "d"):
        page.keyboard.press(key)
    page.wait_for_timeout(300)
    assert page.evaluate(cells) == n_cells
    assert page.evaluate("() => window.jupyterapp.shell.currentWidget.content.activeCell.model.type") == "code"
    rewards = nb.value("rv.rewards")
    assert rewards[1] == (0.0 if start[1] >= 0.5 else 1.0)
    assert rewards[2] == float(flip3) != start[2]
    assert rewards[0] == start[0] and rewards[3:] == start[3:]
    panel.screenshot(path=str(artifacts / "notebook7_rollout_reviewer.png"))
    # Enter submits through the kernel-side callback
    page.keyboard.press("Enter")
    page.wait_for_timeout(500)
    groups = nb.value("submitted")
    assert len(groups) == 1 and groups[0]["rewards"] == rewards
    assert "submitted" in panel.locator(".mdnb-status").inner_text()
    page.screenshot(path=str(artifacts / "notebook7_page.png"), full_page=True)


def test_notebook7_target_editor_draw_and_train(notebook7, artifacts, nb7_resp):
    nb = notebook7
    out = draw_target_box(nb, (0.15, 0.25), (0.45, 0.55))
    page = nb.page
    # Delete removes the selected box (the widget's key, not Notebook's "d d")
    page.keyboard.press("Delete")
    page.wait_for_timeout(300)
    assert nb.value("te.target")["boxes"] == []
    page.keyboard.press("Control+z")  # undo brings it back
    page.wait_for_timeout(300)
    assert len(nb.value("te.target")["boxes"]) == 1
    assert nb.value("ft.train_step([te.group()])['applied']") is True
    out.locator(".mdnb-target").screenshot(path=str(artifacts / "notebook7_target_editor.png"))


def test_notebook7_metrics_panel_live(notebook7, artifacts, nb7_resp):
    drive_metrics_panel(notebook7, artifacts, 0.5, "notebook7_metrics_panel.png")


def test_notebook7_checkpoint_browser(notebook7, artifacts, nb7_resp):
    drive_checkpoint_browser(notebook7, artifacts, "notebook7_checkpoint_browser.png")
