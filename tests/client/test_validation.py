"""Every validation rule, through the real client: ValidationError naming the field, nothing sent."""

from __future__ import annotations

import json
import math

import pytest

import moondream_nb as md
from moondream_nb import protocol

from .conftest import FAST, KEY
from .peer import FINETUNE_ID

BOX = {"x_min": 0.1, "y_min": 0.1, "x_max": 0.5, "y_max": 0.6}
PT = {"x": 0.2, "y": 0.3}
ROLLOUT = {"skill": "point", "output": {"points": [PT]}, "answer_tokens": [1]}
POINT_REQ = {"skill": "point", "object": "dot", "image_url": "data:image/jpeg;base64,AAAA"}
QUERY_REQ = {"skill": "query", "question": "what?"}


def rl(n=2, rewards=None, **over):
    group = {"mode": "rl", "request": POINT_REQ, "rollouts": [ROLLOUT] * n,
             "rewards": [0.5] * n if rewards is None else rewards}
    group.update(over)
    return group


def sft(request=None, **over):
    group = {"mode": "sft", "request": request or QUERY_REQ, "target": {"answer": "yes"}}
    group.update(over)
    return group


def roll(**kw):
    base = dict(image="IMG", object="dot")
    base.update(kw)
    skill = base.pop("skill", "point")
    return lambda c, img: c.rollouts(skill, **{k: (img if v == "IMG" else v) for k, v in base.items()})


def query(**kw):
    kw.setdefault("question", "what?")
    kw.setdefault("image", None)
    return roll(skill="query", object=None, **kw)


def step(*groups, **kw):
    return lambda c, img: c.train_step(list(groups), **kw)


