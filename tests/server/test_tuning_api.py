"""Every tuning endpoint through HTTP: finetunes, rollouts, train steps, metrics, checkpoints."""

from __future__ import annotations

import math

import pytest

from moondream_nb.local import learning as L
from moondream_nb.rewards import reward

from .conftest import item

T = "/v1/tuning"


def test_create_is_get_or_create_and_another_rank_conflicts(api):
    fid = api.finetune("bolts", 8)
    assert api.finetune("bolts", 8) == fid
    error = api.fails(409, "POST", f"{T}/finetunes", {"name": "bolts", "rank": 16})
    assert error["param"] == "rank" and "8" in error["message"]
    info = api.ok("GET", f"{T}/finetunes/{fid}")["finetune"]
    assert (info["finetune_id"], info["name"], info["rank"], info["step"]) == (fid, "bolts", 8, 0)
    assert info["created_at_ms"] <= info["updated_at_ms"]


def test_list_is_oldest_first_with_cursor_pages(api):
    ids = [api.finetune(f"listed-{i}", 16) for i in range(5)]
    seen, cursor = [], None
    while True:
        page = api.ok("GET", f"{T}/finetunes", params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        assert len(page["finetunes"]) <= 2
        seen += [f["finetune_id"] for f in page["finetunes"]]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        cursor = page["next_cursor"]
    listed = [i for i in seen if i in ids]
    assert listed == ids  # creation order, each once


def test_delete_hides_the_finetune_and_frees_its_name(api):
    fid = api.finetune("short-lived")
    assert api.ok("DELETE", f"{T}/finetunes/{fid}") == {"ok": True}
    api.fails(404, "GET", f"{T}/finetunes/{fid}")
    api.fails(404, "DELETE", f"{T}/finetunes/{fid}")
    api.fails(404, "POST", f"{T}/rollouts", {"finetune_id": fid, "num_rollouts": 1,
                                              "request": {"skill": "query", "question": "hi?"}})
    assert fid not in [f["finetune_id"] for f in api.ok("GET", f"{T}/finetunes", params={"limit": 100})["finetunes"]]
    assert api.finetune("short-lived", 32) != fid


def test_another_key_sees_nothing_of_mine(api, other):
    fid = api.finetune("private")
    request, gt = item(3)
    for method, path, body in [
        ("GET", f"{T}/finetunes/{fid}", None),
        ("DELETE", f"{T}/finetunes/{fid}", None),
        ("POST", f"{T}/rollouts", {"finetune_id": fid, "num_rollouts": 1, "request": request}),
        ("POST", f"{T}/train_step", {"finetune_id": fid, "groups": [{"mode": "sft", "request": request, "target": gt}]}),
        ("POST", f"{T}/finetunes/{fid}/metrics", {"step": 0, "metrics": {"a": 1}}),
        ("GET", f"{T}/finetunes/{fid}/checkpoints", None),
        ("POST", f"{T}/finetunes/{fid}/checkpoints/save", None),
    ]:
        other.fails(404, method, path, body)
    assert fid not in [f["finetune_id"] for f in other.ok("GET", f"{T}/finetunes")["finetunes"]]
    other_fid = other.finetune("private")  # names are per key
    assert other_fid != fid and api.ok("GET", f"{T}/finetunes/{fid}")["finetune"]["name"] == "private"


def test_point_rollouts_with_settings_and_ground_truth_rewards(api):
    fid = api.finetune("rollouts-point")
    request, gt = item(11)
    request["settings"] = {"temperature": 1.0, "top_p": 0.9, "max_objects": 3}
    resp = api.ok("POST", f"{T}/rollouts", {"finetune_id": fid, "num_rollouts": 8, "request": request,
                                             "ground_truth": gt})
    assert resp["request"] == request
    assert len(resp["rollouts"]) == 8 and len(resp["rewards"]) == 8
    for rollout, r in zip(resp["rollouts"], resp["rewards"]):
        assert rollout["skill"] == "point" and rollout["finish_reason"] in ("stop", "length")
        assert len(rollout["output"]["points"]) <= 3
        assert {"answer_tokens", "thinking_tokens", "has_answer_separator", "coords", "sizes"} <= set(rollout)
        assert r == pytest.approx(reward("point", rollout["output"], gt))
    boxes = {"boxes": [{"x_min": 0, "y_min": 0, "x_max": 0.5, "y_max": 1}]}
    resp = api.ok("POST", f"{T}/rollouts", {"finetune_id": fid, "num_rollouts": 2, "request": request,
                                             "ground_truth": boxes})
    assert resp["rewards"] == [pytest.approx(reward("point", r["output"], boxes)) for r in resp["rollouts"]]


def test_greedy_rollouts_repeat(api):
    fid = api.finetune("rollouts-greedy")
    request, _ = item(12)
    request["settings"] = {"temperature": 0}
    resp = api.ok("POST", f"{T}/rollouts", {"finetune_id": fid, "num_rollouts": 4, "request": request})
    assert resp["rewards"] is None
    assert all(r["output"] == resp["rollouts"][0]["output"] for r in resp["rollouts"])


def test_detect_rollouts_respect_max_objects_and_score_iou(api):
    fid = api.finetune("rollouts-detect")
    request, gt = item(13, L.KNOWN_DETECT)
    request["settings"] = {"max_objects": 1, "max_tokens": 64}
    resp = api.ok("POST", f"{T}/rollouts", {"finetune_id": fid, "num_rollouts": 8, "request": request,
                                             "ground_truth": gt})
    for rollout, r in zip(resp["rollouts"], resp["rewards"]):
        assert len(rollout["output"]["objects"]) <= 1
        assert len(rollout["sizes"]) == len(rollout["output"]["objects"])
        assert r == pytest.approx(reward("detect", rollout["output"], gt))


def test_query_rollouts_with_reasoning_spatial_refs_and_max_tokens(api):
    fid = api.finetune("rollouts-query")
    request, _ = item(14)
    query = {"skill": "query", "image_url": request["image_url"], "question": "What is at this spot?",
             "spatial_refs": [[0.5, 0.5], [0.1, 0.1, 0.4, 0.4]], "reasoning": True, "settings": {"max_tokens": 12}}
    resp = api.ok("POST", f"{T}/rollouts", {"finetune_id": fid, "num_rollouts": 3, "request": query})
    for rollout in resp["rollouts"]:
        assert isinstance(rollout["output"]["answer"], str)
        assert isinstance(rollout["output"]["reasoning"]["text"], str)
        assert len(rollout["answer_tokens"]) + len(rollout["thinking_tokens"]) <= 12
    text_only = {"skill": "query", "question": "Is this text only?"}
    resp = api.ok("POST", f"{T}/rollouts", {"finetune_id": fid, "num_rollouts": 2, "request": text_only})
    assert all("reasoning" not in r["output"] or r["output"]["reasoning"] is None for r in resp["rollouts"])


def test_train_step_mixes_rl_and_sft_and_reports_real_figures(api):
    fid = api.finetune("trainer")
    request, gt = item(21)
    resp = api.ok("POST", f"{T}/rollouts", {"finetune_id": fid, "num_rollouts": 8, "request": request,
                                             "ground_truth": gt})
    rewards = [0.0, 1.0, 0.5, 0.25, 1.0, 0.0, 0.75, 0.5]
    groups = [{"mode": "rl", "request": resp["request"], "rollouts": resp["rollouts"], "rewards": rewards},
              {"mode": "sft", "request": {"skill": "detect", "image_url": request["image_url"], "object": "star"},
               "target": {"boxes": [{"x_min": 0.1, "y_min": 0.1, "x_max": 0.3, "y_max": 0.35}]}},
              {"mode": "sft", "request": {"skill": "query", "question": "Why?", "reasoning": True},
               "target": {"answer": "because", "reasoning": {"text": "it is"}}}]
    step = api.ok("POST", f"{T}/train_step", {"finetune_id": fid, "groups": groups, "lr": 1e-4})
    mean = sum(rewards) / 8
    assert step["step"] == 1 and step["applied"] is True and step["router_kl"] is None
    assert step["reward_mean"] == pytest.approx(mean)
    assert step["reward_std"] == pytest.approx(math.sqrt(sum((r - mean) ** 2 for r in rewards) / 8))
    assert step["kl"] >= 0 and step["grad_norm"] > 0 and step["sft_loss"] > 0

    # Step 2: the full /rollouts body as the RL request, a legacy `targets` SFT group; the
    # policy has moved, so the KL to the base is now positive.
    resp = api.ok("POST", f"{T}/rollouts", {"finetune_id": fid, "num_rollouts": 4, "request": request})
    full_body = {"finetune_id": fid, "num_rollouts": 4, "request": resp["request"]}
    groups = [{"mode": "rl", "request": full_body, "rollouts": resp["rollouts"], "rewards": [1, 0, 0, 0]},
              {"mode": "sft", "request": request, "targets": [gt]}]
    step2 = api.ok("POST", f"{T}/train_step", {"finetune_id": fid, "groups": groups})
    assert step2["step"] == 2 and step2["kl"] > 0

    # Only SFT: no RL figures.
    step3 = api.ok("POST", f"{T}/train_step", {"finetune_id": fid, "groups": [
        {"mode": "sft", "request": request, "target": gt}]})
    assert step3["step"] == 3 and step3["reward_mean"] is None and step3["kl"] is None and step3["sft_loss"] > 0

    history = api.ok("GET", f"{T}/finetunes/{fid}/steps")["steps"]
    assert [s["step"] for s in history] == [1, 2, 3]
    assert history[0]["reward_mean"] == pytest.approx(mean) and history[0]["sft_loss"] == pytest.approx(step["sft_loss"])
    assert api.ok("GET", f"{T}/finetunes/{fid}")["finetune"]["step"] == 3


def test_groups_without_signal_are_not_applied(api):
    fid = api.finetune("flat-rewards")
    request, _ = item(22)
    resp = api.ok("POST", f"{T}/rollouts", {"finetune_id": fid, "num_rollouts": 4, "request": request})
    flat = {"mode": "rl", "request": resp["request"], "rollouts": resp["rollouts"], "rewards": [0.5] * 4}
    step = api.ok("POST", f"{T}/train_step", {"finetune_id": fid, "groups": [flat]})
    assert step["applied"] is False and step["step"] == 0 and step["reward_mean"] == 0.5 and step["grad_norm"] is None
    api.fails(404, "POST", f"{T}/finetunes/{fid}/checkpoints/save")  # still nothing to save


def test_metrics_are_logged_and_listed(api):
    fid = api.finetune("metrics")
    got = api.ok("POST", f"{T}/finetunes/{fid}/metrics", {"step": 0, "metrics": {"eval/acc": 0.5, "loss": 2}})
    assert got == {"ok": True, "step": 0, "logged_count": 2}
    api.ok("POST", f"{T}/finetunes/{fid}/metrics", {"step": 4, "metrics": {"eval/acc": 0.75}})
    rows = api.ok("GET", f"{T}/finetunes/{fid}/metrics")["metrics"]
    assert [(m["step"], m["name"], m["value"]) for m in rows] == [(0, "eval/acc", 0.5), (0, "loss", 2.0),
                                                                  (4, "eval/acc", 0.75)]


def _train(api, fid: str, seed: int) -> int:
    request, gt = item(seed)
    return api.ok("POST", f"{T}/train_step", {"finetune_id": fid, "groups": [
        {"mode": "sft", "request": request, "target": gt}]})["step"]


def test_checkpoints_save_list_delete_and_serve_inference(api, other):
    fid = api.finetune("checkpoints")
    error = api.fails(404, "POST", f"{T}/finetunes/{fid}/checkpoints/save")
    assert "no checkpoint yet" in error["message"]
    saved = {}
    for seed in (31, 32, 33):
        step = _train(api, fid, seed)
        first = api.ok("POST", f"{T}/finetunes/{fid}/checkpoints/save")
        again = api.ok("POST", f"{T}/finetunes/{fid}/checkpoints/save")
        assert first == again and first["ok"] is True
        ckpt = first["checkpoint"]
        assert (ckpt["step"], ckpt["finetune_id"], ckpt["expires_at_ms"]) == (step, fid, None)
        saved[step] = ckpt["checkpoint_id"]
    _train(api, fid, 34)  # step 4: never saved

    page1 = api.ok("GET", f"{T}/finetunes/{fid}/checkpoints", params={"limit": 2})
    assert [c["step"] for c in page1["checkpoints"]] == [1, 2] and page1["has_more"]
    page2 = api.ok("GET", f"{T}/finetunes/{fid}/checkpoints", params={"limit": 2, "cursor": page1["next_cursor"]})
    assert [c["step"] for c in page2["checkpoints"]] == [3] and not page2["has_more"]
    assert {c["step"]: c["checkpoint_id"] for c in page1["checkpoints"] + page2["checkpoints"]} == saved

    request, _ = item(35)
    point = {"image_url": request["image_url"], "object": "star"}
    for step in (1, 3):
        out = api.ok("POST", "/v1/point", {**point, "model": f"moondream3-preview/{fid}@{step}"})
        assert isinstance(out["points"], list)
    assert api.ok("DELETE", f"{T}/finetunes/{fid}/checkpoints/2") == {"ok": True}
    assert api.ok("DELETE", f"{T}/finetunes/{fid}/checkpoints/2") == {"ok": True}  # idempotent
    assert api.fails(404, "DELETE", f"{T}/finetunes/{fid}/checkpoints/4")["param"] == "step"
    assert [c["step"] for c in api.ok("GET", f"{T}/finetunes/{fid}/checkpoints")["checkpoints"]] == [1, 3]
    for model in (f"moondream3-preview/{fid}@2", f"moondream3-preview/{fid}@4", f"x/{fid}@99"):
        assert api.fails(404, "POST", "/v1/point", {**point, "model": model})["param"] == "model"
    other.fails(404, "POST", "/v1/point", {**point, "model": f"moondream3-preview/{fid}@1"})
    # The latest checkpoint may be deleted; training still resumes from the current step.
    api.ok("POST", f"{T}/finetunes/{fid}/checkpoints/save")
    api.ok("DELETE", f"{T}/finetunes/{fid}/checkpoints/4")
    assert _train(api, fid, 36) == 5


def test_inference_endpoints_base_model(api):
    request, _ = item(41)
    url = request["image_url"]
    q = api.ok("POST", "/v1/query", {"image_url": url, "question": "How many shapes?"})
    assert isinstance(q["answer"], str) and q["request_id"] and "reasoning" not in q
    assert api.ok("POST", "/v1/query", {"image_url": url, "question": "How many shapes?"})["answer"] == q["answer"]
    r = api.ok("POST", "/v1/query", {"image_url": url, "question": "Colour?", "reasoning": True,
                                     "model": "moondream3-preview", "spatial_refs": [[0.5, 0.5]]})
    assert isinstance(r["reasoning"]["text"], str)
    assert isinstance(api.ok("POST", "/v1/query", {"question": "text only?"})["answer"], str)
    for length in ("short", "normal", "long"):
        c = api.ok("POST", "/v1/caption", {"image_url": url, "length": length, "settings": {"max_tokens": 40}})
        assert isinstance(c["caption"], str) and c["finish_reason"] in ("stop", "length")
        assert c["metrics"]["output_tokens"] <= 40
    p = api.ok("POST", "/v1/point", {"image_url": url, "object": "star", "spatial_refs": [[0.2, 0.2]]})
    assert all(0 <= pt["x"] <= 1 and 0 <= pt["y"] <= 1 for pt in p["points"])
    d = api.ok("POST", "/v1/detect", {"image_url": url, "object": "star", "settings": {"max_objects": 2}})
    assert len(d["objects"]) <= 2 and all(b["x_min"] <= b["x_max"] for b in d["objects"])


def _events(resp) -> list[dict]:
    import json

    assert resp.headers["content-type"].startswith("text/event-stream")
    return [json.loads(line[6:]) for line in resp.text.splitlines() if line.startswith("data: ")]


@pytest.mark.parametrize("kind,key,body", [
    ("query", "answer", {"question": "What colour is the biggest shape?"}),
    ("caption", "caption", {"length": "long"}),
])
def test_streaming_sends_chunks_then_completed(api, kind, key, body):
    request, _ = item(42)
    body = {"image_url": request["image_url"], **body}
    whole = api.ok("POST", f"/v1/{kind}", body)[key]
    events = _events(api.call("POST", f"/v1/{kind}", {**body, "stream": True}))
    assert events[-1]["completed"] is True and events[-1]["chunk"] == "" and events[-1]["request_id"]
    assert all(e["completed"] is False for e in events[:-1])
    assert "".join(e["chunk"] for e in events) == whole


@pytest.mark.parametrize("path", ["/v1/segment", "/v1/chat/completions"])
def test_out_of_scope_endpoints_say_so(api, path):
    error = api.fails(404, "POST", path, {"image_url": "data:,", "object": "x"})
    assert error["code"] == "out_of_scope" and "out of scope" in error["message"]
