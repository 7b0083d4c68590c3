"""TargetEditor on the Python side: targets in the API's shape, SFT groups the server accepts."""

from __future__ import annotations

import pytest

from moondream_nb.errors import ValidationError
from moondream_nb.widgets import TargetEditor


def test_point_target_and_group_trains(server, scene, responses):
    te = TargetEditor(scene.image, "point", object="circle", initial={"points": [scene.objects[0].point]})
    assert te.mode == "point" and te.target == {"points": [scene.objects[0].point]}
    te.layers = te.layers + [{"x": 0.3, "y": 0.4}]
    group = te.group()
    assert group["mode"] == "sft" and group["request"]["image"] is scene.image
    assert group["target"]["points"][1] == {"x": 0.3, "y": 0.4}
    result = responses["ft"].train_step([group])
    assert result["applied"] is True and result["sft_loss"] > 0


def test_point_target_from_boxes_and_mixed_is_an_error(scene):
    te = TargetEditor(scene.image, "point", object="circle", initial={"boxes": [scene.objects[0].box_dict]})
    assert te.target == {"boxes": [scene.objects[0].box_dict]}
    te.layers = te.layers + [{"x": 0.1, "y": 0.1}]
    with pytest.raises(ValidationError, match="^target: a point target has points or boxes, not both"):
        te.target


def test_detect_from_rollout_keeps_echoed_request(responses):
    resp = responses["detect"]
    te = TargetEditor.from_rollout(resp, 1)
    assert te.mode == "box" and te.target == {"boxes": resp["rollouts"][1]["output"]["objects"]}
    te.layers = [{"x_min": 0.1, "y_min": 0.1, "x_max": 0.3, "y_max": 0.4}]
    group = te.group()
    assert group["request"] == resp["request"]
    assert responses["ft"].train_step([group])["applied"] is True


def test_query_target_with_reasoning(responses):
    te = TargetEditor.from_rollout(responses["query"], 0)
    first = responses["query"]["rollouts"][0]["output"]
    assert te.answer == first["answer"] and te.reasoning and te.reasoning_text == first["reasoning"]["text"]
    te.answer, te.reasoning_text = "4", "I count four shapes."
    group = te.group()
    assert group["target"] == {"answer": "4", "reasoning": {"text": "I count four shapes."}}
    assert responses["ft"].train_step([group])["applied"] is True


def test_query_without_image(responses):
    te = TargetEditor(None, "query", question="what is 2+2?")
    assert not te.has_image
    with pytest.raises(ValidationError, match=r"^target\.answer:"):
        te.group()
    te.answer = "4"
    assert te.group() == {"mode": "sft", "request": {"skill": "query", "question": "what is 2+2?"},
                          "target": {"answer": "4"}}
    assert te._repr_mimebundle_()[0]["image/png"][:4] == b"\x89PNG"


@pytest.mark.parametrize("args, kwargs, field", [
    (("img", "segment"), {}, "skill"),
    (("img", "point"), {}, "object"),
    ((None, "detect"), {"object": "x"}, "image"),
    (("img", "query"), {}, "question"),
    (("img", "detect"), {"object": "x", "initial": {"points": [{"x": 0.1, "y": 0.1}]}}, "initial.points"),
    (("img", "detect"), {"object": "x", "initial": {"boxes": [{"x_min": 0.1, "y_min": 0, "x_max": 1.2, "y_max": 1}]}},
     "initial.boxes[0].x_max"),
    (("img", "point"), {"object": "x", "reasoning": True}, "reasoning"),
    (("img", "point"), {"object": "x", "question": "why?"}, "question"),
    (("img", "query"), {"question": "why?", "object": "x"}, "object"),
])
def test_bad_arguments_name_the_field(scene, args, kwargs, field):
    args = tuple(scene.image if a == "img" else a for a in args)
    with pytest.raises(ValidationError) as err:
        TargetEditor(*args, **kwargs)
    assert str(err.value).startswith(field + ":")


def test_from_rollout_index_checked(responses):
    with pytest.raises(ValidationError, match="^i:"):
        TargetEditor.from_rollout(responses["detect"], 99)
