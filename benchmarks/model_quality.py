"""Held-out quality of the built-in model, broken down by task kind.

    python benchmarks/model_quality.py [--scenes 600] [--seed0 3000000000] [--weights PATH]

Greedy answers on fresh scenes (seeds no pretraining step uses): query exact match per question
kind (the first words of the question; spatial-ref questions as ``ref``), point and detect reward
by number of matching objects, and how often a 2+-match answer lists too few items ("too few":
the model stopped early). Shows where the model loses its accuracy. A measurement, not a test.
"""

from __future__ import annotations

import argparse
import collections
import random
import statistics

import torch

from moondream_nb import scenes as sc
from moondream_nb.local import learning as L
from moondream_nb.local.engine import Engine
from moondream_nb.rewards import reward


def kind_of(skill: str, request: dict, answer: dict) -> str:
    if skill == "query":
        return "query: ref" if request.get("spatial_refs") else "query: " + " ".join(request["question"].split()[:3])
    n = len(answer["points"] if skill == "point" else answer["boxes"])
    return f"{skill}: {min(n, 2)}{'+' if n >= 2 else ''} matches"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=600)
    ap.add_argument("--seed0", type=int, default=3 * 10**9)
    ap.add_argument("--weights", default=None)
    args = ap.parse_args()
    engine = Engine(args.weights)
    scores: dict[str, list[float]] = collections.defaultdict(list)
    for seed in range(args.seed0, args.seed0 + args.scenes):
        scene, rng = sc.make_scene(seed), random.Random(seed)
        url = L.data_url(scene.image)
        for skill in ("query", "point", "detect"):
            request, answer = sc.make_task(scene, skill, rng)
            out = engine.sample(dict(request, image_url=url, settings={"temperature": 0.0}), 1)[0]["output"]
            if skill == "query":
                score = float((out.get("answer") or "").strip().lower() == answer["answer"])
            else:
                truth = answer["points"] if skill == "point" else answer["boxes"]
                score = reward(skill, out, {"points": truth} if skill == "point" else {"boxes": truth})
                if len(truth) >= 2:
                    got = out.get("points") if skill == "point" else out.get("objects")
                    scores[f"{skill}: 2+ matches, too few"].append(float(len(got or ()) < len(truth)))
            scores[kind_of(skill, request, answer)].append(score)
            scores[f"{skill} (all)"].append(score)
    for kind in sorted(scores):
        print(f"{kind:32s} n={len(scores[kind]):4d}  {statistics.fmean(scores[kind]):.3f}")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
