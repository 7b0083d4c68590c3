"""What an evaluation found: outputs per (model, case), scored per image, summarized per model.

pandas is imported inside the methods that return frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .. import metrics, rewards
from ..errors import ValidationError

#: The metric ``worst`` and ``disagreement`` sort by when none is named.
DEFAULT_METRIC = {"detect": "f1", "point": "f1", "query": "correct"}


@dataclass(frozen=True)
class Case:
    """One labelled question of the dataset: ``prompt`` on image ``image_id``, with ``truth``
    (the label's target: ``{"boxes": ...}``, ``{"points": ...}`` or ``{"answer": ...}``)."""

    image_id: str
    prompt: str
    truth: Mapping[str, Any]
    item: Any = field(default=None, compare=False, repr=False)  # the dataset item (its image)


class Evaluation:
    """Outputs of ``models`` on ``cases``, scored.

    Attributes:
        skill: ``"detect"``, ``"point"`` or ``"query"``.
        models: the model labels, in the order given (``"base"``, ``"step 20"``, ...).
        cases: the :class:`Case` list, in dataset order.
        outputs: ``{(model label, case index): output}`` (what the inference API answered).
        ms: ``{(model label, case index): milliseconds the call took}``.
        cached: the (model label, case index) pairs read from the cache instead of called.
    """

    def __init__(self, skill: str, models: Sequence[str], cases: Sequence[Case],
                 outputs: Mapping[tuple[str, int], Mapping[str, Any]], ms: Mapping[tuple[str, int], float],
                 cached: set[tuple[str, int]] | None = None) -> None:
        self.skill, self.models, self.cases = skill, list(models), list(cases)
        self.outputs, self.ms, self.cached = dict(outputs), dict(ms), set(cached or ())
        self._rows: list[dict] | None = None

    def __repr__(self) -> str:
        return (f"Evaluation(skill={self.skill!r}, models={self.models}, cases={len(self.cases)}, "
                f"called={len(self.outputs) - len(self.cached)}, cached={len(self.cached)})")

    # --- per image --------------------------------------------------------------------

    def row(self, model: str, index: int) -> dict:
        """The scores of ``model`` on case ``index`` (a row of :attr:`images`)."""
        case, out = self.cases[index], self.outputs[(model, index)]
        row: dict[str, Any] = {"model": model, "image_id": case.image_id, "prompt": case.prompt}
        if self.skill == "query":
            correct = metrics.answer_match(out.get("answer"), case.truth.get("answer"))
            row.update(answer=out.get("answer"), truth=case.truth.get("answer"), correct=correct)
        else:
            if self.skill == "detect":
                predicted = out.get("objects") or []
                counts = metrics.detect_counts(predicted, case.truth.get("boxes") or [])
                n_true = len(case.truth.get("boxes") or [])
            else:
                predicted = out.get("points") or []
                counts = metrics.point_counts(predicted, case.truth)
                n_true = len(case.truth.get("boxes", case.truth.get("points")) or [])
            row.update(predicted=len(predicted), truth=n_true, tp=counts.tp, fp=counts.fp, fn=counts.fn,
                       precision=counts.precision, recall=counts.recall, f1=counts.f1,
                       reward=rewards.reward(self.skill, out, case.truth))
        row.update(ms=self.ms.get((model, index)), cached=(model, index) in self.cached)
        return row

    def rows(self) -> list[dict]:
        """Every (model, case) row, models in order, cases in dataset order."""
        if self._rows is None:
            self._rows = [self.row(m, i) for m in self.models for i in range(len(self.cases))
                          if (m, i) in self.outputs]
        return list(self._rows)

    @property
    def images(self) -> Any:
        """Per-image scores (pandas): one row per (model, image, prompt).

        detect / point: ``predicted``, ``truth`` (counts), ``tp``, ``fp``, ``fn``, ``precision``,
        ``recall``, ``f1``, ``reward``; query: ``answer``, ``truth``, ``correct``; all: ``ms``
        (the call's time) and ``cached``.
        """
        import pandas as pd

        return pd.DataFrame(self.rows())

    # --- per model --------------------------------------------------------------------

    def summary_of(self, model: str) -> dict:
        """The summary of one model (a row of :attr:`summary`)."""
        idx = [i for i in range(len(self.cases)) if (model, i) in self.outputs]
        rows = [self.row(model, i) for i in idx]
        times = [r["ms"] for r in rows if r["ms"] is not None]
        out: dict[str, Any] = {"images": len(rows)}
        if self.skill == "query":
            correct = sum(r["correct"] for r in rows)
            out.update(correct=int(correct), accuracy=correct / len(rows) if rows else math.nan)
        else:
            total = sum((metrics.Counts(r["tp"], r["fp"], r["fn"]) for r in rows), metrics.Counts(0, 0, 0))
            out.update(tp=total.tp, fp=total.fp, fn=total.fn, precision=total.precision, recall=total.recall,
                       f1=total.f1)
            if self.skill == "detect":
                per_prompt = self._by_prompt(model, idx)
                out.update(ap=_mean_defined([metrics.coco_ap(v) for v in per_prompt.values()]),
                           ap50=_mean_defined([metrics.average_precision(v, metrics.IOU_THRESHOLDS[0])
                                               for v in per_prompt.values()]),
                           ap75=_mean_defined([metrics.average_precision(v, metrics.IOU_THRESHOLDS[5])
                                               for v in per_prompt.values()]))
            out["reward"] = _mean([r["reward"] for r in rows])
        out["ms"] = _median(times)
        return out

    @property
    def summary(self) -> Any:
        """One row per model (pandas, indexed by model label).

        detect: ``images``, ``tp``, ``fp``, ``fn``, ``precision``, ``recall``, ``f1`` (summed over
        images at IoU 0.5), ``ap`` (COCO 0.50:0.95, the mean over prompts as COCO means over
        categories), ``ap50``, ``ap75``, ``reward`` (mean), ``ms`` (median call time); point: the
        same without AP; query: ``images``, ``correct``, ``accuracy``, ``ms``.
        """
        import pandas as pd

        frame = pd.DataFrame([self.summary_of(m) for m in self.models], index=pd.Index(self.models, name="model"))
        return frame

    def _by_prompt(self, model: str, idx: Sequence[int]) -> dict[str, list[tuple[list, list]]]:
        groups: dict[str, list[tuple[list, list]]] = {}
        for i in idx:
            case = self.cases[i]
            groups.setdefault(case.prompt, []).append(
                (self.outputs[(model, i)].get("objects") or [], case.truth.get("boxes") or []))
        return groups

    def pr_curve(self, model: str, iou: float = 0.5) -> tuple[list[float], list[float]]:
        """detect: ``model``'s COCO precision-recall curve at ``iou`` over every case (all prompts as one
        category): ``(recall points, precision)``, see :func:`moondream_nb.metrics.pr_curve`."""
        self._check_model(model)
        if self.skill != "detect":
            raise ValidationError(f"skill: precision-recall curves are for detect (got {self.skill!r})", param="skill")
        idx = [i for i in range(len(self.cases)) if (model, i) in self.outputs]
        return metrics.pr_curve([pair for v in self._by_prompt(model, idx).values() for pair in v], iou)

    # --- finding what to look at ------------------------------------------------------

    def worst(self, model: str | None = None, metric: str | None = None, n: int | None = 10) -> Any:
        """The ``n`` worst (model, image) rows by ``metric`` (default: F1, query: correct), lowest
        first, ties by dataset order; ``model``: only that model's rows."""
        metric = self._metric(metric)
        frame = self.images
        if model is not None:
            self._check_model(model)
            frame = frame[frame["model"] == model]
        frame = frame.sort_values(metric, kind="stable")
        return frame if n is None else frame.head(n)

    def disagreement(self, a: str, b: str, metric: str | None = None, n: int | None = 10) -> Any:
        """Images where models ``a`` and ``b`` differ most on ``metric``: columns ``image_id``,
        ``prompt``, ``a``, ``b``, ``difference`` (``b - a``), largest ``|difference|`` first."""
        import pandas as pd

        metric = self._metric(metric)
        self._check_model(a)
        self._check_model(b)
        rows = []
        for i, case in enumerate(self.cases):
            if (a, i) in self.outputs and (b, i) in self.outputs:
                va, vb = self.row(a, i)[metric], self.row(b, i)[metric]
                rows.append({"image_id": case.image_id, "prompt": case.prompt, a: va, b: vb, "difference": vb - va})
        frame = pd.DataFrame(rows, columns=["image_id", "prompt", a, b, "difference"])
        if len(frame):
            frame = frame.iloc[frame["difference"].abs().sort_values(ascending=False, kind="stable").index]
        return frame if n is None else frame.head(n)

    def output(self, model: str, image_id: str, prompt: str | None = None) -> dict:
        """What ``model`` answered on ``image_id`` (and ``prompt``, when the image has several)."""
        self._check_model(model)
        for i, case in enumerate(self.cases):
            if case.image_id == image_id and (prompt is None or case.prompt == prompt) and (model, i) in self.outputs:
                return dict(self.outputs[(model, i)])
        raise ValidationError(f"image_id: no output of {model!r} on {image_id!r}", param="image_id")

    def _metric(self, metric: str | None) -> str:
        metric = metric or DEFAULT_METRIC[self.skill]
        known = ("correct",) if self.skill == "query" else ("f1", "precision", "recall", "reward", "tp", "fp", "fn")
        if metric not in known:
            raise ValidationError(f"metric: must be one of {', '.join(known)} for {self.skill} (got {metric!r})",
                                  param="metric")
        return metric

    def _check_model(self, model: str) -> None:
        if model not in self.models:
            raise ValidationError(f"model: must be one of {', '.join(map(repr, self.models))} (got {model!r})",
                                  param="model")


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _mean_defined(values: Sequence[float]) -> float:
    return _mean([v for v in values if not math.isnan(v)])


def _median(values: Sequence[float]) -> float:
    # statistics.median without importing statistics (fractions, decimal, random) with the package
    v = sorted(values)
    n = len(v)
    return math.nan if n == 0 else v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2
