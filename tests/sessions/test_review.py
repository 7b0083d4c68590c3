"""ReviewSession against the real local server and a real LabelStore file."""

from __future__ import annotations

from dataclasses import replace

import pytest

from moondream_nb.data import Dataset, demo_dataset
from moondream_nb.errors import ValidationError
from moondream_nb.sessions import ReviewSession
from moondream_nb.widgets import MetricsPanel, RolloutReviewer


@pytest.fixture(scope="module")
def stars():
    return demo_dataset(6, seed=4, concepts=["star"])


def half_unlabelled(data: Dataset) -> Dataset:
    """Odd items lose their labels: those need a person (or the stand-in)."""
    return Dataset([replace(it, labels=()) if i % 2 else it for i, it in enumerate(data)])


def test_mixing_ground_truth_where_labelled_person_where_not(tmp_path, stars, ft):
    mixed = half_unlabelled(stars)
    session = ReviewSession(ft, mixed, skill="point", prompt="star", store=tmp_path / "r.sqlite", num_rollouts=4,
                            group_size=2, metrics=False, auto=False)
    assert session.wait(60)
    # item 0 was scored by the server against its label; item 1 has none: it waits for you
    assert session.counts["ground_truth"] == 1 and session.counts["human"] == 0
    assert isinstance(session.reviewer, RolloutReviewer) and session.pending.image_id == mixed[1].image_id
    assert session.pending.response.get("rewards") is None and session.reviewer.rewards == [0.0] * 4
    session.reviewer.rewards = [1.0, 0.0, 0.0, 1.0]
    session.reviewer.submit()  # what the Submit button / Enter do
    assert session.counts["human"] == 1
    assert session.wait(60)
    assert len(session.steps) == 1  # two scored requests = one train step of two groups
    assert session.pending.image_id == mixed[3].image_id  # item 2 (labelled) went straight through
    records = session.store.rewards()
    assert [(r.image_id, r.source) for r in records] == [
        (mixed[0].image_id, "ground_truth"), (mixed[1].image_id, "human"), (mixed[2].image_id, "ground_truth")]
    assert records[1].rewards == [1.0, 0.0, 0.0, 1.0]
    assert "image_url" not in records[1].request  # the store keeps ids, not images
    assert [r.step for r in session.store.steps(ft.finetune_id)] == [s["step"] for s in session.steps]
    session.skip()
    assert session.store.status(mixed[3].image_id) == "skipped" and session.counts["skipped"] == 1
    session.close()


def test_auto_mode_stands_in_with_the_oracle_trains_and_checkpoints(tmp_path, stars, ft):
    mixed = half_unlabelled(stars)
    def prompt(item):  # the oracle's wording ("star" or "stars"), also for the items that lost their labels
        return stars[item.image_id].labels_for("point")[0].prompt

    session = ReviewSession(ft, mixed, skill="point", prompt=prompt, store=tmp_path / "r.sqlite", num_rollouts=4,
                            group_size=2, checkpoint_every=2, oracle=stars, auto=True)
    assert isinstance(session.metrics, MetricsPanel)
    result = session.run()
    assert result["ground_truth"] == 3 and result["auto"] == 3 and result["skipped"] == 0
    assert result["steps"] == 3 == len(session.store.steps(ft.finetune_id))
    applied = [s for s in session.steps if s["applied"]]
    saved = [c["step"] for c in ft.iter_checkpoints()]
    assert saved == [c["step"] for c in session.checkpoints] == [s["step"] for s in applied][1::2]
    # the stand-in gave the server's ground-truth rewards (the oracle's labels), in [0, 1]
    auto = [r for r in session.store.rewards() if r.source == "auto"]
    assert [r.image_id for r in auto] == [mixed[i].image_id for i in (1, 3, 5)]
    assert all(0.0 <= x <= 1.0 for r in auto for x in r.rewards)
    assert session.finished and session.reviewer is None
    assert session.store.progress(mixed).done == 6
    # one row per applied step (a step the server did not apply, every reward equal, adds none)
    assert list(session.metrics.frame.index) == [s["step"] for s in applied]
    session.close()


