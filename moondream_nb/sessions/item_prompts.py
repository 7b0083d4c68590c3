"""What a session asks about each item: the skill, the prompt, and the item's ground truth.

``prompt`` may be one string for every item, a function of the item, or None: then each item's
own ground-truth label of the skill supplies it (as the demo dataset's labels do).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Union

from .. import protocol
from ..data import Item, Label

Prompt = Union[str, Callable[[Item], str], None]


def check_skill(skill: Any) -> str:
    """``skill`` if it is point, detect or query; else ValidationError naming ``skill``."""
    if skill not in protocol.SKILLS:
        protocol.fail("skill", f"must be one of {', '.join(protocol.SKILLS)}", skill)
    return skill


def prompt_for(item: Item, skill: str, prompt: Prompt) -> str:
    """The object (point/detect) or question (query) to ask about ``item``.

    Raises:
        ValidationError: ``prompt`` is None and the item has no label of ``skill`` to take it from.
    """
    if callable(prompt):
        text = prompt(item)
    elif prompt is None:
        own = item.labels_for(skill)
        if not own:
            protocol.fail("prompt",
                          f"item {item.image_id!r} has no {skill} label to take the prompt from; pass prompt=")
        text = own[0].prompt
    else:
        text = prompt
    protocol.check_text(text, "prompt")
    return text


def truth_for(item: Item, skill: str, prompt: str) -> Label | None:
    """The item's ground-truth label for (skill, prompt), or None."""
    found = item.labels_for(skill, prompt)
    return found[0] if found else None


def rollout_kwargs(item: Item, skill: str, prompt: str, *, reasoning: bool = False) -> dict:
    """Keyword arguments for ``ft.rollouts`` (image, object/question, reasoning) for one item."""
    kwargs: dict[str, Any] = {"skill": skill, "image": item.image}
    if skill == "query":
        kwargs["question"] = prompt
        if reasoning:
            kwargs["reasoning"] = True
    else:
        kwargs["object"] = prompt
    return kwargs


def fit_target(skill: str, target: dict, *, reasoning: bool) -> dict:
    """``target`` adjusted to the session's request: query reasoning kept only when asked for."""
    target = dict(target)
    if skill == "query":
        if not reasoning:
            target.pop("reasoning", None)
        elif "reasoning" not in target:
            target["reasoning"] = {"text": ""}
    return target

