"""``TargetEditor``: draw (or type) the right answer for one request; an SFT group from it."""

from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping
from typing import Any

import traitlets as t

from .. import protocol
from ._base import Panel, esm
from ._image import request_image
from ._shapes import normalize_layers, split
from .canvas import ImageCanvas
from .reviewer import prompt_of

NAV_ACTIONS = ("next", "previous", "skip")

# A point target may be boxes instead of points (API: exactly one of the two), hence "box" there.
_MODES = {"point": ("point", ["point", "box", "select", "view"]), "detect": ("box", ["box", "select", "view"]),
          "query": ("view", ["view"])}


class TargetEditor(ImageCanvas):
    """The correct answer to one request, drawn or typed, for an SFT train step.

    point: click to add points (drag to move, Delete removes), or switch to box mode for a
    target of boxes; detect: drag boxes (corner handles resize); query: type the answer (and the reasoning when ``reasoning=True``).

    Args:
        image: the image (required for point and detect; optional for query).
        skill: ``"point"``, ``"detect"`` or ``"query"``.
        object: what to point at / detect (point, detect). question: the question (query).
        initial: a starting target in the API's shape (``{"points"}``/``{"boxes"}``, or
            ``{"answer", "reasoning"}``); rollout outputs' ``{"objects"}`` are accepted too.
        reasoning: query with reasoning (the target then needs reasoning text).
        request: the skill request to train on (default: built from the arguments); e.g. the
            echoed request of a rollouts response.

    Attributes:
        target: the API target, e.g. ``{"points": [...]}``, ``{"boxes": [...]}``,
            ``{"answer": ..., "reasoning": {"text": ...}}``.

    Raises:
        ValidationError: naming the field (``skill``, ``object``, ``initial.boxes[0].x_min``, ...).
    """

    _esm = esm("core.js", "canvas.js", "target.js")

    skill = t.Unicode("").tag(sync=True)
    prompt = t.Unicode("").tag(sync=True)
    has_image = t.Bool(False).tag(sync=True)
    answer = t.Unicode("").tag(sync=True)
    reasoning = t.Bool(False).tag(sync=True)
    reasoning_text = t.Unicode("").tag(sync=True)
    nav = t.Bool(False, help="session keys: Enter/PageDown next, PageUp previous, x skip (see on_nav)").tag(sync=True)

    def __init__(self, image: Any, skill: str, object: str | None = None, question: str | None = None,
                 initial: Mapping | None = None, *, reasoning: bool = False, request: Mapping | None = None,
                 width: int = 720, **kwargs: Any) -> None:
        if skill not in _MODES:
            protocol.fail("skill", "must be one of point, detect, query", skill)
        if skill == "query":
            protocol.check_text(question, "question")
            if object is not None:
                protocol.fail("object", "only for point and detect; query takes question")
        else:
            protocol.check_text(object, "object")
            if question is not None:
                protocol.fail("question", "only for query; point and detect take object")
            if image is None:
                protocol.fail("image", f"required for {skill}")
            if reasoning:
                protocol.fail("reasoning", "only for query")
        mode, modes = _MODES[skill]
        layers, answer, reasoning_text = [], "", ""
        if initial is not None:
            layers, answer, reasoning_text = _initial(skill, initial)
        self._source = image
        self._request = dict(request) if request is not None else None
        state = dict(skill=skill, reasoning=bool(reasoning), answer=answer, reasoning_text=reasoning_text,
                     prompt=prompt_of(self._request or {"skill": skill, "object": object, "question": question}),
                     width=width, **kwargs)
        if image is None:  # query without an image: no canvas, only the text fields
            self._pil = None
            Panel.__init__(self, modes=[], **state)
        else:
            super().__init__(image, layers=layers, mode=mode, modes=modes, has_image=True, **state)
        self._object, self._question = object, question
        self._nav_callbacks: list[Callable[[str], Any]] = []
        self.on_msg(self._on_front_end_msg)

    def on_nav(self, fn: Callable[[str], Any]) -> Callable:
        """Call ``fn(action)`` (``"next"``, ``"previous"`` or ``"skip"``) when a navigation key is
        pressed in the panel (only shown when :attr:`nav` is true; a labeling session sets it)."""
        if not callable(fn):
            protocol.fail("on_nav", "must be given a callable", fn)
        self._nav_callbacks.append(fn)
        return fn

    def _on_front_end_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if not (isinstance(content, dict) and content.get("type") == "nav" and content.get("action") in NAV_ACTIONS):
            return
        try:
            # The front end's latest edits (its state update may still be queued behind this message).
            if "layers" in content and self.has_image:
                self.layers = content["layers"]
            for key in ("answer", "reasoning_text"):
                if isinstance(content.get(key), str):
                    setattr(self, key, content[key])
            for fn in list(self._nav_callbacks):
                fn(content["action"])
        except Exception:
            traceback.print_exc()  # a front-end message has no caller to raise to; the kernel log shows it

    @classmethod
    def from_rollout(cls, response: Mapping, i: int, image: Any = None, **kwargs: Any) -> "TargetEditor":
        """Start from rollout ``i`` of a ``rollouts`` response, to correct the model's own answer.

        The SFT group then trains on the response's echoed request.
        """
        view = protocol.validate_response(response)
        skill, req = view.skill, view.request
        if not protocol.is_int(i) or not 0 <= i < len(view.outputs):
            protocol.fail("i", f"must be a rollout index from 0 to {len(view.outputs) - 1}", i)
        initial = protocol.output_target(skill, view.outputs[i], reasoning=bool(req.get("reasoning")))
        image = image if image is not None else request_image(response)
        return cls(image, skill, object=req.get("object"), question=req.get("question"), initial=initial,
                   reasoning=bool(req.get("reasoning")), request=req, **kwargs)

    @property
    def target(self) -> dict:
        """The target in the API's shape (see the class docstring).

        Raises:
            ValidationError: a point target with both points and boxes, or a detect target with points.
        """
        if self.skill == "query":
            target: dict = {"answer": self.answer}
            if self.reasoning:
                target["reasoning"] = {"text": self.reasoning_text}
            return target
        points, boxes = split(self.layers)
        if self.skill == "detect":
            if points:
                protocol.fail("target", f"a detect target has boxes only (found {len(points)} points)")
            return {"boxes": boxes}
        if points and boxes:
            protocol.fail("target", f"a point target has points or boxes, not both (found {len(points)} points, "
                                    f"{len(boxes)} boxes)")
        return {"boxes": boxes} if boxes else {"points": points}

    def request(self) -> dict:
        """The skill request the SFT group trains on (``image`` is encoded by ``train_step``)."""
        if self._request is not None:
            return dict(self._request)
        req: dict[str, Any] = {"skill": self.skill}
        if self._source is not None:
            image = self._source
            req["image_url" if isinstance(image, str) and image.startswith("data:") else "image"] = image
        if self.skill == "query":
            req["question"] = self._question
            if self.reasoning:
                req["reasoning"] = True
        else:
            req["object"] = self._object
        return req

    def group(self) -> dict:
        """An SFT group for ``ft.train_step``: ``{"mode": "sft", "request", "target"}``.

        Raises:
            ValidationError: naming the field, e.g. ``target.answer`` or ``target.reasoning``.
        """
        target = self.target
        if self.skill == "query" and not self.answer.strip():
            protocol.fail("target.answer", "type the answer first (it is empty)")
        if self.skill == "query" and self.reasoning and not self.reasoning_text.strip():
            protocol.fail("target.reasoning", "type the reasoning first (request.reasoning is true)")
        req = self.request()
        protocol.validate_target(self.skill, target, "target", reasoning=req.get("reasoning") is True)
        return {"mode": "sft", "request": req, "target": target}

    def to_figure(self) -> Any:
        from .. import plots

        if self.skill == "query":
            title = f"{self.prompt}\nanswer: {self.answer}"
            if self._pil is None:
                fig = plots._figure(6, 1.2)
                ax = fig.add_subplot()
                ax.set_axis_off()
                ax.text(0, 0.5, title, va="center", fontsize=10)
                return fig
            return plots.canvas_figure(self._pil, [], title=title)
        return plots.canvas_figure(self._pil, self.layers, title=self.prompt)

    def _fallback_image(self) -> tuple[str, bytes]:
        if self._pil is None or self.skill == "query":
            return super(ImageCanvas, self)._fallback_image()
        return super()._fallback_image()


def _initial(skill: str, initial: Mapping) -> tuple[list[dict], str, str]:
    """Layers, answer and reasoning text from an ``initial`` target (validated, path ``initial``)."""
    protocol.check_dict(initial, "initial")
    if skill == "query":
        answer = initial.get("answer")
        if answer is not None and not isinstance(answer, str):
            protocol.fail("initial.answer", "must be a string", answer)
        reasoning = initial.get("reasoning")
        text = reasoning.get("text") if isinstance(reasoning, Mapping) else reasoning
        if text is not None and not isinstance(text, str):
            protocol.fail("initial.reasoning.text", "must be a string", text)
        return [], answer or "", text or ""
    if "objects" in initial and "boxes" not in initial:
        initial = {"boxes": initial["objects"]}
    if skill == "detect" and initial.get("points"):
        protocol.fail("initial.points", "a detect target has boxes only")
    return normalize_layers(initial, "initial"), "", ""
