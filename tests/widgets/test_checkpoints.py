"""CheckpointBrowser against the real local server: table, run side by side, scores, save/delete."""

from __future__ import annotations

import pytest

from moondream_nb.errors import ValidationError
from moondream_nb.rewards import reward
from moondream_nb.widgets import CheckpointBrowser
from moondream_nb.widgets.checkpoints import BASE
from moondream_nb import connect


@pytest.fixture(scope="module")
def trained(server, scene):
    from moondream_nb.widgets import TargetEditor

    ft = connect(server=server).ft(name="widget-ckpt", rank=8)
    te = TargetEditor(scene.image, "detect", object="squares", initial={"boxes": [scene.objects[0].box_dict]})
    ft.train_step([te.group()])
    return ft


def test_table_run_scores_save_delete(trained, scene):
    from moondream_nb.scenes import make_scene

    images = [scene.image, make_scene(11).image]
    truth = [{"boxes": [scene.objects[0].box_dict]}, {"boxes": []}]
    cb = CheckpointBrowser(trained, images, {"skill": "detect", "object": "squares"}, ground_truth=truth)
    assert cb.checkpoints == []
    cb.save()
    assert [c["step"] for c in cb.checkpoints] == [1] and cb.checkpoints[0]["expires"] == "–"  # as NaT in checkpoints_frame: no expiry given
    results = cb.run([BASE, 1])
    assert list(results) == ["base", "step 1"] and all(len(v) == 2 for v in results.values())
    for col in cb.columns:  # scores are the reward formulas on each model's real output
        for i, cell in enumerate(col["cells"]):
            assert cell["score"] == pytest.approx(reward("detect", results[col["label"]][i], truth[i]))
    frame = cb.frame
    assert list(frame.columns) == ["base", "step 1"] and list(frame.index) == [0, 1, "mean"]
    fig = cb.to_figure()
    assert len(fig.axes) == 4
    cb.delete(1)
    assert cb.checkpoints == [] and [c["label"] for c in cb.columns] == ["base"]


def test_front_end_messages_and_errors(trained, scene):
    cb = CheckpointBrowser(trained, scene.image, {"skill": "point", "object": "squares"})
    cb._on_front_end_msg(cb, {"type": "delete", "step": 99}, [])
    assert cb.status.startswith("NotFoundError")  # the server's answer reaches the panel
    cb.save()
    step = cb.checkpoints[-1]["step"]
    cb._on_front_end_msg(cb, {"type": "run"}, [])  # nothing chosen: the base and every saved checkpoint
    assert [c["label"] for c in cb.columns] == ["base", f"step {step}"] and cb.columns[0]["cells"][0]["score"] is None
    cb.chosen = [BASE]
    cb._on_front_end_msg(cb, {"type": "run"}, [])
    assert [c["label"] for c in cb.columns] == ["base"]
    cb.delete(step)
    no_base = CheckpointBrowser(trained, scene.image, {"skill": "point", "object": "squares"}, base=False)
    no_base.chosen = [BASE]
    no_base.refresh()
    assert no_base.chosen == []


@pytest.mark.parametrize("kwargs, field", [
    ({"request": {"skill": "caption"}}, "request.skill"),
    ({"request": {"skill": "detect"}}, "request.object"),
    ({"ground_truth": [{"boxes": []}, {"boxes": []}]}, "ground_truth"),
    ({"ground_truth": [{"points": []}]}, "ground_truth[0].points"),
    ({"images": []}, "images"),
])
def test_bad_arguments_name_the_field(trained, scene, kwargs, field):
    args = {"images": [scene.image], "request": {"skill": "detect", "object": "x"}, **kwargs}
    with pytest.raises(ValidationError) as err:
        CheckpointBrowser(trained, **args)
    assert str(err.value).startswith(field + ":")
