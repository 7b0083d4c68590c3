"""Datasets: images with stable ids, loaded lazily, with optional ground-truth labels.

An :class:`Item`'s ``image_id`` never changes between sessions, so labels stored under it find
their image again: files get their path (relative to the folder or ``root``, ``/``-separated),
in-memory images a short content hash (:func:`image_id_for`). Tables (pandas, Hugging Face) are
in :mod:`moondream_nb.data.tabular`.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, overload

from PIL import Image

from ..client.image_input import displayed_size, read_image, upright
from ..errors import ValidationError
from .labels import Label

__all__ = ["Dataset", "Item", "IMAGE_EXTENSIONS", "image_id_for", "load_image"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
_HASH_CHARS = 16  # 64 bits: collisions are negligible at any dataset size a notebook holds


def image_id_for(image: Image.Image | bytes | bytearray | memoryview) -> str:
    """The content id of an in-memory image: 16 hex chars of sha256.

    PIL images hash their mode, size and pixels (so the same picture decoded twice gets the same
    id); bytes hash the encoded file as given.
    """
    if isinstance(image, Image.Image):
        digest = hashlib.sha256(f"{image.mode}:{image.width}x{image.height}:".encode())
        digest.update(image.tobytes())
    elif isinstance(image, (bytes, bytearray, memoryview)):
        digest = hashlib.sha256(bytes(image))
    else:
        raise ValidationError(f"image: cannot hash {type(image).__name__}; pass a PIL image or bytes", param="image")
    return digest.hexdigest()[:_HASH_CHARS]


def load_image(source: str | os.PathLike | bytes) -> Image.Image:
    """Decode a file path or encoded bytes, apply the EXIF orientation (as the client does before
    encoding, so normalized coordinates mean the same picture everywhere)."""
    what = os.path.abspath(os.fspath(source)) if isinstance(source, (str, os.PathLike)) else "image"
    return upright(read_image(source, what))


class _ImageCache:
    """The last few decoded images of a dataset, so the editor, the encoder and an SFT group built
    from one item share one PIL object (the client's encoder caches by object identity)."""

    def __init__(self, max_items: int = 8) -> None:
        self.max_items = max_items
        self._images: OrderedDict[str, Image.Image] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, load: Callable[[], Image.Image]) -> Image.Image:
        with self._lock:
            if key in self._images:
                self._images.move_to_end(key)
                return self._images[key]
        image = load()
        with self._lock:
            self._images[key] = image
            while len(self._images) > self.max_items:
                self._images.popitem(last=False)
        return image


