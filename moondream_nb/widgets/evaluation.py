"""``EvaluationPanel``: an :class:`~moondream_nb.evaluation.Evaluation` to read and click through.

Checkpoints are the columns of a table of metrics; the images come worst first (by one model's
metric, or by how much two models disagree); clicking one draws the ground truth and each model's
output over it; detect adds a precision-recall curve per model.
"""

from __future__ import annotations

import math
from typing import Any

import ipywidgets
import traitlets as t

from ..evaluation.result import DEFAULT_METRIC
from ._base import ImageData, Panel, esm
from ._image import display_bytes
from ._shapes import color_of, output_cell, truth_compact

_DETAIL_SIDE = 1024  # the clicked image: large enough to judge boxes, small to send on a click
_ROWS = 200  # images listed at once (the worst ones; the frames hold every row)

# (summary column, what the table calls it, digits) per skill, in table order.
_TABLE = {
    "detect": [("ap", "AP 0.50:0.95", 3), ("ap50", "AP50", 3), ("ap75", "AP75", 3), ("precision", "precision", 3),
               ("recall", "recall", 3), ("f1", "F1", 3), ("tp", "true positives", 0), ("fp", "false positives", 0),
               ("fn", "misses", 0), ("reward", "mean reward", 3), ("ms", "median ms per call", 0)],
    "point": [("precision", "precision", 3), ("recall", "recall", 3), ("f1", "F1", 3), ("tp", "hits", 0),
              ("fp", "false points", 0), ("fn", "misses", 0), ("reward", "mean reward", 3),
              ("ms", "median ms per call", 0)],
    "query": [("accuracy", "accuracy", 3), ("correct", "correct", 0), ("ms", "median ms per call", 0)],
}


