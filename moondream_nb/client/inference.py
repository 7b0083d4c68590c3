"""``vl()`` and :class:`VL`: the inference API (``/query``, ``/caption``, ``/point``, ``/detect``).

Same methods, bodies and return shapes as the official ``CloudVL``, plus validation before
sending, retries (inference calls are idempotent), per-call ``model=`` (e.g. ``ft.model(20)``),
``request_id`` in results, typed errors, images encoded once, and the batch API.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from .. import protocol
from .batch import Batch, list_batches, submit_batch
from .config import resolve_api_base, resolve_api_key
from .images import EncodedImage, ImageEncoder
from .sse import iter_chunks
from .transport import Transport


class VL:
    """Inference client. Create it with :func:`vl`.

    Args:
        api_key: default ``$MOONDREAM_API_KEY``; without one, requests are anonymous.
        endpoint: the API base (default ``$MOONDREAM_ENDPOINT``, else
            ``https://api.moondream.ai/v1``); a trailing slash is tolerated.
        model: default model for every call (``moondream3-preview/<finetune_id>@<step>`` for a
            saved checkpoint); each method's ``model=`` overrides it.
        max_retries, timeout, backoff_base, backoff_cap: transport policy.
        images: an :class:`ImageEncoder` to share an image cache with another client.
    """

    def __init__(
        self,
        api_key: str | None = None,
        endpoint: str | None = None,
        *,
        model: str | None = None,
        max_retries: int = 10,
        timeout: float = 60.0,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        images: ImageEncoder | None = None,
    ) -> None:
        self._transport = Transport(
            resolve_api_base(endpoint),
            resolve_api_key(api_key),
            max_retries=max_retries,
            timeout=timeout,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
        )
        if model is not None:
            protocol.check_model(model, "model")
        self.model = model
        self.images = images or ImageEncoder()

    @property
    def endpoint(self) -> str:
        return self._transport.base_url

    @property
    def api_key(self) -> str | None:
        return self._transport.api_key

    def __repr__(self) -> str:
        key = "'***'" if self.api_key else "None"
        return f"VL(endpoint={self.endpoint!r}, model={self.model!r}, api_key={key})"

    def close(self) -> None:
        """Close pooled connections."""
        self._transport.close()

    def __enter__(self) -> "VL":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def encode_image(self, image: Any) -> EncodedImage:
        """Encode ``image`` once; pass the result to several calls to skip even the cache lookup."""
        return self.images.encode(image)

    # --- calls ------------------------------------------------------------------------

    def _call(self, kind: str, payload: dict, images: list[EncodedImage]) -> Any:
        protocol.validate_inference(kind, payload)
        if payload.get("stream"):
            body = self._transport.encode_body(payload, images)
            resp = self._transport.send("POST", f"/{kind}", body=body, content_type="application/json", stream=True)
            return iter_chunks(resp, [self.api_key])
        return self._transport.json("POST", f"/{kind}", payload, images=images)

    def _image(self, payload: dict, image: Any, images: list[EncodedImage]) -> None:
        encoded = self.images.encode(image, "image")
        images.append(encoded)
        payload["image_url"] = encoded.image_url

    def _model(self, payload: dict, model: str | None) -> None:
        model = model if model is not None else self.model
        if model is not None:
            payload["model"] = model

    def query(
        self,
        image: Any = None,
        question: str | None = None,
        stream: bool = False,
        settings: Mapping[str, Any] | None = None,
        reasoning: bool = False,
        spatial_refs: Sequence[Sequence[float]] | None = None,
        *,
        model: str | None = None,
    ) -> dict:
        """Answer ``question`` about ``image`` (or text only).

        Returns ``{"answer": str, "reasoning"?: {...}, "request_id"?: str}``; with
        ``stream=True``, ``{"answer": <generator of text chunks>}``.
        """
        payload: dict[str, Any] = {"question": question, "stream": stream}
        images: list[EncodedImage] = []
        if image is not None:
            self._image(payload, image, images)
        self._model(payload, model)
        if settings is not None:
            payload["settings"] = settings
        if reasoning:
            payload["reasoning"] = reasoning
        if spatial_refs is not None:
            payload["spatial_refs"] = spatial_refs
        result = self._call("query", payload, images)
        if stream:
            return {"answer": result}
        output = {"answer": result["answer"]}
        if result.get("reasoning") is not None:
            output["reasoning"] = result["reasoning"]
        return _with_request_id(output, result)

    def caption(
        self,
        image: Any,
        length: Literal["normal", "short", "long"] = "normal",
        stream: bool = False,
        settings: Mapping[str, Any] | None = None,
        *,
        model: str | None = None,
    ) -> dict:
        """Caption ``image``: ``{"caption": str, "request_id"?}``, or a chunk generator when streaming."""
        images: list[EncodedImage] = []
        payload: dict[str, Any] = {}
        self._image(payload, image, images)
        payload.update(length=length, stream=stream)
        self._model(payload, model)
        if settings is not None:
            payload["settings"] = settings
        result = self._call("caption", payload, images)
        if stream:
            return {"caption": result}
        return _with_request_id({"caption": result["caption"]}, result)

    def point(
        self,
        image: Any,
        object: str,
        settings: Mapping[str, Any] | None = None,
        spatial_refs: Sequence[Sequence[float]] | None = None,
        *,
        model: str | None = None,
    ) -> dict:
        """Point at every ``object`` in ``image``: ``{"points": [{"x", "y"}, ...], "request_id"?}``."""
        images: list[EncodedImage] = []
        payload: dict[str, Any] = {}
        self._image(payload, image, images)
        payload["object"] = object
        if spatial_refs is not None:
            payload["spatial_refs"] = spatial_refs
        self._model(payload, model)
        if settings is not None:
            payload["settings"] = settings
        result = self._call("point", payload, images)
        return _with_request_id({"points": result["points"]}, result)

    def detect(
        self,
        image: Any,
        object: str,
        settings: Mapping[str, Any] | None = None,
        *,
        model: str | None = None,
    ) -> dict:
        """Detect every ``object`` in ``image``: ``{"objects": [{"x_min", ...}, ...], "request_id"?}``."""
        images: list[EncodedImage] = []
        payload: dict[str, Any] = {}
        self._image(payload, image, images)
        payload["object"] = object
        self._model(payload, model)
        if settings is not None:
            payload["settings"] = settings
        result = self._call("detect", payload, images)
        return _with_request_id({"objects": result["objects"]}, result)

    # --- batch ------------------------------------------------------------------------

    def batch(self, requests: Iterable[Mapping[str, Any]] | str, *, model: str | None = None,
              part_size: int | None = None) -> Batch:
        """Submit a batch: a list of request dicts or the path of a JSONL file.

        Each dict is a batch line (API.md §5.2) whose ``image`` may be any image input (encoded
        to bare base64 here), e.g. ``{"skill": "point", "image": img, "object": "bolt"}``.
        Every line is validated before anything is uploaded. ``model`` defaults to this client's.

        Returns:
            the submitted :class:`Batch`; ``.wait()`` then ``.results()``.
        """
        model = model if model is not None else self.model
        return submit_batch(self._transport, self.images, requests, model=model, part_size=part_size)

    def get_batch(self, batch_id: str) -> Batch:
        """A handle on an existing batch."""
        protocol.check_text(batch_id, "batch_id", max_len=256)
        return Batch(self._transport, batch_id)

    def list_batches(self, limit: int = 50, cursor: str | None = None) -> dict:
        """One page of batches: ``{"batches", "next_cursor", "has_more"}``."""
        return list_batches(self._transport, limit=limit, cursor=cursor)


def _with_request_id(output: dict, result: dict) -> dict:
    if result.get("request_id") is not None:
        output["request_id"] = result["request_id"]
    return output


def vl(
    api_key: str | None = None,
    endpoint: str | None = None,
    *,
    model: str | None = None,
    max_retries: int = 10,
    timeout: float = 60.0,
    backoff_base: float = 0.5,
    backoff_cap: float = 30.0,
) -> VL:
    """Create an inference client (see :class:`VL`); the arguments mirror ``moondream.vl``."""
    return VL(api_key, endpoint, model=model, max_retries=max_retries, timeout=timeout,
              backoff_base=backoff_base, backoff_cap=backoff_cap)
