"""The same calls through the official ``moondream`` 2.6.1 client and ours produce the same wire
traffic (method, path, query, body bytes, auth and Content-Type) and the same returned dicts.
The only intended differences: User-Agent, our Idempotency-Key, and ``request_id`` in results."""

from __future__ import annotations

import pytest

import moondream_nb as md

from .conftest import KEY
from .peer import FINETUNE_ID, Peer, moondream_routes

import moondream  # noqa: E402  the reference client: pip install --no-deps moondream==2.6.1

PT = {"x": 0.25, "y": 0.5}
BOX = {"x_min": 0.1, "y_min": 0.2, "x_max": 0.6, "y_max": 0.7}


def tuning_calls(client, img) -> list:
    out = []
    r = client.rollouts("query", image=img, question="What is it?", num_rollouts=3,
                        settings={"temperature": 1.0, "max_tokens": 8}, reasoning=True,
                        spatial_refs=[[0.1, 0.2], (0.1, 0.1, 0.5, 0.5)])
    out.append(r)
    out.append(client.rollouts("point", image=img, object="dot", ground_truth={"points": [PT]}))
    out.append(client.rollouts("detect", image=img, object="box", num_rollouts=2,
                               settings={"max_objects": 3, "top_p": 0.9}, ground_truth={"boxes": [BOX]}))
    out.append(client.rollouts("query", question="text only?", reasoning=False))
    groups = [
        {"mode": "rl", "request": r["request"], "rollouts": r["rollouts"], "rewards": [1.0, 0.0, 0.5]},
        {"mode": "sft", "request": {"skill": "point", "object": "dot", "image": img}, "target": {"points": [PT]}},
        {"mode": "sft", "request": {"skill": "query", "question": "why?", "reasoning": True},
         "target": {"answer": "because", "reasoning": {"text": "thinking"}}},
    ]
    out.append(client.train_step(groups, lr=1e-4, future_flag=True))
    out.append(client.train_step(groups[1:2]))
    out.append(client.log_metrics(2, {"eval/acc": 0.5, "loss": 1}))
    out.append(client.list_checkpoints())
    out.append(client.save_checkpoint())
    out.append(client.list_checkpoints(limit=10, cursor="eyJzIjo1MDB9"))
    out.append(client.delete_checkpoint(2))
    out.append(client.model(7))
    out.append(client.delete())
    return out


def vl_calls(client, img) -> list:
    return [
        client.query(img, "what is it?"),
        client.query(None, "text only?", settings={"temperature": 0.0}, reasoning=True),
        client.query(img, "this one?", spatial_refs=[[0.5, 0.5]]),
        client.caption(img),
        client.caption(img, length="short", settings={"max_tokens": 20}),
        client.point(img, "dot", spatial_refs=[[0.1, 0.1, 0.2, 0.2]]),
        client.detect(img, "box", settings={"max_objects": 2}),
        list(client.query(img, "stream?", stream=True)["answer"]),
        list(client.caption(img, length="long", stream=True)["caption"]),
    ]


# Transport-level headers differ by library (urllib vs requests: Connection close/keep-alive, Accept,
# and requests sends "Content-Length: 0" on a bodiless DELETE); bodies are compared byte for byte.
IGNORED_HEADERS = {"user-agent", "idempotency-key", "accept", "accept-encoding", "connection", "host",
                   "content-length"}


def assert_same_traffic(official, ours):
    assert len(official) == len(ours)
    for theirs, mine in zip(official, ours):
        assert (mine.method, mine.path, mine.query) == (theirs.method, theirs.path, theirs.query)
        assert mine.body == theirs.body, f"{mine.method} {mine.path}: body differs"
        relevant = lambda r: {k: v for k, v in r.headers.items() if k not in IGNORED_HEADERS}
        assert relevant(mine) == relevant(theirs), f"{mine.method} {mine.path}"
        assert theirs.headers["user-agent"].startswith("moondream-python/")
        assert mine.headers["user-agent"] == f"moondream-nb/{md.__version__}"


def strip_request_ids(value):
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if k != "request_id"}
    return value


def run_against_fresh_peer(run):
    """``run(url)`` against a new deterministic peer; returns (its result, the recorded requests)."""
    peer = Peer()
    moondream_routes(peer)
    try:
        return run(peer.url), list(peer.records)
    finally:
        peer.close()


def test_tuning_wire_compatibility(image):
    def session(ft):
        def run(url):
            endpoint = f"{url}/v1/tuning"
            created = ft(KEY, name="demo-1.x", rank=16, endpoint=endpoint)
            results = tuning_calls(created, image)
            loaded = ft(KEY, finetune_id=FINETUNE_ID, endpoint=endpoint + "/")
            identity = [(c.finetune_id, c.name, c.rank) for c in (created, loaded)]
            return results, identity
        return run_against_fresh_peer(run)

    (their_results, their_ids), their_records = session(moondream.ft)
    (our_results, our_ids), our_records = session(md.ft)

    assert_same_traffic(their_records, our_records)
    assert our_results == their_results
    assert our_ids == their_ids == [(FINETUNE_ID, "demo-1.x", 16), (FINETUNE_ID, "demo", 8)]
    ours_mutating = [r for r in our_records if r.method == "POST" and not r.path.endswith("/rollouts")]
    assert len(ours_mutating) == 5 and all("idempotency-key" in r.headers for r in ours_mutating)
    assert all("idempotency-key" not in r.headers for r in their_records)


@pytest.mark.parametrize("model", [None, f"moondream3-preview/{FINETUNE_ID}@7"])
def test_inference_wire_compatibility(peer, image, model):
    endpoint = f"{peer.url}/v1"
    their_results = vl_calls(moondream.vl(api_key=KEY, endpoint=endpoint, model=model), image)
    their_records = list(peer.records)
    peer.clear()
    our_results = vl_calls(md.vl(KEY, endpoint=endpoint, model=model), image)
    assert_same_traffic(their_records, peer.records)
    assert [strip_request_ids(r) for r in our_results] == their_results
    assert our_results[0]["request_id"] == "req-q"


def test_anonymous_inference_wire_compatibility(peer, image):
    endpoint = f"{peer.url}/v1"
    moondream.vl(endpoint=endpoint).detect(image, "box")
    md.vl(endpoint=endpoint).detect(image, "box")
    theirs, mine = peer.records
    assert_same_traffic([theirs], [mine])
    assert "x-moondream-auth" not in mine.headers


def test_official_client_opens_a_connection_per_call_and_ours_does_not(peer, image):
    endpoint = f"{peer.url}/v1/tuning"
    theirs = moondream.ft(KEY, finetune_id=FINETUNE_ID, endpoint=endpoint)
    ours = md.ft(KEY, finetune_id=FINETUNE_ID, endpoint=endpoint)
    peer.clear()
    for _ in range(20):
        theirs.rollouts("point", image=image, object="x")
    their_conns = peer.connections
    peer.clear()
    for _ in range(20):
        ours.rollouts("point", image=image, object="x")
    assert their_conns == 20 and peer.connections <= 1
