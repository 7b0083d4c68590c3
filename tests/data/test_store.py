"""LabelStore: labels, progress, rewards and steps survive reopening and a SIGKILL mid-write."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from moondream_nb import ValidationError
from moondream_nb.data import Dataset, Label, LabelStore

from .conftest import solid


@pytest.fixture
def store(tmp_path):
    with LabelStore(tmp_path / "labels.sqlite") as s:
        yield s


def test_put_replaces_by_key_and_filters(store):
    store.put(Label.point("a", "bolt", [(0.1, 0.1)]))
    store.put(Label.point("a", "bolt", [(0.2, 0.2)]))  # same key: replaced
    store.put(Label.detect("a", "bolt", [(0, 0, 1, 1)]))
    store.put(Label.query("b", "Which?", "left"))
    assert len(store) == 3
    assert store.labels("a", skill="point")[0].target == {"points": [{"x": 0.2, "y": 0.2}]}
    assert [lb.skill for lb in store.labels("a")] == ["point", "detect"]
    store.put(Label.point("a", "bolt", [(0.3, 0.3)]))
    assert [lb.skill for lb in store.labels("a")] == ["detect", "point"]  # ordered by latest save
    assert store.labelled_ids() == {"a", "b"}
    assert store.delete(Label.query("b", "Which?", "ignored")) is True
    assert store.delete(Label.query("b", "Which?", "ignored")) is False
    assert store.labels("b") == []


def test_labels_with_refs_and_meta_round_trip(store):
    q = Label.query("a", "What is this?", "x", reasoning="because", spatial_refs=[(0.1, 0.2, 0.3, 0.4)], meta={"by": "ann"})
    store.put(q)
    got = store.labels("a")[0]
    assert got == q and got.meta == {"by": "ann"} and got.spatial_refs == ((0.1, 0.2, 0.3, 0.4),)


def test_put_many_is_all_or_nothing(store):
    store.put(Label.point("a", "x", []))
    with pytest.raises(ValidationError):
        store.put_many([Label.point("b", "x", []), Label.point("c", "x", [], meta={"bad": object()})])
    assert store.labelled_ids() == {"a"}


def test_reopen_resumes_progress_and_state(tmp_path):
    ds = Dataset.from_images([solid((i, 0, 0)) for i in range(5)])
    path = tmp_path / "s.sqlite"
    with LabelStore(path) as s:
        assert s.next_item(ds) is ds[0]
        s.put(Label.point(ds[0].image_id, "x", []))
        s.mark(ds[0].image_id)
        s.mark(ds[1].image_id, "skipped")
        s.set_state("finetune_id", "ft-1")
        s.set_state("position", ds[1].image_id)
    with LabelStore(path) as s:  # a new kernel
        assert s.status(ds[0].image_id) == "done" and s.status(ds[1].image_id) == "skipped"
        assert s.status(ds[2].image_id) is None
        assert s.next_item(ds, after=s.get_state("position")) is ds[2]
        assert s.get_state("finetune_id") == "ft-1" and s.get_state("missing", 7) == 7
        p = s.progress(ds)
        assert (p.done, p.skipped, p.total, p.remaining) == (1, 1, 5, 3)
        assert [it.image_id for it in s.pending(ds)] == ds.ids[2:]
        assert s.next_item(ds, after=ds[4].image_id) is ds[2]  # wraps around
        for it in ds:
            s.mark(it.image_id)
        assert s.next_item(ds) is None and s.progress(ds).fraction == 1.0
        s.unmark(ds[3].image_id)
        assert s.next_item(ds) is ds[3]
        with pytest.raises(ValidationError, match="status"):
            s.mark(ds[0].image_id, "finished")


def test_progress_rate_from_marks(store):
    for i in range(3):
        store.mark(f"img{i}")
        time.sleep(0.02)
    p = store.progress()
    assert p.total == 3 and p.rate is not None and p.rate > 60  # three marks within ~0.05 s


def test_rewards_are_stored_without_the_image_and_validated(store):
    request = {"skill": "point", "object": "bolt", "image_url": "data:image/jpeg;base64,AAAA"}
    rollouts = [{"skill": "point", "output": {"points": [{"x": 0.1, "y": 0.2}]}}, {"skill": "point", "output": {"points": []}}]
    rid = store.add_rewards({"mode": "rl", "request": request, "rollouts": rollouts, "rewards": [1, 0.0]},
                            image_id="a", source="human")
    rec = store.rewards("a")[0]
    assert rec.id == rid and rec.rewards == [1.0, 0.0] and rec.source == "human"
    assert "image_url" not in rec.request and rec.request["object"] == "bolt"
    group = rec.group(image="IMG")
    assert group["request"]["image"] == "IMG" and group["rollouts"] == rollouts
    with pytest.raises(ValidationError, match=r"group.rewards: expected 2 rewards"):
        store.add_rewards({"request": request, "rollouts": rollouts, "rewards": [1.0]})
    with pytest.raises(ValidationError, match=r"group.rewards\[1\]: must be a finite number"):
        store.add_rewards({"request": request, "rollouts": rollouts, "rewards": [1.0, float("nan")]})
    assert len(store.rewards()) == 1


def test_steps_are_recorded_in_order(store):
    store.add_step({"step": 1, "applied": True, "kl": 0.01, "router_kl": None}, finetune_id="ft")
    store.add_step({"step": 1, "applied": False, "kl": float("nan")}, finetune_id="ft")
    store.add_step({"step": 5}, finetune_id="other")
    steps = store.steps("ft")
    assert [s.result["applied"] for s in steps] == [True, False]
    assert steps[1].result["kl"] is None  # NaN is not JSON; stored as null
    assert [s.step for s in store.steps()] == [1, 1, 5]


def test_a_nested_rollouts_body_gets_its_image_back_inside(store):
    """A group whose request is a full /rollouts body keeps the image in the inner request, where
    the protocol wants it (an image on the outer level is ``image_url: required`` on the server)."""
    body = {"finetune_id": "f", "num_rollouts": 1,
            "request": {"skill": "point", "object": "bolt", "image_url": "data:image/jpeg;base64,AAAA"}}
    rollouts = [{"skill": "point", "output": {"points": []}}]
    store.add_rewards({"mode": "rl", "request": body, "rollouts": rollouts, "rewards": [0.0]}, image_id="a")
    group = store.rewards("a")[0].group(image="IMG")
    assert "image" not in group["request"] and group["request"]["request"]["image"] == "IMG"


def test_scoring_marks_done_and_lists_unsent_in_one_transaction(store):
    request = {"skill": "point", "object": "bolt", "image_url": "data:image/jpeg;base64,AAAA"}
    group = {"mode": "rl", "request": request, "rollouts": [{"skill": "point", "output": {"points": []}}],
             "rewards": [1.0]}
    rid = store.add_rewards(group, image_id="a", done=True, state=lambda new: {"unsent": [new]})
    assert store.status("a") == "done" and store.get_state("unsent") == [rid]
    with pytest.raises(ValidationError):  # a failure writes none of the three
        store.add_rewards(dict(group, rewards=[float("inf")]), image_id="b", done=True, state={"unsent": []})
    assert store.status("b") is None and store.get_state("unsent") == [rid]
    store.put(Label.point("c", "bolt", [(0.1, 0.1)]), done=True, state={"untrained": ["c"]})
    assert store.status("c") == "done" and store.get_state("untrained") == ["c"]


def test_batches_are_recorded_before_sending_and_answered_once(store):
    sft = {"mode": "sft", "request": {"skill": "point", "object": "bolt", "image": "IMG"},
           "target": {"points": [{"x": 0.5, "y": 0.5}]}}
    store.set_state("untrained", ["a"])
    batch = store.add_batch("ft-1", [sft], ["a"], 2e-4, source="labeling", state={"untrained": []})
    assert store.get_state("untrained") == []  # cleared with the batch: no label is both
    assert batch.state == "queued" and len(batch.key) == 36 and "image" not in batch.groups[0]["request"]
    assert batch.train_groups(lambda image_id: f"image of {image_id}")[0]["request"]["image"] == "image of a"
    other = store.add_batch("ft-2", [sft], ["a"], 1e-4, key="my-key")
    store.batch_sent(batch.id)
    assert [(b.id, b.state, b.key) for b in store.batches("ft-1")] == [(batch.id, "sent", batch.key)]
    assert store.batches(source="labeling")[0].sent_at is not None
    step_id = store.batch_done(batch.id, {"step": 1, "applied": True, "sft_loss": 0.5})
    assert store.batches("ft-1") == [] and store.steps("ft-1")[0].id == step_id
    store.drop_batch(other.id)
    assert store.batches() == [] and store.steps("ft-2") == []
    with pytest.raises(ValidationError, match="image_ids"):
        store.add_batch("ft-1", [sft], [], 2e-4)


def test_a_v1_store_is_upgraded_in_place(tmp_path):
    path = tmp_path / "v1.sqlite"
    with LabelStore(path) as s:
        s.put(Label.point("a", "bolt", [(0.1, 0.1)]))
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE batches")
    conn.execute("PRAGMA user_version=1")  # as an older moondream-nb left it
    conn.commit()
    conn.close()
    with LabelStore(path) as s:
        assert len(s) == 1 and s.batches() == []
        s.add_batch("ft", [], [], 1e-4)
        assert s._conn.execute("PRAGMA user_version").fetchone()[0] == 2


def test_store_is_sqlite_wal_with_full_sync(tmp_path):
    path = tmp_path / "s.sqlite"
    s = LabelStore(path)
    assert s._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    s.close()
    with pytest.raises(ValidationError, match="closed"):
        s.labels()


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "s.sqlite"
    LabelStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(ValidationError, match="schema v99 is newer"):
        LabelStore(path)


def test_a_file_that_is_not_a_store_is_named(tmp_path):
    path = tmp_path / "notes.sqlite"
    path.write_text("these are my notes, not a database" * 100)
    with pytest.raises(ValidationError, match=f"{path}: not a label store"):
        LabelStore(path)
    assert path.read_text().startswith("these are my notes")


WRITER = textwrap.dedent("""
    import sys
    from moondream_nb.data import Label, LabelStore
    store = LabelStore(sys.argv[1])
    i = 0
    while True:
        store.put(Label.point(f"img{i:05d}", "bolt", [(0.5, (i % 100) / 100)]))
        store.add_rewards({"request": {"skill": "query", "question": "q"},
                           "rollouts": [{"output": {"answer": "a"}}], "rewards": [i]}, image_id=f"img{i:05d}")
        store.mark(f"img{i:05d}")
        print(i, flush=True)  # acknowledged: every write above has returned
        i += 1
