"""Real browser tests: JupyterLab in headless Chromium, real clicks, drags and keys, then the
kernel-side state is read back (``.layers``, ``.rewards``, ``.target``). Screenshots of each
panel go to ``tests/artifacts/``.
"""

from __future__ import annotations

import pytest


def _svg_point(stage, nx: float, ny: float) -> tuple[float, float]:
    """Viewport coordinates of normalized image point (nx, ny) (raw mouse events need it on screen)."""
    stage.scroll_into_view_if_needed()
    box = stage.locator("svg.mdnb-svg").bounding_box()
    return box["x"] + nx * box["width"], box["y"] + ny * box["height"]


def _drag_on_image(page, stage, start: tuple[float, float], end: tuple[float, float]) -> None:
    """A real mouse drag between two normalized image points."""
    x0, y0 = _svg_point(stage, *start)
    x1, y1 = _svg_point(stage, *end)
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x1, y1, steps=6)
    page.mouse.up()
    page.wait_for_timeout(300)


def draw_target_box(fe, start: tuple[float, float], end: tuple[float, float]):
    """In front end ``fe``: a detect TargetEditor, one box dragged on it, ``.target`` checked in the
    kernel. Returns the cell output."""
    out = fe.run_cell("te = TargetEditor(scene.image, 'detect', object=target + 's')\nte")
    _drag_on_image(fe.page, out.locator(".mdnb-stage"), start, end)
    boxes = fe.value("te.target")["boxes"]
    assert len(boxes) == 1
    assert tuple(boxes[0].values()) == pytest.approx((*start, *end), abs=0.01)
    return out


def drive_metrics_panel(fe, artifacts, smoothing: float, shot: str) -> None:
    """In front end ``fe`` (JupyterLab or Notebook 7): a live MetricsPanel grows charts as steps and
    metrics arrive, and its smoothing control reaches the kernel. Needs ``ft`` and ``te`` there."""
    out = fe.run_cell("mp = MetricsPanel(ft, interval=0.1)\nmp")
    fe.kernel("for k in range(3):\n    ft.train_step([te.group()])\n    ft.log_metrics(ft.step, {'eval/score': 0.2 * k})")
    out.locator('.mdnb-chart[data-name="eval/score"]').wait_for(timeout=10_000)  # via the live poller, no re-display
    assert out.locator('.mdnb-chart[data-name="sft_loss"]').count() == 1
    out.locator('input[aria-label="smoothing"]').fill(str(smoothing))
    fe.page.wait_for_timeout(300)
    assert fe.value("mp.smoothing") == pytest.approx(smoothing)
    assert fe.value("list(mp.frame['eval/score'].dropna())") == pytest.approx([0.0, 0.2, 0.4])
    out.locator(".mdnb-metrics").screenshot(path=str(artifacts / shot))


def drive_checkpoint_browser(fe, artifacts, shot: str):
    """In front end ``fe``: save a checkpoint from the panel, run it and the base side by side, with
    scores. Needs ``ft``, ``scene``, ``target``, ``gt`` in the kernel; returns (panel, saved step)."""
    out = fe.run_cell("cb = CheckpointBrowser(ft, [scene.image], {'skill': 'detect', 'object': target + 's'}, "
                      "ground_truth=[gt])\ncb")
    panel = out.locator(".mdnb-checkpoints")
    panel.locator('button[data-act="save"]').click()
    step = fe.value("ft.step")
    box = panel.locator(f'input[data-step="{step}"]')
    box.wait_for(timeout=10_000)
    box.check()
    panel.locator('input[data-step="-1"]').check()
    panel.locator('button[data-act="run"]').click()
    panel.locator(f'.mdnb-cell[data-label="step {step}"]').wait_for(timeout=20_000)
    assert fe.value("[c['label'] for c in cb.columns]") == ["base", f"step {step}"]
    assert fe.value("cb.columns[1]['cells'][0]['score']") is not None
    panel.screenshot(path=str(artifacts / shot))
    return panel, step


