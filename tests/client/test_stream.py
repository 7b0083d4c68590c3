"""rollout_stream: order, concurrency, back-pressure, errors, early exit, progress."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

import moondream_nb as md

from .peer import Reply, _rollout


@pytest.fixture
def slow_peer(peer):
    """/rollouts sleeps for the number of seconds in the question."""

    def handler(record):
        time.sleep(float(record.json["request"]["question"]))
        return {"request": record.json["request"], "rollouts": [_rollout("query", 0)], "rewards": None}

    peer.route("POST", r".*/rollouts", handler)
    return peer


def q(delay: float) -> dict:
    return {"skill": "query", "question": str(delay)}


def stream_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("moondream-nb-stream")]


def test_completion_order_and_context_untouched(slow_peer, tuning):
    contexts = [{"id": 0}, object(), ["two"]]
    items = [(contexts[0], q(0.3)), (contexts[1], q(0.0)), (contexts[2], q(0.15))]
    got = list(tuning.rollout_stream(items, max_concurrency=3))
    assert [id(c) for c, _ in got] == [id(contexts[1]), id(contexts[2]), id(contexts[0])]
    assert got[2][0] == {"id": 0}
    assert all(r["request"]["question"] for _, r in got)


def test_ordered_yields_input_order_concurrently(slow_peer, tuning):
    items = [(i, q(d)) for i, d in enumerate([0.3, 0.2, 0.25, 0.0])]
    start = time.monotonic()
    got = list(tuning.rollout_stream(items, max_concurrency=4, ordered=True))
    assert [c for c, _ in got] == [0, 1, 2, 3]
    assert [r["request"]["question"] for _, r in got] == ["0.3", "0.2", "0.25", "0.0"]
    assert time.monotonic() - start < 0.6  # concurrent (~0.3 s), not 0.75 s of serial sleeps


def test_sixteen_slow_requests_with_concurrency_four(slow_peer, tuning):
    items = [(i, q(0.15)) for i in range(16)]
    start = time.monotonic()
    got = list(tuning.rollout_stream(items, max_concurrency=4))
    elapsed = time.monotonic() - start
    assert sorted(c for c, _ in got) == list(range(16))
    assert elapsed < 1.2, elapsed  # serial would be 2.4 s; ideal is 0.6 s
    assert slow_peer.max_in_flight == 4
    assert len({r.conn for r in slow_peer.records}) <= 4  # pooled connections, not one per call


@pytest.mark.parametrize("ordered", [False, True])
def test_back_pressure_bounds_requests_ahead_of_the_consumer(slow_peer, tuning, ordered):
    items = ((i, q(0.0)) for i in itertools.count())
    stream = tuning.rollout_stream(items, max_concurrency=2, buffer_size=3, ordered=ordered)
    consumed = 0
    for _ in stream:
        consumed += 1
        time.sleep(0.3)  # a slow consumer (e.g. a train step)
        if consumed == 3:
            break
    # taken but not consumed never exceeds buffer_size + max_concurrency
    assert len(slow_peer.records) <= consumed + 3 + 2
    stream.close()  # the generator is still referenced here, so close it explicitly
    assert stream_threads() == []


def test_request_error_reaches_consumer_and_stops_workers(slow_peer, tuning):
    slow_peer.script("POST", r".*/rollouts", Reply(404, json={"error": {"message": "finetune gone"}}))
    items = ((i, q(0.05)) for i in itertools.count())
    seen = []
    with pytest.raises(md.NotFoundError, match="finetune gone"):
        for ctx, _ in tuning.rollout_stream(items, max_concurrency=2, buffer_size=2):
            seen.append(ctx)
    assert stream_threads() == []
    sent = len(slow_peer.records)
    time.sleep(0.2)
    assert len(slow_peer.records) == sent <= 1 + 2 + 2 + 2


def test_invalid_request_in_stream_is_raised(tuning, peer, image):
    items = [(0, {"skill": "point", "image": image, "object": "x"}), (1, {"skill": "point", "object": "x"})]
    with pytest.raises(md.ValidationError, match=r"request.image_url: required"):
        list(tuning.rollout_stream(items, max_concurrency=1, ordered=True))
    assert len(peer.records) == 1  # the valid one went out, the invalid one never did


def test_input_iterator_error_reaches_consumer(slow_peer, tuning):
    def items():
        yield 0, q(0.0)
        yield 1, q(0.0)
        raise RuntimeError("dataset broke")

    got = []
    with pytest.raises(RuntimeError, match="dataset broke"):
        for ctx, _ in tuning.rollout_stream(items(), max_concurrency=1, ordered=True):
            got.append(ctx)
    assert got == [0, 1]
    assert stream_threads() == []


def test_break_stops_sending_and_leaves_no_thread(slow_peer, tuning):
    items = ((i, q(0.05)) for i in itertools.count())
    for ctx, _ in tuning.rollout_stream(items, max_concurrency=4, buffer_size=4):
        if ctx >= 1:
            break
    assert stream_threads() == []
    sent = len(slow_peer.records)
    time.sleep(0.25)
    assert len(slow_peer.records) == sent <= 2 + 4 + 4


def test_explicit_close_of_an_unstarted_stream(tuning):
    stream = tuning.rollout_stream([(0, q(0.0))])
    stream.close()
    assert stream_threads() == []


def test_progress_callback_and_bar(slow_peer, tuning, capsys):
    calls = []
    list(tuning.rollout_stream([(i, q(0.0)) for i in range(3)], progress=lambda d, t: calls.append((d, t))))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    calls.clear()
    list(tuning.rollout_stream(((i, q(0.0)) for i in range(2)), progress=lambda d, t: calls.append((d, t))))
    assert calls == [(1, None), (2, None)]
    list(tuning.rollout_stream([(i, q(0.0)) for i in range(2)], progress=True))
    err = capsys.readouterr().err
    assert "\rrollouts: 1/2 done" in err and "\rrollouts: 2/2 done" in err and err.endswith("\n")


def test_empty_input(tuning, peer):
    assert list(tuning.rollout_stream([])) == []
    assert peer.records == []
