"""Procedural scenes of coloured shapes, and every task the protocol has over them.

The built-in model is pretrained on these scenes; the notebooks, demos and tests use them too.
Everything is deterministic per seed and uses only Pillow.

``make_scene(seed)`` → :class:`Scene` (a PIL image and its objects, coordinates normalized 0–1).
``make_task(scene, skill, rng)`` → a request in the API's shape and its correct answer:

- ``query``: colour of X, how many X, is there X, which side is X, what shape is the Y thing, and
  questions about the object under a spatial reference (point or box); a short reasoning text.
- ``caption``: short, normal and long captions.
- ``point`` / ``detect``: prompts by shape, colour or both; the target is the centres / boxes.

Held-out concepts (never used in pretraining): the shape ``star`` and the colour ``purple``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Sequence

from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "diamond", "hexagon")
COLOURS = {
    "red": (215, 40, 40),
    "green": (40, 165, 60),
    "blue": (40, 80, 225),
    "yellow": (240, 215, 40),
    "orange": (245, 135, 25),
    "white": (248, 248, 248),
    "black": (22, 22, 22),
}
HELD_OUT_SHAPES = ("star",)
# Shapes pretraining also draws (unless ``--basic-shapes``): more shape classes for the encoder to
# tell apart, so its features separate a new shape (the star) better. Measured in
# benchmarks/results/extra_shapes_12min.txt and, on the shipped weights, concept_probe.txt.
EXTRA_SHAPES = ("pentagon", "cross", "trapezoid", "kite")
PRETRAINING_SHAPES = SHAPES + EXTRA_SHAPES
HELD_OUT_COLOURS = {"purple": (150, 45, 200)}
# Colours pretraining also draws (unless ``--basic-colours``): the seven demo colours alone teach the
# encoder to blur the hues between them (purple; benchmarks/results/extra_colours.txt).
EXTRA_COLOURS = {"pink": (245, 130, 190), "brown": (135, 85, 40), "cyan": (40, 200, 210), "lime": (160, 215, 50)}
PRETRAINING_COLOURS = {**COLOURS, **EXTRA_COLOURS}
ALL_SHAPES = SHAPES + HELD_OUT_SHAPES
ALL_COLOURS = {**COLOURS, **HELD_OUT_COLOURS}
_RGB = {**ALL_COLOURS, **EXTRA_COLOURS}
BACKGROUNDS = ("plain", "gradient", "noise", "texture")
NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight")


@dataclass(frozen=True)
class SceneObject:
    """One shape: its kind, colour, size word and normalized box / centre."""

    shape: str
    colour: str
    size: str  # "small" | "medium" | "large"
    box: tuple[float, float, float, float]  # x_min, y_min, x_max, y_max

    @property
    def centre(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)

    @property
    def point(self) -> dict[str, float]:
        x, y = self.centre
        return {"x": x, "y": y}

    @property
    def box_dict(self) -> dict[str, float]:
        return dict(zip(("x_min", "y_min", "x_max", "y_max"), self.box))

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"


@dataclass
class Scene:
    """A rendered scene: ``image`` (RGB PIL) and ``objects`` in left-to-right order."""

    seed: int
    image: Image.Image
    objects: list[SceneObject]
    background: str
    meta: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- rendering


def _polygon(shape: str, cx: float, cy: float, rx: float, ry: float) -> list[tuple[float, float]] | None:
    def ring(n: int, start: float, radii: Sequence[float]) -> list[tuple[float, float]]:
        pts = []
        for k in range(n * len(radii)):
            a = start + 2 * math.pi * k / (n * len(radii))
            r = radii[k % len(radii)]
            pts.append((cx + rx * r * math.cos(a), cy + ry * r * math.sin(a)))
        return pts

    if shape == "square":
        return [(cx - rx * 0.85, cy - ry * 0.85), (cx + rx * 0.85, cy - ry * 0.85),
                (cx + rx * 0.85, cy + ry * 0.85), (cx - rx * 0.85, cy + ry * 0.85)]
    if shape == "triangle":
        return ring(3, -math.pi / 2, (1.0,))
    if shape == "diamond":
        return ring(4, -math.pi / 2, (1.0,))
    if shape == "hexagon":
        return ring(6, 0.0, (1.0,))
    if shape == "star":
        return ring(5, -math.pi / 2, (1.0, 0.42))
    if shape == "pentagon":
        return ring(5, -math.pi / 2, (1.0,))
    if shape == "cross":
        a = 0.36
        return [(cx + rx * u, cy + ry * v) for u, v in ((-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1),
                                                         (-a, 1), (-a, a), (-1, a), (-1, -a), (-a, -a))]
    if shape == "trapezoid":
        return [(cx - rx * 0.5, cy - ry * 0.7), (cx + rx * 0.5, cy - ry * 0.7), (cx + rx, cy + ry * 0.7), (cx - rx, cy + ry * 0.7)]
    if shape == "kite":
        return [(cx, cy - ry), (cx + rx * 0.7, cy - ry * 0.3), (cx, cy + ry), (cx - rx * 0.7, cy - ry * 0.3)]
    return None  # circle


def _background(rng: random.Random, w: int, h: int, kind: str) -> Image.Image:
    def tone() -> tuple[int, int, int]:
        base = rng.randint(95, 185)
        return tuple(max(0, min(255, base + rng.randint(-22, 22))) for _ in range(3))  # type: ignore[return-value]

    c1 = tone()
    img = Image.new("RGB", (w, h), c1)
    if kind == "gradient":
        ramp = Image.linear_gradient("L").transpose(rng.choice((Image.ROTATE_90, Image.ROTATE_180, Image.ROTATE_270, Image.FLIP_TOP_BOTTOM)))
        img = Image.composite(Image.new("RGB", (w, h), tone()), img, ramp.resize((w, h), Image.BILINEAR))
    elif kind == "noise":
        noise = Image.frombytes("L", (w, h), rng.randbytes(w * h)).convert("RGB")
        img = Image.blend(img, noise, rng.uniform(0.08, 0.22))
    elif kind == "texture":
        draw = ImageDraw.Draw(img)
        c2 = tuple(max(0, min(255, c + rng.choice((-1, 1)) * rng.randint(12, 24))) for c in c1)
        step = rng.randint(4, 14)
        if rng.random() < 0.5:  # stripes
            vertical = rng.random() < 0.5
            for k in range(0, w if vertical else h, 2 * step):
                draw.rectangle((k, 0, k + step - 1, h) if vertical else (0, k, w, k + step - 1), fill=c2)
        else:  # checkerboard
            for y in range(0, h, step):
                for x in range(((y // step) % 2) * step, w, 2 * step):
                    draw.rectangle((x, y, x + step - 1, y + step - 1), fill=c2)
    return img


def _size_word(frac: float) -> str:
    return "small" if frac < 0.18 else "large" if frac > 0.24 else "medium"


def make_scene(
    seed: int,
    *,
    size: tuple[int, int] | None = None,
    n_objects: int | None = None,
    shapes: Sequence[str] = SHAPES,
    colours: Sequence[str] = tuple(COLOURS),
    include: Sequence[tuple[str, str]] = (),
    background: str | None = None,
    max_objects: int = 6,
) -> Scene:
    """Render one scene, deterministic for ``seed`` and the other arguments.

    size: (width, height) in pixels; when None, 128–384 wide with an aspect ratio of 0.6–1.6.
    n_objects: 0–6 objects; random when None (at least ``len(include)``).
    shapes / colours: the vocabulary to draw from (pass ``ALL_SHAPES`` / ``ALL_COLOURS`` to allow
        the held-out concepts anywhere).
    include: (colour, shape) pairs that must appear, e.g. ``[("red", "star")]``.
    background: one of ``BACKGROUNDS``; random when None.
    """
    rng = random.Random(seed)
    if size is None:
        width = rng.randint(128, 384)
        size = (width, int(width / rng.uniform(0.6, 1.6)))
    w, h = size
    if n_objects is None:
        n_objects = rng.randint(max(0, len(include)), max_objects)
    n_objects = max(n_objects, len(include))
    background = background or rng.choice(BACKGROUNDS)
    img = _background(rng, w, h, background)
    draw = ImageDraw.Draw(img)
    short = min(w, h)
    wanted = list(include) + [(rng.choice(list(colours)), rng.choice(list(shapes))) for _ in range(n_objects - len(include))]
    placed: list[SceneObject] = []
    for colour, shape in wanted:
        for _ in range(60):  # rejection sampling: overlaps allowed, but every centre stays visible
            frac = rng.uniform(0.12, 0.3)  # diameter relative to the short side
            rx = ry = frac * short / 2
            cx = rng.uniform(rx + 1, w - rx - 1)
            cy = rng.uniform(ry + 1, h - ry - 1)
            box = ((cx - rx) / w, (cy - ry) / h, (cx + rx) / w, (cy + ry) / h)
            ok = all(
                math.dist((cx / w, cy / h), o.centre) > 0.6 * max(box[2] - box[0], o.box[2] - o.box[0], box[3] - box[1], o.box[3] - o.box[1])
                for o in placed
            )
            if ok:
                break
        else:
            continue
        rgb = tuple(max(0, min(255, c + rng.randint(-14, 14))) for c in _RGB[colour])
        poly = _polygon(shape, cx, cy, rx, ry)
        if poly is None:
            draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=rgb)
            xs, ys = (cx - rx, cx + rx), (cy - ry, cy + ry)
        else:
            draw.polygon(poly, fill=rgb)
            xs, ys = [p[0] for p in poly], [p[1] for p in poly]
        tight = (max(0.0, min(xs) / w), max(0.0, min(ys) / h), min(1.0, max(xs) / w), min(1.0, max(ys) / h))
        placed.append(SceneObject(shape, colour, _size_word(frac), tight))
    # Later objects are drawn on top; keep their draw order in meta, list them left to right.
    objects = sorted(placed, key=lambda o: (o.centre[0], o.centre[1]))
    return Scene(seed=seed, image=img, objects=objects, background=background, meta={"size": size})


# ---------------------------------------------------------------- language


def plural(shape: str) -> str:
    return shape + "es" if shape.endswith(("x", "s")) else shape + "s"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _where(o: SceneObject) -> str:
    x, y = o.centre
    col = "left" if x < 1 / 3 else "right" if x > 2 / 3 else "centre"
    row = "top" if y < 1 / 3 else "bottom" if y > 2 / 3 else "middle"
    if (row, col) == ("middle", "centre"):
        return "in the centre"
    if row == "middle":
        return f"on the {col}"
    if col == "centre":
        return f"at the {row}"
    return f"at the {row} {col}"


def _join(items: Sequence[str]) -> str:
    if not items:
        return ""
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def caption(scene: Scene, length: str = "normal") -> str:
    """The reference caption of ``scene`` for ``length`` in short / normal / long."""
    objs = scene.objects
    if length == "short":
        if not objs:
            return "An empty picture."
        n = len(objs)
        return f"{NUMBER_WORDS[n].capitalize()} shape{'s' if n > 1 else ''}."
    if not objs:
        return f"An empty {scene.background} background." if length == "long" else "Nothing but a background."
    if length == "normal":
        return _join([f"{_article(o.colour)} {o.name}" for o in objs]).capitalize() + "."
    parts = [f"{_article(o.size)} {o.size} {o.name} {_where(o)}" for o in objs]
    return _join(parts).capitalize() + f" on a {scene.background} background."


def describe(o: SceneObject) -> str:
    return f"{_article(o.colour)} {o.name} {_where(o)}"


def _matches(o: SceneObject, colour: str | None, shape: str | None) -> bool:
    return (colour is None or o.colour == colour) and (shape is None or o.shape == shape)


def _phrase(colour: str | None, shape: str | None, many: bool) -> str:
    if shape is None:
        return f"{colour} {'things' if many else 'thing'}"
    noun = plural(shape) if many else shape
    return f"{colour} {noun}" if colour else noun


def object_prompt(rng: random.Random, colour: str | None, shape: str | None) -> str:
    """How a person names what to point at or detect: by shape, colour or both."""
    many = rng.random() < 0.5
    return _phrase(colour, shape, many)


def _pick_target(rng: random.Random, scene: Scene, shapes: Sequence[str], colours: Sequence[str]) -> tuple[str | None, str | None]:
    """A (colour, shape) filter: usually one that exists in the scene, sometimes one that does not."""
    if scene.objects and rng.random() < 0.8:
        o = rng.choice(scene.objects)
        kind = rng.random()
        return (o.colour, o.shape) if kind < 0.4 else (None, o.shape) if kind < 0.75 else (o.colour, None)
    kind = rng.random()
    colour = rng.choice(list(colours))
    shape = rng.choice(list(shapes))
    return (colour, shape) if kind < 0.4 else (None, shape) if kind < 0.75 else (colour, None)


def _unique(scene: Scene, key) -> list[SceneObject]:
    counts: dict[Any, int] = {}
    for o in scene.objects:
        counts[key(o)] = counts.get(key(o), 0) + 1
    return [o for o in scene.objects if counts[key(o)] == 1]


def _query(rng: random.Random, scene: Scene, shapes: Sequence[str], colours: Sequence[str]) -> tuple[dict, dict]:
    objs = scene.objects
    kinds = ["count", "exists", "count_all"]
    if _unique(scene, lambda o: o.shape):
        kinds += ["colour_of", "colour_of"]
    if _unique(scene, lambda o: o.colour):
        kinds += ["shape_of", "shape_of"]
    if [o for o in _unique(scene, lambda o: (o.colour, o.shape)) if abs(o.centre[0] - 0.5) > 0.06]:
        kinds.append("side")
    if objs:
        kinds += ["ref_point", "ref_box"]
    kind = rng.choice(kinds)
    refs = None
    if kind == "count" or kind == "exists":
        colour, shape = _pick_target(rng, scene, shapes, colours)
        hits = [o for o in objs if _matches(o, colour, shape)]
        if kind == "count":
            question = f"How many {_phrase(colour, shape, True)} are there?"
            answer = str(len(hits))
        else:
            question = f"Is there {_article(colour or shape)} {_phrase(colour, shape, False)}?"
            answer = "yes" if hits else "no"
        seen = _join([describe(o) for o in hits]) if hits else f"no {_phrase(colour, shape, True)}"
        reasoning = f"I see {seen}."
    elif kind == "count_all":
        question = rng.choice(("How many shapes are there?", "How many objects are there?"))
        answer = str(len(objs))
        reasoning = f"I see {_join([describe(o) for o in objs]) or 'nothing'}."
    elif kind == "colour_of":
        o = rng.choice(_unique(scene, lambda o: o.shape))
        question = f"What colour is the {o.shape}?"
        answer = o.colour
        reasoning = f"The {o.shape} is {_where(o)} and it is {o.colour}."
    elif kind == "shape_of":
        o = rng.choice(_unique(scene, lambda o: o.colour))
        question = f"What shape is the {o.colour} thing?"
        answer = o.shape
        reasoning = f"The {o.colour} thing is {_where(o)} and it is {_article(o.shape)} {o.shape}."
    elif kind == "side":
        o = rng.choice([o for o in _unique(scene, lambda o: (o.colour, o.shape)) if abs(o.centre[0] - 0.5) > 0.06])
        question = f"Which side is the {o.name} on?"
        answer = "left" if o.centre[0] < 0.5 else "right"
        reasoning = f"The {o.name} is {_where(o)}."
    else:  # a spatial reference at an object
        o = rng.choice(objs)
        if kind == "ref_point":
            x, y = o.centre
            refs = [[round(x, 4), round(y, 4)]]
        else:
            refs = [[round(v, 4) for v in o.box]]
        if rng.random() < 0.5:
            question, answer = "What colour is this?", o.colour
        else:
            question, answer = "What shape is this?", o.shape
        reasoning = f"There is {describe(o)}."
    request: dict[str, Any] = {"skill": "query", "question": question}
    if refs is not None:
        request["spatial_refs"] = refs
    return request, {"answer": answer, "reasoning": {"text": reasoning}}


def make_task(
    scene: Scene,
    skill: str,
    rng: random.Random,
    *,
    shapes: Sequence[str] = SHAPES,
    colours: Sequence[str] = tuple(COLOURS),
    target: tuple[str | None, str | None] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One request about ``scene`` (API shape, no image) and its correct answer.

    skill: "query", "caption", "point" or "detect".
    target: for point/detect, the (colour, shape) to ask for (either may be None); random when None.
    Returns ``(request, answer)``: for query ``{"answer", "reasoning": {"text"}}``; for caption
    ``{"caption"}``; for point ``{"points": [...]}``; for detect ``{"boxes": [...]}``.
    """
    if skill == "query":
        return _query(rng, scene, shapes, colours)
    if skill == "caption":
        length = rng.choice(("short", "normal", "long"))
        return {"skill": "caption", "length": length}, {"caption": caption(scene, length)}
    if skill not in ("point", "detect"):
        raise ValueError(f"skill: expected query, caption, point or detect (got {skill!r})")
    colour, shape = target if target is not None else _pick_target(rng, scene, shapes, colours)
    hits = [o for o in scene.objects if _matches(o, colour, shape)]
    request = {"skill": skill, "object": object_prompt(rng, colour, shape)}
    if skill == "point":
        return request, {"points": [o.point for o in hits]}
    return request, {"boxes": [o.box_dict for o in hits]}
