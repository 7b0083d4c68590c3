"""``evaluate``: run models over a labelled dataset through the inference API, concurrently."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Callable

from .. import protocol
from ..client.inference import VL
from ..client.stream import stream_calls
from ..client.tuning import Finetune
from ..errors import ValidationError
from . import cache as _cache
from .result import Case, Evaluation

BASE = "base"
_STEP = re.compile(r"@(\d+)$")


@dataclass(frozen=True)
class Model:
    """A model to evaluate: its ``label`` in the results, the ``client`` that runs it, its model id
    (None: the client's default, i.e. the base model)."""

    label: str
    client: VL
    model: str | None


def evaluate(
    models: Any,
    dataset: Iterable[Any],
    skill: str,
    prompt: str | None = None,
    *,
    vl: VL | None = None,
    settings: Mapping[str, Any] | None = None,
    max_concurrency: int = 4,
    progress: bool | Callable[[int, int | None], Any] = False,
    cache: _cache.EvalCache | str | os.PathLike | bool = True,
) -> Evaluation:
    """Run ``models`` on every labelled image of ``dataset`` and score them.

    Args:
        models: what to evaluate: a ``VL`` (its model: the base unless it has a default ``model``),
            a ``Finetune`` (every saved checkpoint), a model id (``ft.model(20)``), ``"base"``, or a
            list of these, or a ``{label: model}`` mapping.
        dataset: a ``Dataset`` (or any iterable of its items) whose labels of ``skill`` are the truth.
        skill: ``"detect"``, ``"point"`` or ``"query"``.
        prompt: only the labels with this prompt (object or question); default: every label of
            ``skill``, each with its own prompt.
        vl: the inference client for model ids and ``"base"`` (default: the first ``VL`` in
            ``models``, else a ``Finetune``'s ``.vl()``).
        settings: inference settings sent with every call (e.g. ``{"max_objects": 10}``).
        max_concurrency: calls in flight at once; the client's pacing still holds (Cloud rate limits).
        progress: True for a progress line on stderr, or ``progress(done, total)``.
        cache: True: this process's memory (running again calls only what is new); a path: a SQLite
            file kept across sessions; an :class:`EvalCache`; False: call everything.

    Returns:
        An :class:`Evaluation`: ``.images`` and ``.summary`` frames, ``.worst()``, ``.disagreement()``,
        ``.pr_curve()``.

    Raises:
        ValidationError: before any call, when a model, the skill, the settings or the dataset's
            labels are unusable (no label of ``skill``, say); the message names the argument.
        MoondreamError: the first call that failed (the outputs before it stay in the cache).
    """
    if skill not in protocol.SKILLS:
        protocol.fail("skill", f"must be one of {', '.join(protocol.SKILLS)}", skill)
    if settings is not None and not isinstance(settings, Mapping):
        protocol.fail("settings", "must be an object", settings)
    cases = collect_cases(dataset, skill, prompt)
    resolved = resolve_models(models, vl)
    store = _store(cache)
    outputs, ms, cached, pending = {}, {}, set(), []
    # Case by case, every model on it: each image is decoded and encoded once while it is in the
    # dataset's and the client's caches, not once per model.
    for i, case in enumerate(cases):
        for m in resolved:
            key = _cache.cache_key(m.client.endpoint, m.model, skill, _image_key(case.item), case.prompt, settings)
            hit = store.get(key) if store is not None else None
            if hit is not None:
                outputs[(m.label, i)], ms[(m.label, i)] = hit
                cached.add((m.label, i))
            else:
                pending.append(((m.label, i, key), {"model": m, "case": case, "skill": skill, "settings": settings}))
    for client in {id(m.client): m.client for m in resolved}.values():
        client._transport.ensure_pool(max_concurrency if isinstance(max_concurrency, int) else 1)
    for (label, i, key), (output, took) in stream_calls(_infer, pending, max_concurrency=max_concurrency,
                                                        progress=progress, label="evaluate",
                                                        thread_name="moondream-nb-evaluate"):
        outputs[(label, i)], ms[(label, i)] = output, took
        if store is not None:
            store.put(key, output, took)
    return Evaluation(skill, [m.label for m in resolved], cases, outputs, ms, cached)


def _infer(model: Model, case: Case, skill: str, settings: Mapping[str, Any] | None) -> tuple[dict, float]:
    vl, image, started = model.client, case.item.image, time.perf_counter()
    if skill == "detect":
        out = vl.detect(image, case.prompt, settings=settings, model=model.model)
    elif skill == "point":
        out = vl.point(image, case.prompt, settings=settings, model=model.model)
    else:
        out = vl.query(image, case.prompt, settings=settings, model=model.model)
    took = (time.perf_counter() - started) * 1000
    out = {k: v for k, v in out.items() if k != "request_id"}  # differs per call; not an answer
    return out, took


def resolve_models(models: Any, vl: VL | None = None) -> list[Model]:
    """``models`` (see :func:`evaluate`) as :class:`Model` entries with unique labels.

    Raises:
        ValidationError: an entry of an unknown kind, a model id without a client to run it, a
            finetune with no saved checkpoint, or two entries with the same label.
    """
    if isinstance(models, Mapping):
        entries = [(str(label), m, f"models[{label!r}]") for label, m in models.items()]
    elif isinstance(models, (list, tuple)):
        entries = [(None, m, f"models[{i}]") for i, m in enumerate(models)]
    else:
        entries = [(None, models, "models")]
    if not entries:
        protocol.fail("models", "must name at least one model", models)
    client = vl if vl is not None else next((m for _, m, _ in entries if isinstance(m, VL)), None)
    if client is None:
        client = next((m.vl() for _, m, _ in entries if isinstance(m, Finetune)), None)
    out: list[Model] = []
    for label, m, path in entries:
        if isinstance(m, VL):
            out.append(Model(label or (_label_of(m.model) if m.model else BASE), m, m.model))
        elif isinstance(m, Finetune):
            steps = sorted(c["step"] for c in m.iter_checkpoints())
            if not steps:
                protocol.fail(path, f"finetune {m.name!r} has no saved checkpoint to evaluate", m.name)
            ft_client = client if client is not None else m.vl()
            out.extend(Model(f"{label} step {s}" if label else f"step {s}", ft_client, m.model(s)) for s in steps)
        elif isinstance(m, str):
            if client is None:
                protocol.fail("vl", f"pass vl= (an inference client) to run model {m!r}")
            if m == BASE:
                out.append(Model(label or BASE, client, None))
            else:
                protocol.check_model(m, path)
                out.append(Model(label or _label_of(m), client, m))
        else:
            protocol.fail(path, "must be a VL client, a Finetune, a model id or 'base'", type(m).__name__)
    labels = [m.label for m in out]
    if len(set(labels)) != len(labels):  # two finetunes' "step 20": name them by model id instead
        out = [Model(m.model or m.label, m.client, m.model) if labels.count(m.label) > 1 else m for m in out]
        labels = [m.label for m in out]
        if len(set(labels)) != len(labels):
            dup = next(x for x in labels if labels.count(x) > 1)
            protocol.fail("models", f"names {dup!r} twice", dup)
    return out


def _label_of(model_id: str) -> str:
    match = _STEP.search(model_id)
    return f"step {match.group(1)}" if match else model_id


def collect_cases(dataset: Iterable[Any], skill: str, prompt: str | None = None) -> list[Case]:
    """Every label of ``skill`` (with ``prompt``, when given) in ``dataset``, in dataset order.

    Raises:
        ValidationError: ``dataset`` holds no such label.
    """
    if prompt is not None:
        protocol.check_text(prompt, "prompt")
    cases = []
    for item in dataset:
        labels_for = getattr(item, "labels_for", None)
        if labels_for is None:
            protocol.fail("dataset", "must be a Dataset (or an iterable of its items)", type(item).__name__)
        for label in labels_for(skill, prompt):
            cases.append(Case(item.image_id, label.prompt, dict(label.target), item))
    if not cases:
        wanted = f"{skill!r} labels" + (f" with prompt {prompt!r}" if prompt is not None else "")
        raise ValidationError(f"dataset: has no {wanted} to evaluate against (label it first, or "
                              "Dataset.with_labels(store.labels()))", param="dataset")
    return cases


def _image_key(item: Any) -> str:
    # A file is known by its path, size and modification time (an edited image is a new one);
    # an in-memory image by its dataset id (a content hash unless the caller chose ids).
    path = getattr(item, "path", None)
    if path:
        try:
            st = os.stat(path)
            return f"file:{os.path.abspath(path)}:{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            pass
    return f"id:{item.image_id}"


def _store(cache: Any) -> _cache.EvalCache | None:
    if cache is True:
        return _cache.DEFAULT
    if cache is False or cache is None:
        return None
    if isinstance(cache, _cache.EvalCache):
        return cache
    if isinstance(cache, (str, os.PathLike)):
        return _cache.EvalCache.at(cache)
    protocol.fail("cache", "must be True, False, a file path or an EvalCache", type(cache).__name__)
