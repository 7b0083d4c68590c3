"""LabelingSession against the real local server and a real LabelStore file."""

from __future__ import annotations

import time

import pytest

from moondream_nb.data import LabelStore, demo_dataset
from moondream_nb.errors import ValidationError
from moondream_nb.sessions import LabelingSession, auto_default
from moondream_nb.widgets import TargetEditor
from moondream_nb import connect


@pytest.fixture(scope="module")
def purple():
    return demo_dataset(6, seed=3, concepts=["purple"])


def truth(item, skill="detect"):
    return item.labels_for(skill)[0]


def test_auto_run_labels_every_item_with_its_ground_truth(tmp_path, purple):
    session = LabelingSession(purple, tmp_path / "labels.sqlite", "detect", prefill=False, auto=True)
    assert session.auto and session.editor.target == {"boxes": []}  # no model: starts empty
    progress = session.run()
    assert (progress.done, progress.skipped, progress.total) == (6, 0, 6)
    assert session.current is None and session.editor is None
    with LabelStore(tmp_path / "labels.sqlite") as store:
        labels = {lb.image_id: lb for lb in store.labels(skill="detect")}
        assert set(labels) == set(purple.ids)
        for item in purple:
            assert labels[item.image_id].target == truth(item).target
            assert labels[item.image_id].prompt == truth(item).prompt
            assert labels[item.image_id].meta["source"] == "auto"


def test_every_edit_is_saved_before_next_and_resume_continues_after_restart(tmp_path, purple):
    path = tmp_path / "labels.sqlite"
    session = LabelingSession(purple, path, "detect", prefill=False)
    first = session.current
    session.editor.layers = [{"x_min": 0.1, "y_min": 0.1, "x_max": 0.3, "y_max": 0.4}]
    # autosaved on the edit itself: the item is not done yet, but its label is on disk
    with LabelStore(path) as other:
        saved = other.labels(first.image_id)
        assert [lb.target for lb in saved] == [{"boxes": [{"x_min": 0.1, "y_min": 0.1, "x_max": 0.3, "y_max": 0.4}]}]
        assert saved[0].meta["source"] == "human" and other.status(first.image_id) is None
    session.next()
    session.set_target(truth(purple[1]).target)
    session.next()
    assert session.current.image_id == purple[2].image_id
    session.store.close()  # "kernel restart": a new session on the same file

    again = LabelingSession(purple, path, "detect", prefill=False)
    assert again.current.image_id == purple[2].image_id
    assert (again.progress.done, again.progress.total) == (2, 6)
    again.previous()  # back to a done item: its saved label is in the editor
    assert again.current.image_id == purple[1].image_id
    assert again.editor.target == truth(purple[1]).target
    again.previous()
    again.previous()  # stays on the first item
    assert again.current.image_id == first.image_id
    assert again.editor.target["boxes"][0]["x_max"] == pytest.approx(0.3)


def test_skip_drops_the_draft_and_marks_the_item(tmp_path, purple):
    session = LabelingSession(purple, tmp_path / "l.sqlite", "detect", prefill=False)
    item = session.current
    session.editor.layers = [{"x_min": 0.2, "y_min": 0.2, "x_max": 0.5, "y_max": 0.5}]
    assert len(session.store.labels(item.image_id)) == 1
    session.skip()
    assert session.store.status(item.image_id) == "skipped" and session.store.labels(item.image_id) == []
    assert session.current.image_id == purple[1].image_id
    assert session.progress.skipped == 1


def test_keys_in_the_editor_navigate(tmp_path, purple):
    """The front end sends {"type": "nav", "action"}: next / skip / previous run in the kernel."""
    session = LabelingSession(purple, tmp_path / "l.sqlite", "detect", prefill=False)
    assert session.editor.nav is True

    def press(action):
        session.editor._on_front_end_msg(session.editor, {"type": "nav", "action": action}, [])

    session.set_target(truth(purple[0]).target)
    press("next")
    assert session.store.status(purple[0].image_id) == "done" and session.current is purple[1]
    press("skip")
    assert session.store.status(purple[1].image_id) == "skipped" and session.current is purple[2]
    press("previous")
    assert session.current is purple[1]
    press("bogus")  # unknown actions are ignored
    assert session.current is purple[1]
    # the message carries the front end's latest edit, which may not have reached the kernel yet
    drawn = {"type": "box", "x_min": 0.1, "y_min": 0.2, "x_max": 0.3, "y_max": 0.4}
    session.editor._on_front_end_msg(session.editor, {"type": "nav", "action": "next", "layers": [drawn]}, [])
    assert session.store.labels(purple[1].image_id)[0].target == {
        "boxes": [{"x_min": 0.1, "y_min": 0.2, "x_max": 0.3, "y_max": 0.4}]}
    assert session.current is purple[2]


def output_boxes(response):
    return {"boxes": [{k: o[k] for k in ("x_min", "y_min", "x_max", "y_max")}
                      for o in response["rollouts"][0]["output"]["objects"]]}


