"""Evaluation metrics (``moondream_nb.metrics``): hand-computed cases, and COCO AP against
pycocotools itself (a test-only dependency) on random detections."""

from __future__ import annotations

import contextlib
import io
import random

import pytest

from moondream_nb.metrics import (IOU_THRESHOLDS, Counts, answer_match, average_precision, coco_ap, detect_counts,
                                  match_boxes, normalize_answer, point_counts, pr_curve)


def box(x0, y0, x1, y1, **extra):
    return {"x_min": x0, "y_min": y0, "x_max": x1, "y_max": y1, **extra}


A, B = box(0.1, 0.1, 0.3, 0.3), box(0.6, 0.5, 0.9, 0.9)
PERFECT = ([A], [A])
MISSED = ([], [B])
FALSE_BOX = ([A], [])
DUPLICATES = ([B, B], [B])


def test_counts_of_the_four_cases():
    assert detect_counts(*PERFECT) == Counts(1, 0, 0)
    assert detect_counts(*MISSED) == Counts(0, 0, 1)
    assert detect_counts(*FALSE_BOX) == Counts(0, 1, 0)
    assert detect_counts(*DUPLICATES) == Counts(1, 1, 0)  # a truth box matches one prediction only
    perfect, missed, false, dup = (detect_counts(*c) for c in (PERFECT, MISSED, FALSE_BOX, DUPLICATES))
    assert (perfect.precision, perfect.recall, perfect.f1) == (1.0, 1.0, 1.0)
    assert (missed.precision, missed.recall, missed.f1) == (1.0, 0.0, 0.0)  # said nothing wrong, found nothing
    assert (false.precision, false.recall, false.f1) == (0.0, 1.0, 0.0)
    assert (dup.precision, dup.recall, dup.f1) == pytest.approx((0.5, 1.0, 2 / 3))
    assert Counts(0, 0, 0).f1 == 1.0  # nothing to find, nothing said
    total = perfect + missed + false + dup
    assert total == Counts(2, 2, 1) and (total.precision, total.recall) == pytest.approx((0.5, 2 / 3))


def test_the_iou_threshold_is_inclusive_and_matching_is_greedy_in_output_order():
    truth = box(0.0, 0.0, 1.0, 1.0)
    half = box(0.0, 0.0, 0.5, 1.0)  # IoU exactly 0.5: a hit at 0.5, as in COCO (>=)
    assert match_boxes([half], [truth]) == [True]
    assert match_boxes([box(0.0, 0.0, 0.49, 1.0)], [truth]) == [False]
    # the first prediction takes the truth box it overlaps most, even if a later one fits it better
    t1, t2 = box(0.0, 0.0, 0.4, 0.4), box(0.3, 0.0, 0.7, 0.4)
    p1, p2 = box(0.2, 0.0, 0.6, 0.4), box(0.0, 0.0, 0.38, 0.4)
    assert match_boxes([p1, p2], [t1, t2]) == [True, True]
    assert match_boxes([p1, p2], [t2]) == [True, False]


def test_ap_of_the_four_cases_by_hand():
    # Detections in dataset order, all score 1: hit (perfect), FP (false box), hit, FP (duplicate);
    # 3 truth boxes. Cumulative (recall, precision): (1/3, 1), (1/3, 1/2), (2/3, 2/3), (2/3, 1/2);
    # envelope 1, 2/3, 2/3, 1/2. Read at 0, .01, ..., 1: 34 points at 1, 33 at 2/3, 34 beyond at 0.
    images = [PERFECT, MISSED, FALSE_BOX, DUPLICATES]
    recall, precision = pr_curve(images)
    assert len(recall) == len(precision) == 101
    assert precision[:34] == [1.0] * 34 and precision[34:67] == pytest.approx([2 / 3] * 33) and precision[67:] == [0.0] * 34
    assert average_precision(images) == pytest.approx(56 / 101)
    assert coco_ap(images) == pytest.approx(56 / 101)  # exact boxes: every threshold agrees
    # one box at IoU 0.8: a hit at 0.50 ... 0.80 (7 thresholds), a miss at 0.85, 0.90, 0.95
    assert coco_ap([([box(0.0, 0.0, 0.8, 1.0)], [box(0.0, 0.0, 1.0, 1.0)])]) == pytest.approx(0.7)
    assert average_precision([([], [])]) != average_precision([([], [])])  # NaN: no truth, no AP


