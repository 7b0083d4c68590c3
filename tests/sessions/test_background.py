"""The person never waits: sessions against a cloud-like local server (train steps take seconds,
rollouts a good fraction of one), with training in the background, exactly once across a crash.

Each of these would fail with sessions that train on the kernel's thread: the constructor, Enter
and "save & next" there take as long as the train step they trigger."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from dataclasses import replace

import pytest
import requests

from moondream_nb.data import Dataset, demo_dataset
from moondream_nb.local import serve
from moondream_nb.sessions import LabelingSession, ReviewSession, UncertainStep
from moondream_nb.sessions.lookahead import Lookahead
from moondream_nb import connect

TRAIN_S = 1.5  # the cloud-like train step of these tests (Moondream Cloud: several seconds)
LATENCY = f"train_step={TRAIN_S},rollouts=0.3,save=0.5,jitter=0"


@pytest.fixture(scope="module")
def cloudy(tmp_path_factory):
    with serve(data_dir=tmp_path_factory.mktemp("cloudy"), threads=1, latency=LATENCY) as srv:
        yield srv


@pytest.fixture
def ft(cloudy, request):
    return connect(server=cloudy).ft(name="bg-" + request.node.name[-90:].replace("[", "-").replace("]", ""), rank=8)


def until(condition, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return bool(condition())


def unlabelled(data: Dataset) -> Dataset:
    return Dataset([replace(it, labels=()) for it in data])


def server_steps(srv, ft) -> list[int]:
    """The steps the server applied (its own record, not what the client believes)."""
    page = requests.get(f"{srv.endpoint}/finetunes/{ft.finetune_id}/steps?limit=100",
                        headers={"X-Moondream-Auth": srv.api_key}, timeout=30).json()
    return [s["step"] for s in page["steps"]]


def test_the_constructor_returns_at_once_and_labelled_items_train_in_the_background(tmp_path, cloudy, ft):
    data = demo_dataset(8, seed=40, concepts=["star"])  # all labelled: ground truth scores every one
    t0 = time.monotonic()
    session = ReviewSession(ft, data, skill="point", store=tmp_path / "r.sqlite", num_rollouts=4, group_size=2,
                            metrics=False)
    built = time.monotonic() - t0
    assert built < 1.0, f"the constructor took {built:.2f} s"  # four steps of 1.5 s each happen later
    assert session.steps == [] and not session.finished
    assert session._view.slot.children == (session._view.waiting,) and "sampling" in session._view.waiting.value
    assert session.wait(120)
    assert session.finished and session.counts["ground_truth"] == 8
    applied = [s["step"] for s in session.steps if s["applied"]]
    assert applied == sorted(applied) and server_steps(cloudy, ft) == applied  # in order, each once
    assert [r.result for r in session.store.steps(ft.finetune_id)] == session.steps
    assert session.store.batches() == []  # every recorded batch was answered
    session.close()


def test_enter_when_a_step_is_due_shows_the_next_item_at_once(tmp_path, cloudy, ft):
    data = unlabelled(demo_dataset(6, seed=41, concepts=["star"]))
    session = ReviewSession(ft, data, skill="point", prompt="star", store=tmp_path / "r.sqlite", num_rollouts=4,
                            group_size=2, metrics=False, auto=False)
    assert session.wait(60) and session.pending.image_id == data[0].image_id
    session.reviewer.rewards = [1.0, 0.0, 0.0, 0.0]
    session.reviewer.submit()
    assert until(lambda: session.pending is not None and session._ready)  # item 2 sampled ahead already
    session.reviewer.rewards = [0.0, 1.0, 0.0, 1.0]
    t0 = time.monotonic()
    session.reviewer.submit()  # completes a group: a train step of 1.5 s is due
    took = time.monotonic() - t0
    assert took < 0.5, f"Enter took {took:.2f} s"
    assert session.pending.image_id == data[2].image_id and session.reviewer is not None  # shown at once
    assert session.steps == [] and len(session.store.batches()) == 1  # recorded, with its key, before it is sent
    assert until(lambda: "train step of 2 groups in flight" in session._train.text(), 5)
    assert until(lambda: session.store.batches()[0].state == "sent", 5)
    assert session.wait(60) and [s["step"] for s in session.steps] == [1]
    assert "last: step 1" in session._train.text() and session.store.batches() == []
    session.close()


def test_a_failed_step_is_shown_with_retry_and_applies_once_when_retried(tmp_path):
    data_dir = tmp_path / "server"
    srv = serve(data_dir=data_dir, threads=1, latency="train_step=0.5,jitter=0")
    port, key = srv.port, srv.api_key
    ft = connect(server=srv).ft(name="retry", rank=8)
    data = unlabelled(demo_dataset(3, seed=42, concepts=["star"]))
    session = ReviewSession(ft, data, skill="point", prompt="star", store=tmp_path / "r.sqlite", num_rollouts=4,
                            group_size=1, metrics=False, auto=False)
    try:
        assert session.wait(60)
        srv.stop()  # the service goes away
        session.reviewer.rewards = [1.0, 0.0, 0.0, 1.0]
        session.reviewer.submit()
        assert until(lambda: session.queue.failed is not None, 15)
        text = session._train.text()
        assert text.startswith("⚠ train step of 1 group failed: TransportError") and "nothing listens" in text
        assert session._train.retry.layout.display == "" and session._train.drop.layout.display == ""
        assert [b.state for b in session.store.batches()] == ["sent"]  # kept, with its key, for the retry
        assert session.counts["human"] == 1  # the reward itself was saved when given
        srv = serve(port=port, data_dir=data_dir, api_key=key, threads=1)  # back, same data
        session._train.retry.click()
        assert session.wait(60) and [s["step"] for s in session.steps] == [1]
        assert session._train.retry.layout.display == "none" and session.store.batches() == []
        assert server_steps(srv, ft) == [1]
    finally:
        session.close(wait=False)
        srv.stop()


def test_drop_gives_up_on_a_failed_step_and_the_queue_goes_on(tmp_path, cloudy, ft):
    data = unlabelled(demo_dataset(3, seed=43, concepts=["star"]))
    session = ReviewSession(ft, data, skill="point", prompt="star", store=tmp_path / "r.sqlite", num_rollouts=4,
                            group_size=1, metrics=False, auto=False)
    assert session.wait(60)
    real = ft.train_step

    def refused(*a, **kw):
        raise requests.ConnectionError("simulated")  # not a MoondreamError: still shown, never silent

    ft.train_step = refused
    try:
        session.reviewer.rewards = [1.0, 0.0, 0.0, 0.0]
        session.reviewer.submit()
        assert until(lambda: session.queue.failed is not None, 15)
    finally:
        ft.train_step = real
    assert "ConnectionError: simulated" in session._train.text()
    assert session.wait(60)  # the next scene's rollouts may still be on their way (a busy machine)
    session.reviewer.rewards = [0.0, 1.0, 0.0, 0.0]
    session.reviewer.submit()  # queued behind the failure: order is kept
    time.sleep(0.3)
    assert session.steps == [] and len(session.store.batches()) == 2
    session._train.drop.click()
    assert session.wait(60) and [s["step"] for s in session.steps] == [1]
    assert session.store.batches() == [] and len(session.store.rewards()) == 2  # dropped step, kept rewards
    session.close()


CHILD = """
import sys, time
from moondream_nb.data import demo_dataset
import moondream_nb as md
from moondream_nb.sessions import ReviewSession
ft = md.ft({key!r}, name="crash", rank=8, endpoint={endpoint!r})
data = demo_dataset(4, seed=44, concepts=["known"])
# detect known things: IoU rewards differ between rollouts, so every step applies
session = ReviewSession(ft, data, skill="detect", store={store!r}, num_rollouts=8, group_size=2, metrics=False)
print("started", flush=True)
time.sleep(600)  # the kernel "dies" here, killed by the test, with a step in flight
"""


def _crash_mid_step(srv, store_path) -> "md.Finetune":  # noqa: F821
    """A kernel (subprocess) runs a session and is killed after the server applied its first
    step but before the (3 s late) answer reached it."""
    code = textwrap.dedent(CHILD.format(key=srv.api_key, endpoint=srv.endpoint, store=str(store_path)))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "started"
        ft = connect(server=srv).ft(name="crash", rank=8)
        # the server applied the first step, whose answer is 3 s away: the kernel has not seen it
        seen = []

        def mid_step() -> bool:
            seen[:] = [server_steps(srv, ft), _states(store_path), _answered(store_path), child.poll()]
            return seen[0] == [1] and seen[1][:1] == ["sent"] and seen[2] == 0

        assert until(mid_step, 60), f"server steps, batches, answered, child: {seen}"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    return ft


def _answered(path) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT COUNT(*) FROM steps").fetchone()[0]


def _states(path) -> list[str]:
    with sqlite3.connect(path) as db:
        return [r[0] for r in db.execute("SELECT state FROM batches ORDER BY id")]


@pytest.fixture
def slow_answers(tmp_path):
    with serve(data_dir=tmp_path / "server", threads=1, latency="train_step=3,jitter=0") as srv:
        yield srv


def test_a_kernel_killed_mid_step_resumes_and_trains_each_group_once(tmp_path, slow_answers):
    store = tmp_path / "r.sqlite"
    ft = _crash_mid_step(slow_answers, store)
    assert ft.honours_idempotency is True  # learned from the creation call's echoed key
    data = demo_dataset(4, seed=44, concepts=["known"])
    again = ReviewSession(ft, data, skill="detect", store=store, num_rollouts=8, group_size=2, metrics=False)
    assert again.wait(60)
    # the step in flight was sent again under its key: the server answered with its first result
    # (step 1) instead of training again; then the second group of two was sent
    assert len(again.steps) == 2 and again.steps[0]["step"] == 1 and again.steps[0]["applied"]
    second = [2] if again.steps[1]["applied"] else []  # (not applied when its rewards were all equal)
    assert server_steps(slow_answers, ft) == [1] + second and again.store.batches() == []
    assert len(again.store.rewards()) == 4 and again.finished  # every item done, none sampled again
    again.close()


def test_where_keys_are_not_known_to_be_honoured_the_person_decides(tmp_path, slow_answers):
    store = tmp_path / "r.sqlite"
    ft = _crash_mid_step(slow_answers, store)
    ft._transport.honours_idempotency = False  # as with a service that does not echo keys (Moondream Cloud)
    data = demo_dataset(4, seed=44, concepts=["known"])
    again = ReviewSession(ft, data, skill="detect", store=store, num_rollouts=8, group_size=2, metrics=False)
    assert again.wait(60)
    held = again.queue.failed
    assert isinstance(held.error, UncertainStep) and "may have applied it" in again._train.text()
    assert server_steps(slow_answers, ft) == [1]  # nothing re-sent silently; the next batch waits behind it
    again._train.drop.click()
    assert again.wait(60) and len(again.steps) == 1
    assert server_steps(slow_answers, ft) == [1] + ([2] if again.steps[0]["applied"] else [])
    assert again.store.batches() == []
    again.close()


def test_labeling_enter_when_an_sft_step_is_due_returns_at_once(tmp_path, cloudy, ft):
    data = demo_dataset(4, seed=45, concepts=["purple"])
    session = LabelingSession(data, tmp_path / "l.sqlite", "detect", ft=ft, prefill=False, train_every=2)
    session.set_target(data[0].labels_for("detect")[0].target)
    session.next()
    session.set_target(data[1].labels_for("detect")[0].target)
    t0 = time.monotonic()
    session.next()  # two labelled: an SFT step of 1.5 s is due
    took = time.monotonic() - t0
    assert took < 0.5, f"save & next took {took:.2f} s"
    assert session.current is data[2] and session.steps == []
    assert until(lambda: "SFT step of 2 labels in flight" in session._train.text(), 5)
    assert session.wait(60) and [s["step"] for s in session.steps] == [1]
    assert session.untrained == [] and session.store.batches() == []
    assert [r.step for r in session.store.steps(ft.finetune_id)] == [1]
    session.close()


def test_labeling_a_late_model_answer_never_overwrites_the_person(tmp_path):
    with serve(data_dir=tmp_path / "server", threads=1, latency="rollouts=1.0,jitter=0") as srv:
        ft = connect(server=srv).ft(name="late", rank=8)
        data = demo_dataset(3, seed=46, concepts=["purple"])
        t0 = time.monotonic()
        session = LabelingSession(data, tmp_path / "l.sqlite", "detect", ft=ft)
        assert time.monotonic() - t0 < 0.8  # the editor does not wait for the model's 1 s answer
        assert "on its way" in session._view.status.value
        mine = [{"x_min": 0.1, "y_min": 0.1, "x_max": 0.2, "y_max": 0.2}]
        session.editor.layers = mine  # the person draws before the answer comes
        time.sleep(1.6)
        assert session.editor.target == {"boxes": mine}  # the late answer left it alone
        assert session.store.labels(data[0].image_id)[0].meta["source"] == "human"
        session.next()
        # the next item's answer was fetched while the person worked on the first
        assert until(lambda: session._prefilled is not None, 5)
        session.close()


def test_look_ahead_grows_with_the_latency_and_the_pace_of_the_person():
    ahead = Lookahead(6, least=2, latency=0.1, person=2.0)
    assert ahead.depth() == 2  # a fast local server: the least
    for _ in range(20):
        ahead.call_took(3.0)
        ahead.person_took(1.5)
    assert ahead.depth() == 3  # 3 s calls, 1.5 s per item: two in flight and one ready
    for _ in range(20):
        ahead.call_took(20.0)
    assert ahead.depth() == 6  # never more than the bound
    ahead.person_took(600)  # a coffee break is not a pace
    assert ahead.person == pytest.approx(1.5, abs=0.01)


def test_unattended_run_raises_a_failed_step_instead_of_hanging(tmp_path, cloudy, ft):
    import threading

    from moondream_nb.errors import ServerError

    def broken(*a, **kw):
        raise ServerError("the service is broken", status=500)

    ft.train_step = broken
    data = demo_dataset(8, seed=47, concepts=["star"])  # labelled: ground truth scores each, one step per item
    session = ReviewSession(ft, data, skill="point", store=tmp_path / "r.sqlite", num_rollouts=2, group_size=1,
                            metrics=False, auto=True)
    raised: list[BaseException] = []
    runner = threading.Thread(target=lambda: raised.append(_catch(session.run)), daemon=True)
    runner.start()
    runner.join(60)
    assert not runner.is_alive(), "run() hung behind the failed step"
    assert isinstance(raised[0], ServerError) and "the service is broken" in session._train.text()
    assert len(session.store.batches()) >= 1  # the failed step's groups are kept for a retry
    session.close(wait=False)


def _catch(fn):
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
        return exc
    return None
