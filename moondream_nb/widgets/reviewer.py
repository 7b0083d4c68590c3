"""``RolloutReviewer``: score one ``rollouts`` response by click, key, slider or ranking."""

from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping
from typing import Any

import traitlets as t

from .. import protocol
from ._base import ImagePanel, esm
from ._image import MAX_DISPLAY_SIDE, request_image
from ._shapes import color_of, output_shapes, truth_compact
from ._preview import overlay_jpeg

REWARD_MODES = ("binary", "scale", "rank")


def _compact(skill: str, output: Mapping) -> dict:
    """What the browser needs of one rollout: coordinates as short arrays, text for query."""
    out: dict[str, Any] = {}
    if skill == "point":
        out["p"] = [[p["x"], p["y"]] for p in output.get("points") or []]
    elif skill == "detect":
        out["b"] = [[o[k] for k in protocol.BOX_KEYS] for o in output.get("objects") or []]
    else:
        out["answer"] = output.get("answer") or ""
        reasoning = output.get("reasoning")
        if isinstance(reasoning, Mapping) and reasoning.get("text"):
            out["reasoning"] = reasoning["text"]
        out["p"] = [[s["x"], s["y"]] for s in output_shapes(skill, output)]
    return out


def prompt_of(req: Mapping) -> str:
    skill = req.get("skill", "")
    text = req.get("question") if skill == "query" else req.get("object")
    return f"{skill}: {text}" if text else skill


LOOK_ONLY = ("for looking: scores stay in reviewer.rewards and train nothing; reviewer.on_submit(fn) or a "
             "ReviewSession sends them to a train step")


