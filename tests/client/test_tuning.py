"""ft(): create/load, methods, image handling in train steps, history, pagination."""

from __future__ import annotations

import pytest

import moondream_nb as md

from .conftest import FAST, KEY
from .peer import FINETUNE_ID, Reply

SFT = {"mode": "sft", "request": {"skill": "query", "question": "q?"}, "target": {"answer": "a"}}


def endpoint(peer) -> str:
    return f"{peer.url}/v1/tuning"


def test_create_sends_name_and_rank(peer):
    client = md.ft(KEY, name="bolts.v2_a-1", rank=32, endpoint=endpoint(peer))
    assert (client.finetune_id, client.name, client.rank, client.step) == (FINETUNE_ID, "bolts.v2_a-1", 32, None)
    (r,) = peer.records
    assert (r.method, r.path, r.json) == ("POST", "/v1/tuning/finetunes", {"name": "bolts.v2_a-1", "rank": 32})


def test_create_conflict(peer):
    peer.script("POST", r".*/finetunes", Reply(409, json={"error": {"message": "name 'x' exists with rank 8"}}))
    with pytest.raises(md.ConflictError, match="exists with rank 8") as info:
        md.ft(KEY, name="x", rank=16, endpoint=endpoint(peer))
    assert info.value.status == 409 and len(peer.records) == 1


@pytest.mark.parametrize("reply", [
    {"finetune": {"finetune_id": "F9", "name": "wrapped", "rank": 24}},
    {"finetune_id": "F9", "name": "flat", "rank": 24, "created_at_ms": 1},
])
def test_load_accepts_wrapped_and_flat(peer, reply):
    peer.script("GET", r".*/finetunes/F9", Reply(json=reply))
    client = md.ft(KEY, finetune_id="F9", endpoint=endpoint(peer))
    assert (client.finetune_id, client.rank) == ("F9", 24)
    assert client.name in ("wrapped", "flat")


def test_load_unknown_and_bad_replies(peer):
    peer.script("GET", r".*/finetunes/nope", Reply(404, json={"error": {"message": "finetune not found"}}))
    with pytest.raises(md.NotFoundError, match="finetune not found"):
        md.ft(KEY, finetune_id="nope", endpoint=endpoint(peer))
    peer.script("GET", r".*/finetunes/odd", Reply(json={"something": "else"}))
    with pytest.raises(md.MoondreamError, match="lacks finetune_id"):
        md.ft(KEY, finetune_id="odd", endpoint=endpoint(peer))
    peer.script("POST", r".*/finetunes", Reply(json={}))
    with pytest.raises(md.MoondreamError, match="lacks finetune_id"):
        md.ft(KEY, name="n", rank=8, endpoint=endpoint(peer))


def test_ids_are_escaped_in_paths(peer):
    peer.route("GET", r".*", lambda r: {"finetune_id": "a/b", "name": "n", "rank": 8})
    client = md.ft(KEY, finetune_id="a/b", endpoint=endpoint(peer))
    client.list_checkpoints()
    assert [r.path for r in peer.records] == ["/v1/tuning/finetunes/a%2Fb", "/v1/tuning/finetunes/a%2Fb/checkpoints"]


def test_direct_construction_sends_nothing(peer):
    client = md.Finetune(api_key=KEY, endpoint=endpoint(peer), finetune_id="F1", name="n", rank=8)
    assert client.model(3) == "moondream3-preview/F1@3" and peer.records == []


def test_train_step_encodes_images_without_touching_the_input(peer, tuning, image):
    request = {"skill": "point", "object": "x", "image": image}
    group = {"mode": "sft", "request": request, "target": {"boxes": [{"x_min": 0, "y_min": 0, "x_max": 1, "y_max": 1}]}}
    rollouts = tuning.rollouts("detect", image=image, object="x", num_rollouts=2)
    full_body = {"finetune_id": FINETUNE_ID, "num_rollouts": 2,
                 "request": {"skill": "detect", "object": "x", "image": image}}
    rl = {"mode": "rl", "request": full_body, "rollouts": rollouts["rollouts"], "rewards": [1, 0]}
    result = tuning.train_step([group, rl], lr=1e-3, future_option="on")
    assert result["step"] == 1 and tuning.step == 1
    body = peer.requests("POST", r".*/train_step")[0].json
    assert body["lr"] == 1e-3 and body["future_option"] == "on" and body["finetune_id"] == FINETUNE_ID
    sent_req = body["groups"][0]["request"]
    assert "image" not in sent_req and sent_req["image_url"].startswith("data:image/jpeg;base64,")
    assert body["groups"][1]["request"]["request"]["image_url"] == sent_req["image_url"]
    assert request["image"] is image and "image_url" not in request  # caller's dicts untouched
    assert "image" in full_body["request"]


