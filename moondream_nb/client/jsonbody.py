"""JSON bodies that carry pre-encoded images without re-serialising or re-parsing them.

``json.dumps`` scans every character of a multi-megabyte base64 string on every call, and
``json.loads`` does the same for the request the server echoes back. Image strings produced by
the encoder need no escaping, so they are swapped for short tokens on the way out (the result
is byte-identical to ``json.dumps(payload).encode()``, the official client's body) and the
echoed copies are swapped back to the very same ``str`` objects on the way in — which also
lets a later train step that sends the echo splice it again instead of scanning it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import ValidationError

# Only strings at least this long are worth a lookup.
MIN_SPLICE_CHARS = 4096


def _walk(value: Any, leaf: Callable[[str], Any], min_chars: int = MIN_SPLICE_CHARS) -> Any:
    """Copy of ``value`` with every string ``s`` of at least ``min_chars`` replaced by ``leaf(s)``."""
    if isinstance(value, dict):
        return {k: _walk(v, leaf, min_chars) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        # Token and coordinate lists hold no strings; skip walking them.
        if value and isinstance(value[0], (dict, list, tuple, str)):
            return [_walk(v, leaf, min_chars) for v in value]
        return value
    if isinstance(value, str) and len(value) >= min_chars:
        return leaf(value)
    return value


def dumps(payload: Any, lookup: Callable[[str], bytes | None] = lambda s: None) -> bytes:
    """Serialise ``payload`` exactly like ``json.dumps(payload).encode()``.

    ``lookup(s)`` returns the JSON-safe ASCII bytes of a long string ``s`` when they are known
    (an encoded image), else None. NaN and infinity are refused: JSON cannot carry them.
    """
    raws: list[bytes] = []
    nonce = uuid.uuid4().hex

    def swap(s: str) -> str:
        raw = lookup(s)
        if raw is None:
            return s
        raws.append(raw)
        return f"@@{nonce}:{len(raws) - 1}@@"

    try:
        text = json.dumps(_walk(payload, swap), allow_nan=False)
    except ValueError as exc:
        raise ValidationError(f"body: {exc} (JSON cannot carry NaN or infinity)", param="body") from exc
    except TypeError as exc:
        raise ValidationError(f"body: {exc}", param="body") from exc
    body = text.encode("utf-8")
    if not raws:
        return body
    # Each token is "@@<nonce>:<i>@@"; the random nonce cannot occur anywhere else.
    head, *rest = body.split(b"@@" + nonce.encode() + b":")
    parts = [head]
    for piece in rest:
        index, _, tail = piece.partition(b"@@")
        parts += (raws[int(index)], tail)
    return b"".join(parts)


def loads(content: bytes, known: Sequence[tuple[str, bytes]] = ()) -> Any:
    """``json.loads(content)``, returning each known image string found as a whole JSON string
    value as the given ``str`` object instead of a freshly parsed copy.

    ``known``: ``(string, its ASCII bytes)`` pairs.
    """
    spans: list[tuple[int, int, str]] = []
    for text, raw in known:
        if len(raw) < MIN_SPLICE_CHARS:
            continue
        # Find candidates by a short prefix, confirm with one comparison (a substring search
        # for the whole megabyte-long needle would cost as much as parsing it).
        prefix, start = b'"' + raw[:64], 0
        while (i := content.find(prefix, start)) != -1:
            end = i + 1 + len(raw)
            if content[end:end + 1] == b'"' and content[i + 1:end] == raw:
                spans.append((i + 1, end, text))
                start = end
            else:
                start = i + 1
    if not spans:
        return json.loads(content)
    nonce = uuid.uuid4().hex
    originals: dict[str, str] = {}
    parts, pos = [], 0
    for begin, end, text in sorted(spans):
        if begin < pos:
            continue  # the same image listed twice
        token = f"@@{nonce}:{len(originals)}@@"
        originals[token] = text
        parts += (content[pos:begin], token.encode())
        pos = end
    parts.append(content[pos:])
    content = b"".join(parts)
    return _walk(json.loads(content), lambda s: originals.get(s, s), min_chars=0)