def test_canvas_click_drag_keys_roundtrip(lab, artifacts):
    out = lab.run_cell("canvas = ImageCanvas(scene.image, layers=[{'x': 0.1, 'y': 0.1}], mode='point')\ncanvas")
    page = lab.page
    stage = out.locator(".mdnb-stage")
    # click adds a point
    page.mouse.click(*_svg_point(stage, 0.5, 0.25))
    lab.page.wait_for_function("() => true")
    # switch to box mode by key, drag a box
    stage.focus()
    page.keyboard.press("b")
    x0, y0 = _svg_point(stage, 0.2, 0.4)
    x1, y1 = _svg_point(stage, 0.6, 0.8)
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=4)
    page.mouse.move(x1, y1, steps=4)
    page.mouse.up()
    page.wait_for_timeout(300)
    layers = lab.value("canvas.layers")
    assert [s["type"] for s in layers] == ["point", "point", "box"]
    assert layers[1]["x"] == pytest.approx(0.5, abs=0.01) and layers[1]["y"] == pytest.approx(0.25, abs=0.01)
    box = layers[2]
    assert (box["x_min"], box["y_min"], box["x_max"], box["y_max"]) == pytest.approx((0.2, 0.4, 0.6, 0.8), abs=0.01)
    # resize the (selected) new box by its bottom-right handle
    stage.scroll_into_view_if_needed()
    handle = stage.locator('rect.mdnb-handle[data-handle="se"]').bounding_box()
    hx, hy = handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2
    tx, ty = _svg_point(stage, 0.7, 0.9)
    page.mouse.move(hx, hy)
    page.mouse.down()
    page.mouse.move(tx, ty, steps=5)
    page.mouse.up()
    # move the second point by dragging it (in select mode: in box mode a drag draws)
    page.keyboard.press("s")
    px, py = _svg_point(stage, 0.5, 0.25)
    qx, qy = _svg_point(stage, 0.55, 0.3)
    page.mouse.move(px, py)
    page.mouse.down()
    page.mouse.move(qx, qy, steps=5)
    page.mouse.up()
    page.wait_for_timeout(300)
    layers = lab.value("canvas.layers")
    assert (layers[2]["x_max"], layers[2]["y_max"]) == pytest.approx((0.7, 0.9), abs=0.01)
    assert (layers[1]["x"], layers[1]["y"]) == pytest.approx((0.55, 0.3), abs=0.01)
    assert lab.value("canvas.selected") == 1
    # Delete removes the selection; Ctrl-Z brings it back; Shift-Ctrl-Z removes it again
    page.keyboard.press("Delete")
    page.wait_for_timeout(200)
    assert lab.value("len(canvas.layers)") == 2
    page.keyboard.press("Control+z")
    page.wait_for_timeout(200)
    assert lab.value("canvas.layers") == layers
    page.keyboard.press("Control+Shift+z")
    page.wait_for_timeout(200)
    assert lab.value("[s['type'] for s in canvas.layers]") == ["point", "box"]
    page.keyboard.press("Control+z")
    # zoom in (button) and pan (Shift-drag); a click still lands at the right normalized spot
    page.keyboard.press("p")
    out.locator('button[data-act="zoom-in"]').click()
    before = stage.locator("svg.mdnb-svg").bounding_box()
    sx, sy = _svg_point(stage, 0.5, 0.5)
    page.keyboard.down("Shift")
    page.mouse.move(sx, sy)
    page.mouse.down()
    page.mouse.move(sx + 60, sy + 40, steps=4)
    page.mouse.up()
    page.keyboard.up("Shift")
    after = stage.locator("svg.mdnb-svg").bounding_box()
    assert after["width"] == pytest.approx(before["width"] * 1.0) and after["width"] > 1.4 * stage.bounding_box()["width"]
    assert (after["x"] - before["x"], after["y"] - before["y"]) == pytest.approx((60, 40), abs=2)
    assert lab.value("len(canvas.layers)") == 3  # panning added nothing
    zx, zy = _svg_point(stage, 0.45, 0.6)
    page.mouse.click(zx, zy)
    page.wait_for_timeout(300)
    last = lab.value("canvas.layers[-1]")
    assert last["type"] == "point" and (last["x"], last["y"]) == pytest.approx((0.45, 0.6), abs=0.01)
    stage.screenshot(path=str(artifacts / "image_canvas.png"))
    out.locator('button[data-act="fit"]').click()
    # a second view of the same widget shows the same state
    again = lab.run_cell("canvas")
    assert again.locator(".mdnb-shape").count() == lab.value("len(canvas.layers)") == 4


