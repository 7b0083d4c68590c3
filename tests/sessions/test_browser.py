"""A LabelingSession in a real JupyterLab (headless Chromium): draw with the mouse, navigate with
keys and buttons, and read the label store back in the kernel."""

from __future__ import annotations

import importlib.util
import threading
import time
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "sessions"

SETUP = """\
from moondream_nb.data import demo_dataset
from moondream_nb.sessions import LabelingSession
from moondream_nb import connect
data = demo_dataset(4, seed=3, concepts=["purple"])
session = LabelingSession(data, {path!r}, "detect", prefill=False)
"""


def _harness():
    path = Path(__file__).resolve().parents[1] / "widgets" / "lab.py"
    spec = importlib.util.spec_from_file_location("_mdnb_lab_harness", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def in_lab(root: Path, setup: str, body) -> None:
    """JupyterLab in ``root``, a notebook whose kernel ran ``setup``, and ``body(lab)`` driving it.

    Playwright runs on a thread of its own: its sync API refuses a thread where an asyncio loop
    runs, as it does where another suite's session-wide browser (tests/widgets) is still open.
    """
    h = _harness()
    h.require_chromium()
    from playwright.sync_api import sync_playwright

    failure: list[BaseException] = []

    def drive(server: dict) -> None:
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=h.CHROMIUM, args=h.CHROMIUM_ARGS, headless=True)
                try:
                    lab = h.Lab(browser.new_page(viewport={"width": 1400, "height": 1000}), server)
                    lab.open("session.ipynb")
                    lab.kernel(setup)
                    try:
                        body(lab)
                    finally:
                        lab.kernel("server.stop() if 'server' in globals() else None")
                finally:
                    browser.close()
        except BaseException as exc:  # re-raised in the test's thread, traceback and all
            failure.append(exc)

    with h.start_lab(root / "lab") as server:
        h.write_notebook(server["dir"] / "session.ipynb", ["# session"])
        thread = threading.Thread(target=drive, args=(server,), name="playwright")
        thread.start()
        thread.join()
    if failure:
        raise failure[0]


def _until(lab, expr: str, expected, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        value = lab.value(expr)
        if value == expected or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def _editor(out):
    stage = out.locator(".mdnb-session .mdnb-target .mdnb-painted .mdnb-stage")
    stage.wait_for(timeout=20_000)
    return stage


def test_labeling_session_mouse_keys_and_buttons(tmp_path):
    in_lab(tmp_path, SETUP.format(path=str(tmp_path / "labels.sqlite")), labeling_in_the_browser)


def labeling_in_the_browser(lab) -> None:
    page = lab.page
    out = lab.run_cell("session", wait_for=".mdnb-session .mdnb-target .mdnb-painted")
    ids = lab.value("data.ids")
    stage = _editor(out)
    assert "0 done, 0 skipped of 4" in out.locator(".mdnb-session-progress").inner_text()

    # draw a box: autosaved at once, before the item is done
    stage.scroll_into_view_if_needed()
    box = stage.locator("svg.mdnb-svg").bounding_box()
    x0, y0 = box["x"] + 0.2 * box["width"], box["y"] + 0.3 * box["height"]
    x1, y1 = box["x"] + 0.5 * box["width"], box["y"] + 0.7 * box["height"]
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x1, y1, steps=6)
    page.mouse.up()
    saved = _until(lab, f"[lb.target for lb in session.store.labels({ids[0]!r})]", None, timeout=2)
    assert len(saved) == 1 and len(saved[0]["boxes"]) == 1
    assert saved[0]["boxes"][0]["x_min"] == pytest.approx(0.2, abs=0.01)
    assert lab.value(f"session.store.status({ids[0]!r})") is None

    # Enter: save & next
    page.keyboard.press("Enter")
    assert _until(lab, "session.current.image_id", ids[1]) == ids[1]
    assert lab.value(f"session.store.status({ids[0]!r})") == "done"
    # the new editor has the keyboard: the next keys work without a click (focus used to drop to
    # the page body, and every key after the first did nothing)
    _editor(out)
    page.wait_for_function("() => !!document.activeElement.closest('.mdnb-session .mdnb-target')", timeout=5_000)

    # x: skip
    page.keyboard.press("x")
    assert _until(lab, "session.current.image_id", ids[2]) == ids[2]
    assert lab.value(f"session.store.status({ids[1]!r})") == "skipped"

    # PageUp: previous (still no click)
    _editor(out)
    page.wait_for_function("() => !!document.activeElement.closest('.mdnb-session .mdnb-target')", timeout=5_000)
    page.keyboard.press("PageUp")
    assert _until(lab, "session.current.image_id", ids[1]) == ids[1]

    # the buttons: save & next (an empty answer: "no purple thing here"), then previous
    out.locator(".mdnb-session-next").click()
    assert _until(lab, "session.current.image_id", ids[2]) == ids[2]
    assert lab.value(f"[lb.target for lb in session.store.labels({ids[1]!r})]") == [{"boxes": []}]
    out.locator(".mdnb-session-progress").filter(has_text="2 done, 0 skipped of 4").wait_for(timeout=10_000)
    out.locator(".mdnb-session-prev").click()
    assert _until(lab, "session.current.image_id", ids[1]) == ids[1]
    stage = _editor(out)
    assert out.locator(".mdnb-session .mdnb-target").count() == 1  # the old editors were closed

    # draw and press Enter at once: the label saved is the one just drawn
    stage.scroll_into_view_if_needed()
    box = stage.locator("svg.mdnb-svg").bounding_box()
    page.mouse.move(box["x"] + 0.6 * box["width"], box["y"] + 0.1 * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + 0.9 * box["width"], box["y"] + 0.4 * box["height"], steps=4)
    page.mouse.up()
    page.keyboard.press("Enter")
    assert _until(lab, "session.current.image_id", ids[2]) == ids[2]
    boxes = lab.value(f"session.store.labels({ids[1]!r})[0].target['boxes']")
    assert len(boxes) == 1 and boxes[0]["x_min"] == pytest.approx(0.6, abs=0.01)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    _editor(out)
    out.locator(".mdnb-session").first.screenshot(path=str(ARTIFACTS / "labeling_session.png"))


