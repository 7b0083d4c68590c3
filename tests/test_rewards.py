"""Reward formulas of API.md Part A §4, shared by the local server and clients."""

import math
import random

import pytest

from moondream_nb.rewards import assign, detect_reward, iou, point_reward, reward


def box(x0, y0, x1, y1):
    return {"x_min": x0, "y_min": y0, "x_max": x1, "y_max": y1}


def test_point_reward_is_f1_of_matches_within_radius():
    gt = {"points": [{"x": 0.2, "y": 0.2}, {"x": 0.8, "y": 0.8}]}
    assert point_reward([{"x": 0.21, "y": 0.2}, {"x": 0.8, "y": 0.79}], gt) == 1.0
    # one hit, one miss: precision 1/2, recall 1/2
    assert point_reward([{"x": 0.2, "y": 0.2}, {"x": 0.5, "y": 0.5}], gt) == pytest.approx(0.5)
    # two predictions on the same target count once (one-to-one)
    assert point_reward([{"x": 0.2, "y": 0.2}, {"x": 0.2, "y": 0.21}], gt) == pytest.approx(0.5)
    assert point_reward([{"x": 0.2, "y": 0.26}], gt) == 0.0  # 0.06 away: outside 0.05


def test_point_reward_against_boxes_is_containment():
    gt = {"boxes": [box(0.1, 0.1, 0.3, 0.3), box(0.6, 0.6, 0.9, 0.9)]}
    assert point_reward([{"x": 0.2, "y": 0.2}, {"x": 0.7, "y": 0.7}], gt) == 1.0
    assert point_reward([{"x": 0.2, "y": 0.2}], gt) == pytest.approx(2 / 3)


def test_empty_cases():
    assert point_reward([], {"points": []}) == 1.0
    assert point_reward([{"x": 0.5, "y": 0.5}], {"points": []}) == 0.0
    assert point_reward([], {"boxes": [box(0, 0, 1, 1)]}) == 0.0
    assert detect_reward([], {"boxes": []}) == 1.0
    assert detect_reward([box(0, 0, 1, 1)], {"boxes": []}) == 0.0


def test_detect_reward_sums_matched_iou_over_the_larger_count():
    a, b = box(0.0, 0.0, 0.2, 0.2), box(0.5, 0.5, 0.7, 0.7)
    assert detect_reward([a, b], {"boxes": [a, b]}) == pytest.approx(1.0)
    half = box(0.0, 0.0, 0.2, 0.1)  # IoU 0.5 with a
    assert detect_reward([half], {"boxes": [a]}) == pytest.approx(0.5)
    assert detect_reward([a, b, box(0.8, 0.8, 0.9, 0.9)], {"boxes": [a, b]}) == pytest.approx(2 / 3)
    assert detect_reward([a], {"boxes": [a, b]}) == pytest.approx(0.5)


def test_iou():
    assert iou(box(0, 0, 1, 1), box(0, 0, 1, 1)) == 1.0
    assert iou(box(0, 0, 0.5, 1), box(0.5, 0, 1, 1)) == 0.0
    assert iou(box(0, 0, 1, 1), box(0, 0, 0.5, 0.5)) == pytest.approx(0.25)


def test_assign_is_optimal_on_random_matrices():
    rng = random.Random(0)
    for _ in range(200):
        n, m = rng.randint(1, 5), rng.randint(1, 5)
        w = [[rng.choice((0.0, rng.random())) for _ in range(m)] for _ in range(n)]
        pairs = assign(w)
        assert len({i for i, _ in pairs}) == len(pairs) == len({j for _, j in pairs})
        best = _brute_force(w)
        assert math.isclose(sum(w[i][j] for i, j in pairs), best, abs_tol=1e-9)


def _brute_force(w):
    import itertools

    n, m = len(w), len(w[0])
    best = 0.0
    if n <= m:
        for cols in itertools.permutations(range(m), n):
            best = max(best, sum(w[i][c] for i, c in enumerate(cols)))
    else:
        for rows in itertools.permutations(range(n), m):
            best = max(best, sum(w[r][j] for j, r in enumerate(rows)))
    return best


def test_reward_dispatch_and_query_refused():
    assert reward("point", {"points": []}, {"points": []}) == 1.0
    assert reward("detect", {"objects": []}, {"boxes": []}) == 1.0
    with pytest.raises(ValueError, match="skill"):
        reward("query", {"answer": "x"}, {})
