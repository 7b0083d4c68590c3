"""The session chrome: a row of buttons and a progress line (ipywidgets), around a panel slot."""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import ipywidgets as w


class Action(NamedTuple):
    """A session button: its label, a CSS class (for tests and styling), what it does, a tooltip."""

    label: str
    css: str
    run: Callable[[], Any]
    tooltip: str = ""
    primary: bool = False


class SessionView:
    """``[buttons] progress`` over a slot holding the current panel, and a status line under it;
    ``side`` (e.g. a metrics panel) to the right.

    A button's error is shown in the status line: a click has no caller to raise to.
    """

    def __init__(self, actions: Sequence[Action], side: w.Widget | None = None,
                 footer: w.Widget | None = None) -> None:
        self.progress = w.HTML()
        self.progress.add_class("mdnb-session-progress")
        self.status = w.HTML()
        self.status.add_class("mdnb-session-status")
        self.slot = w.Box()
        self.waiting = w.HTML()  # shown while the next panel is on its way (never closed)
        self.waiting.add_class("mdnb-session-wait")
        buttons = []
        for a in actions:
            b = w.Button(description=a.label, tooltip=a.tooltip, button_style="primary" if a.primary else "",
                         layout=w.Layout(width="auto", flex="0 0 auto"))  # never squeezed by the text
            b.add_class(a.css)
            b.on_click(lambda _b, run=a.run: self.guarded(run))
            buttons.append(b)
        bar = w.HBox([*buttons, self.progress], layout=w.Layout(align_items="center"))
        main = w.VBox([bar, self.slot, self.status] + ([footer] if footer is not None else []))
        self.root = w.HBox([main, side], layout=w.Layout(align_items="flex-start")) if side is not None else main
        self.root.add_class("mdnb-session")

    def guarded(self, run: Callable[[], Any]) -> Any:
        """``run()``; an exception goes to the status line instead of the kernel log."""
        try:
            return run()
        except Exception as exc:
            self.set_status(f"⚠ {type(exc).__name__}: {exc}")
            return None

    def set_panel(self, panel: w.Widget | None) -> None:
        """Show ``panel`` (None: nothing) and close the one it replaces."""
        old = self.slot.children
        self.slot.children = (panel,) if panel is not None else ()
        for widget in old:
            if widget is not panel and widget is not self.waiting:
                widget.close()

    def set_waiting(self, text: str) -> None:
        """Show ``text`` where the panel goes, until the next :meth:`set_panel`."""
        self.waiting.value = (f"<div style='padding:24px;color:var(--jp-ui-font-color2,#666)'>"
                              f"{html.escape(text)}</div>")
        self.set_panel(self.waiting)

    def set_progress(self, text: str) -> None:
        self.progress.value = f"<span style='margin-left:8px'>{html.escape(text)}</span>"

    def set_status(self, text: str) -> None:
        self.status.value = f"<span style='color:var(--jp-ui-font-color2,#666)'>{html.escape(text)}</span>"


class TrainStatus:
    """The training line of a session: the step in flight, how many wait, the last result, and a
    failed (or uncertain) step with *retry* / *drop* buttons. Updated from any thread.

    Args:
        queue: the finetune's :class:`~moondream_nb.sessions.training.TrainQueue`.
    """

    def __init__(self, queue: Any) -> None:
        self.queue = queue
        self.last = ""  # the session's words for the last result ("step 12 · reward 0.62")
        self.html = w.HTML()
        self.html.add_class("mdnb-train-status")
        self.retry = w.Button(description="retry", tooltip="send the failed step again (same Idempotency-Key)",
                              button_style="warning", layout=w.Layout(width="auto", display="none"))
        self.retry.add_class("mdnb-train-retry")
        self.drop = w.Button(description="drop", tooltip="give up on this step (its rewards and labels stay "
                             "in the label store)", layout=w.Layout(width="auto", display="none"))
        self.drop.add_class("mdnb-train-drop")
        self.retry.on_click(lambda _b: queue.retry())
        self.drop.on_click(lambda _b: queue.drop())
        self.root = w.HBox([self.html, self.retry, self.drop], layout=w.Layout(align_items="center"))
        self._unlisten = queue.listen(lambda _job: self.update())
        self.update()

    def text(self) -> str:
        """What the line says now (plain text)."""
        jobs = self.queue.jobs
        parts = []
        running = next((j for j in jobs if j.state == "running"), None)
        failed = next((j for j in jobs if j.state == "failed"), None)
        queued = sum(1 for j in jobs if j.state == "queued")
        if failed is not None:
            parts.append(f"⚠ {failed.label} failed: {type(failed.error).__name__}: {failed.error} — retry or drop")
        if running is not None:
            parts.append(f"{running.label} in flight…")
        if queued:
            parts.append(f"{queued} queued")
        if self.last:
            parts.append(f"last: {self.last}")
        return " · ".join(parts)

    def update(self) -> None:
        failed = self.queue.failed is not None
        text = self.text()
        colour = "var(--jp-warn-color0,#b35900)" if failed else "var(--jp-ui-font-color2,#666)"
        self.html.value = f"<span style='color:{colour}'>{html.escape(text)}</span>" if text else ""
        for b in (self.retry, self.drop):
            b.layout.display = "" if failed else "none"

    def close(self) -> None:
        self._unlisten()


def session_bundle(root: w.Widget, text: str, panel: Any = None, **kwargs: Any) -> Any:
    """The display bundle of a session: the live view, ``text`` as plain text, and the picture of
    ``panel`` (its static fallback) for viewers without a widget front end (exported notebooks)."""
    bundle = root._repr_mimebundle_(**kwargs)
    data, metadata = bundle if isinstance(bundle, tuple) else (bundle, {})
    data = dict(data or {})
    data["text/plain"] = text
    if panel is not None and getattr(panel, "static_fallback", False):
        try:
            mime, image = panel._fallback_image()
            data[mime] = image
        except Exception as exc:  # a broken preview must never hide the live view
            data["text/plain"] += f"\n(static preview unavailable: {exc})"
    return data, metadata
