"""Overlays readable on real photographs (issue 21): marks keep a contrasting edge on a busy photo
(a pixel check against the same screenshot without the marks), coincident points say how many
they are, hovering lights the legend, ground truth is a layer with a toggle and a legend entry.
The photo is scikit-image's ``astronaut`` (shipped with the package; nothing downloaded).
Screenshots: tests/artifacts/overlay_*.png."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

SETUP = """\
import skimage.data
from PIL import Image
from moondream_nb.client.images import ImageEncoder
photo = Image.fromarray(skimage.data.astronaut())
url = ImageEncoder().encode(photo).image_url
BRIGHT, DARK = (0.75, 0.27), (0.85, 0.75)   # the white wall and the black background of the photo
def point_response(spots):
    return {"request": {"skill": "point", "object": "thing", "image_url": url},
            "rollouts": [{"skill": "point", "output": {"points": [{"x": x, "y": y}]}} for x, y in spots]}
def box_response(boxes):
    return {"request": {"skill": "detect", "object": "thing", "image_url": url},
            "rollouts": [{"skill": "detect", "output": {"objects": [dict(zip(("x_min", "y_min", "x_max", "y_max"), b))]}}
                         for b in boxes]}
"""

# Rollout 10's colour (#bab0ac, a light grey) on the photo's white wall: the hard case.
LIGHT = 9


@pytest.fixture(scope="module", params=["lab", "notebook7"])
def fe(request):
    """Each test runs in JupyterLab 4 and in Notebook 7, with the photo set up in the kernel."""
    front_end = request.getfixturevalue(request.param)
    front_end.kernel(SETUP)
    return front_end


def _shot(fe, artifacts, name: str):
    """The artifact path for screenshot ``name`` (Notebook 7's get an ``nb7_`` prefix)."""
    return str(artifacts / (name if fe.server["app"] == "lab" else f"nb7_{name}"))


def _luma(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float)


def _mark_contrast(stage, spot: tuple[float, float], radius_px: int = 7) -> float:
    """95th percentile of |luma with marks - luma without| in a window around ``spot`` (normalized)."""
    stage.scroll_into_view_if_needed()
    shown = _luma(stage.screenshot())
    stage.evaluate("el => el.querySelector('svg.mdnb-svg').style.visibility = 'hidden'")
    hidden = _luma(stage.screenshot())
    stage.evaluate("el => el.querySelector('svg.mdnb-svg').style.visibility = ''")
    h, w = shown.shape
    cx, cy = int(spot[0] * w), int(spot[1] * h)
    window = np.abs(shown - hidden)[cy - radius_px:cy + radius_px + 1, cx - radius_px:cx + radius_px + 1]
    value = float(np.percentile(window, 95))
    print(f"mark contrast at {spot}: {value:.0f}")
    return value


def test_marks_keep_a_contrasting_edge_on_a_busy_photo(fe, artifacts):
    spots = [(0.1 + 0.02 * i, 0.1) for i in range(LIGHT)] + [(0.75, 0.27)]  # the light one on the white wall
    out = fe.run_cell("pts = RolloutReviewer(point_response(%r))\npts" % spots)
    stage = out.locator(".mdnb-stage")
    out.locator(".mdnb-reviewer").screenshot(path=_shot(fe, artifacts, "overlay_points_photo.png"))
    assert _mark_contrast(stage, (0.75, 0.27)) > 100  # was ~40: a white rim on a white wall

    boxes = [(0.05 + 0.02 * i, 0.05, 0.1 + 0.02 * i, 0.1) for i in range(LIGHT)] + [(0.62, 0.2, 0.88, 0.34)]
    out = fe.run_cell("bxs = RolloutReviewer(box_response(%r))\nbxs" % boxes)
    stage = out.locator(".mdnb-stage")
    assert _mark_contrast(stage, (0.75, 0.2), radius_px=4) > 100  # the box's top edge on the wall
    out.locator(".mdnb-reviewer").screenshot(path=_shot(fe, artifacts, "overlay_boxes_photo.png"))
    # a "bad" box stays clearly visible
    fe.kernel(f"bxs.rewards = [1.0] * {LIGHT + 1}\nbxs.rewards = [0.0] * {LIGHT + 1}")
    fe.page.wait_for_timeout(300)
    assert out.locator(".mdnb-roll.mdnb-bad").count() == LIGHT + 1
    assert _mark_contrast(stage, (0.75, 0.2), radius_px=4) > 60


def test_coincident_points_say_how_many_and_hover_lights_their_rows(fe, artifacts):
    out = fe.run_cell("same = RolloutReviewer(point_response([(0.5, 0.5)] * 8), ground_truth="
                       "{'points': [{'x': 0.52, 'y': 0.48}]})\nsame")
    panel = out.locator(".mdnb-reviewer")
    badge = panel.locator("g.mdnb-badge")
    assert badge.count() == 1 and badge.locator("text").text_content() == "×8"
    badge.hover()
    assert panel.locator(".mdnb-item.mdnb-hot").count() == 8  # every row of the eight lights up
    panel.screenshot(path=_shot(fe, artifacts, "overlay_coincident.png"))
    fe.page.mouse.move(0, 0)
    assert panel.locator(".mdnb-item.mdnb-hot").count() == 0
    # hovering one rollout's mark lights its row only
    out2 = fe.run_cell("apart = RolloutReviewer(point_response([(0.2, 0.2), (0.6, 0.6)]))\napart")
    out2.locator('g.mdnb-roll[data-r="1"] circle.mdnb-pt').hover()
    assert out2.locator(".mdnb-item.mdnb-hot").all_inner_texts()[0].startswith("#2")


def test_ground_truth_is_a_layer_with_a_toggle(fe, artifacts):
    out = fe.run_cell("gt = RolloutReviewer(box_response([(0.3, 0.3, 0.6, 0.6)]), ground_truth="
                       "{'boxes': [{'x_min': 0.32, 'y_min': 0.28, 'x_max': 0.62, 'y_max': 0.58}]})\ngt")
    panel = out.locator(".mdnb-reviewer")
    truth = panel.locator(".mdnb-truth-box")
    assert truth.count() == 1 and truth.is_visible()
    assert "ground truth" in panel.locator(".mdnb-legend-truth").inner_text()
    panel.click(position={"x": 5, "y": 5})
    fe.page.keyboard.press("g")
    fe.page.wait_for_timeout(300)
    assert fe.value("gt.show_truth") is False and not truth.is_visible()
    panel.locator('button[data-act="truth"]').click()
    fe.page.wait_for_timeout(300)
    assert fe.value("gt.show_truth") is True and truth.is_visible()
    panel.screenshot(path=_shot(fe, artifacts, "overlay_truth.png"))


def test_identical_query_answers_are_one_row_scored_together(fe, artifacts):
    fe.kernel("answers = ['hexagon', 'Hexagon ', 'hexagon', 'square', 'hexagon']\n"
               "qr = RolloutReviewer({'request': {'skill': 'query', 'question': 'which shape?', 'image_url': url},\n"
               "    'rollouts': [{'skill': 'query', 'output': {'answer': a}} for a in answers]})")
    out = fe.run_cell("qr")
    panel = out.locator(".mdnb-reviewer")
    rows = panel.locator(".mdnb-item:visible")
    assert rows.count() == 2 and "×4" in rows.nth(0).inner_text() and "square" in rows.nth(1).inner_text()
    assert [t.strip() for t in panel.locator(".mdnb-item:visible .mdnb-reward").all_inner_texts()] == ["–", "–"]
    rows.nth(0).click()  # one click scores the four "hexagon" rollouts
    fe.page.wait_for_timeout(300)
    assert fe.value("qr.rewards") == [1.0, 1.0, 1.0, 0.0, 1.0] and fe.value("qr.unscored") == [3]
    for key in ("2", "0"):  # the second row is "square"
        fe.page.keyboard.press(key)
    fe.page.wait_for_timeout(300)
    assert fe.value("qr.rewards") == [1.0, 1.0, 1.0, 0.0, 1.0] and fe.value("qr.unscored") == []
    assert fe.value("qr.group()['rewards']") == [1.0, 1.0, 1.0, 0.0, 1.0]  # still one per rollout, in order
    panel.screenshot(path=_shot(fe, artifacts, "overlay_query_grouped.png"))