def test_box_mode_draws_over_overlapping_objects_and_keys_edit_the_selection(lab, artifacts):
    """Two overlapping objects: the second box starts inside the first. A drag in box mode always
    draws (it used to move the first box: 1 of 18 boxes was lost that way); Tab, arrows,
    Shift-arrows and Alt-drag edit the selected box."""
    out = lab.run_cell("over = ImageCanvas(scene.image, mode='box')\nover")
    page, stage = lab.page, out.locator(".mdnb-stage")
    _drag_on_image(page, stage, (0.2, 0.2), (0.6, 0.6))
    _drag_on_image(page, stage, (0.4, 0.4), (0.8, 0.8))  # starts inside the first box
    boxes = [tuple(round(b[k], 2) for k in ("x_min", "y_min", "x_max", "y_max")) for b in lab.value("over.layers")]
    assert boxes == [(0.2, 0.2, 0.6, 0.6), (0.4, 0.4, 0.8, 0.8)]
    # a click (no drag) selects the shape under it; Tab cycles
    page.mouse.click(*_svg_point(stage, 0.25, 0.25))
    page.wait_for_timeout(200)
    assert lab.value("over.selected") == 0
    page.keyboard.press("Tab")
    page.wait_for_timeout(200)
    assert lab.value("over.selected") == 1
    before = dict(lab.value("over.layers[1]"))
    for key in ("ArrowRight", "ArrowRight", "Shift+ArrowDown", "Alt+Shift+ArrowRight"):
        page.keyboard.press(key)
    page.wait_for_timeout(300)
    after = lab.value("over.layers[1]")
    width = stage.locator("svg.mdnb-svg").bounding_box()["width"]
    px = 1 / width  # one screen pixel, normalized (the image is 640 px wide, shown at `width`)
    assert after["x_min"] == pytest.approx(before["x_min"] + 2 * px, abs=1e-4)  # moved, not resized
    assert after["x_max"] - after["x_min"] == pytest.approx(before["x_max"] - before["x_min"] + 10 * px, abs=1e-4)
    assert after["y_max"] - after["y_min"] == pytest.approx(before["y_max"] - before["y_min"] + px * 640 / 480 * 480 / 640, abs=1e-3)
    # Alt-drag moves the first box; nothing else changes
    first = dict(lab.value("over.layers[0]"))
    x0, y0 = _svg_point(stage, 0.25, 0.25)
    x1, y1 = _svg_point(stage, 0.3, 0.25)
    page.keyboard.down("Alt")
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x1, y1, steps=5)
    page.mouse.up()
    page.keyboard.up("Alt")
    page.wait_for_timeout(300)
    layers = lab.value("over.layers")
    assert len(layers) == 2 and layers[0]["x_min"] == pytest.approx(first["x_min"] + 0.05, abs=0.01)
    out.locator(".mdnb-canvas").screenshot(path=str(artifacts / "canvas_overlapping_boxes.png"))


@pytest.fixture(scope="module")
def kernel_server(lab):
    """A real ``rollouts`` response from the local server (built-in model) in the kernel: ``resp``."""
    lab.kernel(
        "from moondream_nb import connect\n"
        "from moondream_nb.local import serve\n"
        "server = serve(threads=1)\n"
        "ft = connect(server=server).ft(name='widgets', rank=8)\n"
        "target = scene.objects[0].shape\n"
        "gt = {'boxes': [o.box_dict for o in scene.objects if o.shape == target]}\n"
        "resp = ft.rollouts('detect', image=scene.image, object=target + 's', num_rollouts=8, ground_truth=gt)\n")
    yield
    lab.kernel("server.stop()")


