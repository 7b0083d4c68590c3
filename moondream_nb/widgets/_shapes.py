"""Layers: the points and boxes a canvas draws, as plain normalized dicts.

One shape flows through every panel (DESIGN §7): a point ``{"type": "point", "x", "y"}`` or a box
``{"type": "box", "x_min", "y_min", "x_max", "y_max"}``, each optionally with ``color`` (CSS),
``label`` (text) and ``group`` (an int, e.g. the rollout it belongs to). Coordinates are 0-1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .. import protocol
from ..protocol import BOX_KEYS

_OPTIONAL = {"color": str, "label": str, "group": int}

# Distinct, colour-blind-friendlier palette (Tableau 10 + extras); rollout i gets PALETTE[i % n].
PALETTE = (
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac", "#17becf", "#bcbd22", "#8c564b", "#e377c2", "#1f77b4", "#d62728",
)


def color_of(i: int) -> str:
    """The palette colour of item ``i`` (wraps around)."""
    return PALETTE[i % len(PALETTE)]


def normalize_shape(item: Any, path: str) -> dict:
    """Validate one shape and return it with an explicit ``type``.

    Raises:
        ValidationError: naming the field, e.g. ``layers[2].x_max``.
    """
    if not isinstance(item, Mapping):
        protocol.fail(path, f"must be a point {{x, y}} or a box {{x_min, y_min, x_max, y_max}}, not {type(item).__name__}")
    kind = item.get("type") or ("box" if "x_min" in item else "point")
    if kind == "point":
        protocol.check_point(dict(item), path)
        out = {"type": "point", "x": float(item["x"]), "y": float(item["y"])}
    elif kind == "box":
        protocol.check_box(dict(item), path)
        out = {"type": "box", **{k: float(item[k]) for k in BOX_KEYS}}
    else:
        protocol.fail(protocol.join(path, "type"), "must be 'point' or 'box'", kind)
    for key, typ in _OPTIONAL.items():
        value = item.get(key)
        if value is None:
            continue
        if not isinstance(value, typ) or isinstance(value, bool):
            protocol.fail(protocol.join(path, key), f"must be a {typ.__name__}", value)
        out[key] = value
    return out


def normalize_layers(value: Any, path: str = "layers") -> list[dict]:
    """Shapes from a list of shapes or an API-shaped dict ``{"points": [...], "boxes"|"objects": [...]}``."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        items: list = []
        for key in ("points", "boxes", "objects"):
            for i, item in enumerate(value.get(key) or []):
                items.append((item, f"{path}.{key}[{i}]"))
        unknown = set(value) - {"points", "boxes", "objects"}
        if unknown:
            protocol.fail(f"{path}.{sorted(unknown)[0]}", "unknown key; expected points, boxes or objects")
        return [normalize_shape(item, where) for item, where in items]
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        protocol.fail(path, f"must be a list of points and boxes, not {type(value).__name__}")
    return [normalize_shape(item, protocol.join(path, i)) for i, item in enumerate(value)]


def api_point(shape: Mapping) -> dict:
    return {"x": shape["x"], "y": shape["y"]}


def api_box(shape: Mapping) -> dict:
    return {k: shape[k] for k in BOX_KEYS}


def split(shapes: Sequence[Mapping]) -> tuple[list[dict], list[dict]]:
    """``(points, boxes)`` in API shape from a list of shapes."""
    points = [api_point(s) for s in shapes if s["type"] == "point"]
    boxes = [api_box(s) for s in shapes if s["type"] == "box"]
    return points, boxes


def output_shapes(skill: str, output: Mapping | None) -> list[dict]:
    """The shapes of one rollout/inference output: point ``points``, detect ``objects``, query grounding."""
    output = output or {}
    if skill == "point":
        return [{"type": "point", "x": p["x"], "y": p["y"]} for p in output.get("points") or []]
    if skill == "detect":
        return [{"type": "box", **{k: o[k] for k in BOX_KEYS}} for o in output.get("objects") or []]
    shapes = []
    reasoning = output.get("reasoning") or {}
    for ground in (reasoning.get("grounding") or []) if isinstance(reasoning, Mapping) else []:
        for pt in ground.get("points") or []:
            if isinstance(pt, Sequence) and len(pt) == 2:
                shapes.append({"type": "point", "x": pt[0], "y": pt[1]})
    return shapes


def truth_compact(ground_truth: Mapping | None) -> dict:
    """What a panel draws of a ground truth (point ``{"points"|"boxes"}``, detect ``{"boxes"}``):
    ``{"p": [[x, y], ...], "b": [[x_min, y_min, x_max, y_max], ...]}``; ``{}`` for none."""
    if not ground_truth:
        return {}
    out: dict[str, Any] = {}
    if ground_truth.get("points"):
        out["p"] = [[float(p["x"]), float(p["y"])] for p in ground_truth["points"]]
    if ground_truth.get("boxes"):
        out["b"] = [[float(b[k]) for k in BOX_KEYS] for b in ground_truth["boxes"]]
    return out


def output_cell(skill: str, output: Mapping, score: float | None = None) -> dict:
    """What a panel draws of one model output: ``{"p": [[x, y], ...]}`` (point), ``{"b": [[x_min,
    y_min, x_max, y_max], ...]}`` (detect) or ``{"answer": str}`` (query), with its ``score``."""
    cell: dict[str, Any] = {"score": score}
    if skill == "point":
        cell["p"] = [[p["x"], p["y"]] for p in output.get("points") or []]
    elif skill == "detect":
        cell["b"] = [[o[k] for k in BOX_KEYS] for o in output.get("objects") or []]
    else:
        cell["answer"] = output.get("answer", "")
    return cell
