"""Images in, JPEG data URLs out, each distinct image encoded once per client.

Accepted: a PIL image, a path (str or ``os.PathLike``), encoded file bytes, a numpy ``uint8``
array (HxW, HxWx1, HxWx3 or HxWx4), an :class:`EncodedImage`, any object with an ``image_url``
string attribute (the official client's ``Base64EncodedImage``), or a ``data:`` URL string.
Output matches the official client (RGB, JPEG quality 95) after applying EXIF orientation.
:func:`to_rgb` is the one rule for what the model (and every panel) sees of an image.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
import sys
from typing import TYPE_CHECKING, Any, Callable, Hashable

from ..errors import ValidationError

if TYPE_CHECKING:
    from PIL import Image

# PIL is imported where an image is decoded or encoded, not with the package (a PIL image passed
# in means PIL is loaded already: see _is_pil).


def _is_pil(obj: Any) -> bool:
    pil = sys.modules.get("PIL.Image")
    return pil is not None and isinstance(obj, pil.Image)

JPEG_QUALITY = 95
_DATA_URL_PREFIX = "data:image/jpeg;base64,"
_EXIF_ORIENTATION = 0x0112
# Pixels sampled to notice in-place edits of a cached PIL image (a NEAREST 16x16 thumbnail:
# microseconds, unlike hashing all pixels, which would cost as much as a quarter of an encode).
_FINGERPRINT_SIZE = (16, 16)


@dataclass(frozen=True, repr=False)
class EncodedImage:
    """An image ready for the wire: ``image_url`` is a ``data:image/...;base64,...`` URL."""

    image_url: str
    # ASCII bytes of image_url when it needs no JSON escaping, so request bodies can splice it
    # in instead of re-scanning megabytes per call (see jsonbody.py).
    raw: bytes | None = field(default=None, compare=False)

    @property
    def base64(self) -> str:
        """The bare base64 payload (what batch lines carry)."""
        return self.image_url.partition(",")[2]

    def __repr__(self) -> str:
        mime = self.image_url[5:].partition(";")[0].partition(",")[0] or "?"
        return f"EncodedImage({mime}, {len(self.image_url) / 1024:.1f} KiB)"


_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N"}


def to_rgb(img: Image.Image) -> Image.Image:
    """The upright 8-bit RGB picture of ``img``: what the model sees and every panel draws on.

    EXIF orientation applied (a phone photo is upright, so normalized coordinates mean the same
    spot everywhere); 16-bit and 32-bit images scaled to 8 bits (a plain ``convert`` saturates
    them to white); transparency composited over white (``convert`` keeps whatever colour the
    transparent pixels hold); CMYK, palette and grayscale converted. An RGB image is returned as is.
    """
    from PIL import Image, ImageOps

    # exif_transpose copies the whole image; only pay that when there is a rotation to apply.
    if img.getexif().get(_EXIF_ORIENTATION, 1) not in (1, None):
        img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in _SIXTEEN_BIT or mode in ("I", "F"):
        lo, hi = img.getextrema() if mode in ("I", "F") else (0, 65535)
        if mode in _SIXTEEN_BIT or hi > 255:
            full = 65535 if hi <= 65535 else hi
            img = img.convert("I" if mode != "F" else "F").point(lambda v: v * (255.0 / full))
        elif mode == "F" and hi <= 1.0:
            img = img.point(lambda v: v * 255.0)
        return img.convert("L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def _jpeg_data_url(img: Image.Image, quality: int) -> str:
    img = to_rgb(img)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return _DATA_URL_PREFIX + base64.b64encode(buf.getvalue()).decode("ascii")


def _fingerprint(img: Image.Image) -> tuple:
    from PIL import Image

    return img.size, img.mode, img.resize(_FINGERPRINT_SIZE, Image.NEAREST).tobytes()


def _is_ndarray(obj: Any) -> bool:
    return type(obj).__module__.split(".")[0] == "numpy" and hasattr(obj, "__array_interface__")


def _array_image(arr: Any, path: str) -> tuple[Hashable, Callable[[], Image.Image]]:
    import numpy as np  # only ever reached when the caller already holds a numpy array

    if arr.dtype != np.uint8:
        raise ValidationError(
            f"{path}: numpy images must be uint8 (got {arr.dtype}); e.g. (a * 255).astype('uint8')",
            param=path,
        )
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))) or 0 in arr.shape:
        raise ValidationError(
            f"{path}: numpy images must be HxW, HxWx3 or HxWx4 (got shape {tuple(arr.shape)})",
            param=path,
        )
    arr = np.ascontiguousarray(arr)
    key = ("array", arr.shape, hashlib.blake2b(memoryview(arr).cast("B"), digest_size=20).digest())

    def load() -> Image.Image:
        from PIL import Image

        return Image.fromarray(arr)

    return key, load


def _decode(data: bytes, path: str, what: str) -> Image.Image:
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(data))
        img.load()  # the first frame of animated files
    except Exception as exc:
        raise ValidationError(f"{path}: cannot decode {what} ({exc})", param=path) from exc
    return img


def _bytes_image(data: bytes | bytearray | memoryview, path: str) -> tuple[Hashable, Callable]:
    data = bytes(data)
    key = ("bytes", hashlib.blake2b(data, digest_size=20).digest())
    return key, lambda: _decode(data, path, "the image bytes")


def _path_image(value: str | os.PathLike, path: str) -> tuple[Hashable, Callable]:
    filename = os.path.abspath(os.fspath(value))
    try:
        st = os.stat(filename)
    except OSError as exc:
        raise ValidationError(f"{path}: cannot read image file {filename!r} ({exc.strerror})", param=path) from exc

    def load() -> Image.Image:
        with open(filename, "rb") as fh:  # read whole: no file handle outlives the decode
            data = fh.read()
        return _decode(data, path, f"image file {filename!r}")

    return ("path", filename, st.st_mtime_ns, st.st_size), load


class _Entry:
    __slots__ = ("encoded", "ref", "fingerprint")

    def __init__(self, encoded: EncodedImage, ref: Any = None, fingerprint: Any = None) -> None:
        self.encoded, self.ref, self.fingerprint = encoded, ref, fingerprint


class ImageEncoder:
    """Encodes images to JPEG data URLs once and remembers them (thread-safe, bounded LRU).

    PIL images are keyed by identity (held weakly, so a dropped image frees its entry) and
    re-encoded when their size, mode or a pixel sample changed; paths by path, mtime and size;
    bytes and arrays by content hash.

    Attributes:
        encodes: number of JPEG encodes performed (cache misses).
    """

    def __init__(self, *, max_items: int = 256, max_bytes: int = 256 * 2**20, quality: int = JPEG_QUALITY):
        self.max_items, self.max_bytes, self.quality = max_items, max_bytes, quality
        self.encodes = 0
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._key_locks: dict[Hashable, threading.Lock] = {}
        self._dead: list[Hashable] = []  # filled by weakref callbacks, purged under the lock
        # id(image_url) -> the cached EncodedImage holding that very string: an echoed request
        # (parsed back to the same str, see jsonbody.loads) is found without scanning megabytes.
        self._by_url: dict[int, EncodedImage] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Forget every cached encoding."""
        with self._lock:
            self._entries.clear()
            self._by_url.clear()
            self._bytes = 0

    def encode(self, image: Any, path: str = "image") -> EncodedImage:
        """Return ``image`` as an :class:`EncodedImage`; ``path`` names it in error messages."""
        if isinstance(image, EncodedImage):
            return image
        url = getattr(image, "image_url", None)
        if isinstance(url, str):
            return self._known(url)
        if _is_pil(image):
            return self._cached(("pil", id(image)), lambda: image, image)
        if isinstance(image, str) and image.startswith("data:"):
            return self.of_url(image)
        if isinstance(image, str) and image.startswith(("http://", "https://")):
            raise ValidationError(
                f"{path}: remote image URLs are not supported; pass the image, a path or bytes",
                param=path,
            )
        if isinstance(image, (str, os.PathLike)):
            key, load = _path_image(image, path)
        elif isinstance(image, (bytes, bytearray, memoryview)):
            key, load = _bytes_image(image, path)
        elif _is_ndarray(image):
            key, load = _array_image(image, path)
        else:
            raise ValidationError(
                f"{path}: unsupported image type {type(image).__name__}; pass a PIL image, a path, "
                "bytes, a numpy uint8 array or an EncodedImage",
                param=path,
            )
        return self._cached(key, load)

    def of_url(self, url: str) -> EncodedImage:
        """The :class:`EncodedImage` of data URL ``url``: the cached one when ``url`` is the very
        string this encoder made (an echoed request: no scan), else one built for it."""
        with self._lock:
            hit = self._by_url.get(id(url))
        if hit is not None and hit.image_url is url:
            return hit
        return self._known(url)

    def _known(self, url: str) -> EncodedImage:
        # Already encoded by the caller; still give it raw bytes when they are JSON-safe.
        return EncodedImage(url, _json_safe_bytes(url))

    def _cached(self, key: Hashable, load: Callable[[], Image.Image], pil: Image.Image | None = None) -> EncodedImage:
        fingerprint = _fingerprint(pil) if pil is not None else None
        with self._lock:
            hit = self._lookup(key, pil, fingerprint)
            if hit is not None:
                return hit
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # one encode per key even when many threads ask at once
            with self._lock:
                hit = self._lookup(key, pil, fingerprint)
                if hit is not None:
                    return hit
            url = _jpeg_data_url(load(), self.quality)
            encoded = EncodedImage(url, url.encode("ascii"))
            ref = None
            if pil is not None:
                dead = self._dead
                ref = weakref.ref(pil, lambda _r, k=key: dead.append(k))
            with self._lock:
                self.encodes += 1
                self._store(key, _Entry(encoded, ref, fingerprint))
                self._key_locks.pop(key, None)
        return encoded

    def _lookup(self, key: Hashable, pil: Any, fingerprint: Any) -> EncodedImage | None:
        self._purge_dead()
        entry = self._entries.get(key)
        if entry is None:
            return None
        if pil is not None and (entry.ref() is not pil or entry.fingerprint != fingerprint):
            self._remove(key)  # a new image reusing the id, or the same image edited in place
            return None
        self._entries.move_to_end(key)
        return entry.encoded

    def _store(self, key: Hashable, entry: _Entry) -> None:
        self._remove(key)
        self._entries[key] = entry
        self._by_url[id(entry.encoded.image_url)] = entry.encoded
        self._bytes += len(entry.encoded.image_url)
        while self._entries and (len(self._entries) > self.max_items or self._bytes > self.max_bytes):
            self._remove(next(iter(self._entries)))

    def _remove(self, key: Hashable) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= len(entry.encoded.image_url)
            if self._by_url.get(id(entry.encoded.image_url)) is entry.encoded:
                del self._by_url[id(entry.encoded.image_url)]

    def _purge_dead(self) -> None:
        while self._dead:
            key = self._dead.pop()
            entry = self._entries.get(key)
            if entry is not None and entry.ref is not None and entry.ref() is None:
                self._remove(key)


_JSON_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=:;,._-")


def _json_safe_bytes(url: str) -> bytes | None:
    if not url.isascii():
        return None
    raw = url.encode("ascii")
    return raw if not raw.translate(None, bytes(_JSON_SAFE)) else None