def test_a_score_ranks_the_boxes_before_matching():
    truth = [box(0.0, 0.0, 0.5, 0.5)]
    # without scores the first box takes the truth; a higher-scored second box goes first instead
    assert match_boxes([box(0.0, 0.0, 0.5, 0.5), box(0.05, 0.0, 0.5, 0.5)], truth) == [True, False]
    assert detect_counts([box(0.3, 0.3, 0.9, 0.9, score=0.1), box(0.0, 0.0, 0.5, 0.5, score=0.9)], truth) == Counts(1, 1, 0)
    assert average_precision([([box(0.3, 0.3, 0.9, 0.9, score=0.1), box(0.0, 0.0, 0.5, 0.5, score=0.9)], truth)]) == 1.0


def test_point_hits_inside_boxes_or_within_the_radius_one_truth_each():
    boxes = {"boxes": [A, B]}
    assert point_counts([{"x": 0.2, "y": 0.2}, {"x": 0.2, "y": 0.25}], boxes) == Counts(1, 1, 1)
    assert point_counts([{"x": 0.2, "y": 0.2}, {"x": 0.7, "y": 0.7}], boxes) == Counts(2, 0, 0)
    points = {"points": [{"x": 0.5, "y": 0.5}]}
    assert point_counts([{"x": 0.52, "y": 0.54}], points) == Counts(1, 0, 0)  # 0.045 away: inside the radius
    assert point_counts([{"x": 0.56, "y": 0.5}], points) == Counts(0, 1, 1)
    assert point_counts([], points) == Counts(0, 0, 1) and point_counts([], {"points": []}) == Counts(0, 0, 0)


def test_query_answers_match_after_normalizing():
    assert normalize_answer("  The  Cat. ") == "the cat"
    assert answer_match("Hexagon", "hexagon") == answer_match("3.", "3") == 1.0
    assert answer_match("3 stars", "3") == 0.0 and answer_match(None, "3") == 0.0


# --- against pycocotools ----------------------------------------------------------------

def _random_images(rng: random.Random, n: int) -> list[tuple[str, list, list]]:
    """(prompt, predictions, truths): misses, false boxes, duplicates, jittered hits."""
    out = []
    for _ in range(n):
        truths = []
        for _ in range(rng.randint(0, 4)):
            x, y = rng.uniform(0, 0.7), rng.uniform(0, 0.7)
            truths.append(box(x, y, x + rng.uniform(0.05, 0.3), y + rng.uniform(0.05, 0.3)))
        preds = []
        for t in truths:
            if rng.random() < 0.8:  # found, more or less well
                dx, dy, grow = rng.uniform(-0.03, 0.03), rng.uniform(-0.03, 0.03), rng.uniform(-0.01, 0.03)
                preds.append(box(t["x_min"] + dx, t["y_min"] + dy, t["x_max"] + dx + grow, t["y_max"] + dy + grow))
                if rng.random() < 0.2:
                    preds.append(dict(preds[-1]))  # a duplicate
        for _ in range(rng.randint(0, 2)):  # false boxes
            x, y = rng.uniform(0, 0.8), rng.uniform(0, 0.8)
            preds.append(box(x, y, x + 0.15, y + 0.15))
        rng.shuffle(preds)
        out.append((rng.choice(["star", "circle"]), preds, truths))
    return out


def _pycocotools_stats(images, W=640, H=480):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    cats = {"star": 1, "circle": 2}
    xywh = lambda b: [b["x_min"] * W, b["y_min"] * H, (b["x_max"] - b["x_min"]) * W, (b["y_max"] - b["y_min"]) * H]  # noqa: E731
    gt = {"images": [{"id": i + 1, "width": W, "height": H} for i in range(len(images))],
          "categories": [{"id": c, "name": n} for n, c in cats.items()], "annotations": []}
    dets = []
    for i, (prompt, preds, truths) in enumerate(images):
        for t in truths:
            b = xywh(t)
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": i + 1, "category_id": cats[prompt],
                                      "bbox": b, "area": b[2] * b[3], "iscrowd": 0})
        dets += [{"image_id": i + 1, "category_id": cats[prompt], "bbox": xywh(p), "score": 1.0} for p in preds]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coco_ap_equals_pycocotools(seed):
    pytest.importorskip("pycocotools")  # a dev dependency: CI installs it
    images = _random_images(random.Random(seed), 40)
    stats = _pycocotools_stats(images)
    by_prompt = {p: [(pr, t) for q, pr, t in images if q == p] for p in ("star", "circle")}
    ours = [sum(f(v) for v in by_prompt.values()) / 2 for f in (
        coco_ap, lambda v: average_precision(v, IOU_THRESHOLDS[0]), lambda v: average_precision(v, IOU_THRESHOLDS[5]))]
    assert ours == pytest.approx(list(stats[:3]), abs=1e-9)
    assert 0.2 < ours[1] < 0.8  # AP50: a case with something to get right and wrong