def test_scored_but_untrained_groups_survive_a_restart(tmp_path, stars, ft):
    path = tmp_path / "r.sqlite"
    first = ReviewSession(ft, stars, skill="point", store=path, num_rollouts=3, group_size=64, metrics=False,
                          auto=True)
    assert first.wait(60)
    # every item is labelled: the constructor scored them all by ground truth; 64 per step: none sent yet
    assert first.finished and first.steps == [] and len(first._groups) == 6
    first.close()
    first.store.close()

    again = ReviewSession(ft, stars, skill="point", store=path, num_rollouts=3, group_size=64, metrics=False)
    assert again.wait(60)
    assert again.finished  # every item is done: nothing is sampled again
    assert len(again._groups) == 6  # ... but the six scored groups came back from the store
    result = again.flush().wait(60)  # one step of six groups (applied unless every group's rewards are all equal)
    assert [r.result for r in again.store.steps(ft.finetune_id)] == [result] and again._groups == []
    assert again.store.get_state(f"review/{ft.finetune_id}/unsent") == []
    assert again.flush() is None
    again.close()


def test_iterator_source_and_query_stand_in(tmp_path, ft):
    data = demo_dataset(4, seed=6)

    def requests():
        for it in data:
            lb = it.labels_for("query")[0]
            yield it, {"skill": "query", "image": it.image, "question": lb.prompt, "num_rollouts": 3}

    session = ReviewSession(ft, requests(), store=tmp_path / "q.sqlite", group_size=2, metrics=False, auto=True)
    assert session.wait(60)
    assert session.pending is not None and session.pending.context is data[0]
    counts = session.run()
    assert counts["auto"] == 4 and counts["steps"] == 2
    expected = [[float(r["output"]["answer"].strip().lower() == it.labels_for("query")[0].target["answer"].lower())
                 for r in rec.rollouts] for it, rec in zip(data, session.store.rewards())]
    assert [rec.rewards for rec in session.store.rewards()] == expected
    session.close()


def test_ground_truth_in_iterator_kwargs_is_scored_by_the_server(ft):
    data = demo_dataset(2, seed=7, concepts=["star"])
    pairs = [(it.image_id, dict(it.labels_for("point")[0].request(it.image), num_rollouts=2,
                                 ground_truth=it.labels_for("point")[0].ground_truth)) for it in data]
    session = ReviewSession(ft, pairs, group_size=1, metrics=False, auto=False)
    assert session.wait(60)
    assert session.finished and session.counts["ground_truth"] == 2 and len(session.steps) == 2
    assert session.counts["human"] == 0 and session.reviewer is None  # nobody was asked


def test_arguments_are_checked(stars, ft):
    with pytest.raises(ValidationError, match="^skill"):
        ReviewSession(ft, stars, metrics=False)
    with pytest.raises(ValidationError, match="^num_rollouts"):
        ReviewSession(ft, stars, skill="point", num_rollouts=17, metrics=False)
    with pytest.raises(ValidationError, match="^group_size"):
        ReviewSession(ft, stars, skill="point", group_size=0, metrics=False)
    with pytest.raises(ValidationError, match="^checkpoint_every"):
        ReviewSession(ft, stars, skill="point", checkpoint_every=0, metrics=False)


def test_display_shows_the_metrics_picture_when_finished(ft):
    data = demo_dataset(2, seed=8, concepts=["star"])
    session = ReviewSession(ft, data, skill="point", group_size=2, num_rollouts=4, auto=False)
    assert session.wait(60)
    assert session.finished and len(session.steps) == 1
    bundle, _meta = session._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle and bundle["image/png"][:4] == b"\x89PNG"
    assert "'ground_truth': 2" in bundle["text/plain"]
    session.close()


@pytest.mark.parametrize("skill", ["point", "detect"])
def test_a_stored_group_echoing_the_whole_rollouts_body_trains_after_reopening(tmp_path, stars, ft, skill):
    """Issue 23 asked whether ``RewardRecord.group`` puts the image on the outer level of a whole
    /rollouts body (which the server would refuse with ``image_url: required``): it puts it inside."""
    from moondream_nb.data import LabelStore

    item = stars[0]
    resp = ft.rollouts(skill, image=item.image, object="star", num_rollouts=4)
    body = {"finetune_id": ft.finetune_id, "num_rollouts": 4, "request": resp["request"]}  # API.md A.8's other shape
    with LabelStore(tmp_path / "whole.sqlite") as store:
        store.add_rewards({"mode": "rl", "request": body, "rollouts": resp["rollouts"], "rewards": [1, 0, 0, 1]},
                          image_id=item.image_id)
    with LabelStore(tmp_path / "whole.sqlite") as store:  # reopened: nothing of the first process is left
        (record,) = store.rewards()
        assert "image_url" not in record.request["request"] and record.request["num_rollouts"] == 4
        group = record.group(item.image)
    assert "image" in group["request"]["request"] and "image" not in group["request"]
    result = ft.train_step([group])
    assert result["applied"] and result["reward_mean"] == pytest.approx(0.5)
