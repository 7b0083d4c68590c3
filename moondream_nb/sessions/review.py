"""``ReviewSession``: human-in-the-loop RL — you score rollouts, they become train steps.

Rollouts are generated ahead on worker threads (``ft.rollout_stream`` with a small buffer), so
the next request is ready when you submit. Requests whose item has a ground-truth label are
scored by the server and go straight into training; the rest are shown in a ``RolloutReviewer``
for you to score. Every ``group_size`` scored requests make one RL train step; every
``checkpoint_every`` applied steps a checkpoint is saved. Rewards and step results are written to
the label store as they are made.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

from .. import protocol
from ..data import Dataset, Item, LabelStore
from ..widgets import MetricsPanel, RolloutReviewer
from ..widgets.reviewer import REWARD_MODES
from .auto import auto_default
from .controls import Action, SessionView, session_bundle
from .tasks import Prompt, answer_matches, check_skill, prompt_for, rollout_kwargs, truth_for

__all__ = ["ReviewSession", "Pending"]


class Pending:
    """One request's rollouts waiting for (or given) rewards.

    Attributes:
        context: the item (or your context object) the request came from.
        image_id: the item's id, when known.
        response: the ``rollouts`` response.
        labelled: the server scored it against ground truth from the data.
        truth: auto mode: the stand-in's ground-truth label (None when it has none).
    """

    def __init__(self, context: Any, response: dict, labelled: bool, truth: Any = None) -> None:
        self.context, self.response, self.labelled, self.truth = context, response, labelled, truth
        self.image_id = (context.image_id if isinstance(context, Item)
                         else context if isinstance(context, str) else None)


class ReviewSession:
    """Score rollouts by hand (or let ground truth do it), train on them as you go.

    Creating the session starts sampling and takes requests off the stream until the first one
    that needs you (point/detect requests with ground truth are scored and trained on meanwhile);
    with a fully labelled source that is the whole source. A labelled query has no server reward,
    so it is shown to you. Submit (button or Enter) scores the request on screen and shows the
    next; :meth:`run` does the same unattended.

    Args:
        ft: the ``Finetune`` to sample from and train.
        source: a :class:`~moondream_nb.data.Dataset` (one request per item, from ``skill`` and
            ``prompt``), or an iterable of ``(context, rollouts_kwargs)`` pairs as for
            ``ft.rollout_stream`` (a pair whose kwargs carry ``ground_truth`` is scored by the server).
        skill, prompt: the request per item (dataset sources); ``prompt`` as in
            :class:`LabelingSession` (None: each item's own label of ``skill``).
        store: a :class:`~moondream_nb.data.LabelStore` or path: rewards (``add_rewards``),
            step results (``add_step``) and done items are recorded; reopening it resumes.
        num_rollouts: rollouts per request (1-16).
        group_size: scored requests per train step (1-64).
        checkpoint_every: save a checkpoint every this many applied steps (None: never).
        lr: learning rate. settings: sampling settings for the rollouts.
        buffer: requests sampled ahead of you. concurrency: rollout calls in flight.
        rewards: the reviewer's control: ``"binary"``, ``"scale"`` or ``"rank"``.
        review_labelled: show ground-truth-scored requests to you too (rewards pre-set).
        oracle: auto mode: the dataset whose labels stand in for you where ``source`` has
            none (default: ``source`` itself).
        auto: stand in for the person (:meth:`run`); default ``$MOONDREAM_NB_AUTO``.
        metrics: show a live ``MetricsPanel`` beside the reviewer.

    Attributes:
        reviewer: the ``RolloutReviewer`` on screen (None when none is waiting).
        steps: train-step results; checkpoints: ``save_checkpoint`` results; counts: how many
            requests were scored by ``"human"``, ``"ground_truth"``, ``"auto"``, or ``"skipped"``.

    Raises:
        ValidationError: naming the argument.
    """

    def __init__(self, ft: Any, source: Dataset | Iterable[tuple[Any, dict]], *, skill: str | None = None,
                 prompt: Prompt = None, store: LabelStore | str | os.PathLike | None = None, num_rollouts: int = 8,
                 group_size: int = 4, checkpoint_every: int | None = None, lr: float = 2e-4,
                 settings: dict | None = None, buffer: int = 2, concurrency: int = 1, rewards: str = "binary",
                 review_labelled: bool = False, oracle: Dataset | None = None, auto: bool | None = None,
                 metrics: bool = True, width: int = 520) -> None:
        # A dataset source builds its requests from skill (required); an iterator brings its own.
        self.skill = check_skill(skill) if isinstance(source, Dataset) or skill is not None else None
        if rewards not in REWARD_MODES:
            protocol.fail("rewards", f"must be one of {', '.join(REWARD_MODES)}", rewards)
        if not protocol.is_int(num_rollouts) or not 1 <= num_rollouts <= 16:
            protocol.fail("num_rollouts", "must be an integer from 1 to 16", num_rollouts)
        if not protocol.is_int(group_size) or not 1 <= group_size <= protocol.MAX_GROUPS:
            protocol.fail("group_size", f"must be an integer from 1 to {protocol.MAX_GROUPS}", group_size)
        if checkpoint_every is not None and (not protocol.is_int(checkpoint_every) or checkpoint_every < 1):
            protocol.fail("checkpoint_every", "must be an integer >= 1 or None", checkpoint_every)
        protocol.check_number(lr, "lr", 0, 1, lo_open=True)
        self.ft, self.source, self.prompt = ft, source, prompt
        self.store = store if isinstance(store, LabelStore) or store is None else LabelStore(store)
        self.num_rollouts, self.group_size, self.checkpoint_every = num_rollouts, group_size, checkpoint_every
        self.lr, self.settings, self.reward_mode = float(lr), settings, rewards
        self.review_labelled, self.auto, self.width = bool(review_labelled), auto_default(auto), width
        self.oracle = oracle if oracle is not None else (source if isinstance(source, Dataset) else None)
        self.steps: list[dict] = []
        self.checkpoints: list[dict] = []
        self.counts = {"human": 0, "ground_truth": 0, "auto": 0, "skipped": 0}
        self.reviewer: RolloutReviewer | None = None
        self.pending: Pending | None = None
        self._groups: list[dict] = []  # scored, not yet sent
        self._record_ids: list[int] = []
        self._state_key = f"review/{ft.finetune_id}/unsent"
        self._resume_unsent()
        self._stream: Iterator | None = None
        self.finished = False
        self._standing_in = False  # run() is scoring, not the person
        self.metrics = MetricsPanel(ft, width=420) if metrics else None
        self._view = SessionView([
            Action("skip", "mdnb-session-skip", self.skip, "skip this request (no rewards)"),
            Action("train now", "mdnb-session-train", self.flush, "send the scored requests as a train step now"),
        ], side=self.metrics)
        self._buffer, self._concurrency = buffer, concurrency
        self._advance()

    # --- display ------------------------------------------------------------------------

    @property
    def widget(self) -> Any:
        """The ipywidgets box: buttons, progress, the reviewer, a status line; metrics beside."""
        return self._view.root

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        # The reviewer while one waits for you; the metrics once the source is exhausted.
        panel = self.reviewer if self.reviewer is not None else self.metrics
        return session_bundle(self._view.root, repr(self), panel, **kwargs)

    def _refresh(self, status: str = "") -> None:
        c = self.counts
        parts = [f"{c['human']} by you", f"{c['ground_truth']} by ground truth"]
        if c["auto"]:
            parts.append(f"{c['auto']} by the stand-in")
        if c["skipped"]:
            parts.append(f"{c['skipped']} skipped")
        parts.append(f"{len(self._groups)}/{self.group_size} toward the next step")
        applied = [s for s in self.steps if s.get("applied")]
        if applied:
            last = applied[-1]
            mean = last.get("reward_mean")
            reward = f", reward {mean:.2f}" if isinstance(mean, (int, float)) else ""
            parts.append(f"step {last.get('step')}{reward}")
        if self.checkpoints:
            parts.append(f"checkpoints at {', '.join(str(c['step']) for c in self.checkpoints)}")
        self._view.set_progress(" · ".join(parts))
        self._view.set_status(status)
        if self.metrics is not None:
            self.metrics.refresh()

    # --- the request stream -----------------------------------------------------------

    def _requests(self) -> Iterator[tuple[tuple[Any, bool, Any], dict]]:
        """``((context, labelled, stand_in_label), rollouts_kwargs)`` for the stream; the first
        part stays in the session, only the kwargs go to the server."""
        if not isinstance(self.source, Dataset):
            for context, kwargs in self.source:
                yield (context, "ground_truth" in kwargs, None), kwargs
            return
        items = self.store.pending(self.source) if self.store is not None else list(self.source)
        for item in items:
            prompt = prompt_for(item, self.skill, self.prompt)
            kwargs = dict(rollout_kwargs(item, self.skill, prompt), num_rollouts=self.num_rollouts)
            if self.settings is not None:
                kwargs["settings"] = self.settings
            truth, stand_in = truth_for(item, self.skill, prompt), None
            if truth is None and self.auto and self.oracle is not None and item.image_id in self.oracle:
                # The stand-in knows the answer: the server scores against it as it would a label.
                stand_in = truth_for(self.oracle[item.image_id], self.skill, prompt)
            scored_by = truth or stand_in
            if scored_by is not None and scored_by.ground_truth is not None:
                kwargs["ground_truth"] = scored_by.ground_truth
            yield (item, truth is not None, stand_in), kwargs

    def _next_pending(self) -> Pending | None:
        if self._stream is None:
            self._stream = self.ft.rollout_stream(self._requests(), max_concurrency=self._concurrency,
                                                  buffer_size=self._buffer)
        try:
            (context, labelled, stand_in), response = next(self._stream)
        except StopIteration:
            return None
        return Pending(context, response, labelled, stand_in)

    def _advance(self) -> None:
        """Take requests off the stream: ground-truth ones are scored at once, the first that
        needs a person is shown."""
        while True:
            pending = self._next_pending()
            if pending is None:
                self._finish()
                return
            if pending.labelled and pending.response.get("rewards") is not None and not self.review_labelled:
                self._accept(pending, pending.response, pending.response["rewards"], "ground_truth")
                continue
            self._show(pending)
            return

    def _show(self, pending: Pending) -> None:
        self.pending = pending
        reviewer = RolloutReviewer(pending.response, rewards=self.reward_mode, width=self.width)
        reviewer.on_submit(self.submit)
        self.reviewer = reviewer
        self._view.set_panel(reviewer)
        where = f"{pending.image_id} · " if pending.image_id else ""
        self._refresh(f"{where}score the rollouts, then Submit (Enter)")

    def _finish(self) -> None:
        self.pending, self.reviewer, self.finished = None, None, True
        self._view.set_panel(None)
        self._refresh("no more requests" + (f"; {len(self._groups)} scored requests wait: train now sends them"
                                            if self._groups else ""))

    # --- scoring and training ---------------------------------------------------------

    def submit(self, reviewer: RolloutReviewer | None = None) -> None:
        """Use the reviewer's rewards for the request on screen, then show the next one.

        (The reviewer's Submit button and Enter call this.)
        """
        reviewer = reviewer or self.reviewer
        if reviewer is None or self.pending is None or reviewer is not self.reviewer:
            return
        group = reviewer.group()
        source = "auto" if self._standing_in else "human"
        self._accept(self.pending, group, group["rewards"], source)
        self._advance()

    def skip(self) -> None:
        """Drop the request on screen (marked skipped in the store) and show the next one."""
        if self.pending is None:
            return
        if self.store is not None and self.pending.image_id is not None:
            self.store.mark(self.pending.image_id, "skipped")
        self.counts["skipped"] += 1
        self._advance()

    def _accept(self, pending: Pending, group_or_response: dict, rewards: list, source: str) -> None:
        group = {"mode": "rl", "request": group_or_response["request"], "rollouts": group_or_response["rollouts"],
                 "rewards": [float(r) for r in rewards]}
        if self.store is not None:
            self._record_ids.append(self.store.add_rewards(group, image_id=pending.image_id, source=source))
            if pending.image_id is not None:
                self.store.mark(pending.image_id, "done")
            self.store.set_state(self._state_key, self._record_ids)
        self._groups.append(group)
        self.counts[source] += 1
        if len(self._groups) >= self.group_size:
            self.flush()

    def flush(self) -> dict | None:
        """Send the scored requests now as one train step (and checkpoint when due).

        Returns:
            The train-step result, or None when nothing is waiting.
        """
        if not self._groups:
            return None
        result = self.ft.train_step(self._groups, lr=self.lr)
        self._groups, self._record_ids = [], []
        if self.store is not None:
            self.store.add_step(result, finetune_id=self.ft.finetune_id)
            self.store.set_state(self._state_key, [])
        self.steps.append(result)
        applied = sum(1 for s in self.steps if s.get("applied"))
        if result.get("applied") and self.checkpoint_every and applied % self.checkpoint_every == 0:
            self.checkpoints.append(self.ft.save_checkpoint()["checkpoint"])
        self._refresh("" if result.get("applied") else "that step carried no signal (equal rewards): not applied")
        return result

    def _resume_unsent(self) -> None:
        """Reload rewards recorded but not trained on before a restart (dataset sources only)."""
        if self.store is None or not isinstance(self.source, Dataset):
            return
        wanted = set(self.store.get_state(self._state_key, []))
        for record in self.store.rewards():
            if record.id in wanted and record.image_id in self.source:
                self._groups.append(record.group(self.source[record.image_id].image))
                self._record_ids.append(record.id)

    # --- unattended -------------------------------------------------------------------

    def stand_in_rewards(self, pending: Pending) -> list[float] | None:
        """What the stand-in gives: the server's ground-truth rewards, or for query an exact
        match with the label's answer; None when it knows nothing about the request."""
        response = pending.response
        if response.get("rewards") is not None:
            return [float(r) for r in response["rewards"]]
        truth = pending.truth
        if truth is None and isinstance(pending.context, Item):
            req = response["request"]
            truth = truth_for(pending.context, req.get("skill"), req.get("question") or req.get("object") or "")
        if truth is not None and truth.skill == "query":
            return [answer_matches(r["output"].get("answer"), truth.target["answer"]) for r in response["rollouts"]]
        return None

    def run(self, limit: int | None = None) -> dict:
        """Unattended: the stand-in scores each request on screen (skipping what it cannot
        score), through the same submit path as the button, until the source is exhausted or
        ``limit`` requests were handled; then the last partial batch is sent.

        Returns:
            :attr:`counts` plus ``steps`` (train steps sent) and ``checkpoints`` (saved).
        """
        handled = 0
        self._standing_in = True
        try:
            while self.pending is not None and (limit is None or handled < limit):
                rewards = self.stand_in_rewards(self.pending)
                if rewards is None:
                    self.skip()
                else:
                    self.reviewer.rewards = rewards
                    self.reviewer.submit()
                handled += 1
        finally:
            self._standing_in = False
        if self.pending is None:
            self.flush()
        return dict(self.counts, steps=len(self.steps), checkpoints=len(self.checkpoints))

    def close(self) -> None:
        """Stop sampling ahead (joins the workers) and the metrics poller."""
        if self._stream is not None:
            self._stream.close()
        if self.metrics is not None:
            self.metrics.close()

    def __repr__(self) -> str:
        return f"ReviewSession({self.ft.finetune_id}, {self.counts}, {len(self.steps)} steps)"