class EvaluationPanel(Panel):
    """An evaluation's numbers and pictures: metrics per model, the worst images, overlays on click.

    Args:
        evaluation: what :func:`moondream_nb.evaluate` returned.
        sort: the initial order of the images: ``"worst <model>"``, ``"disagreement <a> vs <b>"``
            or ``"dataset"`` (default: the worst of the last model).
        width: display width in CSS pixels.

    Attributes (synced): ``sort`` (the order shown; one of ``sort_options``), ``selected`` (the
    case index shown large, -1 for none), ``hidden`` (model labels not drawn).
    """

    static_follows = 3.0

    _esm = esm("core.js", "evaluation.js")

    skill = t.Unicode("").tag(sync=True)
    models = t.List(t.Dict()).tag(sync=True)  # {label, color}
    metric = t.Unicode("").tag(sync=True)
    table = t.List(t.Dict()).tag(sync=True)  # {name, digits, values: [per model]}
    curves = t.Dict().tag(sync=True)  # detect: {label: [precision at recall 0, .01, ... 1]}
    sort_options = t.List(t.Unicode()).tag(sync=True)
    sort = t.Unicode("").tag(sync=True)
    listing = t.List(t.Dict()).tag(sync=True)  # {i, image_id, prompt, values: [per model], key}
    total = t.Int(0).tag(sync=True)
    selected = t.Int(-1).tag(sync=True)
    shown = t.Dict().tag(sync=True)  # {i, image_id, prompt, size, truth, cells: [per model], answer?}
    hidden = t.List(t.Unicode()).tag(sync=True)
    _image = t.Instance(ImageData, allow_none=True).tag(sync=True, **ipywidgets.widget_serialization)

    def __init__(self, evaluation: Any, *, sort: str | None = None, width: int = 960, **kwargs: Any) -> None:
        ev = evaluation
        self.evaluation = ev
        labels = list(ev.models)
        options = [f"worst {m}" for m in labels]
        options += [f"disagreement {a} vs {b}" for k, a in enumerate(labels) for b in labels[k + 1:]]
        options.append("dataset")
        summary = {m: ev.summary_of(m) for m in labels}
        table = [{"name": name, "digits": digits, "values": [_plain(summary[m].get(col)) for m in labels]}
                 for col, name, digits in _TABLE[ev.skill]]
        curves = {m: ev.pr_curve(m)[1] for m in labels} if ev.skill == "detect" else {}
        metric = DEFAULT_METRIC[ev.skill]
        self._images: dict[int, ImageData] = {}
        self._sizes: dict[int, list[int]] = {}
        super().__init__(skill=ev.skill, models=[{"label": m, "color": color_of(k)} for k, m in enumerate(labels)],
                         metric=metric, table=table, curves=curves, sort_options=options, total=len(ev.cases),
                         width=width, **kwargs)
        self.observe(lambda _: self._list(), names=["sort"])
        self.observe(lambda _: self._show(), names=["selected"])
        self.sort = sort if sort is not None else options[len(labels) - 1]
        if self.sort not in options:
            raise ValueError(f"sort: must be one of {', '.join(options)} (got {sort!r})")
        self._list()
        if self.listing:
            self.selected = self.listing[0]["i"]

    # --- what the front end shows -------------------------------------------------------

    def _values(self, i: int) -> list:
        ev = self.evaluation
        return [_plain(ev.row(m, i)[self.metric]) if (m, i) in ev.outputs else None for m in ev.models]

    def _list(self) -> None:
        ev, sort = self.evaluation, self.sort
        rows = []
        for i, case in enumerate(ev.cases):
            values = self._values(i)
            rows.append({"i": i, "image_id": case.image_id, "prompt": case.prompt, "values": values})
        if sort.startswith("worst "):
            k = ev.models.index(sort[len("worst "):])
            for r in rows:
                r["key"] = r["values"][k]
            rows.sort(key=lambda r: (math.inf if r["key"] is None else r["key"]))
        elif sort.startswith("disagreement "):
            a, b = sort[len("disagreement "):].split(" vs ")
            ka, kb = ev.models.index(a), ev.models.index(b)
            for r in rows:
                va, vb = r["values"][ka], r["values"][kb]
                r["key"] = None if va is None or vb is None else vb - va
            rows.sort(key=lambda r: -1 if r["key"] is None else -abs(r["key"]))
        self.listing = rows[:_ROWS]

    def _show(self) -> None:
        ev, i = self.evaluation, self.selected
        if not 0 <= i < len(ev.cases):
            self.shown, self._image = {}, None
            return
        case = ev.cases[i]
        if i not in self._images:  # each image is sent once, on its first click
            data, mime, size = display_bytes(case.item.image, _DETAIL_SIDE)
            self._images[i] = ImageData(data=data, mime=mime)
            self._sizes[i] = list(size)
        values = self._values(i)
        cells = []
        for k, m in enumerate(ev.models):
            out = ev.outputs.get((m, i))
            cells.append(output_cell(ev.skill, out, values[k]) if out is not None else {"score": None, "missing": True})
        shown = {"i": i, "image_id": case.image_id, "prompt": case.prompt, "size": self._sizes[i], "cells": cells,
                 "truth": truth_compact(case.truth) if ev.skill != "query" else {},
                 "answer": case.truth.get("answer") if ev.skill == "query" else None}
        self._image = self._images[i]
        self.shown = shown

    def close(self) -> None:
        images = list(self._images.values())
        super().close()
        for image in images:  # the current one is closed by Panel.close; the rest here
            if image.comm is not None:
                image.close()

    # --- static picture -------------------------------------------------------------------

    def to_figure(self) -> Any:
        """matplotlib: the precision-recall curves (detect) or the main metric per model, with the
        table of metrics beside it."""
        from .. import plots

        labels = [m["label"] for m in self.models]
        return plots.evaluation_figure(self.skill, labels, [m["color"] for m in self.models], self.table,
                                       self.curves)


def _plain(value: Any) -> Any:
    """A JSON-able number (NaN and numpy scalars become None / float)."""
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value
