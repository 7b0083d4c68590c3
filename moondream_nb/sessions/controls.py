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

    def __init__(self, actions: Sequence[Action], side: w.Widget | None = None) -> None:
        self.progress = w.HTML()
        self.progress.add_class("mdnb-session-progress")
        self.status = w.HTML()
        self.status.add_class("mdnb-session-status")
        self.slot = w.Box()
        buttons = []
        for a in actions:
            b = w.Button(description=a.label, tooltip=a.tooltip, button_style="primary" if a.primary else "",
                         layout=w.Layout(width="auto", flex="0 0 auto"))  # never squeezed by the text
            b.add_class(a.css)
            b.on_click(lambda _b, run=a.run: self.guarded(run))
            buttons.append(b)
        bar = w.HBox([*buttons, self.progress], layout=w.Layout(align_items="center"))
        main = w.VBox([bar, self.slot, self.status])
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
            if widget is not panel:
                widget.close()

    def set_progress(self, text: str) -> None:
        self.progress.value = f"<span style='margin-left:8px'>{html.escape(text)}</span>"

    def set_status(self, text: str) -> None:
        self.status.value = f"<span style='color:var(--jp-ui-font-color2,#666)'>{html.escape(text)}</span>"


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
