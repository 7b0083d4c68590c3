"""Learning through the API: RL with ground-truth rewards on a concept the base model never saw
("point at the star") raises ``reward_mean`` within the steps the in-process check measured."""

from __future__ import annotations

from moondream_nb.local import learning as L

from .conftest import item

STEPS = 16  # as tests/test_builtin_model.py::test_rl_reward_rises_on_a_held_out_concept
REQUESTS_PER_STEP, ROLLOUTS, LR = 4, 8, 2e-4  # the group sizes and lr of learning.rl_run
# One 16-step run rises by 0.16 ± 0.06 (first 4 steps vs last 4); sampling over HTTP is not
# seeded, so the curve is averaged over independent finetunes to keep the check from flaking.
REPLICAS = 3


def test_rl_through_the_api_raises_reward_on_an_unseen_concept(server):
    finetunes = [server.ft(name=f"learn-the-star-{r}", rank=8) for r in range(REPLICAS)]
    curve = []
    for step in range(STEPS):
        means = []
        for r, ft in enumerate(finetunes):
            groups = []
            for k in range(REQUESTS_PER_STEP):
                request, gt = item(1_000_003 * (r + 1) + step * REQUESTS_PER_STEP + k, L.STAR_POINT)
                resp = ft._transport.json("POST", "/rollouts", {"finetune_id": ft.finetune_id, "num_rollouts": ROLLOUTS,
                                                                "request": request, "ground_truth": gt})
                groups.append({"mode": "rl", "request": resp["request"], "rollouts": resp["rollouts"],
                               "rewards": resp["rewards"]})
            means.append(ft.train_step(groups, lr=LR)["reward_mean"])
        curve.append(sum(means) / REPLICAS)
    assert sum(curve[-4:]) / 4 > sum(curve[:4]) / 4 + 0.05, curve
