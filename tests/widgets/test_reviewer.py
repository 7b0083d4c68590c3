"""RolloutReviewer on the Python side: starting rewards, validation, RL groups the server accepts,
submit callbacks, static rendering. Responses come from the real local server."""

from __future__ import annotations

import copy

import pytest

from moondream_nb.errors import ValidationError
from moondream_nb.widgets import RolloutReviewer


def test_server_rewards_are_the_start_and_group_trains(responses):
    resp = responses["detect"]
    rv = RolloutReviewer(resp)
    assert rv.rewards == resp["rewards"] and rv.server_rewards == resp["rewards"]
    assert rv.skill == "detect" and rv.has_image and rv.image_size == [640, 480]
    assert len(set(rv.colors)) == len(resp["rollouts"])  # a distinct colour per rollout
    rv.rewards = [1, 0, 1, 0, 0, 1]
    group = rv.group()
    assert group["rewards"] == [1.0, 0.0, 1.0, 0.0, 0.0, 1.0]
    assert group["request"] is resp["request"] and group["rollouts"] == resp["rollouts"]
    result = responses["ft"].train_step([group])
    assert result["applied"] is True and result["reward_mean"] == pytest.approx(0.5)


def test_without_ground_truth_rewards_start_at_zero(responses):
    rv = RolloutReviewer(responses["point"], rewards="scale")
    assert rv.rewards == [0.0] * 4 and rv.server_rewards is None and rv.reward_mode == "scale"
    assert all("p" in r for r in rv._rollouts)


def test_query_answers_and_reasoning(responses):
    rv = RolloutReviewer(responses["query"], rewards="rank")
    first = responses["query"]["rollouts"][0]["output"]
    assert rv._rollouts[0]["answer"] == first["answer"]
    assert rv._rollouts[0]["reasoning"] == first["reasoning"]["text"]
    assert rv.prompt == "query: how many shapes are there?"
    rv.rewards = [1.0, 0.5, 0.0]
    assert rv.group()["request"]["reasoning"] is True


@pytest.mark.parametrize("rewards, field", [
    ([1, 0], "rewards"),
    ([1, 0, float("nan"), 0, 0, 0], "rewards[2]"),
    ([1, 0, "good", 0, 0, 0], "rewards[2]"),
])
def test_bad_rewards_name_the_field(responses, rewards, field):
    rv = RolloutReviewer(responses["detect"])
    with pytest.raises(ValidationError) as err:
        rv.rewards = rewards
    assert str(err.value).startswith(field + ":")
    assert rv.rewards == responses["detect"]["rewards"]


def test_bad_response_names_the_field(responses):
    resp = copy.deepcopy(responses["detect"])
    resp["rollouts"][2]["output"]["objects"][0:0] = [{"x_min": 0.5, "y_min": 0.1, "x_max": 0.1, "y_max": 0.2}]
    with pytest.raises(ValidationError, match=r"^response\.rollouts\[2\]\.output\.objects\[0\]:"):
        RolloutReviewer(resp)
    with pytest.raises(ValidationError, match=r"^response\.rewards:"):
        RolloutReviewer(dict(responses["detect"], rewards=[0.1]))
    with pytest.raises(ValidationError, match=r"^response\.rollouts:"):
        RolloutReviewer(dict(responses["detect"], rollouts=[]))
    with pytest.raises(ValidationError, match="^rewards:"):
        RolloutReviewer(responses["detect"], rewards="stars")


def test_submit_calls_callbacks_and_reports_errors(responses):
    rv = RolloutReviewer(responses["point"])
    seen = []
    rv.on_submit(lambda r: seen.append(r.group()["rewards"]))
    rv.rewards = [1, 1, 0, 0]
    rv._on_front_end_msg(rv, {"type": "submit"}, [])  # what Enter / the Submit button send
    assert seen == [[1.0, 1.0, 0.0, 0.0]] and rv.status.startswith("submitted")

    @rv.on_submit
    def broken(_r):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        rv.submit()
    assert isinstance(rv.error, RuntimeError) and "boom" in rv.status
    with pytest.raises(ValidationError, match="^on_submit:"):
        rv.on_submit("not callable")


def test_static_rendering(responses):
    rv = RolloutReviewer(responses["detect"])
    data, _ = rv._repr_mimebundle_()
    assert data["image/jpeg"][:3] == b"\xff\xd8\xff"
    assert data["text/plain"].splitlines()[0] == rv.prompt and len(data["text/plain"].splitlines()) == 7
    fig = rv.to_figure()
    legend = fig.axes[1].get_legend()
    assert len(legend.get_texts()) == 6 and "reward" in legend.get_texts()[0].get_text()
    query = RolloutReviewer(responses["query"])
    assert query._repr_mimebundle_()[0]["image/png"][:4] == b"\x89PNG"


def test_query_without_image_has_no_canvas():
    resp = {"request": {"skill": "query", "question": "2+2?"},
            "rollouts": [{"output": {"answer": "4"}}, {"output": {"answer": "5"}}]}
    rv = RolloutReviewer(resp)
    assert not rv.has_image and rv._image is None and rv.rewards == [0.0, 0.0]
    rv.rewards = [1, 0]
    assert rv.group()["rewards"] == [1.0, 0.0]
    data, _ = rv._repr_mimebundle_()
    assert data["image/png"][:4] == b"\x89PNG"  # the matplotlib legend with the answers
    texts = [t.get_text() for t in rv.to_figure().axes[1].get_legend().get_texts()]
    assert "4" in texts[0] and "reward 1.00" in texts[0]


def test_rollouts_without_rewards_are_unscored_until_someone_scores_them(responses):
    from moondream_nb.widgets import RolloutReviewer

    bare = responses["point"]  # sampled without ground truth: no rewards
    assert bare["rewards"] is None
    rv = RolloutReviewer(bare)
    assert rv.unscored == list(range(len(bare["rollouts"])))  # shown as "–", not "✗ 0.00"
    rv.rewards = [1.0] + [0.0] * (len(bare["rollouts"]) - 1)
    assert rv.unscored == list(range(1, len(bare["rollouts"])))
    rv.on_submit(lambda r: None)
    rv.submit()  # a person is told the rows left at "–" were sent as bad ones
    assert rv.status == f"submitted (1 callback) · {len(bare['rollouts']) - 1} unscored counted as bad (0)"
    assert RolloutReviewer(responses["detect"]).unscored == []  # the server scored them