def test_prefill_from_the_finetune_and_from_vl(tmp_path, purple, server, ft):
    item = purple[0]
    prompt = truth(item).prompt
    greedy = ft.rollouts("detect", image=item.image, object=prompt, num_rollouts=1,
                         settings={"temperature": 0.0})["rollouts"][0]["output"]
    session = LabelingSession(purple, tmp_path / "a.sqlite", "detect", ft=ft)
    first = {"boxes": [{k: o[k] for k in ("x_min", "y_min", "x_max", "y_max")} for o in greedy["objects"]]}
    # the editor is there at once; the model's answer fills it when it arrives
    assert until(lambda: session._prefilled is not None) and session.editor.target == first
    assert session.editor.prompt == f"detect: {prompt}"
    assert session.store.labels(item.image_id) == []  # the model's answer is a start, not a label yet
    # while item 0 is on screen, item 1's answer is fetched ahead ...
    assert until(lambda: session._prefetch.peek(purple[1])[0])
    asked = []
    real = ft.rollouts
    ft.rollouts = lambda *a, **kw: asked.append(kw.get("image")) or real(*a, **kw)
    try:
        session.next()  # accepted unchanged: the label says it came from the model
    finally:
        ft.rollouts = real
    assert session.store.labels(item.image_id)[0].meta["source"] == "model"
    # ... so moving on asked the model nothing about it (only, maybe, about item 2, ahead again)
    assert session.current is purple[1] and purple[1].image not in asked
    assert session.editor.target == output_boxes(real("detect", image=purple[1].image, object=truth(purple[1]).prompt,
                                                      num_rollouts=1, settings={"temperature": 0.0}))
    session.close()

    vl_session = LabelingSession(purple, tmp_path / "b.sqlite", "detect", vl=connect(server=server).vl())
    expected = {"boxes": [{k: o[k] for k in ("x_min", "y_min", "x_max", "y_max")}
                          for o in connect(server=server).vl().detect(item.image, prompt)["objects"]]}
    assert until(lambda: vl_session._prefilled is not None) and vl_session.editor.target == expected


def until(condition, timeout: float = 15.0) -> bool:
    """Poll ``condition`` (background work lands on its own time); its last value."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return bool(condition())


def test_train_every_k_items_sends_sft_steps_and_survives_restart(tmp_path, purple, ft):
    path = tmp_path / "l.sqlite"
    session = LabelingSession(purple, path, "detect", ft=ft, prefill=False, train_every=2, auto=True)
    session.run(limit=5)
    assert [s["applied"] for s in session.steps] == [True, True]
    assert [s["step"] for s in session.steps] == [1, 2]
    assert session.untrained == [purple[4].image_id]
    records = session.store.steps(ft.finetune_id)
    assert [r.step for r in records] == [1, 2] and all(r.result["sft_loss"] > 0 for r in records)
    session.store.close()

    again = LabelingSession(purple, path, "detect", ft=ft, prefill=False, train_every=2, auto=True)
    assert again.untrained == [purple[4].image_id]  # remembered across the restart
    again.run()  # the last item makes two: a third step
    assert [s["step"] for s in again.steps] == [3] and again.untrained == []
    assert again.train() is None  # nothing left to send
    assert [r.step for r in again.store.steps(ft.finetune_id)] == [1, 2, 3]


def test_query_session_needs_an_answer_and_keeps_reasoning_only_when_asked(tmp_path, ft):
    data = demo_dataset(3, seed=5)
    session = LabelingSession(data, tmp_path / "q.sqlite", "query", prefill=False)
    assert isinstance(session.editor, TargetEditor) and session.editor.answer == ""
    with pytest.raises(ValidationError, match="target.answer"):
        session.next()
    assert session.current is data[0]
    buttons = {c: b for b in session.widget.children[0].children for c in b._dom_classes}
    buttons["mdnb-session-next"].click()  # a click has no caller: the error shows in the status line
    assert "target.answer" in session.widget.children[-1].value and session.current is data[0]
    session.run()
    labels = session.labels()
    assert [lb.target for lb in labels] == [{"answer": it.labels_for("query")[0].target["answer"]} for it in data]

    with_reasons = LabelingSession(data, tmp_path / "r.sqlite", "query", ft=ft, prefill=False, reasoning=True,
                                   train_every=3, auto=True)
    with_reasons.run()
    assert all("reasoning" in lb.target for lb in with_reasons.labels())
    assert with_reasons.steps and with_reasons.steps[0]["applied"] is True


def test_arguments_are_checked(tmp_path, purple):
    with pytest.raises(ValidationError, match="^skill"):
        LabelingSession(purple, tmp_path / "x.sqlite", "segment")
    with pytest.raises(ValidationError, match="^train_every: needs ft="):
        LabelingSession(purple, tmp_path / "x.sqlite", "detect", train_every=2)
    with pytest.raises(ValidationError, match="^prompt: item .* has no point label"):
        LabelingSession(_unlabelled(purple), tmp_path / "y.sqlite", "point")
    named = LabelingSession(_unlabelled(purple), tmp_path / "z.sqlite", "point", prompt="purple thing",
                            prefill=False, auto=True)
    assert named.run().skipped == len(purple)  # no ground truth to stand in with: skipped, not invented


def _unlabelled(data):
    from dataclasses import replace

    from moondream_nb.data import Dataset

    return Dataset([replace(it, labels=()) for it in data])


def test_auto_default_reads_the_environment(monkeypatch):
    monkeypatch.delenv("MOONDREAM_NB_AUTO", raising=False)
    assert auto_default() is False and auto_default(True) is True
    monkeypatch.setenv("MOONDREAM_NB_AUTO", "1")
    assert auto_default() is True and auto_default(False) is False
    monkeypatch.setenv("MOONDREAM_NB_AUTO", "0")
    assert auto_default() is False


def test_display_is_the_live_view_plus_a_static_picture(tmp_path, purple):
    session = LabelingSession(purple, tmp_path / "l.sqlite", "detect", prefill=False)
    session.set_target(truth(purple[0]).target)
    data, _meta = session._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in data
    assert data["image/jpeg"][:2] == b"\xff\xd8"  # the editor's picture, for exported notebooks
    assert data["text/plain"] == f"{purple[0].image_id}: 0 done, 0 skipped of 6 (0%)"