TUNING_CASES = [
    # rollouts: skill and required fields
    ("skill", roll(skill="caption"), "request.skill"),
    ("question required", roll(skill="query", object=None, image=None), "request.question"),
    ("question empty", query(question="  "), "request.question"),
    ("question too long", query(question="x" * 1001), "request.question"),
    ("object required", roll(object=None), "request.object"),
    ("object too long", roll(object="o" * 1001), "request.object"),
    ("image required point", roll(image=None), "request.image_url"),
    ("image required detect", roll(skill="detect", image=None), "request.image_url"),
    ("object not for query", roll(skill="query", question="q?", object="dot"), "request.object"),
    ("question not for point", roll(question="q?"), "request.question"),
    ("image unsupported", roll(image=123), "request.image"),
    ("image missing file", roll(image="/nonexistent/x.png"), "request.image"),
    ("image too large", roll(image=md.EncodedImage("data:image/jpeg;base64," + "A" * (14 * 2**20 + 8))),
     "request.image_url"),
    ("not a data url", roll(image=md.EncodedImage("file:///tmp/x.jpg")), "request.image_url"),
    # num_rollouts
    ("num_rollouts 0", roll(num_rollouts=0), "num_rollouts"),
    ("num_rollouts 17", roll(num_rollouts=17), "num_rollouts"),
    ("num_rollouts bool", roll(num_rollouts=True), "num_rollouts"),
    ("num_rollouts float", roll(num_rollouts=2.0), "num_rollouts"),
    # settings
    ("settings type", roll(settings=[("temperature", 1)]), "request.settings"),
    ("settings unknown", roll(settings={"temprature": 1.0}), "request.settings.temprature"),
    ("temperature negative", roll(settings={"temperature": -0.1}), "request.settings.temperature"),
    ("temperature nan", roll(settings={"temperature": math.nan}), "request.settings.temperature"),
    ("temperature inf", roll(settings={"temperature": math.inf}), "request.settings.temperature"),
    ("temperature str", roll(settings={"temperature": "hot"}), "request.settings.temperature"),
    ("top_p 0", roll(settings={"top_p": 0}), "request.settings.top_p"),
    ("top_p > 1", roll(settings={"top_p": 1.01}), "request.settings.top_p"),
    ("max_tokens 0", roll(settings={"max_tokens": 0}), "request.settings.max_tokens"),
    ("max_tokens 513", roll(settings={"max_tokens": 513}), "request.settings.max_tokens"),
    ("max_tokens float", roll(settings={"max_tokens": 8.5}), "request.settings.max_tokens"),
    ("max_objects 0", roll(settings={"max_objects": 0}), "request.settings.max_objects"),
    ("max_objects 51", roll(settings={"max_objects": 51}), "request.settings.max_objects"),
    ("max_objects bool", roll(settings={"max_objects": True}), "request.settings.max_objects"),
    # reasoning and spatial refs: query only
    ("reasoning on point", roll(reasoning=True), "request.reasoning"),
    ("spatial_refs on point", roll(spatial_refs=[[0.5, 0.5]]), "request.spatial_refs"),
    ("spatial_refs on detect", roll(skill="detect", spatial_refs=[[0.5, 0.5]]), "request.spatial_refs"),
    ("spatial_ref length", query(image="IMG", spatial_refs=[[0.1, 0.2, 0.3]]), "request.spatial_refs[0]"),
    ("spatial_ref range", query(image="IMG", spatial_refs=[[1.5, 0.2]]), "request.spatial_refs[0][0]"),
    ("spatial_ref nan", query(image="IMG", spatial_refs=[[0.5, math.nan]]), "request.spatial_refs[0][1]"),
    ("spatial_ref min>max", query(image="IMG", spatial_refs=[[0.5, 0.1, 0.2, 0.9]]), "request.spatial_refs[0]"),
    ("spatial_refs type", query(image="IMG", spatial_refs=5), "request.spatial_refs"),
    ("spatial_refs need image", query(spatial_refs=[[0.5, 0.5]]), "request.spatial_refs"),
    # ground truth
    ("gt on query", query(ground_truth={"boxes": [BOX]}), "ground_truth"),
    ("gt point both", roll(ground_truth={"points": [PT], "boxes": [BOX]}), "ground_truth"),
    ("gt point neither", roll(ground_truth={}), "ground_truth"),
    ("gt point x range", roll(ground_truth={"points": [{"x": 1.2, "y": 0.1}]}), "ground_truth.points[0].x"),
    ("gt point missing y", roll(ground_truth={"points": [{"x": 0.2}]}), "ground_truth.points[0].y"),
    ("gt detect points", roll(skill="detect", ground_truth={"points": [PT]}), "ground_truth.points"),
    ("gt detect objects", roll(skill="detect", ground_truth={"objects": [BOX]}), "ground_truth.objects"),
    ("gt box min>max", roll(skill="detect", ground_truth={"boxes": [{**BOX, "x_min": 0.9}]}), "ground_truth.boxes[0]"),
    ("gt box missing", roll(skill="detect", ground_truth={"boxes": [{"x_min": 0, "y_min": 0, "x_max": 1}]}),
     "ground_truth.boxes[0].y_max"),
    ("gt box negative", roll(skill="detect", ground_truth={"boxes": [{**BOX, "y_min": -0.1}]}),
     "ground_truth.boxes[0].y_min"),
    ("gt boxes not list", roll(skill="detect", ground_truth={"boxes": BOX}), "ground_truth.boxes"),
    # train step: groups
    ("groups empty", step(), "groups"),
    ("groups too many", lambda c, img: c.train_step([sft()] * 65), "groups"),
    ("groups type", lambda c, img: c.train_step(sft()), "groups"),
    ("group type", step("rl"), "groups[0]"),
    ("mode", step(rl(mode="ppo")), "groups[0].mode"),
    ("request missing", step(sft(request=None) | {"request": None}), "groups[0].request"),
    ("request skill", step(sft(request={"skill": "segment", "object": "x"})), "groups[0].request.skill"),
    ("request reasoning type", step(sft(request={**QUERY_REQ, "reasoning": "yes"})), "groups[0].request.reasoning"),
    ("request image", step(sft(request={**QUERY_REQ, "image": 3.5})), "groups[0].request.image"),
    # train step: rl
    ("rewards length", step(sft(), sft(), rl(n=8, rewards=[0.5] * 7)), "groups[2].rewards"),
    ("rewards nan", step(rl(rewards=[0.5, math.nan])), "groups[0].rewards[1]"),
    ("rewards bool", step(rl(rewards=[0.5, True])), "groups[0].rewards[1]"),
    ("rewards missing", step(rl() | {"rewards": None}), "groups[0].rewards"),
    ("rollouts empty", step(rl(n=0, rewards=[])), "groups[0].rollouts"),
    ("rollout output", step(rl(rollouts=[{"skill": "point"}, ROLLOUT])), "groups[0].rollouts[0].output"),
    ("rollout skill", step(rl(rollouts=[ROLLOUT, {**ROLLOUT, "skill": "detect"}])), "groups[0].rollouts[1].skill"),
    ("rl with target", step(rl(target={"points": [PT]})), "groups[0].target"),
    ("rl full body", step(rl(request={"finetune_id": FINETUNE_ID, "num_rollouts": 0, "request": POINT_REQ})),
     "groups[0].request.num_rollouts"),
    ("rl full body inner", step(rl(request={"num_rollouts": 2, "request": {"skill": "point"}})),
     "groups[0].request.request.object"),
    # train step: sft
    ("sft with rewards", step(sft(rewards=[1.0])), "groups[0].rewards"),
    ("sft no target", step(sft(target=None)), "groups[0].target"),
    ("sft target and targets", step(sft(targets=[{"answer": "a"}])), "groups[0].target"),
    ("sft targets two", step(sft(target=None, targets=[{"answer": "a"}, {"answer": "b"}])), "groups[0].targets"),
    ("sft answer missing", step(sft(target={})), "groups[0].target.answer"),
    ("sft answer type", step(sft(target={"answer": 3})), "groups[0].target.answer"),
    ("sft target unknown", step(sft(target={"answer": "a", "why": "b"})), "groups[0].target.why"),
    ("sft reasoning required", step(sft(request={**QUERY_REQ, "reasoning": True})), "groups[0].target.reasoning"),
    ("sft reasoning forbidden", step(sft(target={"answer": "a", "reasoning": {"text": "t"}})),
     "groups[0].target.reasoning"),
    ("sft reasoning shape", step(sft(request={**QUERY_REQ, "reasoning": True},
                                     target={"answer": "a", "reasoning": "plain"})), "groups[0].target.reasoning"),
    ("sft point both", step(sft(request=POINT_REQ, target={"points": [PT], "boxes": [BOX]})), "groups[0].target"),
    ("sft point coords", step(sft(request=POINT_REQ, target={"points": [{"x": 2, "y": 0}]})),
     "groups[0].target.points[0].x"),
    ("sft detect objects", step(sft(request={**POINT_REQ, "skill": "detect"}, target={"objects": [BOX]})),
     "groups[0].target.objects"),
    ("sft detect box", step(sft(request={**POINT_REQ, "skill": "detect"}, target={"boxes": [{**BOX, "y_max": 0}]})),
     "groups[0].target.boxes[0]"),
    # train step: lr
    ("lr zero", step(sft(), lr=0), "lr"),
    ("lr above 1", step(sft(), lr=2), "lr"),
    ("lr nan", step(sft(), lr=math.nan), "lr"),
    ("lr bool", step(sft(), lr=True), "lr"),
    ("kwargs nan", step(sft(), extra=math.nan), "body"),
    # metrics
    ("metrics empty", lambda c, img: c.log_metrics(1, {}), "metrics"),
    ("metrics too many", lambda c, img: c.log_metrics(1, {f"m{i}": 1.0 for i in range(101)}), "metrics"),
    ("metric name", lambda c, img: c.log_metrics(1, {"eval acc": 1.0}), "metrics['eval acc']"),
    ("metric nan", lambda c, img: c.log_metrics(1, {"loss": math.nan}), "metrics['loss']"),
    ("metric str", lambda c, img: c.log_metrics(1, {"loss": "0.5"}), "metrics['loss']"),
    ("metric step", lambda c, img: c.log_metrics(-1, {"loss": 0.5}), "step"),
    ("metric step bool", lambda c, img: c.log_metrics(True, {"loss": 0.5}), "step"),
    # checkpoints
    ("limit 0", lambda c, img: c.list_checkpoints(limit=0), "limit"),
    ("limit 101", lambda c, img: c.list_checkpoints(limit=101), "limit"),
    ("cursor type", lambda c, img: c.list_checkpoints(cursor=5), "cursor"),
    ("delete step", lambda c, img: c.delete_checkpoint(-1), "step"),
    ("delete step str", lambda c, img: c.delete_checkpoint(step="3"), "step"),
    ("model step", lambda c, img: c.model(step=-2), "step"),
    # stream arguments
    ("stream concurrency", lambda c, img: c.rollout_stream([], max_concurrency=0), "max_concurrency"),
    ("stream buffer", lambda c, img: c.rollout_stream([], buffer_size=0), "buffer_size"),
    ("stream item", lambda c, img: list(c.rollout_stream([("ctx", "not kwargs")])), "requests[0]"),
    ("stream item invalid", lambda c, img: list(c.rollout_stream([(1, {"skill": "point"})])), "request.object"),
]


