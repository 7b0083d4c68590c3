"""The procedural scene generator: deterministic, varied, with held-out concepts kept out."""

import random

import pytest

from moondream_nb import scenes as sc


def test_same_seed_same_scene():
    a, b = sc.make_scene(123), sc.make_scene(123)
    assert a.image.tobytes() == b.image.tobytes()
    assert a.objects == b.objects
    assert sc.make_scene(124).image.tobytes() != a.image.tobytes()


def test_scenes_vary_in_size_count_and_background():
    made = [sc.make_scene(s) for s in range(300)]
    assert {len(m.objects) for m in made} == set(range(7))
    assert {m.background for m in made} == set(sc.BACKGROUNDS)
    ratios = [m.image.width / m.image.height for m in made]
    assert min(ratios) < 0.75 and max(ratios) > 1.35
    for m in made:
        for o in m.objects:
            x0, y0, x1, y1 = o.box
            assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
            assert o.shape in sc.SHAPES and o.colour in sc.COLOURS


def test_held_out_concepts_only_when_asked():
    words = {o.shape for s in range(300) for o in sc.make_scene(s).objects} | {o.colour for s in range(300) for o in sc.make_scene(s).objects}
    assert "star" not in words and "purple" not in words
    s = sc.make_scene(5, include=[("purple", "star")], shapes=sc.ALL_SHAPES)
    assert any(o.shape == "star" and o.colour == "purple" for o in s.objects)
    rng = random.Random(0)
    for seed in range(200):
        scene = sc.make_scene(seed)
        for skill in ("query", "caption", "point", "detect"):
            request, answer = sc.make_task(scene, skill, rng)
            text = str(request) + str(answer)
            assert "star" not in text and "purple" not in text


def test_tasks_answer_correctly():
    scene = sc.make_scene(7, n_objects=4, include=[("red", "circle"), ("blue", "square")])
    rng = random.Random(1)
    request, answer = sc.make_task(scene, "point", rng, target=("red", "circle"))
    reds = [o for o in scene.objects if o.colour == "red" and o.shape == "circle"]
    assert answer["points"] == [o.point for o in reds]
    request, answer = sc.make_task(scene, "detect", rng, target=(None, "square"))
    assert answer["boxes"] == [o.box_dict for o in scene.objects if o.shape == "square"]
    assert "square" in request["object"]
    for _ in range(50):
        request, answer = sc.make_task(scene, "query", rng)
        assert request["skill"] == "query" and answer["answer"] and answer["reasoning"]["text"]
        if request["question"].startswith("How many"):
            assert answer["answer"].isdigit()
    for length in ("short", "normal", "long"):
        assert sc.caption(scene, length).endswith(".")
    assert len(sc.caption(scene, "long")) > len(sc.caption(scene, "normal")) > len(sc.caption(scene, "short"))


def test_unknown_skill_is_refused():
    with pytest.raises(ValueError, match="skill"):
        sc.make_task(sc.make_scene(0), "segment", random.Random(0))


def test_extra_pretraining_shapes_are_drawn_named_and_never_the_star():
    shapes = sc.PRETRAINING_SHAPES
    scenes = [sc.make_scene(s, shapes=shapes, n_objects=6, size=(240, 240)) for s in range(60)]
    drawn = {o.shape for scene in scenes for o in scene.objects}
    assert set(sc.EXTRA_SHAPES) <= drawn and "star" not in drawn
    cross = next(o for scene in scenes for o in scene.objects if o.shape == "cross")
    assert 0 < cross.box[0] < cross.box[2] <= 1 and 0 < cross.box[1] < cross.box[3] <= 1
    rng = random.Random(1)
    scene = sc.make_scene(3, include=[("red", "cross"), ("blue", "cross")], shapes=shapes, n_objects=3)
    request, answer = sc.make_task(scene, "point", rng, shapes=shapes, target=(None, "cross"))
    assert request["object"] in ("cross", "crosses") and len(answer["points"]) == 2
    # the aux targets label the extra shapes with their own classes
    from moondream_nb.local.model import N_SHAPE_CLASSES, preprocess
    from moondream_nb.local.pretrain import aux_targets

    _, frame = preprocess(scene.image)
    labels = set(aux_targets(scene, frame, shapes)[:, 0].tolist()) - {-100}
    assert shapes.index("cross") in labels and max(labels) < N_SHAPE_CLASSES - 1


def test_pretraining_asks_for_several_matching_objects_often():
    # Random scenes rarely hold two things of one colour or shape; the base then learned to stop
    # after the first box. Pretraining repeats colours/shapes and asks for repeated ones.
    from moondream_nb.local.pretrain import repeated_target, repeats

    rng = random.Random(5)
    shapes = sc.PRETRAINING_SHAPES
    for _ in range(200):
        pairs = repeats(rng, shapes, 6)
        assert pairs == [] or (2 <= len(pairs) <= 4 and (len({c for c, _ in pairs}) == 1 or len({s for _, s in pairs}) == 1))
        assert all(c in sc.COLOURS and s in shapes for c, s in pairs)
    assert repeats(rng, shapes, 1) == []
    many = 0
    for seed in range(300):
        scene = sc.make_scene(seed, shapes=shapes, include=repeats(rng, shapes, 6))
        target = repeated_target(rng, scene)
        if target is not None:
            hits = [o for o in scene.objects if (target[0] in (None, o.colour)) and (target[1] in (None, o.shape))]
            assert len(hits) >= 2
        _, answer = sc.make_task(scene, "detect", rng, shapes=shapes, target=target)
        many += len(answer["boxes"]) >= 2
    assert many / 300 >= 0.4  # random targets over random scenes: 0.12
    assert repeated_target(rng, sc.make_scene(0, n_objects=1)) is None
