"""EvaluationPanel in JupyterLab (headless Chromium): the metrics table has a column per model,
the images come worst first, a click shows the truth and each model's output over the image, the
order and the models drawn follow the controls, and the kernel sees every choice.
Screenshot: tests/artifacts/evaluation_panel.png."""

from __future__ import annotations

import pytest

SETUP = """\
import moondream_nb as md
from moondream_nb.data import Dataset, Label
from moondream_nb.scenes import make_scene
from moondream_nb.local import serve
from moondream_nb.widgets import EvaluationPanel
eval_server = serve(threads=1)
eft = md.connect(server=eval_server).ft(name='evaluation-panel', rank=8)
evl = md.connect(server=eval_server).vl()
scenes = [make_scene(seed, size=(320, 240), n_objects=4) for seed in range(6)]
ids = [f'scene-{i}' for i in range(6)]
truths = [{'boxes': [o.box_dict for o in s.objects if o.shape == s.objects[0].shape]} for s in scenes]
truths[1]['boxes'].append({'x_min': 0.0, 'y_min': 0.0, 'x_max': 0.03, 'y_max': 0.03})  # a box no model finds
ds = Dataset.from_images([s.image for s in scenes], ids=ids).with_labels(
    [Label(i, 'detect', s.objects[0].shape + 's', t) for i, s, t in zip(ids, scenes, truths)])
eft.train_step([{'mode': 'sft', 'request': {'skill': 'detect', 'image': scenes[0].image, 'object': scenes[0].objects[0].shape + 's'},
                 'target': truths[0]}])
eft.save_checkpoint()
ev = md.evaluate([evl, eft], ds, 'detect', cache=False)
"""


@pytest.fixture(scope="module")
def evaluated(lab):
    lab.kernel(SETUP)
    yield
    lab.kernel("eval_server.stop()")


def test_evaluation_panel_table_worst_first_click_and_controls(lab, artifacts, evaluated):
    out = lab.run_cell("ep = EvaluationPanel(ev)\nep")
    panel = out.locator(".mdnb-evaluation")
    page = lab.page
    # the table: a column per model, the numbers of ev.summary
    assert panel.locator(".mdnb-eval-table th").all_inner_texts()[1:] == ["base", "step 1"]
    ap = lab.value("[round(v, 3) for v in ev.summary['ap']]")
    assert [float(t) for t in panel.locator('.mdnb-eval-table tr[data-metric="AP 0.50:0.95"] td').all_inner_texts()[1:]] == ap
    assert panel.locator("polyline.mdnb-pr-line").count() == 2
    # worst first: the order of ev.worst for the last model, and the worst one is shown
    rows = panel.locator(".mdnb-eval-row[data-i]")
    expected = lab.value("list(ev.worst('step 1', n=None)['image_id'])")
    assert [rows.nth(k).get_attribute("title").split(" · ")[0] for k in range(rows.count())] == expected
    assert lab.value("ep.selected") == lab.value(f"ids.index({expected[0]!r})")
    # click the third image: Python knows, the truth and each model's boxes are drawn over it
    third = rows.nth(2)
    third.click()
    i = int(third.get_attribute("data-i"))
    page.wait_for_timeout(400)
    assert lab.value("ep.selected") == i
    detail = panel.locator(".mdnb-eval-detail")
    detail.locator("img.mdnb-img").wait_for()
    page.wait_for_function("() => { const im = document.querySelector('.mdnb-eval-detail img.mdnb-img');"
                           " return im && im.naturalWidth > 0; }", timeout=10_000)
    assert detail.locator(".mdnb-truth-box").count() == len(lab.value(f"truths[{i}]['boxes']"))
    for label in ("base", "step 1"):
        n = len(lab.value(f"ev.output({label!r}, ids[{i}])['objects']"))
        assert detail.locator(f'g.mdnb-roll[data-label="{label}"] rect.mdnb-box').count() == n
    panel.screenshot(path=str(artifacts / "evaluation_panel.png"))
    # keys in the list move the selection
    page.keyboard.press("ArrowDown")
    page.wait_for_timeout(400)
    assert lab.value("ep.selected") == int(rows.nth(3).get_attribute("data-i"))
    # hide the base: its marks and its curve go, the kernel knows
    detail.locator('.mdnb-eval-model[data-label="base"]').click()
    page.wait_for_timeout(400)
    assert lab.value("ep.hidden") == ["base"]
    assert detail.locator('g.mdnb-roll[data-label="base"]').count() == 0
    assert panel.locator("polyline.mdnb-pr-line").count() == 1
    # order by disagreement: the kernel re-sorts, the list follows
    panel.locator("select.mdnb-eval-sort").select_option("disagreement base vs step 1")
    page.wait_for_timeout(500)
    assert lab.value("ep.sort") == "disagreement base vs step 1"
    keys = lab.value("[abs(r['key']) for r in ep.listing]")
    assert keys == sorted(keys, reverse=True)
    assert int(rows.nth(0).get_attribute("data-i")) == lab.value("ep.listing[0]['i']")
    panel.screenshot(path=str(artifacts / "evaluation_panel_disagreement.png"))


