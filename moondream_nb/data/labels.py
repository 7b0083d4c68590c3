"""The one label type: what the right answer is for one image and one prompt.

A :class:`Label` is ground truth, a person's annotation and an SFT target at once, in the API's
shapes (API.md): point ``{"points": [{"x", "y"}]}`` (or ``{"boxes": [...]}``), detect
``{"boxes": [{"x_min", "y_min", "x_max", "y_max"}]}``, query ``{"answer", "reasoning"?: {"text"}}``;
coordinates normalized 0–1. Validation is :mod:`moondream_nb.protocol`'s, so a label that
constructs is one the API accepts.
"""

from __future__ import annotations

import json
import numbers
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from .. import protocol
from ..errors import ValidationError

__all__ = ["Label", "LabelKey"]

LabelKey = tuple  # (image_id, skill, prompt, refs_key): one label per key


def _num(value: Any) -> Any:
    # numpy scalars, Fractions and ints become floats; anything else (bool, str, None) is left
    # for protocol to reject with a message that shows it.
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return value


def _plain(value: Any) -> Any:
    # numpy arrays (e.g. an (n, 2) array of points from a DataFrame cell) become lists.
    return value.tolist() if hasattr(value, "tolist") and not isinstance(value, (str, Mapping)) else value


def _point(value: Any) -> Any:
    value = _plain(value)
    if isinstance(value, Mapping):
        return {k: _num(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2:
        return {"x": _num(value[0]), "y": _num(value[1])}
    return value


def _box(value: Any) -> Any:
    value = _plain(value)
    if isinstance(value, Mapping):
        return {k: _num(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 4:
        return dict(zip(protocol.BOX_KEYS, map(_num, value)))
    return value


def _items(value: Any, convert) -> Any:
    value = _plain(value)
    if isinstance(value, (list, tuple)):
        return [convert(v) for v in value]
    return value


def _normalize_target(skill: str, target: Any) -> Any:
    """A copy of ``target`` with plain dicts and float coordinates (tuples accepted)."""
    if not isinstance(target, Mapping):
        return target
    out = dict(target)
    if "points" in out:
        out["points"] = _items(out["points"], _point)
    if "boxes" in out:
        out["boxes"] = _items(out["boxes"], _box)
    if skill == "query" and isinstance(out.get("reasoning"), str):
        out["reasoning"] = {"text": out["reasoning"]}
    if skill == "query" and out.get("reasoning") is None:
        out.pop("reasoning", None)
    return out


def _normalize_refs(refs: Any) -> Any:
    if refs is None or not isinstance(refs, (list, tuple)):
        return refs
    return tuple(tuple(_num(v) for v in r) if isinstance(r, (list, tuple)) else r for r in refs)


@dataclass(frozen=True)
class Label:
    """The right answer for ``skill`` on image ``image_id`` given ``prompt``.

    Attributes:
        image_id: the dataset's stable id of the image (relative path or content hash).
        skill: ``"point"``, ``"detect"`` or ``"query"``.
        prompt: the object to point at / detect, or the question.
        target: the API target: ``{"points": [...]}`` or ``{"boxes": [...]}`` for point,
            ``{"boxes": [...]}`` for detect, ``{"answer": str, "reasoning"?: {"text": str}}``
            for query. Empty lists mean "there is none".
        spatial_refs: query only: ``((x, y), ...)`` or ``((x_min, y_min, x_max, y_max), ...)``.
        meta: free-form JSON-able extras (who labelled, image size, source ids); not part of
            equality.

    Raises:
        ValidationError: any field breaks the API's rules; the message names the field.
    """

    image_id: str
    skill: str
    prompt: str
    target: dict
    spatial_refs: tuple | None = None
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.image_id, str) or not self.image_id:
            protocol.fail("image_id", "must be a non-empty string", self.image_id)
        if self.skill not in protocol.SKILLS:
            protocol.fail("skill", f"must be one of {', '.join(protocol.SKILLS)}", self.skill)
        protocol.check_text(self.prompt, "prompt")
        target = _normalize_target(self.skill, self.target)
        protocol.validate_target(self.skill, target, "target",
                                 reasoning=isinstance(target, dict) and "reasoning" in target)
        refs = _normalize_refs(self.spatial_refs)
        if refs is not None:
            if self.skill != "query":
                protocol.fail("spatial_refs", "only for query labels")
            protocol.check_spatial_refs(refs, "spatial_refs")
        if not isinstance(self.meta, Mapping):
            protocol.fail("meta", "must be a mapping", self.meta)
        object.__setattr__(self, "target", target)
        object.__setattr__(self, "spatial_refs", refs or None)
        object.__setattr__(self, "meta", dict(self.meta))

    # -- constructors that read like the task --------------------------------------------

    @classmethod
    def point(cls, image_id: str, object: str, points: Iterable | None = None, *,
              boxes: Iterable | None = None, meta: Mapping | None = None) -> "Label":
        """A point label: ``points`` as ``(x, y)`` or ``{"x", "y"}`` (or ``boxes`` that count as hits)."""
        if (points is None) == (boxes is None):
            raise ValidationError("a point label needs exactly one of points or boxes", param="target")
        target = {"points": list(points)} if points is not None else {"boxes": list(boxes)}  # type: ignore[arg-type]
        return cls(image_id, "point", object, target, meta=dict(meta or {}))

    @classmethod
    def detect(cls, image_id: str, object: str, boxes: Iterable, *, meta: Mapping | None = None) -> "Label":
        """A detect label: ``boxes`` as ``(x_min, y_min, x_max, y_max)`` or dicts."""
        return cls(image_id, "detect", object, {"boxes": list(boxes)}, meta=dict(meta or {}))

    @classmethod
    def query(cls, image_id: str, question: str, answer: str, *, reasoning: str | None = None,
              spatial_refs: Iterable | None = None, meta: Mapping | None = None) -> "Label":
        """A query label: the answer, optional reasoning text and spatial references."""
        target: dict[str, Any] = {"answer": answer}
        if reasoning is not None:
            target["reasoning"] = {"text": reasoning}
        refs = tuple(spatial_refs) if spatial_refs is not None else None
        return cls(image_id, "query", question, target, refs, dict(meta or {}))

    # -- views -----------------------------------------------------------------------------

    @property
    def refs_key(self) -> str:
        """``spatial_refs`` as canonical JSON (``""`` when none): part of the label's key."""
        return json.dumps([list(r) for r in self.spatial_refs]) if self.spatial_refs else ""

    @property
    def key(self) -> LabelKey:
        """``(image_id, skill, prompt, refs_key)``: a store keeps one label per key."""
        return (self.image_id, self.skill, self.prompt, self.refs_key)

    @property
    def ground_truth(self) -> dict | None:
        """The ``ground_truth`` for rollouts and :mod:`moondream_nb.rewards` (point/detect), else None."""
        return None if self.skill == "query" else json.loads(json.dumps(self.target))

    def request(self, image: Any = None) -> dict:
        """The skill request this label answers (``image`` under key ``image`` when given)."""
        req: dict[str, Any] = {"skill": self.skill}
        if image is not None:
            req["image"] = image
        if self.skill == "query":
            req["question"] = self.prompt
            if self.spatial_refs:
                req["spatial_refs"] = [list(r) for r in self.spatial_refs]
            if "reasoning" in self.target:
                req["reasoning"] = True
        else:
            req["object"] = self.prompt
        return req

    def to_dict(self) -> dict:
        """A JSON-able dict: ``image_id, skill, prompt, target`` (+ ``spatial_refs``, ``meta`` when set)."""
        out: dict[str, Any] = {"image_id": self.image_id, "skill": self.skill, "prompt": self.prompt,
                               "target": json.loads(json.dumps(self.target))}
        if self.spatial_refs:
            out["spatial_refs"] = [list(r) for r in self.spatial_refs]
        if self.meta:
            out["meta"] = dict(self.meta)
        return out

    @classmethod
    def from_dict(cls, data: Any) -> "Label":
        """The inverse of :meth:`to_dict`. Raises ValidationError naming the bad field."""
        protocol.check_dict(data, "label")
        for key in data:
            if key not in ("image_id", "skill", "prompt", "target", "spatial_refs", "meta"):
                protocol.fail(key, "unknown label field; expected image_id, skill, prompt, target, spatial_refs, meta")
        for key in ("image_id", "skill", "prompt", "target"):
            if key not in data:
                protocol.fail(key, "required")
        return cls(data["image_id"], data["skill"], data["prompt"], data["target"],
                   data.get("spatial_refs"), data.get("meta") or {})

    def __repr__(self) -> str:
        if self.skill == "query":
            what = f"answer={self.target['answer']!r}"
        else:
            kind = "points" if "points" in self.target else "boxes"
            what = f"{len(self.target[kind])} {kind}"
        return f"Label({self.image_id!r}, {self.skill}, {self.prompt!r}, {what})"