@dataclass(frozen=True, eq=False)
class Item:
    """One image of a dataset.

    Attributes:
        image_id: stable id (relative path, or content hash for in-memory images).
        labels: ground-truth labels that came with the data (may be empty).
        meta: extra fields (e.g. the row of a table, the scene seed).
        path: the file, when the image is one.
    """

    image_id: str
    loader: Callable[[], Image.Image] = field(repr=False)
    labels: tuple[Label, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)
    path: str | None = None
    _cache: _ImageCache | None = field(default=None, repr=False)

    @property
    def image(self) -> Image.Image:
        """The PIL image, decoded on first use (EXIF orientation applied)."""
        if self._cache is None:
            return self.loader()
        return self._cache.get(self.image_id, self.loader)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels; read from the file header when the image is a file."""
        if self.path is not None:
            return displayed_size(self.path)
        return self.image.size

    def labels_for(self, skill: str | None = None, prompt: str | None = None) -> list[Label]:
        """The ground-truth labels of ``skill`` (and ``prompt``), all when None."""
        return [lb for lb in self.labels if (skill is None or lb.skill == skill) and (prompt is None or lb.prompt == prompt)]


def _file_item(path: str, image_id: str, cache: _ImageCache, **extra: Any) -> Item:
    return Item(image_id, lambda p=path: load_image(p), path=path, _cache=cache, **extra)


def _posix(path: str) -> str:
    return os.path.normpath(path).replace(os.sep, "/")


class Dataset(Sequence[Item]):
    """An ordered collection of :class:`Item` with unique ``image_id``.

    Index by position (``ds[0]``, ``ds[2:5]`` → a Dataset) or by id (``ds["cats/01.jpg"]``).
    Build one with :meth:`from_folder`, :meth:`from_paths`, :meth:`from_images`,
    :func:`~moondream_nb.data.from_frame` / :func:`~moondream_nb.data.from_hf`, or
    :func:`~moondream_nb.data.demo_dataset`.

    Raises:
        ValidationError: two items share an ``image_id``.
    """

    def __init__(self, items: Iterable[Item], *, name: str | None = None) -> None:
        self.name = name
        self._items = list(items)
        self._index: dict[str, int] = {}
        for i, item in enumerate(self._items):
            if item.image_id in self._index:
                raise ValidationError(
                    f"items {self._index[item.image_id]} and {i} have the same image_id {item.image_id!r} "
                    "(labels are keyed by it; for in-memory images this means identical content)",
                    param="image_id")
            self._index[item.image_id] = i

    # -- sequence protocol -------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, key: int | str) -> Item: ...
    @overload
    def __getitem__(self, key: slice) -> "Dataset": ...

    def __getitem__(self, key):
        if isinstance(key, str):
            try:
                return self._items[self._index[key]]
            except KeyError:
                raise KeyError(f"no item with image_id {key!r}") from None
        if isinstance(key, slice):
            return Dataset(self._items[key], name=self.name)
        return self._items[key]

    def __iter__(self) -> Iterator[Item]:
        return iter(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._index if isinstance(key, str) else key in self._items

    def __repr__(self) -> str:
        labelled = sum(1 for it in self._items if it.labels)
        name = f"{self.name!r}, " if self.name else ""
        return f"Dataset({name}{len(self)} items, {labelled} with labels)"

    @property
    def ids(self) -> list[str]:
        """The image ids, in order."""
        return [it.image_id for it in self._items]

    @property
    def positions(self) -> Mapping[str, int]:
        """``{image_id: position}`` (read-only): O(1) membership and lookup by id."""
        return MappingProxyType(self._index)

    def index(self, image_id: str, *args: Any) -> int:  # type: ignore[override]
        """Position of the item with ``image_id`` (ValueError when absent)."""
        try:
            return self._index[image_id]
        except KeyError:
            raise ValueError(f"no item with image_id {image_id!r}") from None

    def filter(self, predicate: Callable[[Item], bool]) -> "Dataset":
        """The items for which ``predicate(item)`` is true, in order."""
        return Dataset([it for it in self._items if predicate(it)], name=self.name)

    def labels(self) -> list[Label]:
        """Every ground-truth label of every item, in item order."""
        return [lb for it in self._items for lb in it.labels]

    def with_labels(self, labels: Iterable[Label], *, strict: bool = True) -> "Dataset":
        """A copy whose items carry ``labels`` (e.g. from :func:`read_coco`) added by image id.

        strict: raise ValidationError when a label's image is not in the dataset (else drop it).
        """
        extra: dict[str, list[Label]] = {}
        unknown = []
        for lb in labels:
            if lb.image_id in self._index:
                extra.setdefault(lb.image_id, []).append(lb)
            else:
                unknown.append(lb.image_id)
        if unknown and strict:
            shown = ", ".join(repr(u) for u in sorted(set(unknown))[:3])
            raise ValidationError(f"{len(set(unknown))} labelled image ids are not in the dataset, e.g. {shown}; "
                                  "pass strict=False to drop them", param="image_id")
        return Dataset([replace(it, labels=it.labels + tuple(extra.get(it.image_id, ()))) for it in self._items],
                       name=self.name)

    # -- sources ---------------------------------------------------------------------------

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, *, recursive: bool = True,
                    extensions: Sequence[str] = IMAGE_EXTENSIONS, cache_size: int = 8) -> "Dataset":
        """Every image file under ``folder`` (sorted; hidden files and folders skipped).

        image_id: the path relative to ``folder`` with ``/`` separators, e.g. ``"cats/01.jpg"``.
        Raises ValidationError when the folder does not exist or holds no image.
        """
        root = os.fspath(folder)
        if not os.path.isdir(root):
            raise ValidationError(f"{root}: not a folder", param="folder")
        exts = tuple(e.lower() for e in extensions)
        found = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recursive else []
            found += [os.path.join(dirpath, f) for f in filenames
                      if not f.startswith(".") and f.lower().endswith(exts)]
        if not found:
            raise ValidationError(f"{root}: no image files ({', '.join(exts)})", param="folder")
        cache = _ImageCache(cache_size)
        items = [_file_item(p, _posix(os.path.relpath(p, root)), cache) for p in found]
        items.sort(key=lambda it: it.image_id)
        return cls(items, name=os.path.basename(os.path.abspath(root)))

    @classmethod
    def from_paths(cls, paths: Iterable[str | os.PathLike], *, root: str | os.PathLike | None = None,
                   cache_size: int = 8) -> "Dataset":
        """Image files in the given order.

        image_id: the path relative to ``root`` when given (relative paths are taken as relative
        to ``root``), else the path as given (normalized, ``/``-separated).
        Raises ValidationError for a missing file or one outside ``root``.
        """
        cache = _ImageCache(cache_size)
        items = []
        for i, p in enumerate(paths):
            items.append(_path_item(os.fspath(p), root, cache, f"paths[{i}]"))
        return cls(items)

    @classmethod
    def from_images(cls, images: Iterable[Any], *, ids: Sequence[str] | None = None,
                    root: str | os.PathLike | None = None, cache_size: int = 8) -> "Dataset":
        """PIL images, encoded image bytes or paths (mixed is fine), in order.

        image_id: ``ids[i]`` when given; else a path's id (see :meth:`from_paths`) or the content
        hash of an in-memory image (:func:`image_id_for`).
        """
        images = list(images)
        if ids is not None and len(ids) != len(images):
            raise ValidationError(f"ids: expected {len(images)} ids, one per image (got {len(ids)})", param="ids")
        cache = _ImageCache(cache_size)
        items = []
        for i, image in enumerate(images):
            given = ids[i] if ids is not None else None
            items.append(source_item(image, f"images[{i}]", cache, image_id=given, root=root))
        return cls(items)


def _path_item(path: str, root: str | os.PathLike | None, cache: _ImageCache, where: str,
               image_id: str | None = None, **extra: Any) -> Item:
    full = os.path.join(os.fspath(root), path) if root is not None and not os.path.isabs(path) else path
    if not os.path.isfile(full):
        raise ValidationError(f"{where}: no such image file {full!r}", param=where)
    if image_id is None:
        if root is not None:
            rel = os.path.relpath(os.path.abspath(full), os.path.abspath(root))
            if rel.startswith(os.pardir):
                raise ValidationError(f"{where}: {full!r} is not under root {os.fspath(root)!r}", param=where)
            image_id = _posix(rel)
        else:
            image_id = _posix(path)
    return _file_item(full, image_id, cache, **extra)


def source_item(source: Any, where: str, cache: _ImageCache, *, image_id: str | None = None,
                root: str | os.PathLike | None = None, **extra: Any) -> Item:
    """An :class:`Item` for a PIL image, encoded bytes or a path (the shared core of every source)."""
    if isinstance(source, (str, os.PathLike)):
        return _path_item(os.fspath(source), root, cache, where, image_id, **extra)
    if isinstance(source, Image.Image):
        image = source
        return Item(image_id or image_id_for(image), lambda: image, _cache=None, **extra)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        return Item(image_id or image_id_for(data), lambda: load_image(data), _cache=cache, **extra)
    raise ValidationError(f"{where}: expected a PIL image, image bytes or a path, not {type(source).__name__}",
                          param=where)
