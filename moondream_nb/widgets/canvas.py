"""``ImageCanvas``: an image with editable points and boxes, state in normalized traitlets."""

from __future__ import annotations

from typing import Any

import traitlets as t

from ._base import ImagePanel, esm
from ._shapes import normalize_layers, split
from ._preview import overlay_jpeg

MODES = ("view", "point", "box", "select")


class ImageCanvas(ImagePanel):
    """An image with an SVG overlay of points and boxes you can draw, move, resize and delete.

    Mouse: in ``point`` mode click adds a point (drag one to move it); in ``box`` mode a drag
    always draws a box, also one that starts inside another box (a click selects; Alt-drag
    moves); in ``select`` mode drag a shape to move it; corner handles resize. Keys (canvas
    focused): Delete/Backspace remove the selection, Ctrl/Cmd-Z undo, Shift-Ctrl/Cmd-Z (or
    Ctrl-Y) redo, Esc deselect, Tab / Shift-Tab cycle the selection, v/p/b/s switch mode, +/-
    zoom, f fit, arrows nudge one screen pixel, Shift-arrows resize a box from its right/bottom
    edge, Alt makes either ten pixels.
    Ctrl/Alt + wheel zooms at the cursor; Shift-drag or middle-drag pans.

    Args:
        image: a PIL image, path, bytes, numpy array, data URL or ``EncodedImage``; sent to the
            browser once (shrunk to 2048 px on the long side if larger; coordinates stay 0-1).
        layers: shapes, a list of ``{"x", "y"}`` points and ``{"x_min", "y_min", "x_max", "y_max"}``
            boxes (optional ``color``, ``label``, ``group``), or an API-shaped dict
            ``{"points": [...], "boxes": [...]}``.
        mode: ``"view"``, ``"point"``, ``"box"`` or ``"select"``.
        modes: the modes offered in the toolbar (default: all).
        draw_color: CSS colour for new shapes.

    Attributes:
        layers: the shapes, normalized, each with ``type`` ("point"/"box"); synced both ways.
        selected: index of the selected shape (-1 for none).

    Raises:
        ValidationError: naming the field (``layers[2].x_max``, ``image``, ``mode``).
    """

    _esm = esm("core.js", "canvas.js", "image_canvas.js")

    # Any, not List(Dict): our validator must see every value first, so a bad one raises a
    # ValidationError naming the field rather than traitlets' generic TraitError.
    layers = t.Any([], help="normalized points and boxes").tag(sync=True)
    mode = t.Unicode("view").tag(sync=True)
    modes = t.List(t.Unicode(), list(MODES)).tag(sync=True)
    selected = t.Int(-1).tag(sync=True)
    draw_color = t.Unicode("#ffcc00").tag(sync=True)

    def __init__(self, image: Any, layers: Any = None, mode: str = "view", *, modes: Any = None,
                 draw_color: str = "#ffcc00", width: int = 720, **kwargs: Any) -> None:
        super().__init__(layers=normalize_layers(layers), width=width, draw_color=draw_color, mode=mode,
                         modes=list(modes) if modes is not None else list(MODES), **self._image_state(image),
                         **kwargs)

    @t.validate("layers")
    def _valid_layers(self, proposal: Any) -> list[dict]:
        return normalize_layers(proposal["value"])

    @t.validate("mode")
    def _valid_mode(self, proposal: Any) -> str:
        mode = proposal["value"]
        if mode not in MODES:
            from .. import protocol

            protocol.fail("mode", f"must be one of {', '.join(MODES)}", mode)
        return mode

    @t.validate("modes")
    def _valid_modes(self, proposal: Any) -> list[str]:
        for i, m in enumerate(proposal["value"]):
            if m not in MODES:
                from .. import protocol

                protocol.fail(f"modes[{i}]", f"must be one of {', '.join(MODES)}", m)
        return list(proposal["value"])

    @property
    def points(self) -> list[dict]:
        """The points, API shape ``[{"x", "y"}, ...]``."""
        return split(self.layers)[0]

    @property
    def boxes(self) -> list[dict]:
        """The boxes, API shape ``[{"x_min", "y_min", "x_max", "y_max"}, ...]``."""
        return split(self.layers)[1]

    def clear(self) -> None:
        """Remove every shape (the browser's undo can bring them back)."""
        self.layers = []
        self.selected = -1

    def to_figure(self) -> Any:
        """A matplotlib ``Figure`` of the image with its shapes."""
        from .. import plots

        return plots.canvas_figure(self._pil, self.layers)

    def _fallback_image(self) -> tuple[str, bytes]:
        return overlay_jpeg(self._pil, self.layers)
