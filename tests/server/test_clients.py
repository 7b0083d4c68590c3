"""The official ``moondream`` 2.6.1 client and ours, unchanged but for ``endpoint=``, run the whole flow."""

from __future__ import annotations

import urllib.error

import moondream
import pytest

import moondream_nb as md

from .conftest import item, pil
from moondream_nb import connect


def test_official_client_whole_ft_flow(server):
    request, gt = item(51)
    image = pil(request["image_url"])
    ft = moondream.ft(server.api_key, name="official-flow", rank=16, endpoint=server.endpoint)
    again = moondream.ft(server.api_key, finetune_id=ft.finetune_id, endpoint=server.endpoint)
    assert (again.name, again.rank) == ("official-flow", 16)

    point = ft.rollouts("point", image=image, object="star", num_rollouts=8, settings={"temperature": 1.0},
                        ground_truth=gt)
    detect = ft.rollouts("detect", image=image, object="star", num_rollouts=4, settings={"max_objects": 2},
                         ground_truth={"boxes": [{"x_min": 0.1, "y_min": 0.1, "x_max": 0.4, "y_max": 0.4}]})
    query = ft.rollouts("query", image=image, question="What is at this spot?", num_rollouts=4, reasoning=True,
                        spatial_refs=[[0.3, 0.3]])
    assert len(point["rewards"]) == 8 and len(detect["rewards"]) == 4 and query["rewards"] is None
    rl = [{"mode": "rl", "request": r["request"], "rollouts": r["rollouts"], "rewards": rewards}
          for r, rewards in ((point, [float(i % 2) for i in range(8)]), (detect, [1.0, 0.0, 0.5, 0.0]),
                             (query, [1.0, 0.0, 0.0, 0.0]))]
    sft = [{"mode": "sft", "request": {"skill": "point", "image": image, "object": "star"}, "target": gt}]
    first = ft.train_step(rl + sft, lr=2e-4)
    assert first["step"] == 1 and first["applied"] and first["sft_loss"] > 0
    second = ft.train_step(sft)
    assert second["step"] == 2
    assert ft.log_metrics(2, {"eval/reward": 0.5}) == {"ok": True, "step": 2, "logged_count": 1}
    saved = ft.save_checkpoint()["checkpoint"]
    assert saved["step"] == 2
    assert [c["step"] for c in ft.list_checkpoints()["checkpoints"]] == [2]

    vl = moondream.vl(api_key=server.api_key, endpoint=server.inference_endpoint, model=ft.model(2))
    assert isinstance(vl.point(image, "star")["points"], list)
    assert isinstance(vl.detect(image, "star")["objects"], list)
    assert isinstance(vl.query(image, "How many shapes?")["answer"], str)
    assert isinstance("".join(vl.caption(image, stream=True)["caption"]), str)

    ft.delete_checkpoint(2)
    assert ft.list_checkpoints()["checkpoints"] == []
    with pytest.raises(urllib.error.HTTPError) as exc:
        vl.point(image, "star")
    assert exc.value.code == 404
    ft.delete()
    with pytest.raises(urllib.error.HTTPError) as exc:
        moondream.ft(server.api_key, finetune_id=ft.finetune_id, endpoint=server.endpoint)
    assert exc.value.code == 404


def test_our_client_through_the_serve_handle(server):
    request, gt = item(52)
    image = pil(request["image_url"])
    ft = connect(server=server).ft(name="ours", rank=8)
    resp = ft.rollouts("point", image=image, object="star", num_rollouts=4, ground_truth=gt)
    step = ft.train_step([{"mode": "rl", "request": resp["request"], "rollouts": resp["rollouts"],
                           "rewards": [1.0, 0.0, 0.0, 0.0]}])
    assert step["step"] == ft.step == 1
    ckpt = ft.save_checkpoint()["checkpoint"]
    assert [c["step"] for c in ft.iter_checkpoints()] == [ckpt["step"]]
    vl = ft.vl(model=ft.model(1))
    assert isinstance(vl.point(image, "star")["points"], list)
    assert "".join(vl.query(image, "How many?", stream=True)["answer"]) == vl.query(image, "How many?")["answer"]
    with pytest.raises(md.NotFoundError):
        vl.point(image, "star", model=ft.model(7))
    with pytest.raises(md.ConflictError):
        connect(server=server).ft(name="ours", rank=16)
    with pytest.raises(md.ValidationError) as exc:
        connect(server=server).vl(max_retries=0)._transport.json("POST", "/point", {"image_url": request["image_url"]})
    assert exc.value.param == "object"  # the server's own 400, parsed by our client
    ft.delete()
