"""The built-in model's vocabulary and the deterministic output ↔ token round trip.

One sequence per example: ``BOS SKILL prompt-bytes [refs] SEP answer EOS``. Text is UTF-8 bytes;
a point is two tokens (image cell, offset inside the cell); a box adds a width and a height token.
Coordinates live in the model's square letterboxed frame and are mapped to and from the image's
normalized frame here, so the server can re-derive training tokens from any rollout ``output``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from ..protocol import BOX_KEYS

RES = 96  # model input side (pixels)
GRID = 12  # image cells per side
OFFS = 16  # offset bins per cell side
SIZE_BINS = 128  # log-scale bins for box width / height
SIZE_MIN_LOG2 = -6.0  # smallest representable size: 2**-6 of the frame

SPECIALS = ("BOS", "EOS", "SEP", "THINK", "ANSWER", "PAD", "QUERY", "POINT", "DETECT",
            "CAPTION_SHORT", "CAPTION_NORMAL", "CAPTION_LONG")
SPECIAL0 = 256
BOS, EOS, SEP, THINK, ANSWER, PAD, QUERY, POINT, DETECT, CAPTION_SHORT, CAPTION_NORMAL, CAPTION_LONG = range(
    SPECIAL0, SPECIAL0 + len(SPECIALS)
)
CELL0 = 272
N_CELLS = GRID * GRID
OFF0 = CELL0 + N_CELLS
N_OFFS = OFFS * OFFS
SIZE0 = OFF0 + N_OFFS
VOCAB = SIZE0 + SIZE_BINS

SKILL_TOKEN = {"query": QUERY, "point": POINT, "detect": DETECT}
CAPTION_TOKEN = {"short": CAPTION_SHORT, "normal": CAPTION_NORMAL, "long": CAPTION_LONG}

# Grammar states: which tokens may come next. Used to mask logits in training and sampling.
S_TEXT, S_THINK, S_ITEM, S_OFF, S_SIZE, S_FORCED_THINK, S_NONE = range(7)
N_STATES = 7


def allowed_ids(state: int) -> list[int]:
    """Token ids allowed in grammar ``state``."""
    if state == S_TEXT:
        return list(range(256)) + [EOS]
    if state == S_THINK:
        return list(range(256)) + [ANSWER]
    if state == S_ITEM:
        return list(range(CELL0, CELL0 + N_CELLS)) + [EOS]
    if state == S_OFF:
        return list(range(OFF0, OFF0 + N_OFFS))
    if state == S_SIZE:
        return list(range(SIZE0, SIZE0 + SIZE_BINS))
    if state == S_FORCED_THINK:
        return [THINK]
    return []


@dataclass(frozen=True)
class Frame:
    """Maps normalized image coordinates to the model's letterboxed square and back.

    The image is resized to ``(sw, sh)`` pixels (longest side ``RES``) and pasted at ``(ox, oy)``.
    """

    sw: int
    sh: int
    ox: int
    oy: int

    @classmethod
    def of(cls, width: int, height: int) -> "Frame":
        side = max(width, height)
        sw, sh = max(1, round(width * RES / side)), max(1, round(height * RES / side))
        return cls(sw, sh, (RES - sw) // 2, (RES - sh) // 2)

    def to_model(self, x: float, y: float) -> tuple[float, float]:
        return (self.ox + x * self.sw) / RES, (self.oy + y * self.sh) / RES

    def to_image(self, u: float, v: float) -> tuple[float, float]:
        x = (u * RES - self.ox) / self.sw
        y = (v * RES - self.oy) / self.sh
        return min(1.0, max(0.0, x)), min(1.0, max(0.0, y))


def _clamp(v: float, lo: int, hi: int) -> int:
    return max(lo, min(hi, v))


def point_tokens(u: float, v: float) -> list[int]:
    """A point in the model frame → [cell, offset]."""
    gx, gy = u * GRID, v * GRID
    i, j = _clamp(int(gx), 0, GRID - 1), _clamp(int(gy), 0, GRID - 1)
    fx = _clamp(int((gx - i) * OFFS), 0, OFFS - 1)
    fy = _clamp(int((gy - j) * OFFS), 0, OFFS - 1)
    return [CELL0 + j * GRID + i, OFF0 + fy * OFFS + fx]


def point_from_tokens(cell: int, off: int) -> tuple[float, float]:
    c, o = cell - CELL0, off - OFF0
    i, j = c % GRID, c // GRID
    fx, fy = o % OFFS, o // OFFS
    return (i + (fx + 0.5) / OFFS) / GRID, (j + (fy + 0.5) / OFFS) / GRID


def size_token(s: float) -> int:
    lg = math.log2(max(s, 2.0 ** SIZE_MIN_LOG2))
    return SIZE0 + _clamp(round((lg - SIZE_MIN_LOG2) / -SIZE_MIN_LOG2 * (SIZE_BINS - 1)), 0, SIZE_BINS - 1)


def size_from_token(t: int) -> float:
    return 2.0 ** (SIZE_MIN_LOG2 + (t - SIZE0) / (SIZE_BINS - 1) * -SIZE_MIN_LOG2)


def box_tokens(frame: Frame, box: dict[str, float]) -> list[int]:
    u0, v0 = frame.to_model(box["x_min"], box["y_min"])
    u1, v1 = frame.to_model(box["x_max"], box["y_max"])
    return point_tokens((u0 + u1) / 2, (v0 + v1) / 2) + [size_token(u1 - u0), size_token(v1 - v0)]


def box_from_tokens(frame: Frame, toks: Sequence[int]) -> dict[str, float]:
    u, v = point_from_tokens(toks[0], toks[1])
    w, h = size_from_token(toks[2]), size_from_token(toks[3])
    x0, y0 = frame.to_image(u - w / 2, v - h / 2)
    x1, y1 = frame.to_image(u + w / 2, v + h / 2)
    return {"x_min": x0, "y_min": y0, "x_max": x1, "y_max": y1}


def ref_tokens(frame: Frame, ref: Sequence[float]) -> list[int]:
    """A spatial reference ([x, y] or [x_min, y_min, x_max, y_max]) → prompt tokens."""
    if len(ref) == 2:
        return point_tokens(*frame.to_model(ref[0], ref[1]))
    return box_tokens(frame, dict(zip(BOX_KEYS, ref)))


def _sort_key(frame: Frame, x: float, y: float) -> tuple[int, float]:
    # Items are emitted in cell order so the pointer always moves forward through the grid.
    toks = point_tokens(*frame.to_model(x, y))
    return toks[0], toks[1]


def prompt_tokens(frame: Frame, request: dict[str, Any]) -> list[int]:
    """BOS SKILL prompt [refs] SEP for a skill request (query/point/detect) or a caption request."""
    skill = request["skill"]
    if skill == "caption":
        return [BOS, CAPTION_TOKEN[request.get("length") or "normal"], SEP]
    text = request["question"] if skill == "query" else request["object"]
    toks = [BOS, SKILL_TOKEN[skill]] + list(text.encode("utf-8"))
    for ref in request.get("spatial_refs") or ():
        toks += ref_tokens(frame, ref)
    return toks + [SEP]


def answer_tokens(frame: Frame, skill: str, output: dict[str, Any], reasoning: bool = False) -> list[int]:
    """The answer tokens (ending in EOS) for a rollout ``output`` or an SFT target.

    query: ``{"answer", "reasoning"?: {"text"}}``; caption: ``{"caption"}``;
    point: ``{"points"}``; detect: ``{"objects"}`` or ``{"boxes"}``.
    """
    if skill == "query":
        toks: list[int] = []
        if reasoning:
            text = ((output.get("reasoning") or {}).get("text")) or ""
            toks += [THINK] + list(text.encode("utf-8")) + [ANSWER]
        return toks + list(str(output.get("answer", "")).encode("utf-8")) + [EOS]
    if skill == "caption":
        return list(output["caption"].encode("utf-8")) + [EOS]
    if skill == "point":
        pts = sorted(output.get("points") or (), key=lambda p: _sort_key(frame, p["x"], p["y"]))
        toks = []
        for p in pts:
            toks += point_tokens(*frame.to_model(p["x"], p["y"]))
        return toks + [EOS]
    if skill == "detect":
        boxes = output.get("objects") if output.get("objects") is not None else output.get("boxes") or ()
        boxes = sorted(boxes, key=lambda b: _sort_key(frame, (b["x_min"] + b["x_max"]) / 2, (b["y_min"] + b["y_max"]) / 2))
        toks = []
        for b in boxes:
            toks += box_tokens(frame, b)
        return toks + [EOS]
    raise ValueError(f"skill: unknown skill {skill!r}")


def states_for(skill: str, answer: Sequence[int], reasoning: bool = False) -> list[int]:
    """The grammar state in force before each answer token (same length as ``answer``)."""
    states = []
    if skill in ("query", "caption"):
        mode = S_FORCED_THINK if (skill == "query" and reasoning) else S_TEXT
        for t in answer:
            states.append(mode)
            if mode == S_FORCED_THINK:
                mode = S_THINK
            elif mode == S_THINK and t == ANSWER:
                mode = S_TEXT
        return states
    per_item = 2 if skill == "point" else 4
    k = 0
    for _ in answer:
        states.append(S_ITEM if k == 0 else S_OFF if k == 1 else S_SIZE)
        k = (k + 1) % per_item
    return states


def decode(frame: Frame, skill: str, toks: Iterable[int], reasoning: bool = False) -> dict[str, Any]:
    """Answer tokens (EOS optional) → the skill's ``output`` dict, plus ``thinking_tokens`` split."""
    toks = [t for t in toks if t != EOS]
    if skill in ("query", "caption"):
        thinking: list[int] = []
        if skill == "query" and reasoning and toks and toks[0] == THINK:
            end = toks.index(ANSWER) if ANSWER in toks else len(toks)
            thinking, toks = toks[1:end], toks[end + 1:]
        text = bytes(t for t in toks if t < 256).decode("utf-8", errors="replace")
        if skill == "caption":
            return {"caption": text}
        out: dict[str, Any] = {"answer": text}
        if reasoning:
            out["reasoning"] = {"text": bytes(t for t in thinking if t < 256).decode("utf-8", errors="replace"), "grounding": []}
        return out
    if skill == "point":
        pts = []
        for k in range(0, len(toks) - 1, 2):
            x, y = frame.to_image(*point_from_tokens(toks[k], toks[k + 1]))
            pts.append({"x": x, "y": y})
        return {"points": pts}
    objs = [box_from_tokens(frame, toks[k:k + 4]) for k in range(0, len(toks) - 3, 4)]
    return {"objects": objs}
