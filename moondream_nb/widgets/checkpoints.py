"""``CheckpointBrowser``: a finetune's saved checkpoints, compared side by side on the same images."""

from __future__ import annotations

import traceback
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import ipywidgets
import traitlets as t

from .. import metrics, protocol, rewards
from ._base import ImageData, Panel, esm
from ..client.image_input import read_image
from ._image import display_bytes
from ._shapes import color_of, output_cell, output_shapes, truth_compact

BASE = -1  # the column of the base model (no finetune)
_PREVIEW_SIDE = 512  # the cells are small: no need to ship full-size images


def _when(ms: Any) -> str:
    if not protocol.is_int(ms):
        return "–"
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _score(skill: str, output: Mapping, truth: Any) -> float | None:
    """The reward of ``output`` against ``truth`` (point/detect formulas; exact match for query)."""
    if truth is None:
        return None
    if skill == "query":
        return metrics.answer_match(output.get("answer"), truth)
    return rewards.reward(skill, output, truth)


class CheckpointBrowser(Panel):
    """Saved checkpoints as a table; tick several and run them on the same images side by side.

    Args:
        ft: a ``Finetune``.
        images: the images to compare on (any image input; a single image is fine).
        request: the skill request, e.g. ``{"skill": "detect", "object": "star"}`` or
            ``{"skill": "query", "question": "..."}`` (no image: each of ``images`` is used).
        ground_truth: one per image, for scores: point ``{"points"|"boxes"}``, detect
            ``{"boxes"}`` (the reward formulas), query the expected answer (exact match).
        base: offer the base model as a column too.
        vl: the inference client (default ``ft.vl()``, same endpoint and key).

    Attributes:
        results: ``{label: [output per image]}`` of the last run; ``frame``: scores (pandas).

    Raises:
        ValidationError: naming the field (``request.skill``, ``ground_truth``, ...).
    """

    static_follows = 3.0  # the saved picture follows the panel 3 s after its last change

    _esm = esm("core.js", "checkpoints.js")

    skill = t.Unicode("").tag(sync=True)
    prompt = t.Unicode("").tag(sync=True)
    checkpoints = t.List(t.Dict()).tag(sync=True)
    chosen = t.List(t.Int()).tag(sync=True)
    _images = t.List(t.Instance(ImageData)).tag(sync=True, **ipywidgets.widget_serialization)
    image_sizes = t.List(t.List(t.Int())).tag(sync=True)
    columns = t.List(t.Dict()).tag(sync=True)
    status = t.Unicode("").tag(sync=True)
    offer_base = t.Bool(True).tag(sync=True)
    truths = t.List(t.Dict()).tag(sync=True)  # truth_compact per image, drawn as white dashed marks
    show_truth = t.Bool(True).tag(sync=True)

    def __init__(self, ft: Any, images: Any, request: Mapping, ground_truth: Sequence | None = None, *,
                 base: bool = True, vl: Any = None, width: int = 900, **kwargs: Any) -> None:
        images = list(images) if isinstance(images, (list, tuple)) else [images]
        if not images:
            protocol.fail("images", "must not be empty")
        protocol.check_dict(request, "request")
        skill = request.get("skill")
        if skill not in protocol.SKILLS:
            protocol.fail("request.skill", f"must be one of {', '.join(protocol.SKILLS)}", skill)
        protocol.check_text(request.get("question" if skill == "query" else "object"),
                            f"request.{'question' if skill == 'query' else 'object'}")
        if ground_truth is not None:
            ground_truth = protocol.check_list(ground_truth, "ground_truth")
            if len(ground_truth) != len(images):
                protocol.fail("ground_truth", f"expected {len(images)} items, one per image", len(ground_truth))
            if skill != "query":
                for i, gt in enumerate(ground_truth):
                    protocol.validate_ground_truth(skill, gt, f"ground_truth[{i}]")
        pils = [read_image(img, f"images[{i}]") for i, img in enumerate(images)]
        encoded = [display_bytes(p, _PREVIEW_SIDE) for p in pils]
        text = request.get("question") if skill == "query" else request.get("object")
        super().__init__(skill=skill, prompt=f"{skill}: {text}", width=width, _images=[ImageData(data=e[0], mime=e[1]) for e in encoded],
                         image_sizes=[list(e[2]) for e in encoded],
                         truths=[truth_compact(gt) if skill != "query" else {} for gt in (ground_truth or [])], **kwargs)
        self._ft, self._vl, self._pils, self._sources = ft, vl, pils, images
        self.request, self.ground_truth, self.offer_base = dict(request), ground_truth, bool(base)
        self.results: dict[str, list[dict]] = {}
        self.on_msg(self._on_front_end_msg)
        self.refresh()

    # --- actions ----------------------------------------------------------------------

    def refresh(self) -> None:
        """Re-list the saved checkpoints."""
        rows = [{"step": c["step"], "checkpoint_id": c.get("checkpoint_id", ""), "created": _when(c.get("created_at_ms")),
                 "expires": _when(c.get("expires_at_ms"))}  # "–" when none is given, NaT in checkpoints_frame
                for c in self._ft.iter_checkpoints()]
        self.checkpoints = rows
        steps = {r["step"] for r in rows}
        self.chosen = [s for s in self.chosen if s in steps or (s == BASE and self.offer_base)]

    def save(self) -> dict:
        """Save the finetune's current step as a checkpoint (``ft.save_checkpoint()``) and re-list."""
        result = self._ft.save_checkpoint()
        self.refresh()
        return result

    def delete(self, step: int) -> None:
        """Delete the saved checkpoint at ``step`` and drop its column."""
        protocol.validate_step(step)
        self._ft.delete_checkpoint(step)
        self.columns = [c for c in self.columns if c["step"] != step]
        self.results.pop(f"step {step}", None)
        self.refresh()

    def run(self, steps: Sequence[int] | None = None) -> dict[str, list[dict]]:
        """Run the request on every image with each chosen checkpoint (``BASE`` = -1 for the base).

        Args:
            steps: checkpoint steps (default :attr:`chosen`; when none is chosen, the base model
                (if offered) and every saved checkpoint).

        Returns:
            :attr:`results`: ``{label: [output per image]}``.
        """
        if steps is None:
            steps = list(self.chosen) or ([BASE] if self.offer_base else []) + [c["step"] for c in self.checkpoints]
        vl = self._vl if self._vl is not None else self._ft.vl()
        columns, results = [], {}
        # A model keeps its colour whichever others run beside it: base first, then each saved step.
        palette = [BASE] + sorted(c["step"] for c in self.checkpoints)
        for k, step in enumerate(steps):
            model = None if step == BASE else self._ft.model(step)
            label = "base" if step == BASE else f"step {step}"
            outputs, cells = [], []
            for i, image in enumerate(self._sources):
                self.status = f"running {label} on image {i + 1}/{len(self._sources)}…"
                out = self._infer(vl, image, model)
                truth = self.ground_truth[i] if self.ground_truth is not None else None
                score = _score(self.skill, out, truth)
                outputs.append(out)
                cells.append(output_cell(self.skill, out, score))
            results[label] = outputs
            columns.append({"step": step, "label": label, "cells": cells,
                            "color": color_of(palette.index(step) if step in palette else len(palette) + k)})
        self.results, self.columns = results, columns
        self.chosen = list(steps)  # the ticks say what is shown
        self.status = f"ran {len(columns)} model{'' if len(columns) == 1 else 's'} on {len(self._sources)} image" + (
            "" if len(self._sources) == 1 else "s")
        return results

    def _infer(self, vl: Any, image: Any, model: str | None) -> dict:
        req = self.request
        settings = req.get("settings")
        if self.skill == "point":
            return vl.point(image, req["object"], settings=settings, model=model)
        if self.skill == "detect":
            return vl.detect(image, req["object"], settings=settings, model=model)
        return vl.query(image, req["question"], settings=settings, reasoning=bool(req.get("reasoning")), model=model)

    @property
    def frame(self) -> Any:
        """Scores of the last run: one column per model, one row per image, plus ``mean`` (pandas)."""
        from ..dataframes import scores_frame

        return scores_frame({c["label"]: [cell.get("score") for cell in c["cells"]] for c in self.columns})

    def _on_front_end_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if not isinstance(content, dict):
            return
        try:
            kind = content.get("type")
            if kind == "run":
                self.run()
            elif kind == "save":
                self.save()
                self.status = "saved"
            elif kind == "delete":
                self.delete(int(content["step"]))
                self.status = f"deleted step {content['step']}"
            elif kind == "refresh":
                self.refresh()
        except Exception as exc:
            self.status = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()

    # --- static rendering -------------------------------------------------------------

    def to_figure(self) -> Any:
        """A matplotlib ``Figure``: images in rows, models in columns, with scores."""
        from .. import plots

        if not self.columns:
            return plots.canvas_figure(self._pils[0], [], title=f"{self.prompt} (no run yet)")
        labels = [c["label"] for c in self.columns]
        outputs = [[output_shapes(self.skill, o) for o in self.results.get(lbl, [])] for lbl in labels]
        scores = [[cell.get("score") for cell in c["cells"]] for c in self.columns]
        answers = [[cell.get("answer", "") for cell in c["cells"]] for c in self.columns]
        return plots.checkpoints_figure(self._pils, self.skill, labels, outputs, scores, answers)
