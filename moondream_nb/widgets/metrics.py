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
        self._seen = -1
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
        from ..frames import history_frame

        return history_frame(_history(self._ft))

    def refresh(self) -> None:
        """Re-read ``ft.history`` and redraw if it grew."""
        history = _history(self._ft)
        if len(history) == self._seen:
            return
        self._seen = len(history)
        frame = self.frame
        series: dict[str, list] = {}
        for name in frame.columns:
            if name in _SKIP or frame[name].dtype == object:
                continue
            pts = [[int(step), float(v)] for step, v in frame[name].items()
                   if v is not None and not isinstance(v, bool) and _finite(v)]
            if pts:
                series[name] = pts
        self.order = list(series)
        self.series = series
        steps = frame.index
        self.status = f"{len(steps)} step{'' if len(steps) == 1 else 's'}" + (f" · last {int(steps.max())}" if len(steps) else "")

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


def _finite(v: Any) -> bool:
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
