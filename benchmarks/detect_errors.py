"""Where the detect reward goes: matched boxes and their IoU, missed things, and false boxes by what they sit on.

    python benchmarks/detect_errors.py [--weights PATH] [--concept red|purple] [--learn none|rl|sft] [--scenes 100]

Greedy answers to "detect the red things" (a known colour) or "detect the purple things" (held out; learned
first with 60 RL steps or 30 SFT steps, rank 8, default lr, seed 0) on fresh scenes, seeds 9e8…. A box
counts as matched at IoU > 0.3; a false box is named by the colour of the scene object it overlaps most
(IoU ≥ 0.3), else "nothing". Also: how many things are missed in scenes with 1, 2, 3+ matches.
A measurement, not a test.
"""

from __future__ import annotations

import argparse
import collections
import json

import torch

from moondream_nb.local import learning as L
from moondream_nb.local.engine import Engine
from moondream_nb.rewards import assign, iou, reward


def breakdown(engine: Engine, concept: L.Concept, adapter, seeds: range) -> dict:
    counts: collections.Counter = collections.Counter()
    ious, total = [], 0.0
    for seed in seeds:
        request, gt = concept.item(seed)
        scene, _ = concept.scene(seed)
        out = engine.sample(dict(request, settings={"temperature": 0.0}), 1, adapter)[0]["output"]
        total += reward("detect", out, gt)
        pred, boxes = out["objects"], gt["boxes"]
        pairs = assign([[iou(p, b) for b in boxes] for p in pred]) if pred and boxes else []
        pairs = [(i, j) for i, j in pairs if iou(pred[i], boxes[j]) > 0.3]
        ious += [iou(pred[i], boxes[j]) for i, j in pairs]
        n = min(len(boxes), 3)
        counts["true"] += len(boxes)
        counts["answered"] += len(pred)
        counts["matched"] += len(pairs)
        counts[f"missed, {n}{'+' if n == 3 else ''} matches"] += len(boxes) - len(pairs)
        matched = {i for i, _ in pairs}
        for i, p in enumerate(pred):
            if i in matched:
                continue
            hit = max(scene.objects, key=lambda o: iou(p, o.box_dict), default=None)
            counts[f"false, on {hit.colour if hit is not None and iou(p, hit.box_dict) >= 0.3 else 'nothing'}"] += 1
    return {"reward": round(total / len(seeds), 3), "matched_iou": round(sum(ious) / max(1, len(ious)), 3),
            **dict(sorted(counts.items()))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=None)
    ap.add_argument("--concept", choices=("red", "purple"), default="red")
    ap.add_argument("--learn", choices=("none", "rl", "sft"), default="none")
    ap.add_argument("--scenes", type=int, default=100)
    args = ap.parse_args()
    engine = Engine(args.weights)
    concept = L.KNOWN_DETECT if args.concept == "red" else L.PURPLE_DETECT
    adapter = None
    if args.learn == "rl":
        adapter, _ = L.rl_run(engine, concept, 60, seed=0)
    elif args.learn == "sft":
        adapter, _, _ = L.sft_run(engine, concept, 30, seed=0)
    seeds = range(9 * 10**8, 9 * 10**8 + args.scenes)
    print(f"{concept.name}, {args.learn}: " + json.dumps(breakdown(engine, concept, adapter, seeds)))


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