""")


def test_killed_writer_loses_no_acknowledged_label(tmp_path):
    path = tmp_path / "killed.sqlite"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True, env=env)
    acked = -1
    deadline = time.monotonic() + 60
    try:
        while acked < 60 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acked = int(line)
        # Kill mid-loop: the writer is inside one of its writes or between them.
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        # Lines it printed before dying were acknowledged too.
        for line in proc.stdout:
            acked = int(line)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert acked >= 60, "the writer did not get going"
    with LabelStore(path) as s:
        labels = {lb.image_id: lb for lb in s.labels()}
        for i in range(acked + 1):
            lb = labels[f"img{i:05d}"]
            assert lb.target == {"points": [{"x": 0.5, "y": (i % 100) / 100}]}
            assert s.status(f"img{i:05d}") == "done"
        assert [r.rewards for r in s.rewards()][: acked + 1] == [[float(i)] for i in range(acked + 1)]
        assert len(labels) <= acked + 2  # at most the one in flight beyond the last acknowledgement
        assert s._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        s.put(Label.point("after", "bolt", []))  # still writable


def test_the_next_sequence_number_is_an_index_lookup_not_a_scan(tmp_path):
    """put() reads MAX(seq) on every label: without an index that scanned the table, so each Enter
    in a big labeling session grew with the store (0.43 → 1.15 ms per put over 10,000 labels)."""
    store = LabelStore(tmp_path / "s.sqlite")
    plan = " ".join(str(row[-1]) for row in store._conn.execute("EXPLAIN QUERY PLAN SELECT COALESCE(MAX(seq), 0) FROM labels"))
    store.close()
    assert "INDEX labels_by_seq" in plan, plan


def _brute(store_path, dataset, after, window=20):
    """next_item and progress the slow, obvious way, from the file itself."""
    with sqlite3.connect(store_path) as db:
        marks = dict(db.execute("SELECT image_id, status FROM items"))
        times = [t for i, t in db.execute("SELECT image_id, updated_at FROM items ORDER BY updated_at")
                 if i in set(dataset.ids)][-window:]
    ids = dataset.ids
    start = ids.index(after) + 1 if after in ids else 0
    nxt = next((ids[(start + k) % len(ids)] for k in range(len(ids)) if ids[(start + k) % len(ids)] not in marks), None)
    done = sum(marks.get(i) == "done" for i in ids)
    skipped = sum(marks.get(i) == "skipped" for i in ids)
    return nxt, done, skipped, len(times)


def test_next_item_and_progress_stay_exact_as_marks_come_from_anywhere(tmp_path):
    """The kept counts behind next_item/progress (O(1) per call, they scanned every mark) agree with
    the file after marks, unmarks, labels saved as done, rewards recorded as done, and writes by a
    second connection to the same file (another session): a long random sequence of them."""
    import random

    path = tmp_path / "labels.sqlite"
    ds = Dataset.from_images([solid((i, 3, 3)) for i in range(30)], ids=[f"i{k:02d}" for k in range(30)])
    other_ids = ["elsewhere-1", "elsewhere-2"]  # marks of items outside the dataset never count
    rng = random.Random(7)
    with LabelStore(path) as store, LabelStore(path) as other:
        after = None
        for step in range(300):
            who = other if rng.random() < 0.2 else store
            target = rng.choice(ds.ids + other_ids)
            op = rng.random()
            if op < 0.4:
                who.mark(target, rng.choice(["done", "skipped"]))
            elif op < 0.6:
                who.unmark(target)
            elif op < 0.8:
                who.put(Label.point(target, "dot", [(0.5, 0.5)]), done=True)
            else:
                after = rng.choice(ds.ids + [None])
            item = store.next_item(ds, after)
            p = store.progress(ds)
            nxt, done, skipped, n_times = _brute(path, ds, after)
            assert (item.image_id if item else None, p.done, p.skipped) == (nxt, done, skipped), step
            assert p.total == 30
        assert store.progress().done + store.progress().skipped == len(store.statuses())


def test_rolling_back_a_write_leaves_the_counts_alone(store):
    ds = Dataset.from_images([solid((i, 9, 9)) for i in range(3)], ids=["a", "b", "c"])
    assert store.progress(ds).done == 0
    with pytest.raises(RuntimeError):
        with store._write() as cur:  # a transaction that marks, then fails: rolled back
            store._mark(cur, "a", "done")
            raise RuntimeError("disk gone")
    assert store.status("a") is None
    assert store.progress(ds).done == 0 and store.next_item(ds).image_id == "a"
