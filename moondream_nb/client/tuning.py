"""``ft()`` and :class:`Finetune`: the tuning API, a drop-in for ``moondream.ft``.

Same signatures, wire format and returned dicts as the official client 2.6.1, plus: validation
before sending, pooled keep-alive connections, typed errors, idempotency keys on mutating calls,
images encoded once per client, ``rollout_stream(ordered=, progress=)``, ``iter_checkpoints``,
``step`` and ``history``.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from .. import protocol
from ..errors import MoondreamError, ValidationError
from .config import api_base_of_tuning, resolve_api_key, resolve_tuning_endpoint
from .images import EncodedImage, ImageEncoder
from .stream import stream_calls
from .transport import Transport

DEFAULT_TRAIN_TIMEOUT = 900.0
_HISTORY_RESERVED = ("kind", "step", "time")


def _q(segment: Any) -> str:
    return urllib.parse.quote(str(segment), safe="")


class Finetune:
    """A handle on one finetune. Create it with :func:`ft`.

    Constructing it directly (as with the official client) performs no request.

    Args:
        api_key: the API key (default ``$MOONDREAM_API_KEY``).
        endpoint: the tuning endpoint, e.g. ``https://api.moondream.ai/v1/tuning``
            (default: ``$MOONDREAM_ENDPOINT`` + ``/tuning``, else Moondream Cloud).
        finetune_id, name, rank: the finetune's identity.
        max_retries, timeout, train_timeout, backoff_base, backoff_cap: transport policy
            (``train_timeout`` applies to ``train_step``).
        images: an :class:`ImageEncoder` to share an image cache between clients.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        endpoint: str | None = None,
        finetune_id: str,
        name: str = "",
        rank: int = 0,
        max_retries: int = 10,
        timeout: float = 60.0,
        train_timeout: float = DEFAULT_TRAIN_TIMEOUT,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        images: ImageEncoder | None = None,
    ) -> None:
        self._transport = Transport(
            resolve_tuning_endpoint(endpoint),
            resolve_api_key(api_key),
            max_retries=max_retries,
            timeout=timeout,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
        )
        protocol.check_number(train_timeout, "train_timeout", 0, lo_open=True)
        self._train_timeout = float(train_timeout)
        self.images = images or ImageEncoder()
        self._finetune_id = finetune_id
        self._name = name
        self._rank = rank
        self._step: int | None = None
        self._history: list[dict[str, Any]] = []

    # --- identity ---------------------------------------------------------------------

    @property
    def finetune_id(self) -> str:
        return self._finetune_id

    @property
    def name(self) -> str:
        return self._name

    @property
    def rank(self) -> int:
        return self._rank

    @property
    def endpoint(self) -> str:
        """The tuning endpoint requests go to."""
        return self._transport.base_url

    @property
    def api_key(self) -> str | None:
        return self._transport.api_key

    @property
    def step(self) -> int | None:
        """The finetune's step as of the last train step this client saw, or as the service
        reported it when the finetune was loaded (None when neither said)."""
        return self._step

    @property
    def honours_idempotency(self) -> bool | None:
        """Whether the service is known to record ``Idempotency-Key`` (it echoed one back; our
        local server does), known not to (False), or not known yet (None)."""
        return self._transport.honours_idempotency

    @property
    def history(self) -> list[dict[str, Any]]:
        """Every train-step result and logged metric this client saw, as flat dicts.

        Each row has ``kind`` (``"train_step"`` or ``"metrics"``), ``step`` and ``time`` (epoch
        seconds). Train-step rows add the request summary (``groups``, ``rl_groups``,
        ``sft_groups``, ``rollouts``, ``skills``, ``lr``) and every scalar of the result
        (``applied``, ``kl``, ``reward_mean``, ``sft_loss``, ...). Metric rows add the metrics;
        a metric named ``kind``, ``step`` or ``time`` is stored as ``metric.<name>``.
        """
        return list(self._history)

    def __repr__(self) -> str:
        key = "'***'" if self.api_key else "None"
        return (
            f"Finetune(finetune_id={self._finetune_id!r}, name={self._name!r}, rank={self._rank!r}, "
            f"step={self._step!r}, endpoint={self.endpoint!r}, api_key={key})"
        )

    def close(self) -> None:
        """Close pooled connections."""
        self._transport.close()

    def __enter__(self) -> "Finetune":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _path(self, *parts: Any) -> str:
        return "/finetunes/" + "/".join(_q(p) for p in (self._finetune_id, *parts))

    def _encode(self, image: Any, path: str) -> EncodedImage:
        return self.images.encode(image, path)

    # --- rollouts ---------------------------------------------------------------------

    def rollouts(
        self,
        skill: str,
        *,
        image: Any = None,
        question: str | None = None,
        object: str | None = None,
        num_rollouts: int = 1,
        settings: Mapping[str, Any] | None = None,
        reasoning: bool = False,
        spatial_refs: Sequence[Sequence[float]] | None = None,
        ground_truth: Mapping[str, Any] | None = None,
    ) -> dict:
        """Sample ``num_rollouts`` (1-16) attempts at one skill request (``POST /rollouts``).

        Args:
            skill: ``"query"``, ``"point"`` or ``"detect"``.
            image: any image input (required for point/detect).
            question: the question (query). object: what to point at or detect.
            settings: ``temperature``, ``top_p``, ``max_tokens``, ``max_objects``.
            reasoning, spatial_refs: query only.
            ground_truth: point ``{"points"|"boxes": [...]}`` or detect ``{"boxes": [...]}``;
                the server then returns ``rewards``.

        Returns:
            ``{"request": <echoed request>, "rollouts": [...], "rewards": [...] | None}``.

        Raises:
            ValidationError before sending; the typed error of the server's reply.
        """
        request: dict[str, Any] = {"skill": skill}
        images = []
        if image is not None:
            encoded = self._encode(image, "request.image")
            images.append(encoded)
            request["image_url"] = encoded.image_url
        if question is not None:
            request["question"] = question
        if object is not None:
            request["object"] = object
        if spatial_refs is not None:
            request["spatial_refs"] = _as_list(spatial_refs)
        if reasoning:
            request["reasoning"] = True
        if settings is not None:
            request["settings"] = dict(settings) if isinstance(settings, Mapping) else settings
        payload: dict[str, Any] = {
            "finetune_id": self._finetune_id,
            "num_rollouts": num_rollouts,
            "request": request,
        }
        if ground_truth is not None:
            payload["ground_truth"] = dict(ground_truth) if isinstance(ground_truth, Mapping) else ground_truth
        protocol.validate_rollouts_body(payload)
        return self._transport.json("POST", "/rollouts", payload, images=images)

    def rollout_stream(
        self,
        requests: Iterable[tuple[Any, Mapping[str, Any]]],
        *,
        max_concurrency: int = 4,
        buffer_size: int = 8,
        ordered: bool = False,
        progress: bool | Callable[[int, int | None], Any] = False,
    ) -> Iterator[tuple[Any, dict]]:
        """Run many ``rollouts`` calls concurrently, yielding ``(context, response)``.

        Args:
            requests: iterable (may be lazy) of ``(context, kwargs_for_rollouts)``; the context
                is passed through untouched.
            max_concurrency: calls in flight at once (>= 1).
            buffer_size: finished results waiting for the consumer (>= 1); workers block when it
                is full, so generation never runs far ahead of training.
            ordered: yield in input order instead of completion order (still concurrent).
            progress: True for a one-line progress display on stderr, or a callable
                ``progress(done, total_or_None)``.

        The first error (a request or the input iterator) stops the workers and is raised to
        the consumer. Leaving the loop early stops sending and joins the workers.
        """
        self._transport.ensure_pool(max_concurrency if isinstance(max_concurrency, int) else 1)
        return stream_calls(
            self.rollouts,
            requests,
            max_concurrency=max_concurrency,
            buffer_size=buffer_size,
            ordered=ordered,
            progress=progress,
            label="rollouts",
        )

    # --- training ---------------------------------------------------------------------

    def _encode_group(self, group: Any, index: int, images: list[EncodedImage]) -> Any:
        """Shallow-copy a group, turning ``request.image`` (any image input) into ``image_url``."""
        if not isinstance(group, Mapping) or not isinstance(group.get("request"), Mapping):
            return group  # the validator names what is wrong
        path = f"groups[{index}].request" + (".request" if protocol.is_rollouts_body(group["request"]) else "")

        def encode(req: dict) -> dict:
            if "image" in req:
                encoded = self._encode(req.pop("image"), f"{path}.image")
                images.append(encoded)
                req["image_url"] = encoded.image_url
            else:  # an echoed request: its image_url is spliced into the body, not re-scanned
                url = req.get("image_url")
                if isinstance(url, str) and url.startswith("data:") and not any(e.image_url is url for e in images):
                    images.append(self.images.of_url(url))
            return req

        return {**group, "request": protocol.replace_skill_request(group["request"], encode)}

    def train_step(self, groups: Sequence[Mapping[str, Any]], lr: float = 2e-4, *,
                   idempotency_key: str | None = None, **kwargs: Any) -> dict:
        """Apply one optimizer step over RL and/or SFT groups (``POST /train_step``).

        Args:
            groups: 1-64 groups, skills and modes may be mixed:
                RL ``{"mode": "rl", "request": <echoed request>, "rollouts": [...], "rewards": [...]}``;
                SFT ``{"mode": "sft", "request": {..., "image": <any image>}, "target": {...}}``.
                An ``image`` in a group's request is encoded to ``image_url``.
            lr: learning rate in (0, 1].
            idempotency_key: the ``Idempotency-Key`` header (default: a new one per call, the
                same on each retry). Pass a key you stored to re-send a call whose answer was
                lost (a crash): a service that records keys (:attr:`honours_idempotency`)
                answers with the first result instead of training again.
            **kwargs: extra top-level body fields, forwarded verbatim.

        Returns:
            The server's result, e.g. ``{"step", "applied", "kl", "router_kl", "grad_norm",
            "reward_mean", "reward_std", "sft_loss"}``; also recorded in :attr:`history`.
        """
        if isinstance(groups, (str, bytes, Mapping)) or not isinstance(groups, Iterable):
            raise ValidationError(f"groups: must be a list of groups (got {type(groups).__name__})", param="groups")
        images: list[EncodedImage] = []
        encoded_groups = [self._encode_group(g, i, images) for i, g in enumerate(groups)]
        payload = {"finetune_id": self._finetune_id, "groups": encoded_groups, "lr": lr, **kwargs}
        view = protocol.validate_train_step_body(payload)
        result = self._transport.json(
            "POST", "/train_step", payload, timeout=self._train_timeout, idempotent=True,
            idempotency_key=idempotency_key, images=images,
        )
        self._record_train_step(view, result)
        return result

    def _record_train_step(self, view: protocol.TrainStepView, result: dict) -> None:
        groups = view.groups
        skills = sorted({g.skill for g in groups})
        row: dict[str, Any] = {
            "kind": "train_step",
            "step": result.get("step"),
            "time": time.time(),
            "groups": len(groups),
            "rl_groups": sum(g.mode == "rl" for g in groups),
            "sft_groups": sum(g.mode == "sft" for g in groups),
            "rollouts": sum(len(g.outputs) for g in groups),
            "skills": ",".join(skills),
            "lr": view.lr,
        }
        for key, value in result.items():
            if key not in row and (value is None or isinstance(value, (bool, int, float, str))):
                row[key] = value
        if protocol.is_int(result.get("step")):
            self._step = result["step"]
        self._history.append(row)

    def log_metrics(self, step: int, metrics: Mapping[str, float]) -> dict:
        """Log user metrics for ``step`` (``POST /finetunes/{id}/metrics``).

        ``metrics``: 1-100 finite numbers named ``[A-Za-z0-9_./-]+``.
        Returns ``{"ok", "step", "logged_count"}``; also recorded in :attr:`history`.
        """
        payload = {"step": step, "metrics": dict(metrics) if isinstance(metrics, Mapping) else metrics}
        protocol.validate_metrics_body(payload)
        result = self._transport.json("POST", self._path("metrics"), payload, idempotent=True)
        row: dict[str, Any] = {"kind": "metrics", "step": step, "time": time.time()}
        for name, value in payload["metrics"].items():
            row[f"metric.{name}" if name in _HISTORY_RESERVED else name] = value
        self._history.append(row)
        return result

    # --- checkpoints ------------------------------------------------------------------

    def list_checkpoints(self, limit: int = 50, cursor: str | None = None) -> dict:
        """One page of saved checkpoints, by step: ``{"checkpoints", "next_cursor", "has_more"}``."""
        protocol.validate_page(limit, cursor)
        return self._transport.json("GET", self._path("checkpoints"), query={"limit": limit, "cursor": cursor})

    def iter_checkpoints(self, limit: int = 100) -> Iterator[dict]:
        """Every saved checkpoint, following ``next_cursor`` across pages of ``limit``."""
        cursor = None
        while True:
            page = self.list_checkpoints(limit=limit, cursor=cursor)
            yield from page.get("checkpoints") or []
            cursor = page.get("next_cursor")
            if not page.get("has_more") or not cursor:
                return

    def save_checkpoint(self) -> dict:
        """Save the current step as a checkpoint usable for inference: ``{"ok", "checkpoint"}``."""
        return self._transport.json("POST", self._path("checkpoints", "save"), idempotent=True)

    def delete_checkpoint(self, step: int) -> None:
        """Delete the saved checkpoint at ``step``."""
        protocol.validate_step(step)
        self._transport.json("DELETE", self._path("checkpoints", step))

    def model(self, step: int) -> str:
        """The inference model id of the checkpoint at ``step``: ``moondream3-preview/<id>@<step>``."""
        protocol.validate_step(step)
        return f"moondream3-preview/{self._finetune_id}@{step}"

    def delete(self) -> None:
        """Delete the finetune (its checkpoints are cleaned up by the server)."""
        self._transport.json("DELETE", self._path())

    def vl(self, **kwargs: Any) -> Any:
        """An inference client on the same API base and key, sharing this client's image cache.

        Keyword arguments go to :func:`moondream_nb.vl` (e.g. ``model=ft.model(20)``).
        """
        from .inference import VL

        base = api_base_of_tuning(self.endpoint)
        if base is None and "endpoint" not in kwargs:
            raise ValidationError(
                f"endpoint: cannot derive the API base from tuning endpoint {self.endpoint!r}; "
                "pass endpoint=...", param="endpoint")
        kwargs.setdefault("endpoint", base)
        kwargs.setdefault("api_key", self.api_key)
        kwargs.setdefault("images", self.images)
        return VL(**kwargs)


