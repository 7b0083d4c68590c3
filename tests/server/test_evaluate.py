"""``moondream_nb.evaluate`` against the real local server: metrics on hand-built cases equal
hand-computed numbers, checkpoints and the base side by side, outputs cached per (model, image,
prompt) in memory and in a SQLite file, bad arguments refused before any call."""

from __future__ import annotations

import math

import pytest

import moondream_nb as md
from moondream_nb.data import Dataset, Label
from moondream_nb.scenes import make_scene
from moondream_nb.evaluation import EvalCache
from moondream_nb.local import serve
from moondream_nb import connect

FAR = {"x_min": 0.0, "y_min": 0.0, "x_max": 0.02, "y_max": 0.02}  # a truth box nothing predicts


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serve(data_dir=tmp_path_factory.mktemp("data"), threads=2) as srv:
        yield srv


@pytest.fixture(scope="module")
def world(server):
    """Scenes, the base model's answers on them, and a finetune with two saved checkpoints."""
    vl = connect(server=server).vl()
    scenes = [make_scene(seed, size=(320, 240), n_objects=4) for seed in (2, 4, 0, 1)]
    prompts = [s.objects[0].shape + "s" for s in scenes]
    base = [vl.detect(s.image, p)["objects"] for s, p in zip(scenes, prompts)]
    assert [len(b) for b in base] == [3, 2, 1, 1]  # the seeds were picked for these counts
    ft = connect(server=server).ft(name="evaluated", rank=8)
    for s, p in zip(scenes[:2], prompts[:2]):
        ft.train_step([{"mode": "sft", "request": {"skill": "detect", "image": s.image, "object": p},
                        "target": {"boxes": [o.box_dict for o in s.objects if o.shape + "s" == p]}}])
        ft.save_checkpoint()
    return {"vl": vl, "ft": ft, "scenes": scenes, "prompts": prompts, "base": base}


def _dataset(world, truths):
    ids = ["perfect", "missed", "false", "twice"]
    ds = Dataset.from_images([s.image for s in world["scenes"]], ids=ids)
    return ds.with_labels([Label(i, "detect", p, {"boxes": t}) for i, p, t in zip(ids, world["prompts"], truths)])


def _hand_built(world):
    """perfect: truth = the base's boxes; missed: one more truth box; false: one box fewer;
    twice: the base's box listed twice in the truth (one prediction matches one of them)."""
    b = world["base"]
    return _dataset(world, [b[0], b[1] + [FAR], b[2][1:], b[3] + b[3]])


