"""A small demo dataset from the scene generator the built-in model was pretrained on.

Most scenes use the shapes and colours the base model knows; some contain a held-out concept it
never saw (the ``star`` shape, the colour ``purple``), built the way
``moondream_nb.local.learning`` builds its learning tasks, so a notebook can show a finetune
learning them. Everything is deterministic per seed and takes milliseconds.
"""

from __future__ import annotations

import random
from typing import Sequence

from ..errors import ValidationError
from .. import scenes as sc
from .dataset import Dataset, Item
from .labels import Label

__all__ = ["demo_dataset", "DEMO_CONCEPTS"]

# concept → (skill of the learning task, colour, shape) as in local/learning.py (STAR_POINT,
# PURPLE_DETECT); "known" scenes use only the pretraining vocabulary.
DEMO_CONCEPTS: dict[str, tuple[str, str | None, str | None] | None] = {
    "known": None,
    "star": ("point", None, "star"),
    "purple": ("detect", "purple", None),
}
_DEFAULT_CYCLE = ("known", "known", "star", "known", "known", "purple")
_KNOWN_COLOURS = tuple(sc.COLOURS)


def _concept_scene(seed: int, rng: random.Random, colour: str | None, shape: str | None) -> tuple[sc.Scene, tuple, tuple]:
    """A scene holding 1–2 matches of (colour, shape); the same rng calls as learning.Concept.item."""
    colours = tuple(sc.ALL_COLOURS) if colour in sc.HELD_OUT_COLOURS else _KNOWN_COLOURS
    shapes = sc.ALL_SHAPES if shape in sc.HELD_OUT_SHAPES else sc.SHAPES
    k = rng.randint(1, 2)
    include = [(colour or rng.choice(_KNOWN_COLOURS), shape or rng.choice(sc.SHAPES)) for _ in range(k)]
    scene = sc.make_scene(seed, include=include, shapes=shapes, colours=colours, n_objects=rng.randint(k + 1, 5))
    return scene, shapes, colours


def _item(image_id: str, seed: int, concept: str) -> Item:
    rng = random.Random(seed)
    spec = DEMO_CONCEPTS[concept]
    if spec is None:
        # At least one object: an empty picture makes a dull demo.
        scene, shapes, colours = sc.make_scene(seed, n_objects=rng.randint(1, 6)), sc.SHAPES, _KNOWN_COLOURS
        target = None
    else:
        skill, colour, shape = spec
        scene, shapes, colours = _concept_scene(seed, rng, colour, shape)
        target = (colour, shape)
    labels = []
    objects = {}
    first = spec[0] if spec is not None else "point"  # the learning task's own skill draws first, as there
    for skill in (first, "detect" if first == "point" else "point"):
        request, answer = sc.make_task(scene, skill, rng, shapes=shapes, colours=colours, target=target)
        objects[skill] = request["object"]
        labels.append(Label(image_id, skill, request["object"], answer))
    request, answer = sc.make_task(scene, "query", rng, shapes=shapes, colours=colours)
    labels.append(Label(image_id, "query", request["question"], answer, request.get("spatial_refs")))
    meta = {
        "seed": seed,
        "concept": concept,
        "held_out": spec is not None,
        "caption": sc.caption(scene, "long"),
        "objects": [{"shape": o.shape, "colour": o.colour, "size": o.size, "box": o.box_dict} for o in scene.objects],
    }
    image = scene.image
    return Item(image_id, lambda: image, tuple(labels), meta)


def demo_dataset(n: int = 24, *, seed: int = 0, concepts: Sequence[str] | None = None) -> Dataset:
    """``n`` procedurally generated scenes with ground-truth labels.

    Args:
        n: number of items.
        seed: picks the scenes; the same arguments always give the same images, ids and labels.
        concepts: cycled over the items: ``"known"`` (base-model vocabulary: a point, a detect and
            a query label each), ``"star"`` (held-out shape: point/detect label for stars) and
            ``"purple"`` (held-out colour: point/detect label for purple things), each also with
            a query label. Default: two known, one star, two known, one purple (a third held out).

    Returns:
        A :class:`Dataset` with ids ``"demo-<seed>/<index>-<concept>"``; ``item.meta`` holds
        ``seed``, ``concept``, ``held_out``, ``caption`` and ``objects`` (shape, colour, size, box).
    """
    cycle = tuple(concepts) if concepts is not None else _DEFAULT_CYCLE
    unknown = [c for c in cycle if c not in DEMO_CONCEPTS]
    if unknown or not cycle:
        raise ValidationError(f"concepts: expected names from {', '.join(DEMO_CONCEPTS)} (got {list(cycle)!r})",
                              param="concepts")
    if not isinstance(n, int) or n < 0:
        raise ValidationError(f"n: must be an integer >= 0 (got {n!r})", param="n")
    # Far from the small seeds pretraining and the tests start at; one block per demo seed.
    base = 7_000_000 + 10_000 * seed
    items = [_item(f"demo-{seed}/{i:02d}-{cycle[i % len(cycle)]}", base + i, cycle[i % len(cycle)]) for i in range(n)]
    return Dataset(items, name=f"demo-{seed}")
