"""JSON schemas of the request bodies and query parameters, for the published OpenAPI document.

Documentation only: requests are checked by :mod:`moondream_nb.protocol` (one validator), but
the schema lets readers, generated clients and the fuzzer (schemathesis) see the shapes.
"""

from __future__ import annotations

from typing import Any

from .. import protocol as p

UNIT = {"type": "number", "minimum": 0, "maximum": 1}
POINT = {"type": "object", "required": ["x", "y"], "properties": {"x": UNIT, "y": UNIT}}
BOX = {"type": "object", "required": list(p.BOX_KEYS), "properties": {k: UNIT for k in p.BOX_KEYS}}
TEXT = {"type": "string", "minLength": 1, "maxLength": p.MAX_TEXT_CHARS}
IMAGE_URL = {"type": "string", "pattern": "^data:image/[a-z]+;base64,", "description": "base64 data URL"}
SETTINGS = {"type": "object", "additionalProperties": False, "properties": {
    "temperature": {"type": "number", "minimum": 0},
    "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
    "max_tokens": {"type": "integer", "minimum": 1, "maximum": p.MAX_TOKENS},
    "max_objects": {"type": "integer", "minimum": 1, "maximum": p.MAX_OBJECTS}}}
SPATIAL_REFS = {"type": "array", "items": {"type": "array", "items": UNIT, "minItems": 2, "maxItems": 4}}
SKILL_REQUEST = {"type": "object", "required": ["skill"], "properties": {
    "skill": {"type": "string", "enum": list(p.SKILLS)}, "question": TEXT, "object": TEXT, "image_url": IMAGE_URL,
    "spatial_refs": SPATIAL_REFS, "reasoning": {"type": "boolean"}, "settings": SETTINGS}}
GEOMETRY = {"type": "object", "properties": {"points": {"type": "array", "items": POINT, "maxItems": p.MAX_ITEMS},
                                             "boxes": {"type": "array", "items": BOX, "maxItems": p.MAX_ITEMS}}}
OUTPUT = {"type": "object", "properties": {
    "answer": {"type": "string"}, "points": {"type": "array", "items": POINT},
    "objects": {"type": "array", "items": BOX}}}
ROLLOUT = {"type": "object", "required": ["output"], "properties": {
    "skill": {"type": "string", "enum": list(p.SKILLS)}, "output": OUTPUT,
    "finish_reason": {"type": "string"}, "answer_tokens": {"type": "array", "items": {"type": "integer"}},
    "thinking_tokens": {"type": "array", "items": {"type": "integer"}}, "has_answer_separator": {"type": "boolean"}}}
GROUP = {"type": "object", "required": ["mode", "request"], "properties": {
    "mode": {"type": "string", "enum": list(p.GROUP_MODES)}, "request": SKILL_REQUEST,
    "rollouts": {"type": "array", "items": ROLLOUT, "maxItems": p.MAX_GROUP_ROLLOUTS},
    "rewards": {"type": "array", "items": {"type": "number"}},
    "target": {"type": "object", "properties": {**GEOMETRY["properties"], "answer": {"type": "string"}}}}}
FINETUNE_ID = {"type": "string", "pattern": "^[0-9A-HJKMNP-TV-Z]{26}$"}

CREATE = {"type": "object", "required": ["name", "rank"], "properties": {
    "name": {"type": "string", "pattern": p.NAME_PATTERN}, "rank": {"type": "integer", "enum": list(p.RANKS)}}}
ROLLOUTS = {"type": "object", "required": ["finetune_id", "num_rollouts", "request"], "properties": {
    "finetune_id": FINETUNE_ID, "num_rollouts": {"type": "integer", "minimum": p.MIN_ROLLOUTS, "maximum": p.MAX_ROLLOUTS},
    "request": SKILL_REQUEST, "ground_truth": GEOMETRY}}
TRAIN_STEP = {"type": "object", "required": ["finetune_id", "groups"], "properties": {
    "finetune_id": FINETUNE_ID, "groups": {"type": "array", "items": GROUP, "minItems": 1, "maxItems": p.MAX_GROUPS},
    "lr": {"type": "number", "exclusiveMinimum": 0, "maximum": 1}}}
METRICS = {"type": "object", "required": ["step", "metrics"], "properties": {
    "step": {"type": "integer", "minimum": 0},
    "metrics": {"type": "object", "additionalProperties": {"type": "number"}, "minProperties": 1, "maxProperties": 100}}}
MODEL = {"type": "string", "description": "moondream3-preview or <name>/<finetune_id>@<step>"}
INFERENCE = {
    "query": {"type": "object", "required": ["question"], "properties": {
        "question": TEXT, "image_url": IMAGE_URL, "spatial_refs": SPATIAL_REFS, "reasoning": {"type": "boolean"},
        "stream": {"type": "boolean"}, "settings": SETTINGS, "model": MODEL}},
    "caption": {"type": "object", "required": ["image_url"], "properties": {
        "image_url": IMAGE_URL, "length": {"type": "string", "enum": list(p.CAPTION_LENGTHS)},
        "stream": {"type": "boolean"}, "settings": SETTINGS, "model": MODEL}},
    "point": {"type": "object", "required": ["image_url", "object"], "properties": {
        "image_url": IMAGE_URL, "object": TEXT, "spatial_refs": SPATIAL_REFS, "settings": SETTINGS, "model": MODEL}},
    "detect": {"type": "object", "required": ["image_url", "object"], "properties": {
        "image_url": IMAGE_URL, "object": TEXT, "settings": SETTINGS, "model": MODEL}},
}
BATCH_COMPLETE = {"type": "object", "required": ["parts"], "properties": {
    "parts": {"type": "array", "minItems": 1, "items": {"type": "object", "required": ["partNumber", "etag"], "properties": {
        "partNumber": {"type": "integer", "minimum": 1}, "etag": {"type": "string"}}}},
    "model": MODEL}}


def body(schema: dict[str, Any], media: str = "application/json") -> dict[str, Any]:
    """``openapi_extra`` declaring a required request body of ``schema``."""
    return {"requestBody": {"required": True, "content": {media: {"schema": schema}}}}


def query(*names: str, action: str | None = None) -> dict[str, Any]:
    """``openapi_extra`` declaring query parameters (``limit``, ``cursor``, batch upload fields)."""
    kinds = {"limit": {"type": "integer", "minimum": 1, "maximum": p.MAX_PAGE_LIMIT}, "cursor": {"type": "string"},
             "uploadId": {"type": "string"}, "partNumber": {"type": "integer", "minimum": 1}}
    params = [{"name": n, "in": "query", "required": n in ("uploadId", "partNumber"), "schema": kinds[n]}
              for n in names]
    if action is not None:
        params.append({"name": "action", "in": "query", "required": True, "schema": {"type": "string", "enum": [action]}})
    return {"parameters": params}


def merge(*parts: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in parts:
        out.update(part)
    return out