def test_metrics_on_hand_built_cases_equal_the_hand_computed_numbers(world):
    ev = md.evaluate(world["vl"], _hand_built(world), "detect", cache=False)
    assert ev.models == ["base"]
    rows = {r["image_id"]: r for r in ev.rows()}
    assert ev.output("base", "perfect")["objects"] == world["base"][0]  # what the API answered, as is
    assert {k: rows["perfect"][k] for k in ("tp", "fp", "fn", "precision", "recall", "f1")} == \
        {"tp": 3, "fp": 0, "fn": 0, "precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert (rows["missed"]["tp"], rows["missed"]["fp"], rows["missed"]["fn"]) == (2, 0, 1)
    assert rows["missed"]["recall"] == pytest.approx(2 / 3) and rows["missed"]["f1"] == pytest.approx(0.8)
    assert (rows["false"]["tp"], rows["false"]["fp"], rows["false"]["fn"]) == (0, 1, 0)
    assert rows["false"]["precision"] == 0.0 and rows["false"]["f1"] == 0.0
    assert (rows["twice"]["tp"], rows["twice"]["fp"], rows["twice"]["fn"]) == (1, 0, 1)
    summary = ev.summary.loc["base"]
    # 6 TP, 1 FP, 2 misses over the four images
    assert (summary["tp"], summary["fp"], summary["fn"], summary["images"]) == (6, 1, 2, 4)
    assert summary["precision"] == pytest.approx(6 / 7) and summary["recall"] == pytest.approx(6 / 8)
    assert summary["f1"] == pytest.approx(2 * 6 / (2 * 6 + 1 + 2))
    assert summary["reward"] == pytest.approx(ev.images["reward"].mean())
    assert 0.0 < summary["ap"] <= summary["ap50"] <= 1.0 and not math.isnan(summary["ap75"])
    assert summary["ms"] > 0
    # the worst images first: the false box (F1 0), then the truth listed twice (2/3), then missed (0.8)
    assert list(ev.worst(n=3)["image_id"]) == ["false", "twice", "missed"]


def test_checkpoints_and_the_base_side_by_side_and_where_they_disagree(world):
    ds = _dataset(world, [[o.box_dict for o in s.objects if o.shape + "s" == p]
                          for s, p in zip(world["scenes"], world["prompts"])])
    ev = md.evaluate([world["vl"], world["ft"]], ds, "detect", max_concurrency=3, cache=False)
    assert ev.models == ["base", "step 1", "step 2"]
    assert list(ev.summary.index) == ev.models and len(ev.images) == 3 * 4
    recall, precision = ev.pr_curve("step 2")
    assert len(recall) == len(precision) == 101 and all(0.0 <= p <= 1.0 for p in precision)
    d = ev.disagreement("base", "step 2")
    assert list(d.columns) == ["image_id", "prompt", "base", "step 2", "difference"]
    assert list(d["difference"].abs()) == sorted(d["difference"].abs(), reverse=True)
    named = md.evaluate({"before": "base", "after": world["ft"].model(2)}, ds, "detect", vl=world["vl"])
    assert named.models == ["before", "after"]
    assert named.output("after", "perfect") == ev.output("step 2", "perfect")  # the same checkpoint, the same answer


def _counting(vl):
    calls = []
    vl._transport._session.hooks["response"].append(lambda r, *a, **k: calls.append(r.request.path_url))
    return calls


def test_running_again_calls_only_what_is_new(world, tmp_path):
    ds = _hand_built(world)
    vl, ft = world["vl"], world["ft"]
    calls = _counting(vl)
    path = tmp_path / "eval.sqlite"
    first = md.evaluate([vl, ft.model(1)], ds, "detect", cache=path)
    assert len(calls) == 8 and not first.cached
    again = md.evaluate([vl, ft.model(1)], ds, "detect", cache=path)
    assert len(calls) == 8 and len(again.cached) == 8  # nothing sent
    assert again.images.drop(columns="cached").equals(first.images.drop(columns="cached"))
    # after a restart (a new process opens the file): still nothing to call, and a new
    # checkpoint only calls its own four images
    reopened = EvalCache(path)
    assert len(reopened) == 8
    more = md.evaluate([vl, ft.model(1), ft.model(2)], ds, "detect", cache=reopened)
    assert len(calls) == 12 and len(more.cached) == 8
    assert {m for m, _ in more.cached} == {"base", "step 1"}


def test_point_and_query(world):
    vl, scenes = world["vl"], world["scenes"][:2]
    ids = ["a", "b"]
    points = [vl.point(s.image, "squares")["points"] for s in scenes]
    answers = [vl.query(s.image, "how many shapes are there?")["answer"] for s in scenes]
    ds = Dataset.from_images([s.image for s in scenes], ids=ids).with_labels(
        [Label(i, "point", "squares", {"points": p}) for i, p in zip(ids, points)]
        + [Label("a", "query", "how many shapes are there?", {"answer": f"  {answers[0].upper()}. "}),
           Label("b", "query", "how many shapes are there?", {"answer": answers[1] + " and more"})])
    pt = md.evaluate(vl, ds, "point", cache=False)
    assert list(pt.images["f1"]) == [1.0, 1.0] and pt.summary.loc["base", "recall"] == 1.0
    q = md.evaluate(vl, ds, "query", cache=False)
    assert list(q.images["correct"]) == [1.0, 0.0]  # case, space and a final period do not count
    assert q.summary.loc["base", "accuracy"] == 0.5 and list(q.worst()["image_id"]) == ["b", "a"]


def test_bad_arguments_are_refused_before_any_call(world, server):
    vl = world["vl"]
    calls = _counting(vl)
    ds = _hand_built(world)
    with pytest.raises(md.ValidationError, match="^dataset: has no 'query' labels"):
        md.evaluate(vl, ds, "query")
    with pytest.raises(md.ValidationError, match="^dataset: has no 'detect' labels with prompt 'moons'"):
        md.evaluate(vl, ds, "detect", prompt="moons")
    with pytest.raises(md.ValidationError, match=r"^models\[1\]: must be a VL client, a Finetune"):
        md.evaluate([vl, 42], ds, "detect")
    with pytest.raises(md.ValidationError, match="^vl: pass vl="):
        md.evaluate("base", ds, "detect")
    with pytest.raises(md.ValidationError, match="^skill:"):
        md.evaluate(vl, ds, "segment")
    with pytest.raises(md.ValidationError, match="^models: must name at least one model"):
        md.evaluate([], ds, "detect")
    with pytest.raises(md.ValidationError, match="^models: finetune 'never-saved' has no saved checkpoint"):
        md.evaluate(connect(server=server).ft(name="never-saved", rank=8), ds, "detect")
    ev = md.evaluate(vl, ds, "detect", cache=False)
    with pytest.raises(md.ValidationError, match="^metric: must be one of"):
        ev.worst(metric="accuracy")
    with pytest.raises(md.ValidationError, match="^model: must be one of 'base'"):
        ev.pr_curve("step 9")
    assert len(calls) == 4  # only the last, valid evaluation sent anything
