"""SFT groups from labels, and the demo dataset built from the pretraining scene generator."""

from __future__ import annotations

import importlib.util
import json

import pytest

from moondream_nb import ImageEncoder, ValidationError, protocol
from moondream_nb.data import Dataset, Label, demo_dataset, sft_groups
from moondream_nb import scenes as sc
from moondream_nb.rewards import reward

from .conftest import solid


def test_sft_groups_with_pil_images_for_the_client():
    red = solid((255, 0, 0))
    ds = Dataset.from_images([red], ids=["red"])
    labels = [Label.point("red", "dot", [(0.5, 0.5)]),
              Label.query("red", "What colour?", "red", reasoning="It is red.", spatial_refs=[(0.5, 0.5)])]
    groups = sft_groups(labels, ds)
    assert groups[0] == {"mode": "sft", "request": {"skill": "point", "object": "dot", "image": red},
                         "target": {"points": [{"x": 0.5, "y": 0.5}]}}
    assert groups[1]["request"] == {"skill": "query", "question": "What colour?", "spatial_refs": [[0.5, 0.5]],
                                    "reasoning": True, "image": red}
    plain = sft_groups(labels[1:], {"red": red}, reasoning=False)[0]
    assert "reasoning" not in plain["request"] and plain["target"] == {"answer": "red"}


def test_encoded_sft_groups_are_a_valid_train_step_body():
    ds = demo_dataset(6)
    encoder = ImageEncoder()
    groups = sft_groups(ds.labels(), ds, encoder=encoder)
    assert len(groups) == 18 and all(g["request"]["image_url"].startswith("data:image/jpeg;base64,") for g in groups)
    protocol.validate_train_step_body({"finetune_id": "ft", "groups": groups, "lr": 2e-4})
    assert encoder.encodes == 6  # one encode per image, shared by its three labels
    json.dumps(groups)  # ready to send


def test_sft_groups_missing_image():
    with pytest.raises(KeyError, match="labels\\[0\\]: no image with id 'x'"):
        sft_groups([Label.point("x", "dot", [])], {})


def test_demo_dataset_is_deterministic_small_and_fast():
    import time

    t = time.perf_counter()
    a = demo_dataset()
    elapsed = time.perf_counter() - t
    b = demo_dataset()
    assert len(a) == 24 and elapsed < 5  # generous: it takes ~0.2 s on a busy core
    assert a.ids == b.ids
    assert [it.image.tobytes() for it in a] == [it.image.tobytes() for it in b]
    assert a.labels() == b.labels()
    c = demo_dataset(seed=1)
    assert c.ids != a.ids and c[0].image.tobytes() != a[0].image.tobytes()
    assert demo_dataset(8).ids == a.ids[:8]  # a smaller demo is a prefix of the larger one


def test_demo_has_known_and_held_out_concepts_with_true_ground_truth():
    ds = demo_dataset()
    concepts = [it.meta["concept"] for it in ds]
    assert concepts.count("star") == 4 and concepts.count("purple") == 4 and concepts.count("known") == 16
    for it in ds:
        objects = it.meta["objects"]
        kinds = {lb.skill for lb in it.labels}
        assert kinds == {"point", "detect", "query"}
        if it.meta["concept"] == "known":
            assert all(o["shape"] in sc.SHAPES and o["colour"] in sc.COLOURS for o in objects)
            continue
        want = [o for o in objects if (o["shape"] == "star" if it.meta["concept"] == "star" else o["colour"] == "purple")]
        assert want, "a held-out scene shows its concept"
        detect = it.labels_for("detect")[0]
        assert detect.target["boxes"] == [o["box"] for o in want]
        point = it.labels_for("point")[0]
        # The point ground truth scores 1.0 against the boxes of exactly those objects.
        assert reward("point", point.target, {"boxes": detect.target["boxes"]}) == 1.0


def test_demo_known_labels_match_the_rendered_objects():
    for it in demo_dataset(12):
        if it.meta["concept"] != "known":
            continue
        detect = it.labels_for("detect")[0]
        words = detect.prompt.split()
        for box in detect.target["boxes"]:
            obj = next(o for o in it.meta["objects"] if o["box"] == box)
            assert any(w.startswith(obj["shape"]) or w == obj["colour"] for w in words)


def test_demo_concepts_argument():
    stars = demo_dataset(3, concepts=["star"])
    assert [it.meta["concept"] for it in stars] == ["star"] * 3
    with pytest.raises(ValidationError, match="concepts"):
        demo_dataset(3, concepts=["unicorn"])


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="moondream_nb.local needs torch")
def test_demo_star_scenes_are_the_learning_tasks_scenes():
    """The held-out scenes are built exactly as local/learning.py builds its STAR_POINT tasks."""
    from moondream_nb.local.learning import STAR_POINT, PURPLE_DETECT

    for it in demo_dataset(12):
        concept = {"star": STAR_POINT, "purple": PURPLE_DETECT}.get(it.meta["concept"])
        if concept is None:
            continue
        request, gt = concept.item(it.meta["seed"])
        mine = it.labels_for(concept.skill)[0]
        assert request["object"] == mine.prompt and gt == mine.target