def test_reviewer_click_keys_submit(lab, artifacts, kernel_server):
    out = lab.run_cell("rv = RolloutReviewer(resp)\nsubmitted = []\nrv.on_submit(lambda r: submitted.append(r.group()))\nrv")
    start = lab.value("rv.rewards")
    assert start == lab.value("resp['rewards']")  # the server's ground-truth rewards are the defaults
    page = lab.page
    panel = out.locator(".mdnb-reviewer")
    # click legend row 2: toggles it (good <-> bad)
    panel.locator('.mdnb-item[data-r="1"]').click()
    # keys: 3 then 1 -> rollout 3 good; 4 then 0 -> rollout 4 bad
    cells = "() => window.jupyterapp.shell.currentWidget.content.model.cells.length"
    n_cells = page.evaluate(cells)
    for key in ("3", "1", "4", "0", "Escape", "b", "a", "m", "d", "d"):
        page.keyboard.press(key)
    page.wait_for_timeout(300)
    # JupyterLab's command-mode shortcuts (b/a insert cells, m makes markdown, d d deletes) never fired
    assert page.evaluate(cells) == n_cells
    assert page.evaluate("() => window.jupyterapp.shell.currentWidget.content.activeCell.model.type") == "code"
    rewards = lab.value("rv.rewards")
    assert rewards[1] == (0.0 if start[1] >= 0.5 else 1.0)
    assert rewards[2] == 1.0 and rewards[3] == 0.0
    assert rewards[0] == start[0] and rewards[4:] == start[4:]
    # click a rollout's box on the image: whichever rollout is on top at that spot toggles
    hit = page.evaluate("""() => {
      for (const rc of document.querySelectorAll('.mdnb-reviewer g.mdnb-roll rect')) {
        const b = rc.getBoundingClientRect(), x = b.left + 1, y = b.top + b.height / 2;
        const top = document.elementFromPoint(x, y);
        if (top === rc) return [+rc.parentNode.dataset.r, x, y];
      }
      return null;
    }""")
    if hit is not None:  # the model may have drawn no box at all
        r, x, y = hit
        page.mouse.click(x, y)
        page.wait_for_timeout(300)
        assert lab.value(f"rv.rewards[{r}]") == (0.0 if rewards[r] >= 0.5 else 1.0)
    panel.screenshot(path=str(artifacts / "rollout_reviewer.png"))
    page.keyboard.press("Enter")
    page.wait_for_timeout(500)
    groups = lab.value("submitted")
    assert len(groups) == 1 and groups[0]["mode"] == "rl" and groups[0]["rewards"] == lab.value("rv.rewards")
    assert "submitted" in panel.locator(".mdnb-status").inner_text()
    # the group trains on the real server
    assert lab.value("ft.train_step([rv.group()])['applied']") in (True, False)


def test_a_reviewer_without_a_callback_says_it_is_for_looking(lab, artifacts, kernel_server):
    out = lab.run_cell("look = RolloutReviewer(resp)\nlook")
    panel = out.locator(".mdnb-reviewer")
    assert not panel.locator('button[data-act="submit"]').is_visible()  # nothing to submit to
    assert "for looking" in panel.locator(".mdnb-status").inner_text()
    assert "Enter submits" not in panel.locator(".mdnb-hint").inner_text()
    panel.locator('.mdnb-item[data-r="0"]').click()
    lab.page.keyboard.press("Enter")  # was "submitted (0 callbacks)": rewards led nowhere
    lab.page.wait_for_timeout(500)
    assert "train nothing" in lab.value("look.status")
    panel.screenshot(path=str(artifacts / "rollout_reviewer_for_looking.png"))
    lab.kernel("look.on_submit(lambda r: None)")
    panel.locator('button[data-act="submit"]').wait_for(state="visible", timeout=5000)


def test_reviewer_scale_slider_and_keys(lab, artifacts, kernel_server):
    lab.kernel("presp = ft.rollouts('point', image=scene.image, object=target + 's', num_rollouts=4)")
    out = lab.run_cell("rs = RolloutReviewer(presp, rewards='scale')\nrs")
    panel = out.locator(".mdnb-reviewer")
    panel.locator('.mdnb-item[data-r="0"] input[type="range"]').fill("0.75")
    panel.locator('.mdnb-item[data-r="2"]').click()
    for key in ("2", "1", "ArrowDown"):
        lab.page.keyboard.press(key)
    lab.page.wait_for_timeout(300)
    assert lab.value("rs.rewards") == pytest.approx([0.75, 0.9, 0.0, 0.0])
    panel.screenshot(path=str(artifacts / "rollout_reviewer_scale.png"))


def test_reviewer_rank_by_drag(lab, artifacts, kernel_server):
    lab.kernel("qresp = ft.rollouts('query', image=scene.image, question='how many shapes are there?', "
               "num_rollouts=3, reasoning=True)")
    out = lab.run_cell("rr = RolloutReviewer(qresp, rewards='rank')\nrr")
    panel = out.locator(".mdnb-reviewer")
    assert panel.locator(".mdnb-reasoning").count() == 3  # query: answers with their reasoning
    rows = panel.locator(".mdnb-item")
    panel.scroll_into_view_if_needed()
    last, first = rows.nth(2).bounding_box(), rows.nth(0).bounding_box()
    dragged = int(rows.nth(2).get_attribute("data-r"))
    page = lab.page
    page.mouse.move(last["x"] + 40, last["y"] + last["height"] / 2)
    page.mouse.down()
    page.mouse.move(first["x"] + 40, first["y"] + 2, steps=6)
    page.mouse.up()
    page.wait_for_timeout(300)
    rewards = lab.value("rr.rewards")
    assert rewards[dragged] == 1.0 and sorted(rewards) == [0.0, 0.5, 1.0]
    assert int(panel.locator(".mdnb-item").first.get_attribute("data-r")) == dragged
    panel.screenshot(path=str(artifacts / "rollout_reviewer_rank.png"))


