"""``MetricsPanel``: live curves of a finetune's train-step figures and logged metrics.

It reads the client's own ``ft.history`` (every train-step result and logged metric the client
saw), so it works the same against Moondream Cloud and the local server.
"""

from __future__ import annotations

import math
import threading
import weakref
from typing import Any

import traitlets as t

from .. import protocol
from ..dataframes import FIGURES
from ..plots import METRIC_RANGES
from ._base import Panel, esm

_SKIP = {"time", "groups", "rl_groups", "sft_groups", "rollouts", "lr", "applied"}


def _history(source: Any) -> list:
    history = getattr(source, "history", source)
    if isinstance(history, (list, tuple)):
        return list(history)
    protocol.fail("ft", f"must be a Finetune (or its .history list), not {type(source).__name__}")
    return []  # unreachable: fail raises


class MetricsPanel(Panel):
    """One small chart per train-step figure (reward mean ± std, KL, router KL, grad norm, SFT
    loss) and per logged metric, with a smoothing slider (an exponential moving average).

    Args:
        ft: a ``Finetune`` (or its ``history`` list).
        smoothing: EMA weight in [0, 0.99] (0 = raw).
        live: poll ``ft.history`` in a background thread and redraw as steps arrive (also while
            a training loop runs in the same cell). ``refresh()`` redraws on demand.
        interval: seconds between polls.

    Attributes:
        frame: the pandas DataFrame behind the charts (index: step).
    """

    static_follows = 3.0  # the saved picture follows the panel 3 s after its last change

    _esm = esm("core.js", "metrics.js")

    series = t.Dict().tag(sync=True)
    order = t.List(t.Unicode()).tag(sync=True)
    smoothing = t.Float(0.6).tag(sync=True)
    status = t.Unicode("").tag(sync=True)
    ranges = t.Dict().tag(sync=True)  # plots.METRIC_RANGES: bands are clipped to them

    def __init__(self, ft: Any, *, smoothing: float = 0.6, live: bool = True, interval: float = 1.0,
                 **kwargs: Any) -> None:
        _history(ft)  # validates the source
        protocol.check_number(interval, "interval", 0, lo_open=True)
        kwargs.setdefault("ranges", {k: list(v) for k, v in METRIC_RANGES.items()})
        super().__init__(smoothing=smoothing, **kwargs)
        self._ft = ft
        self._seen = 0
        self._steps: set[int] = set()
        self._stop = threading.Event()
        self.refresh()
        if live:
            ref = weakref.ref(self)  # the poller must not keep a discarded panel alive
            threading.Thread(target=_poll, args=(ref, self._stop, interval), name="mdnb-metrics", daemon=True).start()

    @t.validate("smoothing")
    def _valid_smoothing(self, proposal: Any) -> float:
        return protocol.check_number(proposal["value"], "smoothing", 0, 0.99)

    @property
    def frame(self) -> Any:
        """``frames.history_frame(ft.history)``: one row per step (pandas DataFrame)."""
        from ..dataframes import history_frame

        return history_frame(_history(self._ft))

    def refresh(self) -> None:
        """Read what ``ft.history`` gained since the last refresh and redraw.

        Only the new points travel to the page (a custom message the front end merges), so a
        step costs the same at step 10 as at step 10,000; :attr:`series` (the synced state a
        re-opened view starts from) is updated in place.
        """
        history = _history(self._ft)
        if len(history) < self._seen:  # a different history: start over
            self._seen, self._steps = 0, set()
            self.series, self.order = {}, []
        if len(history) == self._seen:
            return
        new, self._seen = history[max(self._seen, 0):], len(history)
        first = not self.series
        series = self.series if not first else {}
        changed: dict[str, list] = {}
        for row in new:
            if not isinstance(row, dict) or row.get("step") is None:
                continue
            if row.get("kind") == "train_step" and row.get("applied") is False:
                continue  # a step the server did not apply keeps the figures of the one it did (as frames do)
            step = int(row["step"])
            self._steps.add(step)
            for name, v in row.items():
                if name in _SKIP or name in ("kind", "step") or isinstance(v, bool) or not _finite(v):
                    continue
                point = [step, float(v)]
                _upsert(series.setdefault(name, []), point)
                _upsert(changed.setdefault(name, []), point)
        order = [f for f in FIGURES if f in series] + [n for n in series if n not in FIGURES]
        if first:
            self.order, self.series = order, series
        elif changed:
            if order != self.order:
                self.order = order
            self.send({"type": "points", "points": changed})
            if self.static_follows is not None and getattr(self, "_displays", None):
                self._state_changed(None)  # no trait changed, but the picture should follow
        steps = self._steps
        self.status = f"{len(steps)} step{'' if len(steps) == 1 else 's'}" + (f" · last {max(steps)}" if steps else "")

    def close(self) -> None:
        """Stop polling and close the widget."""
        stop = getattr(self, "_stop", None)  # absent when __init__ failed before creating it
        if stop is not None:
            stop.set()
        super().close()

    def to_figure(self) -> Any:
        """A matplotlib ``Figure`` of every curve (smoothed as on screen)."""
        from .. import plots

        return plots.metrics_figure(self.frame, smoothing=self.smoothing,
                                     columns=[c for c in self.order if c != "reward_std"])


def _upsert(points: list, point: list) -> None:
    """Put ``[step, value]`` into ``points`` (sorted by step; a later value for a step wins)."""
    i = len(points)
    while i > 0 and points[i - 1][0] > point[0]:  # steps arrive in order: this loop rarely runs
        i -= 1
    if i > 0 and points[i - 1][0] == point[0]:
        points[i - 1] = point
    else:
        points.insert(i, point)


def _finite(v: Any) -> bool:
    if isinstance(v, str):
        return False
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _poll(ref: "weakref.ref[MetricsPanel]", stop: threading.Event, interval: float) -> None:
    while not stop.wait(interval):
        panel = ref()
        if panel is None:
            return
        try:
            panel.refresh()
        except Exception:  # a transient error must not kill live updates; the next poll retries
            pass
        del panel