@pytest.mark.parametrize("call,param", [c[1:] for c in TUNING_CASES], ids=[c[0] for c in TUNING_CASES])
def test_tuning_validation(tuning, peer, image, call, param):
    with pytest.raises(md.ValidationError) as info:
        call(tuning, image)
    exc = info.value
    assert exc.param == param
    assert str(exc).startswith(f"{param}:") or str(exc).startswith(param)
    assert isinstance(exc, ValueError) and exc.status is None
    assert peer.records == []


def test_messages_name_the_rule(tuning, peer, image):
    with pytest.raises(md.ValidationError) as info:
        tuning.rollouts("point", image=image, object="x", settings={"top_p": 0})
    assert str(info.value) == "request.settings.top_p: must be a number > 0 and <= 1 (got 0)"
    groups = [sft(), sft(), rl(n=8, rewards=[0.5] * 7)]
    with pytest.raises(md.ValidationError) as info:
        tuning.train_step(groups)
    assert str(info.value) == "groups[2].rewards: expected 8 rewards, one per rollout (got 7)"
    assert peer.records == []


INFERENCE_CASES = [
    ("question required", lambda v, img: v.query(img), "question"),
    ("question type", lambda v, img: v.query(img, 42), "question"),
    ("caption length", lambda v, img: v.caption(img, length="huge"), "length"),
    ("caption stream type", lambda v, img: v.caption(img, stream="yes"), "stream"),
    ("point object", lambda v, img: v.point(img, None), "object"),
    ("detect object", lambda v, img: v.detect(img, ""), "object"),
    ("detect image", lambda v, img: v.detect(None, "cat"), "image"),
    ("query refs", lambda v, img: v.query(img, "q", spatial_refs=[[0.2]]), "spatial_refs[0]"),
    ("point refs", lambda v, img: v.point(img, "x", spatial_refs=[[0.2, 0.9, 0.1, 1.0]]), "spatial_refs[0]"),
    ("query refs no image", lambda v, img: v.query(None, "q", spatial_refs=[[0.2, 0.2]]), "spatial_refs"),
    ("settings", lambda v, img: v.query(img, "q", settings={"top_p": 0}), "settings.top_p"),
    ("settings unknown", lambda v, img: v.detect(img, "x", settings={"max_object": 3}), "settings.max_object"),
    ("model", lambda v, img: v.point(img, "x", model=""), "model"),
    ("batch empty", lambda v, img: v.batch([]), "lines"),
    ("batch skill", lambda v, img: v.batch([{"skill": "segment", "image": img}]), "lines[0].skill"),
    ("batch object", lambda v, img: v.batch([{"skill": "point", "image": img, "object": "x"},
                                             {"skill": "point", "image": img}]), "lines[1].object"),
    ("batch question", lambda v, img: v.batch([{"skill": "query", "image": img}]), "lines[0].question"),
    ("batch image", lambda v, img: v.batch([{"skill": "query", "question": "q"}]), "lines[0].image"),
    ("batch caption image", lambda v, img: v.batch([{"skill": "caption"}]), "lines[0].image"),
    ("batch settings", lambda v, img: v.batch([{"skill": "detect", "image": img, "object": "x",
                                                "settings": {"max_tokens": 5}}]), "lines[0].settings"),
    ("batch query settings", lambda v, img: v.batch([{"skill": "query", "image": img, "question": "q",
                                                      "settings": {"max_objects": 5}}]),
     "lines[0].settings.max_objects"),
    ("batch line type", lambda v, img: v.batch(["nope"]), "lines[0]"),
    ("batch part size", lambda v, img: v.batch([{"skill": "caption", "image": img}], part_size=0), "part_size"),
]


