"""Label: the API's target shapes, validated by the protocol's rules."""

from __future__ import annotations

import pytest

from moondream_nb import ValidationError
from moondream_nb.data import Label


def test_constructors_build_api_shapes_from_tuples():
    p = Label.point("a.jpg", "bolt", [(0.25, 0.5)])
    assert p.target == {"points": [{"x": 0.25, "y": 0.5}]}
    d = Label.detect("a.jpg", "bolt", [(0.1, 0.2, 0.3, 0.4)])
    assert d.target == {"boxes": [{"x_min": 0.1, "y_min": 0.2, "x_max": 0.3, "y_max": 0.4}]}
    q = Label.query("a.jpg", "What colour?", "red", reasoning="It is red.", spatial_refs=[(0.5, 0.5)])
    assert q.target == {"answer": "red", "reasoning": {"text": "It is red."}}
    assert q.spatial_refs == ((0.5, 0.5),)
    assert Label.point("a.jpg", "bolt", boxes=[(0.1, 0.2, 0.3, 0.4)]).target["boxes"][0]["x_max"] == 0.3
    assert Label.point("a.jpg", "nothing", []).target == {"points": []}


def test_numpy_coordinates_are_accepted():
    np = pytest.importorskip("numpy")
    lb = Label.detect("a.jpg", "x", np.array([[0.1, 0.2, 0.3, 0.4]]))
    assert lb.target == {"boxes": [{"x_min": 0.1, "y_min": 0.2, "x_max": 0.3, "y_max": 0.4}]}
    assert type(lb.target["boxes"][0]["x_min"]) is float
    pt = Label.point("a.jpg", "x", [np.array([np.float32(0.5), np.float32(0.25)])])
    assert pt.target == {"points": [{"x": 0.5, "y": 0.25}]}


def test_integer_coordinates_become_floats():
    lb = Label("a.jpg", "point", "x", {"points": [{"x": 1, "y": 0}]})
    assert lb.target["points"][0] == {"x": 1.0, "y": 0.0}
    assert type(lb.target["points"][0]["x"]) is float


@pytest.mark.parametrize(
    "args, where",
    [
        (("a.jpg", "point", "bolt", {"points": [{"x": 1.5, "y": 0.5}]}), "target.points[0].x"),
        (("a.jpg", "detect", "bolt", {"boxes": [{"x_min": 0.5, "y_min": 0, "x_max": 0.4, "y_max": 1}]}), "target.boxes[0]"),
        (("a.jpg", "detect", "bolt", {"points": []}), "target.points"),
        (("a.jpg", "caption", "bolt", {"points": []}), "skill"),
        (("a.jpg", "point", "  ", {"points": []}), "prompt"),
        (("", "point", "bolt", {"points": []}), "image_id"),
        (("a.jpg", "query", "Why?", {"reasoning": {"text": "x"}}), "target.answer"),
        (("a.jpg", "point", "bolt", {"points": [{"x": True, "y": 0.5}]}), "target.points[0].x"),
    ],
)
def test_invalid_labels_name_the_field(args, where):
    with pytest.raises(ValidationError) as info:
        Label(*args)
    assert info.value.param == where
    assert str(info.value).startswith(where)


def test_spatial_refs_only_for_query_and_checked():
    with pytest.raises(ValidationError, match="spatial_refs: only for query"):
        Label("a.jpg", "point", "x", {"points": []}, ((0.1, 0.1),))
    with pytest.raises(ValidationError, match=r"spatial_refs\[0\]"):
        Label.query("a.jpg", "What?", "x", spatial_refs=[(0.1, 0.2, 0.3)])


def test_dict_round_trip_and_unknown_fields():
    q = Label.query("a.jpg", "What colour?", "red", reasoning="It is red.", spatial_refs=[(0.1, 0.2, 0.3, 0.4)],
                    meta={"by": "ann"})
    again = Label.from_dict(q.to_dict())
    assert again == q and again.meta == {"by": "ann"}
    with pytest.raises(ValidationError, match="colour: unknown label field"):
        Label.from_dict({**q.to_dict(), "colour": "red"})
    with pytest.raises(ValidationError, match="target: required"):
        Label.from_dict({"image_id": "a", "skill": "point", "prompt": "x"})


def test_request_and_ground_truth():
    q = Label.query("a.jpg", "What colour?", "red", reasoning="It is red.", spatial_refs=[(0.5, 0.5)])
    assert q.request() == {"skill": "query", "question": "What colour?", "spatial_refs": [[0.5, 0.5]], "reasoning": True}
    assert q.ground_truth is None
    p = Label.point("a.jpg", "bolt", [(0.25, 0.5)])
    assert p.request("IMG") == {"skill": "point", "image": "IMG", "object": "bolt"}
    gt = p.ground_truth
    assert gt == {"points": [{"x": 0.25, "y": 0.5}]}
    gt["points"].clear()  # a copy: editing it cannot change the label
    assert p.target["points"]


def test_key_separates_refs():
    a = Label.query("a.jpg", "What is this?", "x", spatial_refs=[(0.1, 0.1)])
    b = Label.query("a.jpg", "What is this?", "x", spatial_refs=[(0.9, 0.9)])
    assert a.key != b.key
    assert Label.query("a.jpg", "What is this?", "x").key[3] == ""
