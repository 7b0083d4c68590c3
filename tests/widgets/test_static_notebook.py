"""Executed headless (nbclient, no widget front end), each panel's output still carries a picture (PNG, or JPEG over photos):
the static fallback that exported notebooks and static viewers show."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from PIL import Image

REPO = Path(__file__).resolve().parents[2]

CELLS = [
    """\
from moondream_nb.scenes import make_scene
from moondream_nb.widgets import ImageCanvas, RolloutReviewer, TargetEditor, MetricsPanel
scene = make_scene(5, size=(400, 300), n_objects=3)
boxes = [o.box_dict for o in scene.objects]
resp = {"request": {"skill": "detect", "image_url": "data:image/png;base64,", "object": "shapes"},
        "rollouts": [{"output": {"objects": boxes[:k]}} for k in range(1, 4)], "rewards": [0.2, 0.6, 1.0]}
""",
    "ImageCanvas(scene.image, layers=boxes, mode='box')",
    "RolloutReviewer(resp, image=scene.image)",
    "TargetEditor(scene.image, 'point', object='shapes', initial={'points': [o.point for o in scene.objects]})",
    "MetricsPanel([{'kind': 'train_step', 'step': s, 'reward_mean': s / 4, 'kl': 0.01 * s} for s in (1, 2, 3)], live=False)",
]


def test_every_panel_output_has_a_picture_fallback(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in CELLS]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    client = NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.km = client.kernel_manager_class(kernel_name="python3")
    client.km.extra_env = env  # the kernel imports this checkout
    client.execute()
    for cell in nb.cells[1:]:
        outputs = [o for o in cell.outputs if o.output_type in ("execute_result", "display_data")]
        assert len(outputs) == 1, cell.outputs
        data = outputs[0]["data"]
        assert "application/vnd.jupyter.widget-view+json" in data
        mime = "image/png" if "image/png" in data else "image/jpeg"
        picture = Image.open(io.BytesIO(base64.b64decode(data[mime])))
        assert picture.width >= 200 and picture.height >= 100


def test_the_saved_picture_follows_the_panel(tmp_path):
    """A MetricsPanel displayed before training: the notebook, executed and saved, keeps a
    picture of the final charts, not the empty "no train steps or metrics yet" it first showed."""
    import base64

    import nbclient
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[
        new_code_cell("from moondream_nb.widgets import MetricsPanel\nrows = []\npanel = MetricsPanel(rows, live=False)\n"
                      "first = panel._fallback_image()[1]\npanel"),
        new_code_cell("for s in range(1, 6):\n"
                      "    rows.append({'kind': 'train_step', 'step': s, 'time': float(s), 'applied': True,\n"
                      "                 'reward_mean': 0.1 * s, 'reward_std': 0.05, 'kl': 0.01 * s})\n"
                      "panel.refresh()\nlast = panel._fallback_image()[1]"),
        new_code_cell("import time\ntime.sleep(panel.static_follows + 2)  # the update lands while a cell runs\n"
                      "import base64\nprint(base64.b64encode(first).decode()[:0] + 'first', len(first), 'last', len(last))\n"
                      "open('last.png', 'wb').write(last); open('first.png', 'wb').write(first)"),
    ])
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    nbformat.write(nb, tmp_path / "saved.ipynb")
    saved = nbformat.read(tmp_path / "saved.ipynb", as_version=4)
    kept = base64.b64decode(saved.cells[0].outputs[0]["data"]["image/png"])
    assert kept == (tmp_path / "last.png").read_bytes() and kept != (tmp_path / "first.png").read_bytes()
    assert "application/vnd.jupyter.widget-view+json" in saved.cells[0].outputs[0]["data"]  # still a live widget