@pytest.mark.parametrize("call,param", [c[1:] for c in INFERENCE_CASES], ids=[c[0] for c in INFERENCE_CASES])
def test_inference_validation(inference, peer, image, call, param):
    with pytest.raises(md.ValidationError) as info:
        call(inference, image)
    assert info.value.param == param
    assert str(info.value).startswith(param)
    assert peer.records == []


@pytest.mark.parametrize("lines,param", [
    (['{"skill": "caption", "image": "QUJD"}', "", '{"skill": "caption", "image": "QUJD"}'], "lines[1]"),
    (['{"skill": "caption", "image": "QUJD"', ], "lines[0]"),
    (['{"skill": "caption", "image": "QUJD"}', '{"skill": "detect", "image": "QUJD"}'], "lines[1].object"),
])
def test_batch_file_validation(inference, peer, tmp_path, lines, param):
    path = tmp_path / "batch.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(md.ValidationError) as info:
        inference.batch(str(path))
    assert info.value.param == param
    assert peer.records == []


@pytest.mark.parametrize("name,rank,param", [
    ("bad name!", 8, "name"),
    ("x" * 129, 8, "name"),
    ("", 8, "name"),
    ("ok-name", 12, "rank"),
    ("ok-name", True, "rank"),
    ("ok-name", "8", "rank"),
])
def test_create_validation(peer, name, rank, param):
    with pytest.raises(md.ValidationError) as info:
        md.ft(KEY, name=name, rank=rank, endpoint=f"{peer.url}/v1/tuning", **FAST)
    assert info.value.param == param
    assert peer.records == []


