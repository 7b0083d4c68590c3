"""Our client against the local server's rate limit (``serve(rate_limit="2/s")``, as Moondream
Cloud's default tier): concurrency paced to the limit instead of a storm of 429s."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from moondream_nb.client.pacing import forget_all
from moondream_nb.data import demo_dataset
from moondream_nb.local import serve
from moondream_nb import connect


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    with serve(data_dir=tmp_path_factory.mktemp("limited"), threads=1, latency="rollouts=0.3,jitter=0",
               rate_limit="2/s") as srv:
        yield srv


def _count_answers(transport, into: Counter):
    """Count the status of every answer that was not a success (a 429 is retried after the pacer's hold)."""
    real = transport.pacer.observe

    def observe(started, status, headers, retry_after=None):
        into[status] += 1
        return real(started, status, headers, retry_after)

    transport.pacer.observe = observe
    return lambda: setattr(transport.pacer, "observe", real)


def test_a_stream_under_the_limit_meets_almost_no_429(limited):
    forget_all()
    ft = connect(server=limited).ft(name="paced", rank=8)
    data = demo_dataset(16, seed=11, concepts=["star"])
    requests = [(i, dict(it.labels_for("point")[0].request(it.image), num_rollouts=2)) for i, it in enumerate(data)]
    time.sleep(1.2)  # the creation call's token back
    statuses: Counter = Counter()
    undo = _count_answers(ft._transport, statuses)
    try:
        t0 = time.monotonic()
        got = sorted(i for i, _ in ft.rollout_stream(requests, max_concurrency=4))
        elapsed = time.monotonic() - t0
    finally:
        undo()
    assert got == list(range(16))
    # unpaced, four workers met 26 answers of 429 here; paced, the first refusals teach the limit
    assert statuses[429] <= 2, statuses
    assert ft._transport.pacer.rate == 2.0  # from the RateLimit-Policy header
    assert elapsed >= 6.5  # 16 requests at 2/s (with one second's burst) cannot take less


def test_every_client_of_one_key_shares_the_pace(limited):
    forget_all()
    ft = connect(server=limited).ft(name="shared", rank=8)
    vl = connect(server=limited).vl()
    assert vl._transport.pacer is ft._transport.pacer  # same origin, same key: one account, one pace
    item = demo_dataset(1, seed=12, concepts=["star"])[0]
    statuses: Counter = Counter()
    undo = _count_answers(ft._transport, statuses)
    errors: list[BaseException] = []

    def hammer(call):
        try:
            for _ in range(5):
                call()
        except BaseException as exc:  # pragma: no cover - shown by the assertion below
            errors.append(exc)

    time.sleep(1.2)
    threads = [threading.Thread(target=hammer, args=(lambda: vl.point(item.image, "star"),)),
               threading.Thread(target=hammer, args=(lambda: ft.rollouts("point", image=item.image, object="star"),)),
               threading.Thread(target=hammer, args=(lambda: ft.list_checkpoints(),))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        undo()
    assert not errors  # all fifteen calls answered
    assert statuses[429] <= 3, statuses