def test_history_records_steps_and_metrics(peer, tuning, image):
    r = tuning.rollouts("point", image=image, object="x", num_rollouts=3)
    tuning.train_step([{"mode": "rl", "request": r["request"], "rollouts": r["rollouts"], "rewards": [1, 0, 0.5]}, SFT])
    tuning.log_metrics(1, {"eval/acc": 0.75, "step": 3.0})
    peer.script("POST", r".*/train_step", Reply(400, json={"error": "bad"}))
    with pytest.raises(md.ValidationError):
        tuning.train_step([SFT])
    tuning.train_step([SFT], lr=1e-5)
    steps, metrics, second = tuning.history
    assert steps["kind"] == "train_step" and steps["step"] == 1
    assert (steps["groups"], steps["rl_groups"], steps["sft_groups"], steps["rollouts"]) == (2, 1, 1, 3)
    assert steps["skills"] == "point,query" and steps["lr"] == 2e-4
    assert steps["kl"] == 0.01 and steps["applied"] is True and steps["internal_metric"] == 7
    assert isinstance(steps["time"], float)
    assert metrics == {"kind": "metrics", "step": 1, "time": metrics["time"], "eval/acc": 0.75, "metric.step": 3.0}
    assert second["step"] == 2 and second["lr"] == 1e-5 and tuning.step == 2
    assert all(not isinstance(v, (dict, list)) for row in tuning.history for v in row.values())
    tuning.history.clear()  # a copy: the client's record is not affected
    assert len(tuning.history) == 3


def test_checkpoints_pages_model_and_delete(peer, tuning):
    for _ in range(5):
        tuning.train_step([SFT])
        assert tuning.save_checkpoint()["checkpoint"]["step"] == tuning.step
    page = tuning.list_checkpoints(limit=2)
    assert [c["step"] for c in page["checkpoints"]] == [1, 2] and page["has_more"] is True
    assert [c["step"] for c in tuning.iter_checkpoints(limit=2)] == [1, 2, 3, 4, 5]
    lists = peer.requests("GET", r".*/checkpoints")
    assert [r.params for r in lists] == [{"limit": "2"}, {"limit": "2"}, {"limit": "2", "cursor": "2"},
                                         {"limit": "2", "cursor": "4"}]
    assert tuning.delete_checkpoint(step=3) is None
    assert peer.records[-1].method == "DELETE" and peer.records[-1].path.endswith("/checkpoints/3")
    assert tuning.model(step=5) == f"moondream3-preview/{FINETUNE_ID}@5"
    assert tuning.delete() is None
    assert (peer.records[-1].method, peer.records[-1].path) == ("DELETE", f"/v1/tuning/finetunes/{FINETUNE_ID}")


def test_save_checkpoint_before_training(peer, tuning):
    peer.script("POST", r".*/checkpoints/save", Reply(404, json={"error": {"message": "no checkpoint yet"}}))
    with pytest.raises(md.NotFoundError, match="no checkpoint yet"):
        tuning.save_checkpoint()


def test_vl_needs_a_derivable_base(peer):
    client = md.Finetune(api_key=KEY, finetune_id=FINETUNE_ID, endpoint=f"{peer.url}/custom", **FAST)
    with pytest.raises(md.ValidationError, match="cannot derive the API base"):
        client.vl()
    assert client.vl(endpoint=f"{peer.url}/v1").endpoint == f"{peer.url}/v1"


def test_context_manager_closes(peer):
    with md.ft(KEY, finetune_id=FINETUNE_ID, endpoint=endpoint(peer)) as client:
        client.list_checkpoints()
    with md.vl(KEY, f"{peer.url}/v1") as v:
        assert v.endpoint == f"{peer.url}/v1"