class RolloutReviewer(ImagePanel):
    """The rollouts of one ``rollouts`` response over its image, each in its own colour, with a
    reward control per rollout.

    Rewards: ``"binary"`` click a rollout (its shapes or its legend row) to toggle good (1) / bad
    (0); ``"scale"`` a 0-1 slider per rollout; ``"rank"`` drag legend rows into order (rewards
    evenly spaced from 1 at the top to 0). Keys (panel focused): 1-9 pick a rollout, then 1 / 0
    scores it; Space toggles; arrows move; Enter (or the Submit button) submits.

    Args:
        response: what ``ft.rollouts(...)`` returned (``request``, ``rollouts``, ``rewards``).
        image: the image; default the response's echoed ``request.image_url``.
        rewards: ``"binary"``, ``"scale"`` or ``"rank"``.
        width: display width in CSS pixels; the image is sent at up to twice that on its long
            side (coordinates are normalized, so nothing moves).
        ground_truth: the item's ground truth (point ``{"points"|"boxes"}``, detect ``{"boxes"}``),
            drawn as white dashed marks under the rollouts; ``g`` or the *truth* button toggles it.

    Attributes:
        rewards: one float per rollout, rollout order; starts from the server's ground-truth
            rewards when the response has them, else 0.0.
        selected: the picked rollout (-1 for none).

    Raises:
        ValidationError: naming the field of a malformed response, rewards or mode.
    """

    _esm = esm("core.js", "reviewer.js")

    skill = t.Unicode("").tag(sync=True)
    prompt = t.Unicode("").tag(sync=True)
    has_image = t.Bool(False).tag(sync=True)
    _rollouts = t.List(t.Dict()).tag(sync=True)
    colors = t.List(t.Unicode()).tag(sync=True)
    rewards = t.Any([]).tag(sync=True)  # validated by protocol.check_rewards (errors name rewards[i])
    reward_mode = t.Unicode("binary").tag(sync=True)
    selected = t.Int(-1).tag(sync=True)
    status = t.Unicode("").tag(sync=True)
    truth = t.Dict().tag(sync=True)  # truth_compact(ground_truth)
    scored = t.List(t.Bool()).tag(sync=True)  # per rollout: has a reward been given (by the server or a person)
    show_truth = t.Bool(True).tag(sync=True)
    submittable = t.Bool(False).tag(sync=True)  # a callback is attached: Enter / Submit send the scores somewhere

    def __init__(self, response: Mapping, image: Any = None, rewards: str = "binary", *, width: int = 640,
                 ground_truth: Mapping | None = None, **kwargs: Any) -> None:
        view = protocol.validate_response(response)
        skill, rollouts = view.skill, response["rollouts"]
        if ground_truth is not None:
            protocol.validate_ground_truth(skill, ground_truth, "ground_truth")
        if rewards not in REWARD_MODES:
            protocol.fail("rewards", f"must be one of {', '.join(REWARD_MODES)}", rewards)
        self.response = response
        self.server_rewards = list(view.rewards) if view.rewards is not None else None
        start = list(self.server_rewards) if self.server_rewards is not None else [0.0] * len(rollouts)
        image = image if image is not None else request_image(response)
        self._pil = None
        # Reviewing needs the picture at display size (2x for high-DPI screens), not a 2048-px
        # original: a quarter of the pixels to send and decode before the first paint.
        image_state = ({} if image is None else
                       dict(self._image_state(image, "image", max_side=min(MAX_DISPLAY_SIDE, max(640, 2 * width))),
                            has_image=True))
        super().__init__(
            **image_state, skill=skill, prompt=prompt_of(view.request), reward_mode=rewards,
            width=width, _rollouts=[_compact(skill, r["output"]) for r in rollouts],
            colors=[color_of(i) for i in range(len(rollouts))], rewards=start, truth=truth_compact(ground_truth),
            scored=[self.server_rewards is not None] * len(rollouts), **kwargs)
        self.ground_truth = ground_truth
        self._callbacks: list[Callable[["RolloutReviewer"], Any]] = []
        self.error: BaseException | None = None
        self.on_msg(self._on_front_end_msg)

    @t.validate("rewards")
    def _valid_rewards(self, proposal: Any) -> list[float]:
        return protocol.check_rewards(proposal["value"], len(self.response["rollouts"]))

    @t.observe("rewards")
    def _mark_scored(self, change: Any) -> None:
        old, new = change["old"] or [], change["new"]
        if len(self.scored) == len(new) and len(old) == len(new):
            self.scored = [s or a != b for s, a, b in zip(self.scored, old, new)]

    @property
    def unscored(self) -> list[int]:
        """Rollouts nobody scored yet (no server reward, no click): they count as 0.0 in :meth:`group`."""
        return [i for i, s in enumerate(self.scored) if not s]

    @property
    def rollouts(self) -> list[dict]:
        """The response's rollouts, unchanged."""
        return self.response["rollouts"]

    def group(self) -> dict:
        """An RL group for ``ft.train_step``: the echoed request, the rollouts, :attr:`rewards`.

        Nothing is checked again here: the response was checked when the reviewer was made and
        each change of :attr:`rewards` as it was made.
        """
        return {"mode": "rl", "request": self.response["request"], "rollouts": list(self.rollouts),
                "rewards": [float(r) for r in self.rewards]}

    def on_submit(self, fn: Callable[["RolloutReviewer"], Any]) -> Callable:
        """Call ``fn(reviewer)`` on Enter or the Submit button (usable as a decorator)."""
        if not callable(fn):
            protocol.fail("on_submit", "must be given a callable", fn)
        self._callbacks.append(fn)
        self.submittable = True
        return fn

    def submit(self) -> None:
        """Run the submit callbacks now (what Enter and the Submit button do).

        A callback's exception is kept in :attr:`error`, shown in the panel's status line and
        re-raised, so nothing fails silently.
        """
        self.error = None
        if not self._callbacks:
            self.status = LOOK_ONLY
            return
        try:
            for fn in list(self._callbacks):
                fn(self)
        except Exception as exc:
            self.error = exc
            self.status = f"submit failed: {type(exc).__name__}: {exc}"
            raise
        unscored = len(self.unscored)
        self.status = f"submitted ({len(self._callbacks)} callback{'' if len(self._callbacks) == 1 else 's'})" + (
            f" · {unscored} unscored counted as bad (0)" if unscored else "")

    def _on_front_end_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "submit":
            try:
                if "rewards" in content:  # the front end's latest (its state update may still be queued)
                    self.rewards = content["rewards"]
                self.submit()
            except Exception:
                traceback.print_exc()  # the kernel log / log console; the panel shows the status

    # --- static rendering -------------------------------------------------------------

    def _shapes(self) -> list[list[dict]]:
        return [output_shapes(self.skill, r["output"]) for r in self.rollouts]

    def to_figure(self) -> Any:
        """A matplotlib ``Figure``: rollouts over the image and a legend with rewards."""
        from .. import plots

        answers = [r.get("answer", "") for r in self._rollouts]
        return plots.rollouts_figure(self._pil, self.skill, self._shapes(), list(self.rewards), list(self.colors),
                                     answers, title=self.prompt)

    def _fallback_image(self) -> tuple[str, bytes]:
        if self._pil is None or self.skill == "query":
            return super()._fallback_image()
        shapes = [dict(s, color=self.colors[i], group=i) for i, group in enumerate(self._shapes()) for s in group]
        bad = [i for i, r in enumerate(self.rewards) if not r >= 0.5 and self.scored[i]]
        return overlay_jpeg(self._pil, shapes, faded=bad)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is None or not self.static_fallback:
            return bundle
        data, metadata = bundle
        lines = [f"{self.prompt}"] + [
            f"  #{i + 1} reward {r:.2f}  {self._rollouts[i].get('answer', '')}".rstrip()
            for i, r in enumerate(self.rewards)]
        data["text/plain"] = "\n".join(lines)
        return data, metadata