REVIEW = """\
import time
from dataclasses import replace
from moondream_nb.data import Dataset
from moondream_nb.local import serve
from moondream_nb.sessions import ReviewSession
server = serve(threads=1, latency="train_step=3,jitter=0")  # a cloud-like train step
ft = connect(server=server).ft(name="browser-review", rank=8)
stars = demo_dataset(6, seed=4, concepts=["star"])
mixed = Dataset([it if i % 2 == 0 else replace(it, labels=()) for i, it in enumerate(stars)])
review = ReviewSession(ft, mixed, skill="point", prompt=lambda it: stars[it.image_id].labels_for("point")[0].prompt,
                       num_rollouts=4, group_size=2, auto=False, store={path!r})
stamps = []
"""


def test_review_session_keys_submit_skip_and_live_metrics(tmp_path):
    setup = SETUP.format(path=str(tmp_path / "labels.sqlite")) + REVIEW.format(path=str(tmp_path / "review.sqlite"))
    in_lab(tmp_path, setup, reviewing_in_the_browser)


def reviewing_in_the_browser(lab) -> None:
    page = lab.page
    out = lab.run_cell("review", wait_for=".mdnb-session .mdnb-reviewer.mdnb-painted")
    ids = lab.value("mixed.ids")
    assert lab.value("review.pending.image_id") == ids[1]  # item 0 went to ground truth; item 1 waits for you
    panel = out.locator(".mdnb-session .mdnb-reviewer")
    assert panel.locator("svg.mdnb-svg g.mdnb-roll").count() == 4
    panel.focus()
    for key in ("1", "1", "3", "1", "Enter"):  # rollouts 1 and 3 good, submit at once
        page.keyboard.press(key)
    # the next request is on screen at once; labelled items 2 and 4 were scored by ground truth in the
    # background meanwhile, so their 3 s train steps run while you review
    assert _until(lab, "review.pending.image_id", ids[3], timeout=2.5) == ids[3]
    assert lab.value("review.counts['human']") == 1
    out.locator(".mdnb-session .mdnb-reviewer.mdnb-painted").wait_for(timeout=15_000)
    page.wait_for_function("() => !!document.activeElement.closest('.mdnb-session .mdnb-reviewer')", timeout=5_000)
    assert lab.value(f"[(r.source, r.rewards) for r in review.store.rewards({ids[1]!r})]") == [
        ["human", [1.0, 0.0, 1.0, 0.0]]]
    out.locator(".mdnb-train-status", has_text="in flight").wait_for(timeout=10_000)
    # a click on the new reviewer while a step is in flight reaches the kernel at once: it is not busy
    lab.kernel("review.reviewer.observe(lambda change: stamps.append(time.time()), names=['rewards'])")
    out.locator(".mdnb-session .mdnb-reviewer.mdnb-painted").wait_for(timeout=15_000)
    row = out.locator('.mdnb-session .mdnb-reviewer .mdnb-item[data-r="2"]')
    row.wait_for(timeout=5_000)
    in_flight = "any(j.state == 'running' and j.label.startswith('train') for j in review.queue.jobs)"
    assert lab.value(in_flight)
    steps_before = lab.value("len(review.steps)")
    clicked = time.time()
    row.click()
    assert _until(lab, "len(stamps)", 1, timeout=5) == 1
    took = lab.value("stamps[0]") - clicked
    assert lab.value("len(review.steps)") == steps_before, "the step landed first: the click measured nothing"
    print(f"click -> kernel while a train step is in flight: {took * 1000:.0f} ms")
    assert took < 1.0  # a session training on the kernel's thread held it for the whole step (3 s)
    assert lab.value("review.reviewer.rewards")[2] == 1.0
    # the steps land in the background and reach the metrics panel beside the reviewer
    assert _until(lab, "len(review.steps) > 0", True, timeout=20)
    out.locator('.mdnb-metrics .mdnb-chart[data-name="reward_mean"]').wait_for(timeout=15_000)
    out.locator(".mdnb-train-status", has_text="last: step").wait_for(timeout=5_000)
    out.locator(".mdnb-session-skip").click()
    assert _until(lab, "review.pending.image_id", ids[5]) == ids[5]
    assert lab.value("review.counts['skipped']") == 1
    out.locator(".mdnb-session .mdnb-reviewer.mdnb-painted").wait_for(timeout=15_000)
    assert out.locator(".mdnb-session .mdnb-reviewer").count() == 1
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    out.locator(".mdnb-session").first.screenshot(path=str(ARTIFACTS / "review_session.png"))
