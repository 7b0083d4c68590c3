"""Images in, JPEG data URLs out, each distinct image encoded once per client.

Inputs are read by :mod:`~moondream_nb.client.image_input` (PIL image, path, bytes, numpy array,
data URL, ``EncodedImage``); output matches the official client (RGB, JPEG quality 95) after
:func:`~moondream_nb.client.image_input.to_rgb`, the one rule for what the model sees of an image.
"""

from __future__ import annotations

import base64
import io
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Hashable

from .image_input import image_input, to_rgb

if TYPE_CHECKING:
    from PIL import Image

JPEG_QUALITY = 95
_DATA_URL_PREFIX = "data:image/jpeg;base64,"
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


def _jpeg_data_url(img: Image.Image, quality: int) -> str:
    img = to_rgb(img)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return _DATA_URL_PREFIX + base64.b64encode(buf.getvalue()).decode("ascii")


def _fingerprint(img: Image.Image) -> tuple:
    from PIL import Image

    return img.size, img.mode, img.resize(_FINGERPRINT_SIZE, Image.NEAREST).tobytes()


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
        if isinstance(getattr(image, "image_url", None), str) and not isinstance(image, str):
            return self._known(image.image_url)  # someone else's encoded image (the official client's)
        source = image_input(image, path)
        if source.kind == "pil":
            return self._cached(source.key(), lambda: image, image)
        if source.kind == "data_url":
            return self.of_url(source.value)
        return self._cached(source.key(), source.open)

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
