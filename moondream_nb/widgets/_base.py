"""The base of every panel: ESM/CSS from package data, the image sent once, static fallback.

Each panel's ESM is ``core.js`` + its own files, concatenated here at import time (plain ES
modules, no bundler, no CDN: the files ship in ``moondream_nb/widgets/static``).
"""

from __future__ import annotations

import io
import threading
import weakref
from functools import lru_cache
from importlib import resources
from typing import Any

import anywidget
import ipywidgets
import traitlets as t

from ..client.image_input import read_image
from ._image import MAX_DISPLAY_SIDE, display_bytes


@lru_cache(maxsize=None)
def static_text(name: str) -> str:
    """The text of ``moondream_nb/widgets/static/<name>``."""
    return resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")


def esm(*names: str) -> str:
    """One ES module from several static files (shared helpers first, the ``export`` last)."""
    return "\n".join(static_text(n) for n in names)


class ImageData(ipywidgets.Widget):
    """The bytes of one displayed image, in a model of their own that panels reference.

    A panel's state holds ``"IPY_MODEL_<id>"``, not the bytes: they still travel once (in this
    model's opening message), and a host that shows a widget's state as its value (marimo's
    ``mo.ui.anywidget(panel).value``) shows the panel's useful state, not megabytes of JPEG.
    """

    data = t.Bytes(b"").tag(sync=True)
    mime = t.Unicode("image/jpeg").tag(sync=True)


class Panel(anywidget.AnyWidget):
    """Common behaviour: static fallback output and ``to_figure()``.

    Subclasses implement :meth:`to_figure` and may override :meth:`_fallback_image`.
    """

    _css = static_text("panels.css")
    width = t.Int(720, help="display width in CSS pixels (the image scales to fit)").tag(sync=True)

    #: Add a picture of the panel to its display output, for viewers without a widget front end
    #: (exported notebooks, GitHub, nbviewer): a JPEG for panels over a photo (a PNG of a
    #: noisy photo is ~7x larger, and it is stored in the notebook on every display), a PNG for
    #: charts. Off: the output carries only the widget view.
    static_fallback: bool = True

    #: Seconds of no state change after which the picture in each of the panel's displays is
    #: replaced by one of the panel as it is then (so a saved notebook shows the final curves, not
    #: "no train steps yet"); None: the picture stays as first displayed (call
    #: :meth:`update_static`). On for panels nobody types into (a re-render moves focus).
    static_follows: float | None = None

    def update_static(self) -> None:
        """Replace the picture kept in each display of this panel by the panel as it is now.

        The live view is re-rendered from the kernel's state (nothing is lost; zoom and focus are).
        """
        if getattr(self, "comm", None) is None:  # closed: its view is gone, keep the last picture
            return
        handles = list(getattr(self, "_displays", ()))
        if not handles:
            return
        data, metadata = self._repr_mimebundle_()  # one picture for every display of the panel
        for handle in handles:
            handle.update(data, metadata=metadata, raw=True)

    def _ipython_display_(self) -> None:
        # Displayed with an id, so update_static can replace the picture later.
        from IPython.display import display

        bundle = self._repr_mimebundle_()
        if bundle is None:
            return
        data, metadata = bundle if isinstance(bundle, tuple) else (bundle, {})
        handle = display(data, metadata=metadata, raw=True, display_id=True)
        if handle is not None:
            if not hasattr(self, "_displays"):
                self._displays: list[Any] = []
                if self.static_follows is not None:
                    self.observe(self._state_changed, names=[n for n in self.trait_names(sync=True)
                                                             if not n.startswith("_")])
            self._displays.append(handle)

    def _state_changed(self, change: Any) -> None:
        timer = getattr(self, "_static_timer", None)
        if timer is not None:
            timer.cancel()
        ref = weakref.ref(self)  # a pending update must not keep a discarded panel alive
        self._static_timer = threading.Timer(self.static_follows, _update_static, args=(ref,))
        self._static_timer.daemon = True
        self._static_timer.start()

    def close(self) -> None:
        images = [v for name in self.trait_names(sync=True) for v in _listed(getattr(self, name))
                  if isinstance(v, ImageData)]
        super().close()
        for image in images:  # their models go with the panel's (nothing else references them)
            image.close()

    def to_figure(self) -> Any:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def _fallback_image(self) -> tuple[str, bytes]:
        """``(mime, bytes)`` of the panel as it is now: a PNG of :meth:`to_figure` by default."""
        fig = self.to_figure()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
        return "image/png", buf.getvalue()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        if not self.static_fallback or bundle is None:
            return bundle
        data, metadata = bundle if isinstance(bundle, tuple) else (bundle, {})
        data = dict(data)
        try:
            mime, image = self._fallback_image()
            data[mime] = image
        except Exception as exc:  # a broken fallback must never hide the live widget
            data["text/plain"] = f"{data.get('text/plain', '')}\n(static preview unavailable: {exc})"
        return data, metadata


def _listed(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _update_static(ref: "weakref.ref[Panel]") -> None:
    panel = ref()
    if panel is not None:
        try:
            panel.update_static()
        except Exception:  # a picture that cannot be made must never disturb the kernel
            pass


class ImagePanel(Panel):
    """A panel over one image: ``_image`` (an :class:`ImageData`, sent once), ``image_size``."""

    _image = t.Instance(ImageData, allow_none=True).tag(sync=True, **ipywidgets.widget_serialization)
    image_size = t.List(t.Int(), [1, 1], help="(width, height) of the original image in pixels").tag(sync=True)

    def _image_state(self, image: Any, path: str = "image", max_side: int = MAX_DISPLAY_SIDE) -> dict:
        """Decode ``image`` (kept as :attr:`pil_image`) and return the image traits to pass to
        ``__init__``, so the bytes travel in the widget's opening message, once.

        The bytes are at most ``max_side`` pixels on the long side; ``image_size`` stays the original.
        """
        pil = read_image(image, path, draft_side=max_side)
        data, mime, size = display_bytes(pil, max_side)
        self._pil = pil
        return {"_image": ImageData(data=data, mime=mime), "image_size": list(size)}

    @property
    def pil_image(self) -> Any:
        """The image as decoded for display (a large JPEG may be decoded at a reduced scale;
        :attr:`image_size` is always the original's)."""
        return self._pil

