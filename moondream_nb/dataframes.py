"""pandas views of what the client saw: train-step history, rollouts, checkpoints, scores.

pandas is imported inside each function, so importing this module (or ``moondream_nb``) never
loads it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .protocol import skill_request_of

# Train-step figures first, in this order, then logged metrics alphabetically.
FIGURES = ("reward_mean", "reward_std", "kl", "router_kl", "grad_norm", "sft_loss")


def history_frame(history: Iterable[Mapping[str, Any]]) -> Any:
    """A DataFrame indexed by ``step``: one row per step, train-step figures and logged metrics.

    Args:
        history: ``ft.history`` (rows with ``kind``, ``step``, ``time`` and values); a step that
            has both a train-step row and metric rows becomes one row (the latest value wins);
            train steps the server did not apply are left out.

    Returns:
        ``pandas.DataFrame`` (index ``step``, sorted; ``time`` as UTC datetimes); empty with that
        index when there is nothing.
    """
    import pandas as pd

    # A train step the server did not apply (e.g. every reward equal) leaves the step number as it
    # was; its figures must not overwrite those of the step that was applied.
    rows = [dict(r) for r in history if isinstance(r, Mapping) and r.get("step") is not None
            and not (r.get("kind") == "train_step" and r.get("applied") is False)]
    if not rows:
        return pd.DataFrame(index=pd.Index([], name="step", dtype="int64"))
    frame = pd.DataFrame(rows).drop(columns=["kind"], errors="ignore")
    frame = frame.groupby("step", sort=True).last()
    frame.index = frame.index.astype("int64")
    if "time" in frame.columns:  # epoch seconds on the rows: a person reads dates
        frame["time"] = pd.to_datetime(frame["time"], unit="s", utc=True)
    ordered = [c for c in FIGURES if c in frame.columns]
    rest = [c for c in frame.columns if c not in ordered]
    return frame[ordered + rest]


def rollouts_frame(response: Mapping[str, Any], rewards: Sequence[float] | None = None) -> Any:
    """One row per rollout: ``skill``, ``finish_reason``, ``n_points``/``n_boxes`` or ``answer``, ``reward``.

    ``rewards`` overrides the response's own rewards (e.g. a reviewer's).
    """
    import pandas as pd

    req = skill_request_of(response.get("request")) or {}
    skill = req.get("skill")
    rewards = rewards if rewards is not None else response.get("rewards")
    rows = []
    for i, r in enumerate(response.get("rollouts") or []):
        out = r.get("output") or {}
        row: dict[str, Any] = {"rollout": i, "skill": skill, "finish_reason": r.get("finish_reason")}
        if skill == "point":
            row["n_points"] = len(out.get("points") or [])
        elif skill == "detect":
            row["n_boxes"] = len(out.get("objects") or [])
        else:
            row["answer"] = out.get("answer")
            reasoning = out.get("reasoning")
            row["reasoning"] = reasoning.get("text") if isinstance(reasoning, Mapping) else None
        row["reward"] = rewards[i] if rewards is not None and i < len(rewards) else None
        rows.append(row)
    return pd.DataFrame(rows).set_index("rollout") if rows else pd.DataFrame()


def checkpoints_frame(checkpoints: Iterable[Mapping[str, Any]]) -> Any:
    """Saved checkpoints indexed by ``step``: ``checkpoint_id``, ``created``, ``updated``, ``expires`` (UTC).

    ``expires`` is ``NaT`` when the service gives no expiry (``expires_at_ms: null``: saved
    checkpoints are kept), shown as "–" in the checkpoint browser.
    """
    import pandas as pd

    rows = []
    for c in checkpoints:
        rows.append({
            "step": c.get("step"),
            "checkpoint_id": c.get("checkpoint_id"),
            "created": pd.to_datetime(c.get("created_at_ms"), unit="ms", utc=True),
            "updated": pd.to_datetime(c.get("updated_at_ms"), unit="ms", utc=True),
            "expires": pd.to_datetime(c.get("expires_at_ms"), unit="ms", utc=True),
        })
    if not rows:
        return pd.DataFrame(columns=["checkpoint_id", "created", "updated", "expires"],
                            index=pd.Index([], name="step", dtype="int64"))
    return pd.DataFrame(rows).set_index("step").sort_index()


def finetunes_frame(finetunes: Iterable[Mapping[str, Any]],
                    checkpoints: Mapping[str, Sequence[int]] | None = None) -> Any:
    """Finetunes indexed by ``name``: ``rank``, ``finetune_id``, ``created``, ``updated`` (UTC),
    ``step`` (the latest, where the service says it; ``<NA>`` otherwise) and, with
    ``checkpoints`` (``{finetune_id: [saved steps]}``), ``checkpoints`` (how many) and
    ``last_checkpoint`` (the latest saved step).
    """
    import pandas as pd

    rows = []
    for f in finetunes:
        row = {"name": f.get("name"), "rank": f.get("rank"), "finetune_id": f.get("finetune_id"),
               "created": pd.to_datetime(f.get("created_at_ms"), unit="ms", utc=True),
               "updated": pd.to_datetime(f.get("updated_at_ms"), unit="ms", utc=True),
               "step": f.get("step")}
        if checkpoints is not None:
            steps = list(checkpoints.get(f.get("finetune_id"), []))
            row.update(checkpoints=len(steps), last_checkpoint=max(steps) if steps else None)
        rows.append(row)
    columns = ["rank", "finetune_id", "created", "updated", "step"] + (
        ["checkpoints", "last_checkpoint"] if checkpoints is not None else [])
    if not rows:
        return pd.DataFrame(columns=columns, index=pd.Index([], name="name"))
    frame = pd.DataFrame(rows).set_index("name")
    frame["step"] = frame["step"].astype("Int64")
    if checkpoints is not None:
        frame["last_checkpoint"] = frame["last_checkpoint"].astype("Int64")
    return frame[columns]


def scores_frame(scores: Mapping[str, Sequence[float | None]]) -> Any:
    """Scores per model (columns) and image (rows), plus a ``mean`` row."""
    import pandas as pd

    frame = pd.DataFrame({k: list(v) for k, v in scores.items()})
    frame.index.name = "image"
    if len(frame):
        frame.loc["mean"] = frame.mean(numeric_only=True)
    return frame