def test_target_editor_draw_and_type(lab, artifacts, kernel_server):
    out = draw_target_box(lab, (0.1, 0.2), (0.4, 0.5))
    page = lab.page
    assert lab.value("ft.train_step([te.group()])['applied']") is True
    out.locator(".mdnb-target").screenshot(path=str(artifacts / "target_editor_detect.png"))

    out = lab.run_cell("tq = TargetEditor(scene.image, 'query', question='how many shapes?', reasoning=True)\ntq")
    out.locator('textarea[data-field="answer"]').fill("4")
    out.locator('textarea[data-field="reasoning_text"]').click()
    page.keyboard.type("I count four shapes.")
    page.wait_for_timeout(300)
    assert lab.value("tq.target") == {"answer": "4", "reasoning": {"text": "I count four shapes."}}
    out.locator(".mdnb-target").screenshot(path=str(artifacts / "target_editor_query.png"))


def test_metrics_panel_live(lab, artifacts, kernel_server):
    drive_metrics_panel(lab, artifacts, 0.9, "metrics_panel.png")


def test_metrics_charts_have_axes_a_person_can_read(lab, artifacts):
    """Y ticks with values, a reward band that stays inside [0, 1], a lone value marked with its
    value, and a hover readout of step and value (the chart used to show only "-0.166 … 1.136")."""
    out = lab.run_cell(
        "rows = [{'kind': 'train_step', 'step': s, 'time': float(s), 'applied': True, 'reward_mean': m,\n"
        "         'reward_std': 0.45, 'kl': 0.01 * s} for s, m in [(1, 0.1), (2, 0.5), (3, 0.9), (4, 0.95)]]\n"
        "rows.append({'kind': 'metrics', 'step': 4, 'time': 5.0, 'eval/held_out': 0.75})\n"
        "charts = MetricsPanel(rows, live=False)\ncharts")
    reward = out.locator('.mdnb-chart[data-name="reward_mean"]')
    ticks = [float(t) for t in reward.locator(".mdnb-ytick").all_inner_texts()]
    assert len(ticks) >= 3 and min(ticks) >= 0 and max(ticks) <= 1  # clipped to the reward's range
    assert ticks == sorted(ticks)
    lone = out.locator('.mdnb-chart[data-name="eval/held_out"]')
    assert "0.75" in lone.locator(".mdnb-dot-label").inner_text()
    plot = out.locator('.mdnb-chart[data-name="kl"] .mdnb-plot')
    plot.scroll_into_view_if_needed()
    box = plot.bounding_box()
    lab.page.mouse.move(box["x"] + box["width"] * 0.36, box["y"] + box["height"] / 2)
    readout = out.locator('.mdnb-chart[data-name="kl"] .mdnb-readout')
    assert readout.inner_text() == "step 2: 0.0200"
    out.locator(".mdnb-metrics").screenshot(path=str(artifacts / "metrics_axes.png"))
    lab.page.mouse.move(0, 0)
    assert readout.inner_text().startswith("last 0.0400")


def test_checkpoint_browser(lab, artifacts, kernel_server):
    panel, step = drive_checkpoint_browser(lab, artifacts, "checkpoint_browser.png")
    lab.page.once("dialog", lambda d: d.accept())
    panel.locator(f'button[data-act="delete"][data-step="{step}"]').click()
    panel.locator(f'input[data-step="{step}"]').wait_for(state="detached", timeout=10_000)
    assert lab.value("[c['step'] for c in ft.iter_checkpoints()]") == []


def test_state_survives_page_reload(lab):
    """Widgets live in the kernel: after a reload the views come back with what the user set."""
    layers = lab.value("canvas.layers")
    rewards = lab.value("rv.rewards")
    lab.save()
    lab.page.wait_for_timeout(500)
    lab.page.reload()
    lab.open("widgets.ipynb")
    canvas = lab.page.locator(".mdnb-canvas.mdnb-painted").first
    canvas.wait_for(timeout=60_000)
    assert canvas.locator(".mdnb-shape").count() == len(layers)
    # rv's view: the first reviewer of its prompt (other modules' reviewers may share the notebook)
    reviewer = lab.page.locator(".mdnb-reviewer.mdnb-painted").filter(has_text=lab.value("rv.prompt")).first
    shown = reviewer.locator(".mdnb-reward").all_inner_texts()
    assert [float(t.split()[-1]) for t in shown] == pytest.approx([round(r, 2) for r in rewards], abs=0.006)
