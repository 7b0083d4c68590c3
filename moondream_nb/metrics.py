"""Evaluation metrics for checkpoints, one formula per skill, beside the rewards of ``rewards.py``.

Pure Python, no dependencies. Coordinates are normalized 0-1 (IoU does not depend on the scale).

- **detect**: a predicted box is a true positive when it matches a ground-truth box with IoU >= 0.5,
  matched greedily in output order as COCO does (each prediction takes the unmatched truth box it
  overlaps most); unmatched predictions are false positives, unmatched truths misses.
  :func:`coco_ap` is COCO's average precision over IoU 0.50:0.05:0.95 (101-point interpolated,
  at most 100 detections per image), computed exactly as ``pycocotools`` does for one category.
  Moondream's boxes carry no confidence, so every box has score 1 and ties keep their order: the
  precision-recall curve runs through the images in dataset order, each image's boxes in output
  order. A box with a ``"score"`` key is ranked by it.
- **point**: a point is a hit when it lies inside a truth box, or within ``POINT_RADIUS`` of a truth
  point, one truth per point (the matching that counts most hits, as in the point reward).
- **query**: the answer matches when equal to the truth after :func:`normalize_answer`.

Per image: precision = TP / predictions (1 when nothing was predicted), recall = TP / truths (1 when
there is nothing to find), F1 their harmonic mean: 1 when both are empty, 0 when exactly one is.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .rewards import POINT_RADIUS, assign, iou

Box = Mapping[str, float]
Point = Mapping[str, float]

#: COCO's IoU thresholds 0.50, 0.55, ..., 0.95, the same floats as pycocotools'
#: ``np.linspace(.5, .95, 10)`` (a box at IoU 0.8 falls on the same side of each threshold).
IOU_THRESHOLDS = tuple(i * ((0.95 - 0.5) / 9) + 0.5 for i in range(9)) + (0.95,)
#: COCO's recall points 0, 0.01, ..., 1 (``np.linspace(0, 1, 101)``) where precision is read.
RECALL_POINTS = tuple(i * (1.0 / 100) for i in range(100)) + (1.0,)
MAX_DETECTIONS = 100  # COCO's maxDets for AP


@dataclass(frozen=True)
class Counts:
    """True positives, false positives and misses of one image (or summed over many)."""

    tp: int
    fp: int
    fn: int

    def __add__(self, other: "Counts") -> "Counts":
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def precision(self) -> float:
        """TP / (TP + FP); 1.0 when nothing was predicted."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        """TP / (TP + FN); 1.0 when there was nothing to find."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall (0.0 when both are 0)."""
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def _ranked(objects: Sequence[Box]) -> list[Box]:
    # Stable sort by descending score (all 1 without scores: output order), COCO's maxDets cut.
    return sorted(objects, key=lambda o: -float(o.get("score", 1.0)))[:MAX_DETECTIONS]


def match_boxes(objects: Sequence[Box], truths: Sequence[Box], threshold: float = 0.5) -> list[bool]:
    """COCO's greedy matching: for each predicted box (in rank order, see :func:`_ranked`), whether
    it is a true positive at IoU >= ``threshold``. Each truth box matches at most one prediction."""
    taken = [False] * len(truths)
    best_floor = min(threshold, 1 - 1e-10)
    hits = []
    for o in objects:
        best, m = best_floor, -1
        for g, t in enumerate(truths):
            if taken[g]:
                continue
            v = iou(o, t)
            if v < best:
                continue
            best, m = v, g  # ties go to the later truth box, as in pycocotools
        if m >= 0:
            taken[m] = True
        hits.append(m >= 0)
    return hits


def detect_counts(objects: Sequence[Box], truths: Sequence[Box], threshold: float = 0.5) -> Counts:
    """TP / FP / misses of one image's predicted ``objects`` against truth ``boxes`` at ``threshold``."""
    hits = match_boxes(_ranked(objects), truths, threshold)
    tp = sum(hits)
    return Counts(tp, len(hits) - tp, len(truths) - tp)


def point_counts(points: Sequence[Point], truth: Mapping[str, Any]) -> Counts:
    """Hits of ``points`` against ``{"boxes": [...]}`` (inside) or ``{"points": [...]}`` (within
    ``POINT_RADIUS``), one truth per point."""
    if "boxes" in truth:
        targets = truth["boxes"]
        hit = [[1.0 if t["x_min"] <= p["x"] <= t["x_max"] and t["y_min"] <= p["y"] <= t["y_max"] else 0.0
                for t in targets] for p in points]
    else:
        targets = truth["points"]
        hit = [[1.0 if math.dist((p["x"], p["y"]), (t["x"], t["y"])) <= POINT_RADIUS else 0.0 for t in targets]
               for p in points]
    tp = len(assign(hit)) if points and targets else 0
    return Counts(tp, len(points) - tp, len(targets) - tp)


def normalize_answer(text: Any) -> str:
    """A query answer for comparison: case folded, inner whitespace collapsed, surrounding space and
    trailing ``.!?`` removed ("The cat." == "the  cat")."""
    return re.sub(r"\s+", " ", str(text or "")).strip().rstrip(".!?").strip().casefold()


def answer_match(answer: Any, truth: Any) -> float:
    """1.0 when ``answer`` equals ``truth`` after :func:`normalize_answer`, else 0.0."""
    return float(normalize_answer(answer) == normalize_answer(truth))


def pr_curve(images: Sequence[tuple[Sequence[Box], Sequence[Box]]], threshold: float = 0.5) -> tuple[list[float], list[float]]:
    """COCO's interpolated precision-recall curve at one IoU ``threshold``.

    Args:
        images: ``(predicted objects, truth boxes)`` per image, in dataset order.

    Returns:
        ``(recall points, precision)``: :data:`RECALL_POINTS` and the precision envelope read at
        each (0 beyond the highest recall reached). Both empty when no image has a truth box.
    """
    ranked: list[tuple[float, int, bool]] = []  # (-score, order, hit)
    n_true = 0
    for objects, truths in images:
        objects = _ranked(objects)
        for o, hit in zip(objects, match_boxes(objects, truths, threshold)):
            ranked.append((-float(o.get("score", 1.0)), len(ranked), hit))
        n_true += len(truths)
    if n_true == 0:
        return [], []
    ranked.sort()  # by score, ties in dataset then output order (COCO's stable mergesort)
    recall, precision, tp = [], [], 0
    for k, (_, _, hit) in enumerate(ranked, 1):
        tp += hit
        recall.append(tp / n_true)
        precision.append(tp / k)
    for i in range(len(precision) - 1, 0, -1):  # the envelope: precision never rises with recall
        precision[i - 1] = max(precision[i - 1], precision[i])
    read = []
    for r in RECALL_POINTS:
        i = bisect_left(recall, r)
        read.append(precision[i] if i < len(precision) else 0.0)
    return list(RECALL_POINTS), read


def average_precision(images: Sequence[tuple[Sequence[Box], Sequence[Box]]], threshold: float = 0.5) -> float:
    """COCO's AP at one IoU threshold: the mean of :func:`pr_curve`'s precision (NaN without truth)."""
    _, precision = pr_curve(images, threshold)
    return sum(precision) / len(precision) if precision else float("nan")


def coco_ap(images: Sequence[tuple[Sequence[Box], Sequence[Box]]]) -> float:
    """COCO's AP: :func:`average_precision` averaged over :data:`IOU_THRESHOLDS` (0.50:0.95)."""
    values = [average_precision(images, t) for t in IOU_THRESHOLDS]
    return sum(values) / len(values)
