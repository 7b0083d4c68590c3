"""Learning a held-out concept through LoRA finetunes of the built-in model (in process, no HTTP).

The same loop a notebook runs against the server: rollouts → rewards from ground truth → RL train
step, or labelled examples → SFT steps. ``benchmarks/learning.py`` runs it over seeds and prints
the curves; the test suite runs a few steps of it so a broken loss cannot pass.
"""

from __future__ import annotations

import base64
import io
import random
from dataclasses import dataclass
from typing import Any, Callable

from .. import scenes as sc
from ..rewards import reward
from .engine import Engine
from .model import Adapter
from .train import make_optimizer

KNOWN_SHAPES = sc.SHAPES
KNOWN_COLOURS = tuple(sc.COLOURS)


def data_url(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@dataclass(frozen=True)
class Concept:
    """A task about one concept: ``skill`` on scenes that contain (colour, shape) matches."""

    name: str
    skill: str  # point | detect
    colour: str | None
    shape: str | None

    def scene(self, seed: int) -> tuple[sc.Scene, random.Random]:
        """The scene of :meth:`item` (1–2 planted matches among 2–5 objects; others may match too) and the rng
        that asks about it."""
        rng = random.Random(seed)
        colours = list(sc.ALL_COLOURS) if self.colour in sc.HELD_OUT_COLOURS else KNOWN_COLOURS
        shapes = sc.ALL_SHAPES if self.shape in sc.HELD_OUT_SHAPES else KNOWN_SHAPES
        k = rng.randint(1, 2)
        include = [(self.colour or rng.choice(KNOWN_COLOURS), self.shape or rng.choice(KNOWN_SHAPES)) for _ in range(k)]
        return sc.make_scene(seed, include=include, shapes=shapes, colours=colours, n_objects=rng.randint(k + 1, 5)), rng

    def item(self, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """(request with image_url, ground truth) for one fresh scene."""
        scene, rng = self.scene(seed)
        request, answer = sc.make_task(scene, self.skill, rng, target=(self.colour, self.shape))
        request["image_url"] = data_url(scene.image)
        gt = {"points": answer["points"]} if self.skill == "point" else {"boxes": answer["boxes"]}
        return request, gt


STAR_POINT = Concept("point at the star", "point", None, "star")
PURPLE_DETECT = Concept("detect the purple things", "detect", "purple", None)
KNOWN_POINT = Concept("point at the circle", "point", None, "circle")
KNOWN_DETECT = Concept("detect the red things", "detect", "red", None)


def evaluate(engine: Engine, concept: Concept, adapter: Adapter | None, seeds: range) -> float:
    """Mean greedy reward over fresh scenes."""
    total = 0.0
    for s in seeds:
        request, gt = concept.item(s)
        out = engine.sample(dict(request, settings={"temperature": 0.0}), 1, adapter)[0]["output"]
        total += reward(concept.skill, out, gt)
    return total / len(seeds)


def rl_run(engine: Engine, concept: Concept, steps: int, *, rank: int = 8, lr: float = 2e-4, requests_per_step: int = 4,
           rollouts: int = 8, seed: int = 0, on_step: Callable[[int, dict], None] | None = None) -> tuple[Adapter, list[float]]:
    """RL with ground-truth rewards; returns the adapter and reward_mean per step."""
    adapter = engine.new_adapter(rank, seed=seed)
    opt = make_optimizer(adapter, lr)
    curve = []
    for step in range(steps):
        groups = []
        for k in range(requests_per_step):
            request, gt = concept.item(seed * 1_000_003 + step * requests_per_step + k)
            rolls = engine.sample(request, rollouts, adapter, seed=seed * 7919 + step * 31 + k)
            rewards = [reward(concept.skill, r["output"], gt) for r in rolls]
            groups.append({"mode": "rl", "request": request, "rollouts": rolls, "rewards": rewards})
        result = engine.train(adapter, opt, groups, lr)
        curve.append(result.reward_mean)
        if on_step:
            on_step(step, vars(result))
    return adapter, curve


def sft_run(engine: Engine, concept: Concept, steps: int, *, examples: int = 32, batch: int = 8, rank: int = 8,
            lr: float = 2e-4, seed: int = 0, eval_seeds: range | None = None, eval_every: int = 5
            ) -> tuple[Adapter, list[float], list[tuple[int, float]]]:
    """SFT on ``examples`` labelled scenes; returns adapter, sft_loss per step, held-out reward every few steps."""
    data = [concept.item(seed * 1_000_003 + 500_000 + k) for k in range(examples)]
    adapter = engine.new_adapter(rank, seed=seed)
    opt = make_optimizer(adapter, lr)
    losses, held = [], []
    rng = random.Random(seed)
    for step in range(steps):
        chosen = rng.sample(data, batch)
        groups = []
        for request, gt in chosen:
            target = {"points": gt["points"]} if concept.skill == "point" else {"boxes": gt["boxes"]}
            groups.append({"mode": "sft", "request": request, "target": target})
        losses.append(engine.train(adapter, opt, groups, lr).sft_loss)
        if eval_seeds is not None and (step + 1) % eval_every == 0:
            held.append((step + 1, evaluate(engine, concept, adapter, eval_seeds)))
    return adapter, losses, held
