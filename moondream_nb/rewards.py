"""Rewards from ground truth, one formula per skill (API.md Part A §4).

Pure Python, no dependencies: the local server computes ``rollouts`` rewards with these
functions and clients may call them on their own data, so both always agree.

All rewards are in [0, 1] and use one-to-one matching:

- point vs ``points``: a prediction matches a ground-truth point within distance 0.05
  (normalized coordinates); reward = F1 of the matching.
- point vs ``boxes``: a prediction matches a box that contains it; reward = F1.
- detect vs ``boxes``: pairs with IoU > 0 matched by the assignment that maximizes total IoU;
  reward = sum of matched IoUs / max(#predicted, #ground truth).
- both empty → 1.0; exactly one empty → 0.0.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

POINT_RADIUS = 0.05

Point = Mapping[str, float]
Box = Mapping[str, float]


def assign(weights: Sequence[Sequence[float]]) -> list[tuple[int, int]]:
    """Maximum-weight one-to-one assignment (Hungarian algorithm, O(n²m)).

    ``weights[i][j] >= 0``; returns the (row, column) pairs with positive weight in the
    assignment that maximizes their sum.
    """
    n = len(weights)
    m = len(weights[0]) if n else 0
    if n == 0 or m == 0:
        return []
    transposed = n > m
    if transposed:  # the algorithm below needs rows <= columns
        weights = [list(col) for col in zip(*weights)]
        n, m = m, n
    big = max(max(row) for row in weights)
    cost = [[big - w for w in row] for row in weights]  # maximize weight = minimize cost
    u = [0.0] * (n + 1)
    v = [0.0] * (m + 1)
    match_col = [0] * (m + 1)  # match_col[j] = row (1-based) assigned to column j
    way = [0] * (m + 1)
    for i in range(1, n + 1):
        match_col[0] = i
        j0 = 0
        minv = [math.inf] * (m + 1)
        used = [False] * (m + 1)
        while True:
            used[j0] = True
            i0 = match_col[j0]
            delta = math.inf
            j1 = 0
            for j in range(1, m + 1):
                if not used[j]:
                    cur = cost[i0 - 1][j - 1] - u[i0] - v[j]
                    if cur < minv[j]:
                        minv[j] = cur
                        way[j] = j0
                    if minv[j] < delta:
                        delta = minv[j]
                        j1 = j
            for j in range(m + 1):
                if used[j]:
                    u[match_col[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
            if match_col[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            match_col[j0] = match_col[j1]
            j0 = j1
    pairs = []
    for j in range(1, m + 1):
        i = match_col[j]
        if i and weights[i - 1][j - 1] > 0:
            pairs.append((j - 1, i - 1) if transposed else (i - 1, j - 1))
    return sorted(pairs)


def _f1(matches: int, n_pred: int, n_true: int) -> float:
    if n_pred == 0 and n_true == 0:
        return 1.0
    if n_pred == 0 or n_true == 0:
        return 0.0
    return 2.0 * matches / (n_pred + n_true)


def _inside(p: Point, b: Box) -> bool:
    return b["x_min"] <= p["x"] <= b["x_max"] and b["y_min"] <= p["y"] <= b["y_max"]


def point_reward(points: Sequence[Point], ground_truth: Mapping[str, Any]) -> float:
    """F1 of ``points`` against ``{"points": [...]}`` (within 0.05) or ``{"boxes": [...]}`` (inside)."""
    if "boxes" in ground_truth:
        targets = ground_truth["boxes"]
        hit = [[1.0 if _inside(p, b) else 0.0 for b in targets] for p in points]
    else:
        targets = ground_truth["points"]
        hit = [
            [1.0 if math.dist((p["x"], p["y"]), (t["x"], t["y"])) <= POINT_RADIUS else 0.0 for t in targets]
            for p in points
        ]
    return _f1(len(assign(hit)), len(points), len(targets))


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes in normalized coordinates."""
    w = min(a["x_max"], b["x_max"]) - max(a["x_min"], b["x_min"])
    h = min(a["y_max"], b["y_max"]) - max(a["y_min"], b["y_min"])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    area_a = (a["x_max"] - a["x_min"]) * (a["y_max"] - a["y_min"])
    area_b = (b["x_max"] - b["x_min"]) * (b["y_max"] - b["y_min"])
    return inter / (area_a + area_b - inter)


def detect_reward(objects: Sequence[Box], ground_truth: Mapping[str, Any]) -> float:
    """Sum of matched IoUs over max(#predicted, #ground truth) against ``{"boxes": [...]}``."""
    boxes = ground_truth["boxes"]
    if not objects and not boxes:
        return 1.0
    if not objects or not boxes:
        return 0.0
    ious = [[iou(o, b) for b in boxes] for o in objects]
    total = sum(ious[i][j] for i, j in assign(ious))
    return total / max(len(objects), len(boxes))


def reward(skill: str, output: Mapping[str, Any], ground_truth: Mapping[str, Any]) -> float:
    """The reward of one rollout ``output`` for ``skill`` ("point" or "detect")."""
    if skill == "point":
        return point_reward(output.get("points") or [], ground_truth)
    if skill == "detect":
        return detect_reward(output.get("objects") or [], ground_truth)
    raise ValueError(f"skill: ground-truth rewards exist for 'point' and 'detect' only (got {skill!r})")
