"""Widget speed in a real JupyterLab + headless Chromium (Playwright), not a test.

RolloutReviewer with 16 rollouts x 50 boxes (800 boxes) over a 2048x1536 image:

- first paint: from the view's render() call to the frame after the image is decoded and all
  800 boxes are in the SVG (measured in the page), and from "run cell" to that frame;
- reward latency: from the browser's keydown / click event to the traitlets observer firing on
  ``.rewards`` in the kernel (same machine, same wall clock).

The same for an ImageCanvas with 50 editable boxes over the full-size image, for comparison.

Targets (issue 4): first paint < 100 ms, click/key -> ``.rewards`` < 100 ms. Prints medians.

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/widgets_speed.py [--repeats 15] [--events 30]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.widgets.lab import CHROMIUM, CHROMIUM_ARGS, Lab, require_chromium, start_lab, write_notebook  # noqa: E402

SETUP = """\
import random, time
from moondream_nb.scenes import make_scene
from moondream_nb.widgets import ImageCanvas, RolloutReviewer
from moondream_nb.client.images import ImageEncoder
scene = make_scene(3, size=(2048, 1536), n_objects=6, background="noise")
rng = random.Random(0)
def box():
    x, y = rng.uniform(0, 0.9), rng.uniform(0, 0.9)
    return {"x_min": x, "y_min": y, "x_max": x + rng.uniform(0.02, 0.1), "y_max": y + rng.uniform(0.02, 0.1)}
image_url = ImageEncoder().encode(scene.image).image_url
resp = {"request": {"skill": "detect", "image_url": image_url, "object": "shapes"},
        "rollouts": [{"skill": "detect", "finish_reason": "stop", "output": {"objects": [box() for _ in range(50)]}}
                     for _ in range(16)],
        "rewards": [0.0] * 16}
arrivals = []
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15, help="panels rendered for the first-paint median")
    parser.add_argument("--events", type=int, default=30, help="key presses and clicks each for the latency medians")
    args = parser.parse_args()
    require_chromium()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, start_lab(Path(tmp)) as server:
        write_notebook(server["dir"] / "bench.ipynb", ["# widget benchmark"])
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            lab = Lab(page, server)
            lab.open("bench.ipynb")
            lab.kernel(SETUP)

            paint, build, decoded, cell_to_paint = [], [], [], []
            for k in range(args.repeats + 1):  # the first render warms up caches and the JIT: dropped
                t0 = time.perf_counter()
                out = lab.run_cell(f"rv{k} = RolloutReviewer(resp)\nrv{k}")
                wall = (time.perf_counter() - t0) * 1000
                panel = out.locator(".mdnb-reviewer")
                assert panel.locator("rect.mdnb-box").count() == 800
                if k:
                    paint.append(float(panel.get_attribute("data-paint-ms")))
                    build.append(float(panel.get_attribute("data-build-ms")))
                    decoded.append(float(panel.get_attribute("data-decoded-ms")))
                    cell_to_paint.append(wall)
                # keep the page light: clear the output before the next one
                page.evaluate("() => window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs')")

            canvas_paint = []
            for k in range(args.repeats + 1):
                out = lab.run_cell(f"cv{k} = ImageCanvas(scene.image, layers=resp['rollouts'][0]['output'], mode='box')\ncv{k}")
                panel = out.locator(".mdnb-canvas")
                assert panel.locator("rect.mdnb-box").count() == 50
                if k:
                    canvas_paint.append(float(panel.get_attribute("data-paint-ms")))
                page.evaluate("() => window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs')")

            out = lab.run_cell("rv = RolloutReviewer(resp)\n"
                               "rv.observe(lambda ch: arrivals.append(time.time() * 1000), names='rewards')\nrv")
            panel = out.locator(".mdnb-reviewer")
            panel.scroll_into_view_if_needed()
            page.evaluate("() => { window.__t = []; document.addEventListener('keydown', () => window.__t.push(Date.now()), true);"
                          " document.addEventListener('pointerdown', () => window.__t.push(Date.now()), true); }")
            panel.locator(".mdnb-prompt").click()  # focus the panel
            page.evaluate("() => { window.__t = []; }")
            lab.kernel("arrivals.clear()")
            # keys: "3" picks rollout 3 (no reward change), then "1"/"0" scores it: one change each
            for k in range(args.events):
                page.keyboard.press("3")
                page.evaluate("() => { window.__t.pop(); }")  # only the scoring key is timed
                page.keyboard.press("1" if k % 2 == 0 else "0")
                page.wait_for_timeout(120)
            key_sent = page.evaluate("() => window.__t")
            key_got = lab.value("arrivals")
            page.evaluate("() => { window.__t = []; }")
            lab.kernel("arrivals.clear()")
            items = [panel.locator(f'.mdnb-item[data-r="{i}"]') for i in range(16)]
            for k in range(args.events):
                items[k % 16].click()
                page.wait_for_timeout(120)
            click_sent = page.evaluate("() => window.__t")
            click_got = lab.value("arrivals")
            browser.close()

    key_lat = [g - s for s, g in zip(key_sent, key_got)]
    click_lat = [g - s for s, g in zip(click_sent, click_got)]
    assert len(key_sent) == len(key_got) == args.events, (len(key_sent), len(key_got))
    assert len(click_sent) == len(click_got) == args.events, (len(click_sent), len(click_got))
    print("RolloutReviewer, 16 rollouts x 50 boxes over 2048x1536, JupyterLab + headless Chromium")
    print(f"first paint (render -> painted, in page)  median {statistics.median(paint):7.1f} ms  "
          f"(min {min(paint):.1f}, max {max(paint):.1f}, n={len(paint)})  target < 100 ms")
    print(f"  of which DOM build (synchronous)        median {statistics.median(build):7.1f} ms")
    print(f"  image decoded at                        median {statistics.median(decoded):7.1f} ms")
    print(f"run cell -> painted (incl. kernel work)   median {statistics.median(cell_to_paint):7.1f} ms  (n={len(cell_to_paint)})")
    print(f"ImageCanvas, 50 editable boxes over 2048x1536 (image sent at full size): first paint median "
          f"{statistics.median(canvas_paint):.1f} ms (n={len(canvas_paint)})")
    print(f"key -> .rewards in Python                 median {statistics.median(key_lat):7.1f} ms  "
          f"(max {max(key_lat):.1f}, n={len(key_lat)})  target < 100 ms")
    print(f"click -> .rewards in Python               median {statistics.median(click_lat):7.1f} ms  "
          f"(max {max(click_lat):.1f}, n={len(click_lat)})  target < 100 ms")


if __name__ == "__main__":
    main()