def _as_list(value: Any) -> Any:
    """``list(value)`` for iterables (as the official client does); anything else unchanged."""
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes, Mapping)):
        return list(value)
    return value


def ft(
    api_key: str | None = None,
    *,
    name: str | None = None,
    rank: int | None = None,
    finetune_id: str | None = None,
    endpoint: str | None = None,
    max_retries: int = 10,
    timeout: float = 60.0,
    train_timeout: float = DEFAULT_TRAIN_TIMEOUT,
    backoff_base: float = 0.5,
    backoff_cap: float = 30.0,
) -> Finetune:
    """Create a finetune (``name`` + ``rank``) or load one (``finetune_id``).

    Creating is idempotent on (name, rank): the same pair returns the existing finetune; the
    same name with another rank raises :class:`ConflictError`.

    Args:
        api_key: default ``$MOONDREAM_API_KEY``.
        name: 1-128 characters of ``[A-Za-z0-9._-]``. rank: 8, 16, 24 or 32.
        finetune_id: load an existing finetune (not with name/rank).
        endpoint: the TUNING endpoint, as in the official client; default
            ``$MOONDREAM_ENDPOINT`` (an API base such as ``http://127.0.0.1:2020/v1``) + ``/tuning``,
            else ``https://api.moondream.ai/v1/tuning``.
        max_retries, timeout, train_timeout, backoff_base, backoff_cap: transport policy.

    Returns:
        A :class:`Finetune`.

    Raises:
        ValidationError, AuthenticationError, NotFoundError, ConflictError, ...
    """
    options = dict(api_key=api_key, endpoint=endpoint, max_retries=max_retries, timeout=timeout,
                   train_timeout=train_timeout, backoff_base=backoff_base, backoff_cap=backoff_cap)
    if finetune_id is not None:
        if name is not None or rank is not None:
            raise ValidationError("finetune_id cannot be combined with name or rank", param="finetune_id")
        protocol.validate_finetune_id(finetune_id)
        client = Finetune(finetune_id=finetune_id, **options)
        result = client._transport.json("GET", client._path())
        info = result.get("finetune", result)
        try:
            client._finetune_id, client._name, client._rank = info["finetune_id"], info["name"], info["rank"]
        except (KeyError, TypeError):
            raise MoondreamError(f"GET /finetunes/{finetune_id}: reply lacks finetune_id/name/rank") from None
        if protocol.is_int(info.get("step")):  # not documented for the cloud; our server says it
            client._step = info["step"]
        return client

    if name is None or rank is None:
        raise ValidationError("ft requires either finetune_id or both name and rank", param="name")
    protocol.validate_finetune_create(name, rank)
    client = Finetune(finetune_id="", name=name, rank=rank, **options)
    result = client._transport.json("POST", "/finetunes", {"name": name, "rank": rank}, idempotent=True)
    if not isinstance(result.get("finetune_id"), str):
        raise MoondreamError("POST /finetunes: reply lacks finetune_id")
    client._finetune_id = result["finetune_id"]
    info = result.get("finetune")
    if isinstance(info, Mapping) and protocol.is_int(info.get("step")):  # an existing finetune's step
        client._step = info["step"]
    return client