def test_create_arguments(peer):
    with pytest.raises(md.ValidationError, match="finetune_id cannot be combined"):
        md.ft(KEY, finetune_id="abc", name="n", endpoint=f"{peer.url}/v1/tuning")
    with pytest.raises(md.ValidationError, match="requires either finetune_id or both name and rank"):
        md.ft(KEY, name="n", endpoint=f"{peer.url}/v1/tuning")
    with pytest.raises(ValueError):  # drop-in: the official client raises ValueError here too
        md.ft(KEY, endpoint=f"{peer.url}/v1/tuning")
    assert peer.records == []


# --- protocol on its own (the local server calls these on wire-format bodies) -----------------


def test_valid_bodies_pass():
    protocol.validate_rollouts_body({"finetune_id": "f", "num_rollouts": 16, "request": {
        **POINT_REQ, "settings": {"temperature": 0, "top_p": 1, "max_tokens": 512, "max_objects": 50}},
        "ground_truth": {"boxes": []}})
    protocol.validate_train_step_body({"finetune_id": "f", "lr": 1, "future_field": 1, "groups": [
        rl(),
        rl(request={"finetune_id": "f", "num_rollouts": 2, "request": POINT_REQ}),  # full /rollouts body
        sft(request={**QUERY_REQ, "reasoning": True}, target={"answer": "a", "reasoning": {"text": "t"}}),
        sft(target=None, targets=[{"answer": "legacy"}]),
        sft(request=POINT_REQ, target={"boxes": []}),
        sft(request={**POINT_REQ, "skill": "detect"}, target={"boxes": [BOX]}),
        sft(request={**QUERY_REQ, "image_url": "data:image/png;base64,AA", "spatial_refs": [[0, 0], [0, 0, 1, 1]]}),
    ]})
    protocol.validate_metrics_body({"step": 0, "metrics": {"eval/miou.v2-x_y": 1}})
    protocol.validate_inference("caption", {"image_url": "data:image/jpeg;base64,AA", "length": "long",
                                            "stream": True, "model": "moondream3-preview/x@3", "variant": "ignored"})
    protocol.validate_batch_line({"id": {"any": 1}, "skill": "query", "images": ["QQ", "QQ"], "question": "q",
                                  "reasoning": False}, 0)


@pytest.mark.parametrize("body,param", [
    ({"finetune_id": "f", "request": POINT_REQ}, "num_rollouts"),
    ({"num_rollouts": 1, "request": POINT_REQ}, "finetune_id"),
    ({"finetune_id": "f", "num_rollouts": 1}, "request"),
    ({"finetune_id": "f", "num_rollouts": 1, "request": {**POINT_REQ, "stream": True}}, "request.stream"),
    ({"finetune_id": "f", "num_rollouts": 1, "request": {**QUERY_REQ, "model": "m"}}, "request.model"),
])
def test_rollouts_body_rules(body, param):
    with pytest.raises(md.ValidationError) as info:
        protocol.validate_rollouts_body(body)
    assert info.value.param == param


def test_inference_kind_and_json_roundtrip():
    with pytest.raises(md.ValidationError) as info:
        protocol.validate_inference("segment", {})
    assert info.value.param == "endpoint"
    # Validators accept exactly what json gives back (lists, ints, floats).
    body = json.loads(json.dumps({"finetune_id": "f", "num_rollouts": 2, "request": {
        **QUERY_REQ, "image_url": "data:image/jpeg;base64,AA", "spatial_refs": [(0.1, 0.2)]}}))
    protocol.validate_rollouts_body(body)