def test_the_panel_orders_and_shows_without_a_browser_and_has_a_static_picture():
    """The Python side alone: worst first by the chosen model, disagreement by |b - a|, a click's
    image sent once per image, and a PNG of the curves and the table for viewers without widgets."""
    from PIL import Image

    from moondream_nb.data import Dataset, Label
    from moondream_nb.evaluation import Evaluation
    from moondream_nb.evaluation.run import collect_cases
    from moondream_nb.widgets import EvaluationPanel

    box = {"x_min": 0.1, "y_min": 0.1, "x_max": 0.4, "y_max": 0.4}
    far = {"x_min": 0.6, "y_min": 0.6, "x_max": 0.9, "y_max": 0.9}
    ids = ["a", "b", "c"]
    ds = Dataset.from_images([Image.new("RGB", (64, 48), (40 * i, 90, 90)) for i in range(3)], ids=ids).with_labels(
        [Label(i, "detect", "things", {"boxes": [box]}) for i in ids])
    cases = collect_cases(ds, "detect")
    outputs = {("base", 0): {"objects": [box]}, ("base", 1): {"objects": [far]}, ("base", 2): {"objects": []},
               ("step 5", 0): {"objects": [far]}, ("step 5", 1): {"objects": [box]}, ("step 5", 2): {"objects": [box]}}
    ev = Evaluation("detect", ["base", "step 5"], cases, outputs, {k: 10.0 for k in outputs})
    panel = EvaluationPanel(ev)
    assert panel.sort == "worst step 5" and [r["image_id"] for r in panel.listing] == ["a", "b", "c"]
    assert panel.selected == 0 and panel.shown["truth"] == {"b": [[0.1, 0.1, 0.4, 0.4]]}
    assert [c["b"] for c in panel.shown["cells"]] == [[[0.1, 0.1, 0.4, 0.4]], [[0.6, 0.6, 0.9, 0.9]]]
    panel.sort = "worst base"
    assert [r["image_id"] for r in panel.listing] == ["b", "c", "a"]
    panel.sort = "disagreement base vs step 5"
    assert [abs(r["key"]) for r in panel.listing] == [1.0, 1.0, 1.0] and panel.listing[0]["key"] == -1.0
    first = panel._image
    panel.selected = 2
    panel.selected = 0
    assert panel._image is first  # each image is sent once, however often it is clicked
    table = {row["name"]: row["values"] for row in panel.table}
    assert table["F1"] == [ev.summary.loc["base", "f1"], ev.summary.loc["step 5", "f1"]]
    data, _ = panel._repr_mimebundle_()
    assert data["image/png"][:4] == b"\x89PNG"
    panel.close()
    assert first.comm is None
