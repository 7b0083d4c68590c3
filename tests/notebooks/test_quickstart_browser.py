"""The quick start as a person meets it: opened in JupyterLab (headless Chromium), Run All, and the
panels render — the reviewers' SVG overlays, the live metrics, the checkpoint comparison.

The notebook's ``md.connect()`` starts a local server inside the kernel (no key is set here).
"""

from __future__ import annotations

import importlib.util
import shutil
import threading
from pathlib import Path


def _load_lab_harness():
    """tests/widgets/lab.py, by path: the test directories are not one importable package."""
    path = Path(__file__).resolve().parents[1] / "widgets" / "lab.py"
    spec = importlib.util.spec_from_file_location("_mdnb_lab_harness", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_lab = _load_lab_harness()
CHROMIUM, CHROMIUM_ARGS, Lab, require_chromium, start_lab = (
    _lab.CHROMIUM, _lab.CHROMIUM_ARGS, _lab.Lab, _lab.require_chromium, _lab.start_lab)

QUICKSTART = Path(__file__).resolve().parents[2] / "notebooks" / "01_quickstart.ipynb"
ARTIFACTS = Path(__file__).resolve().parents[2] / "tests" / "artifacts" / "notebooks"

# Every code cell has run (an execution count) and the kernel is idle again.
_ALL_RAN = """() => {
  const w = window.jupyterapp.shell.currentWidget;
  const kernel = w && w.sessionContext.session && w.sessionContext.session.kernel;
  if (!kernel || kernel.status !== 'idle') return false;
  const cells = [...w.content.model.cells].filter((c) => c.type === 'code');
  return cells.length > 0 && cells.every((c) => c.executionCount !== null);
}"""

_ERRORS = """() => {
  const out = [];
  for (const c of window.jupyterapp.shell.currentWidget.content.model.cells) {
    if (c.type !== 'code') continue;
    for (const o of c.outputs.toJSON()) if (o.output_type === 'error') out.push(o.ename + ': ' + o.evalue);
  }
  return out;
}"""


def in_lab(root: Path, body) -> None:
    """JupyterLab with the quick start open in Chromium, and ``body(lab)`` driving it.

    Playwright runs on a thread of its own: its sync API refuses a thread where an asyncio loop
    runs, as it does where another suite's session-wide browser (tests/widgets) is still open.
    """
    require_chromium()
    from playwright.sync_api import sync_playwright

    failure: list[BaseException] = []

    def drive(server: dict) -> None:
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
                try:
                    lab = Lab(browser.new_page(viewport={"width": 1400, "height": 1000}), server)
                    lab.open(QUICKSTART.name)
                    body(lab)
                finally:
                    browser.close()
        except BaseException as exc:  # re-raised in the test's thread, traceback and all
            failure.append(exc)

    with start_lab(root) as server:
        shutil.copy(QUICKSTART, server["dir"] / QUICKSTART.name)
        thread = threading.Thread(target=drive, args=(server,), name="playwright")
        thread.start()
        thread.join()
    if failure:
        raise failure[0]


def test_quickstart_runs_in_jupyterlab_and_renders_its_panels(tmp_path, monkeypatch):
    for var in ("MOONDREAM_API_KEY", "MOONDREAM_ENDPOINT"):  # md.connect() must start a local server
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MOONDREAM_NB_DATA_DIR", str(tmp_path / "server"))
    in_lab(tmp_path / "lab", run_all_and_find_the_panels)


def run_all_and_find_the_panels(lab) -> None:
    page = lab.page
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_function(_ALL_RAN, timeout=420_000, polling=1000)
    assert page.evaluate(_ERRORS) == []

    # three reviewers (point, detect, query), each painted with one SVG group per rollout
    reviewers = page.locator(".mdnb-reviewer.mdnb-painted")
    reviewers.nth(2).wait_for(timeout=60_000)
    assert reviewers.count() == 3
    for i in range(2):  # point and detect draw over the image
        assert reviewers.nth(i).locator("svg.mdnb-svg g.mdnb-roll").count() == 6
    assert reviewers.nth(2).locator(".mdnb-item").count() == 6  # query: six text answers

    # the live metrics panel drew the RL curves
    metrics = page.locator(".mdnb-metrics")
    metrics.locator('.mdnb-chart[data-name="reward_mean"] svg polyline').first.wait_for(timeout=30_000)
    assert metrics.locator(".mdnb-chart").count() >= 3

    # the checkpoint browser compares base and the saved step on four held-out images
    cells = page.locator(".mdnb-checkpoints .mdnb-cell[data-label]")
    cells.first.wait_for(timeout=30_000)
    assert cells.count() == 8

    # what the page shows is what the kernel holds
    assert lab.value("int(metrics.frame.index.max())") == lab.value("ft.step") > 0
    assert lab.value("[c['label'] for c in browser.columns]")[0] == "base"

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    reviewers.nth(1).screenshot(path=str(ARTIFACTS / "quickstart_reviewer_detect.png"))
    metrics.screenshot(path=str(ARTIFACTS / "quickstart_metrics.png"))
