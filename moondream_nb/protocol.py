"""The Moondream wire protocol: constants and validators (pure Python, no dependencies).

Shared by the client (checked before anything is sent) and the local server (checked on
receipt), so every function takes WIRE-format data: images are already ``image_url`` data URLs
(``image`` bare base64 in batch lines). The first violation raises
:class:`~moondream_nb.errors.ValidationError`; its message names the field path and the rule,
e.g. ``request.settings.top_p: must be a number > 0 and <= 1 (got 0)``, and ``.param`` holds
the path.

The validators of what later layers read (a ``/rollouts`` body, a train step, one group, a
``rollouts`` response) hand back a small frozen *view* of it: the skill request already unwrapped,
each rollout's output, the rewards, the SFT target and where each sits in the body, so no later
layer unwraps or re-checks the wire dict. The wire dicts themselves stay plain (the public API and
the official client's shapes); a view refers to them, never copies them.

Decisions where the published protocol is silent (API.md Part A): unknown top-level fields of
skill requests and inference bodies are ignored (forward compatibility, echoed requests);
unknown keys of ``settings``, ground truth and SFT targets are errors (they are typos). Empty
ground-truth and target lists are allowed: "there is nothing there" is a legitimate answer
to teach and to reward.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .errors import ValidationError

SKILLS = ("query", "point", "detect")
INFERENCE_KINDS = ("query", "caption", "point", "detect")
BATCH_SKILLS = ("caption", "query", "detect", "point")
CAPTION_LENGTHS = ("short", "normal", "long")
RANKS = (8, 16, 24, 32)
NAME_PATTERN = r"^[A-Za-z0-9._-]{1,128}$"
METRIC_NAME_PATTERN = r"^[A-Za-z0-9_./-]+$"
MIN_ROLLOUTS, MAX_ROLLOUTS = 1, 16
MAX_GROUPS = 64
MAX_TEXT_CHARS = 1000
MIN_METRICS, MAX_METRICS = 1, 100
MAX_TOKENS = 512
MAX_OBJECTS = 50
MAX_IMAGE_BYTES = 10 * 1024 * 1024
MAX_PAGE_LIMIT = 100
MAX_STEP = 2**53 - 1  # steps travel as JSON numbers: keep them exact in every language
MAX_ITEMS = 100  # points/boxes in one ground truth, target or rollout output
MAX_GROUP_ROLLOUTS = 32  # rollouts in one RL group (num_rollouts plus inserted ones)
MAX_TOKEN_IDS = 4096  # length of a rollout's token metadata lists
ROLLOUT_METADATA = ("answer_tokens", "thinking_tokens", "coords", "sizes")
SETTINGS_KEYS = ("temperature", "top_p", "max_tokens", "max_objects")
BATCH_SETTINGS_KEYS = ("temperature", "top_p", "max_tokens")
GROUP_MODES = ("rl", "sft")
POINT_KEYS = ("x", "y")
BOX_KEYS = ("x_min", "y_min", "x_max", "y_max")
TOO_LARGE = "too_large"  # the error code of an image over MAX_IMAGE_BYTES (the server answers 413)

_NAME_RE = re.compile(NAME_PATTERN)
_METRIC_RE = re.compile(METRIC_NAME_PATTERN)
_MISSING = object()
REQUIRED, OPTIONAL = "required", "optional"


# --- primitives -------------------------------------------------------------------------


def fail(path: str, rule: str, got: Any = _MISSING, *, code: str | None = None) -> None:
    """Raise the ValidationError for ``path`` breaking ``rule`` (optionally showing the value)."""
    message = f"{path}: {rule}" if path else rule
    if got is not _MISSING:
        message += f" (got {_show(got)})"
    raise ValidationError(message, param=path or None, code=code)


class _Said(str):
    """A description of the offending value, shown as is (not repr'd)."""


def _show(value: Any) -> str:
    if isinstance(value, _Said):
        return value
    if isinstance(value, str) and len(value) > 60:
        return f"a string of {len(value)} characters"
    if isinstance(value, (dict, list, tuple, set)) and len(repr(value)) > 60:
        return f"a {type(value).__name__} of {len(value)} items"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def check_dict(value: Any, path: str) -> dict:
    if not isinstance(value, dict):
        fail(path, f"must be an object, not {type(value).__name__}")
    return value


def check_list(value: Any, path: str, *, min_len: int = 0, max_len: int | None = None) -> list:
    if not isinstance(value, (list, tuple)):
        fail(path, f"must be a list, not {type(value).__name__}")
    if len(value) < min_len or (max_len is not None and len(value) > max_len):
        if max_len is None:
            rule = "must not be empty" if min_len == 1 else f"must have at least {min_len} items"
        else:
            rule = f"must have {min_len} to {max_len} items"
        fail(path, rule, len(value))
    return list(value)


def check_int(value: Any, path: str, lo: int, hi: int | None = None) -> int:
    if not is_int(value) or value < lo or (hi is not None and value > hi):
        rule = f"must be an integer from {lo} to {hi}" if hi is not None else f"must be an integer >= {lo}"
        fail(path, rule, value)
    return value


def check_number(value: Any, path: str, lo: float, hi: float | None = None, *, lo_open: bool = False) -> float:
    ok = is_number(value) and (value > lo if lo_open else value >= lo) and (hi is None or value <= hi)
    if not ok:
        rule = f"must be a number {'>' if lo_open else '>='} {lo:g}"
        if hi is not None:
            rule += f" and <= {hi:g}"
        fail(path, rule, value)
    return value


def check_text(value: Any, path: str, *, max_len: int = MAX_TEXT_CHARS) -> str:
    if not isinstance(value, str) or not value.strip():
        fail(path, "must be a non-empty string", value)
    if len(value) > max_len:
        fail(path, f"must be at most {max_len} characters", _Said(f"{len(value)} characters"))
    return check_unicode(value, path)


def check_unicode(value: Any, path: str) -> str:
    """A string that UTF-8 can encode (JSON allows lone surrogates such as ``\\ud800``)."""
    if not isinstance(value, str):
        fail(path, "must be a string", value)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        fail(path, "must be valid Unicode text (it holds a lone surrogate)")
    return value


def check_bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        fail(path, "must be true or false", value)
    return value


def check_choice(choices: tuple) -> Callable[[Any, str], Any]:
    def check(value: Any, path: str) -> Any:
        if value not in choices or isinstance(value, bool):
            fail(path, f"must be one of {', '.join(map(str, choices))}", value)
        return value

    return check


def check_image_url(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value.startswith("data:"):
        fail(path, "must be a base64 data URL (data:image/...;base64,...)", value)
    _check_image_size(len(value) - value.find(",") - 1, path)
    return value


def check_base64(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value:
        fail(path, "must be a non-empty base64 string", value)
    _check_image_size(len(value), path)
    return value


def _check_image_size(b64_chars: int, path: str) -> None:
    size = b64_chars * 3 // 4
    if size > MAX_IMAGE_BYTES:
        fail(path, f"image must be at most {MAX_IMAGE_BYTES // 2**20} MB encoded", _Said(f"{size / 2**20:.1f} MB"),
             code=TOO_LARGE)


def check_model(value: Any, path: str) -> str:
    return check_text(value, path, max_len=256)


def check_unit(value: Any, path: str) -> float:
    return check_number(value, path, 0, 1)


def check_point(value: Any, path: str) -> None:
    check_dict(value, path)
    for key in POINT_KEYS:
        if key not in value:
            fail(join(path, key), "required")
        check_unit(value[key], join(path, key))


def check_box(value: Any, path: str) -> None:
    check_dict(value, path)
    for key in BOX_KEYS:
        if key not in value:
            fail(join(path, key), "required")
        check_unit(value[key], join(path, key))
    for axis in ("x", "y"):
        lo, hi = value[f"{axis}_min"], value[f"{axis}_max"]
        if lo > hi:
            fail(path, f"{axis}_min must be <= {axis}_max", _Said(f"{axis}_min={lo}, {axis}_max={hi}"))


def check_spatial_refs(value: Any, path: str) -> None:
    for i, ref in enumerate(check_list(value, path)):
        where = join(path, i)
        if not isinstance(ref, (list, tuple)) or len(ref) not in (2, 4):
            fail(where, "must be [x, y] or [x_min, y_min, x_max, y_max]", ref)
        for j, v in enumerate(ref):
            check_unit(v, join(where, j))
        if len(ref) == 4 and (ref[0] > ref[2] or ref[1] > ref[3]):
            fail(where, "min must be <= max for both axes", list(ref))


# --- what every layer reads the same way ----------------------------------------------


def is_rollouts_body(request: Any) -> bool:
    """True when a group's or response's ``request`` is a whole ``/rollouts`` body (what some
    callers echo) rather than the skill request itself."""
    return isinstance(request, Mapping) and "skill" not in request and isinstance(request.get("request"), Mapping)


def skill_request_of(request: Any) -> Any:
    """The skill request in a group's or response's ``request``: itself, or the inner ``request``
    of a whole ``/rollouts`` body. Anything else is returned unchanged (validators report it)."""
    return request["request"] if is_rollouts_body(request) else request


def replace_skill_request(request: Mapping[str, Any], change: Callable[[dict], dict]) -> dict:
    """A copy of a group's ``request`` whose skill request is ``change(copy of it)``, wherever it
    sits (itself, or inside a whole ``/rollouts`` body): used to strip, restore or encode images."""
    if is_rollouts_body(request):
        return {**request, "request": change(dict(request["request"]))}
    return change(dict(request))


def output_target(skill: str, output: Mapping[str, Any], *, reasoning: bool | None = None) -> dict:
    """A rollout's or inference call's ``output`` as an SFT target (or ground truth) of ``skill``:
    detect ``objects`` → ``boxes`` (box keys only), point ``points``, query ``answer``.

    ``reasoning`` (query): True gives the target a ``reasoning`` ``{"text"}`` ("" when the output
    has none), False leaves it out, None copies what the output has.
    """
    if skill == "detect":
        return {"boxes": [{k: o[k] for k in BOX_KEYS} for o in output.get("objects") or []]}
    if skill == "point":
        return {"points": [{k: p[k] for k in POINT_KEYS} for p in output.get("points") or []]}
    target: dict[str, Any] = {"answer": output.get("answer") or ""}
    given = output.get("reasoning") if isinstance(output.get("reasoning"), Mapping) else None
    if reasoning or (reasoning is None and given is not None):
        target["reasoning"] = {"text": (given or {}).get("text") or ""}
    return target


# --- settings ---------------------------------------------------------------------------

_SETTING_RULES: dict[str, Callable[[Any, str], Any]] = {
    "temperature": lambda v, p: check_number(v, p, 0),
    "top_p": lambda v, p: check_number(v, p, 0, 1, lo_open=True),
    "max_tokens": lambda v, p: check_int(v, p, 1, MAX_TOKENS),
    "max_objects": lambda v, p: check_int(v, p, 1, MAX_OBJECTS),
}


def validate_settings(settings: Any, path: str = "settings", *, keys: tuple = SETTINGS_KEYS) -> None:
    """Sampling settings: only ``keys``; temperature >= 0, 0 < top_p <= 1, token/object caps."""
    for key, value in check_dict(settings, path).items():
        if key not in keys:
            fail(join(path, key), f"unknown setting; allowed: {', '.join(keys)}")
        _SETTING_RULES[key](value, join(path, key))


# --- field tables: which fields each request kind requires or allows --------------------

_FIELD_RULES: dict[str, Callable[[Any, str], Any]] = {
    "question": check_text,
    "object": check_text,
    "image_url": check_image_url,
    "image": check_base64,
    "images": lambda v, p: [check_base64(x, join(p, i)) for i, x in enumerate(check_list(v, p, min_len=1))],
    "spatial_refs": check_spatial_refs,
    "reasoning": check_bool,
    "stream": check_bool,
    "length": check_choice(CAPTION_LENGTHS),
    "settings": validate_settings,
    "model": check_model,
}

_SKILL_REQUEST_FIELDS = {
    "query": {"question": REQUIRED, "image_url": OPTIONAL, "spatial_refs": OPTIONAL,
              "reasoning": OPTIONAL, "settings": OPTIONAL},
    "point": {"object": REQUIRED, "image_url": REQUIRED, "settings": OPTIONAL},
    "detect": {"object": REQUIRED, "image_url": REQUIRED, "settings": OPTIONAL},
}

_INFERENCE_FIELDS = {
    "query": {"question": REQUIRED, "image_url": OPTIONAL, "spatial_refs": OPTIONAL,
              "reasoning": OPTIONAL, "stream": OPTIONAL, "settings": OPTIONAL, "model": OPTIONAL},
    "caption": {"image_url": REQUIRED, "length": OPTIONAL, "stream": OPTIONAL,
                "settings": OPTIONAL, "model": OPTIONAL},
    "point": {"object": REQUIRED, "image_url": REQUIRED, "spatial_refs": OPTIONAL,
              "settings": OPTIONAL, "model": OPTIONAL},
    "detect": {"object": REQUIRED, "image_url": REQUIRED, "settings": OPTIONAL, "model": OPTIONAL},
}

_BATCH_FIELDS = {
    "caption": {"image": REQUIRED, "length": OPTIONAL, "settings": OPTIONAL},
    "query": {"image": OPTIONAL, "images": OPTIONAL, "question": REQUIRED, "reasoning": OPTIONAL,
              "settings": OPTIONAL},
    "detect": {"image": REQUIRED, "object": REQUIRED},
    "point": {"image": REQUIRED, "object": REQUIRED},
}


def _check_fields(body: dict, kind: str, family: Mapping[str, Mapping[str, str]], path: str,
                  what: str, *, imageless: bool = False) -> None:
    """Check every known field of ``body`` against ``family[kind]``; unknown fields are ignored.
    ``imageless``: the image was stripped (a stored request), so it is not required."""
    table = family[kind]
    for field, rule in _FIELD_RULES.items():
        value = body.get(field)
        where = join(path, field)
        if value is None:
            if table.get(field) == REQUIRED and not (imageless and field == "image_url"):
                fail(where, f"required for {what}")
            continue
        if field not in table:
            if value is False:  # reasoning/stream false is the default everywhere
                continue
            allowed = [k for k, t in family.items() if field in t]
            hint = f" (only for {', '.join(allowed)})" if allowed else ""
            fail(where, f"not allowed for {what}{hint}")
        if field == "settings" and family is _BATCH_FIELDS:
            validate_settings(value, where, keys=BATCH_SETTINGS_KEYS)
        else:
            rule(value, where)
    if (body.get("spatial_refs") is not None and "image_url" in table and body.get("image_url") is None
            and not imageless):
        fail(join(path, "spatial_refs"), "needs an image (coordinates are relative to it)")


def _check_skill(value: Any, path: str, skills: tuple = SKILLS) -> str:
    if value not in skills or isinstance(value, bool):
        fail(path, f"must be one of {', '.join(skills)}", value)
    return value


# --- tuning -------------------------------------------------------------------------------


def validate_finetune_create(name: Any, rank: Any) -> None:
    """Finetune creation: name of 1-128 ``[A-Za-z0-9._-]`` characters, rank in 8/16/24/32."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        fail("name", "must be 1-128 characters of letters, digits, '.', '-' or '_'", name)
    if not is_int(rank) or rank not in RANKS:
        fail("rank", f"must be one of {', '.join(map(str, RANKS))}", rank)


def validate_finetune_id(value: Any, path: str = "finetune_id") -> str:
    return check_text(value, path, max_len=128)


def validate_skill_request(req: Any, path: str = "request", *, imageless: bool = False) -> dict:
    """A skill request (``/rollouts`` ``request``, train-step group ``request``), wire format.
    ``imageless``: its image was stripped for storage (it is not required)."""
    check_dict(req, path)
    skill = _check_skill(req.get("skill"), join(path, "skill"))
    _check_fields(req, skill, _SKILL_REQUEST_FIELDS, path, f"skill '{skill}'", imageless=imageless)
    return req


def _check_geometry(skill: str, value: Any, path: str, what: str) -> None:
    """Point/detect ground truth or SFT target: point takes points xor boxes, detect boxes."""
    check_dict(value, path)
    allowed = ("points", "boxes") if skill == "point" else ("boxes",)
    for key in value:
        if key not in allowed:
            hint = " (rollout outputs call them 'objects'; send them as 'boxes')" if key == "objects" else ""
            fail(join(path, key), f"unknown key for a {skill} {what}; expected {' or '.join(allowed)}{hint}")
    present = [k for k in allowed if value.get(k) is not None]
    if len(present) != 1:
        fail(path, f"a {skill} {what} needs exactly one of points or boxes" if skill == "point"
             else f"a {skill} {what} needs boxes")
    _check_items(value[present[0]], join(path, present[0]), check_point if present[0] == "points" else check_box)


def _check_items(value: Any, path: str, check: Callable[[Any, str], None]) -> None:
    for i, item in enumerate(check_list(value, path, max_len=MAX_ITEMS)):
        check(item, join(path, i))


def validate_ground_truth(skill: str, gt: Any, path: str = "ground_truth") -> None:
    """Ground truth for server-computed rewards: point (points xor boxes) and detect (boxes)."""
    if skill == "query":
        fail(path, "only supported for skills point and detect; score query rollouts yourself")
    _check_geometry(skill, gt, path, "ground truth")


def validate_target(skill: str, target: Any, path: str, *, reasoning: bool = False) -> None:
    """An SFT target of ``skill``'s shape; query reasoning is required iff the request asks for it."""
    if skill != "query":
        _check_geometry(skill, target, path, "target")
        return
    check_dict(target, path)
    for key in target:
        if key not in ("answer", "reasoning"):
            fail(join(path, key), "unknown key for a query target; expected answer and reasoning")
    if target.get("answer") is None:
        fail(join(path, "answer"), "required")
    value = target.get("reasoning")
    where = join(path, "reasoning")
    if reasoning and value is None:
        fail(where, "required when request.reasoning is true")
    if not reasoning and value is not None:
        fail(where, "must be omitted when request.reasoning is not true")
    _check_query_output(target, path)


def _check_query_output(output: dict, path: str) -> None:
    """``answer`` (a string, may be empty) and optional ``reasoning`` ``{"text": str, ...}``."""
    check_unicode(output.get("answer"), join(path, "answer"))
    value = output.get("reasoning")
    if value is not None:
        where = join(path, "reasoning")
        check_dict(value, where)
        check_unicode(value.get("text"), join(where, "text"))


def check_output(skill: str, output: Any, path: str) -> None:
    """A rollout ``output`` of ``skill``: query answer/reasoning, point ``points``, detect ``objects``."""
    if not isinstance(output, dict):
        fail(path, "required (an object; pass rollouts back unchanged)")
    if skill == "query":
        _check_query_output(output, path)
        return
    key, check = ("points", check_point) if skill == "point" else ("objects", check_box)
    if output.get(key) is None:
        fail(join(path, key), f"required in a {skill} rollout output")
    _check_items(output[key], join(path, key), check)


def _check_token_list(value: Any, path: str) -> None:
    for i, item in enumerate(check_list(value, path, max_len=MAX_TOKEN_IDS)):
        if isinstance(item, (list, tuple)):
            for j, sub in enumerate(check_list(item, join(path, i), max_len=4)):
                check_int(sub, join(join(path, i), j), 0, 2**31 - 1)
        else:
            check_int(item, join(path, i), 0, 2**31 - 1)


def check_rollout_metadata(rollout: dict, path: str) -> None:
    """Optional metadata of a rollout, when present, has its documented types (never trusted for training)."""
    for key in ROLLOUT_METADATA:
        if rollout.get(key) is not None:
            _check_token_list(rollout[key], join(path, key))
    if rollout.get("finish_reason") is not None and not isinstance(rollout["finish_reason"], str):
        fail(join(path, "finish_reason"), "must be a string such as 'stop' or 'length'", rollout["finish_reason"])
    if rollout.get("has_answer_separator") is not None:
        check_bool(rollout["has_answer_separator"], join(path, "has_answer_separator"))


@dataclass(frozen=True)
class RolloutsView:
    """What a valid ``/rollouts`` body says (``request`` is the skill request dict of the body)."""

    finetune_id: str | None
    num_rollouts: int
    request: Mapping[str, Any]
    ground_truth: Mapping[str, Any] | None

    @property
    def skill(self) -> str:
        return self.request["skill"]


def validate_rollouts_body(body: Any, path: str = "", *, require_finetune_id: bool = True,
                           imageless: bool = False) -> RolloutsView:
    """A ``POST /rollouts`` body: finetune_id, num_rollouts 1-16, request, optional ground_truth."""
    check_dict(body, path or "body")
    if require_finetune_id:
        validate_finetune_id(body.get("finetune_id"), join(path, "finetune_id"))
    check_int(body.get("num_rollouts"), join(path, "num_rollouts"), MIN_ROLLOUTS, MAX_ROLLOUTS)
    req = validate_skill_request(body.get("request"), join(path, "request"), imageless=imageless)
    if body.get("ground_truth") is not None:
        validate_ground_truth(req["skill"], body["ground_truth"], join(path, "ground_truth"))
    return RolloutsView(body.get("finetune_id"), body["num_rollouts"], req, body.get("ground_truth"))


@dataclass(frozen=True)
class GroupView:
    """What one valid train-step group says, with the paths of its parts for error messages.

    ``request`` is the skill request (the inner one when the group echoes a whole ``/rollouts``
    body); ``outputs`` and ``rewards`` (rl) are per rollout; ``target`` (sft) is ``target`` or the
    legacy ``targets[0]``.
    """

    path: str
    mode: str
    request: Mapping[str, Any]
    request_path: str
    outputs: tuple = ()
    rewards: tuple = ()
    target: Mapping[str, Any] | None = None
    target_path: str = ""

    @property
    def skill(self) -> str:
        return self.request["skill"]

    @property
    def reasoning(self) -> bool:
        return self.skill == "query" and self.request.get("reasoning") is True

    def output_path(self, i: int) -> str:
        return f"{self.path}.rollouts[{i}].output"


def _group_request(group: dict, path: str, imageless: bool) -> tuple[dict, str]:
    """The skill request of a group and its path: the echoed skill request or a full /rollouts body."""
    req = group.get("request")
    where = join(path, "request")
    if req is None:
        fail(where, "required")
    check_dict(req, where)
    if group.get("mode") == "rl" and is_rollouts_body(req):
        body = validate_rollouts_body(req, where, require_finetune_id=False, imageless=imageless)
        return body.request, join(where, "request")
    return validate_skill_request(req, where, imageless=imageless), where


def check_rewards(rewards: Any, n: int, path: str = "rewards") -> list[float]:
    """``n`` finite numbers (one per rollout) as floats; raises ValidationError naming ``path[i]``."""
    if rewards is None:
        fail(path, "required (one per rollout)")
    rewards = check_list(rewards, path)
    if len(rewards) != n:
        fail(path, f"expected {n} rewards, one per rollout", len(rewards))
    for i, reward in enumerate(rewards):
        if not is_number(reward):
            fail(join(path, i), "must be a finite number", reward)
    return [float(r) for r in rewards]


def _check_rollouts(rollouts: Any, skill: str, path: str) -> tuple:
    """Rollouts of ``skill`` (pass them back unchanged) → their outputs."""
    rollouts = check_list(rollouts, path, min_len=1, max_len=MAX_GROUP_ROLLOUTS)
    outputs = []
    for i, rollout in enumerate(rollouts):
        where = join(path, i)
        check_dict(rollout, where)
        if rollout.get("skill") not in (None, skill):
            fail(join(where, "skill"), f"must match the request's skill '{skill}'", rollout["skill"])
        check_output(skill, rollout.get("output"), join(where, "output"))
        check_rollout_metadata(rollout, where)
        outputs.append(rollout["output"])
    return tuple(outputs)


def _check_sft(group: dict, req: dict, path: str) -> tuple[dict, str]:
    has_target, has_targets = group.get("target") is not None, group.get("targets") is not None
    if has_target == has_targets:
        fail(join(path, "target"), "an sft group needs exactly one of target or targets (legacy)")
    if has_target:
        target, where = group["target"], join(path, "target")
    else:
        targets = check_list(group["targets"], join(path, "targets"), min_len=1, max_len=1)
        target, where = targets[0], join(join(path, "targets"), 0)
    validate_target(req["skill"], target, where, reasoning=req.get("reasoning") is True)
    return target, where


_MODE_ONLY_FIELDS = {"rl": ("rollouts", "rewards"), "sft": ("target", "targets")}


def validate_group(group: Any, path: str, *, imageless: bool = False) -> GroupView:
    """One train-step group: ``rl`` (request, rollouts, rewards) or ``sft`` (request, target).
    ``imageless``: a group stored without its image (the label store's), otherwise the same rules."""
    check_dict(group, path)
    mode = group.get("mode")
    if mode not in GROUP_MODES:
        fail(join(path, "mode"), "must be 'rl' or 'sft'", mode)
    for other, fields in _MODE_ONLY_FIELDS.items():
        for field in fields if other != mode else ():
            if group.get(field) is not None:
                fail(join(path, field), f"only for {other} groups")
    req, req_path = _group_request(group, path, imageless)
    if mode == "rl":
        outputs = _check_rollouts(group.get("rollouts"), req["skill"], join(path, "rollouts"))
        where = join(path, "rewards")
        if group.get("rewards") is None:
            fail(where, "required for an rl group (one per rollout)")
        rewards = check_rewards(group["rewards"], len(outputs), where)
        return GroupView(path, mode, req, req_path, outputs, tuple(rewards))
    target, target_path = _check_sft(group, req, path)
    return GroupView(path, mode, req, req_path, target=target, target_path=target_path)


@dataclass(frozen=True)
class TrainStepView:
    """What a valid ``/train_step`` body says: its groups' views and ``lr`` (None: the default)."""

    finetune_id: str
    groups: tuple[GroupView, ...]
    lr: float | None


def validate_train_step_body(body: Any) -> TrainStepView:
    """A ``POST /train_step`` body: finetune_id, 1-64 groups, optional lr in (0, 1]."""
    check_dict(body, "body")
    validate_finetune_id(body.get("finetune_id"))
    groups = check_list(body.get("groups"), "groups", min_len=1, max_len=MAX_GROUPS)
    views = tuple(validate_group(group, join("groups", i)) for i, group in enumerate(groups))
    if "lr" in body:
        check_number(body["lr"], "lr", 0, 1, lo_open=True)
    return TrainStepView(body["finetune_id"], views, body.get("lr"))


@dataclass(frozen=True)
class ResponseView:
    """What a valid ``rollouts`` response says: the skill request, its rollouts' outputs and the
    server's rewards (None when it computed none)."""

    request: Mapping[str, Any]
    outputs: tuple
    rewards: tuple | None

    @property
    def skill(self) -> str:
        return self.request["skill"]


def validate_response(response: Any, path: str = "response") -> ResponseView:
    """A ``rollouts`` response as a reviewer reads it: ``request`` (echoed skill request or whole
    body, by the skill-request rules), 1-32 rollouts with outputs of that skill, and ``rewards``
    (one per rollout) when present. Its image is not required (the picture may come separately)."""
    check_dict(response, path)
    where = join(path, "request")
    req = response.get("request")
    if req is None:
        fail(where, "required (the request the rollouts answer)")
    if is_rollouts_body(req):
        req = validate_rollouts_body(req, where, require_finetune_id=False, imageless=True).request
    else:
        validate_skill_request(req, where, imageless=True)
    outputs = _check_rollouts(response.get("rollouts"), req["skill"], join(path, "rollouts"))
    rewards = response.get("rewards")
    if rewards is not None:
        rewards = tuple(check_rewards(rewards, len(outputs), join(path, "rewards")))
    return ResponseView(req, outputs, rewards)


def validate_metrics_body(body: Any) -> dict:
    """A metrics body: step >= 0 and 1-100 finite metrics named ``[A-Za-z0-9_./-]+``."""
    check_dict(body, "body")
    validate_step(body.get("step"))
    metrics = check_dict(body.get("metrics"), "metrics")
    if not MIN_METRICS <= len(metrics) <= MAX_METRICS:
        fail("metrics", f"must have {MIN_METRICS} to {MAX_METRICS} metrics", len(metrics))
    for name, value in metrics.items():
        where = f"metrics[{name!r}]"
        if not isinstance(name, str) or not _METRIC_RE.fullmatch(name):
            fail(where, "name must be letters, digits, '_', '.', '/' or '-'")
        if not is_number(value):
            fail(where, "must be a finite number", value)
    return body


def validate_step(step: Any, path: str = "step") -> int:
    return check_int(step, path, 0, MAX_STEP)


def validate_page(limit: Any, cursor: Any) -> None:
    """Pagination: limit 1-100, cursor an opaque string or None."""
    check_int(limit, "limit", 1, MAX_PAGE_LIMIT)
    if cursor is not None and not isinstance(cursor, str):
        fail("cursor", "must be a string (the next_cursor of the previous page) or None", cursor)


# --- inference and batch ----------------------------------------------------------------


def validate_inference(kind: str, body: Any) -> dict:
    """A ``/query``, ``/caption``, ``/point`` or ``/detect`` body, wire format."""
    kind = _check_skill(kind, "endpoint", INFERENCE_KINDS)
    check_dict(body, "body")
    _check_fields(body, kind, _INFERENCE_FIELDS, "", f"/{kind}")
    return body


def validate_batch_line(line: Any, index: int) -> dict:
    """One batch JSONL line (API.md §5.2): skill, bare-base64 image(s) and the skill's fields."""
    path = f"lines[{index}]"
    check_dict(line, path)
    skill = _check_skill(line.get("skill"), join(path, "skill"), BATCH_SKILLS)
    _check_fields(line, skill, _BATCH_FIELDS, path, f"batch {skill} lines")
    if skill == "query" and (line.get("image") is None) == (line.get("images") is None):
        fail(join(path, "image"), "a batch query line needs exactly one of image or images")
    return line
