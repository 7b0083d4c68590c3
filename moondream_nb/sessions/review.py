"""``ReviewSession``: human-in-the-loop RL — you score rollouts, they become train steps.

The person never waits on the network. The constructor returns at once (the panel says
"sampling…" and fills in); rollouts are sampled ahead on worker threads, as far as the measured
latency and the person's pace need; requests whose item has a ground-truth label are scored by
the server and go straight into training; the rest are shown in a ``RolloutReviewer``. Every
``group_size`` scored requests make one RL train step, which runs on the finetune's
:class:`~moondream_nb.sessions.training.TrainQueue` while you go on; every ``checkpoint_every``
applied steps a checkpoint is saved the same way. Rewards, batches and step results are written
to the label store as they are made.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from .. import protocol
from ..client.stream import stream_calls
from ..data import BatchRecord, Dataset, Item, LabelStore
from ..errors import (AuthenticationError, MoondreamError, NotFoundError, RateLimitError, ServerError,
                      TransportError)
from ..metrics import answer_match
from ..widgets import MetricsPanel, RolloutReviewer
from ..widgets.reviewer import REWARD_MODES
from .auto import auto_default
from .controls import Action, SessionView, TrainStatus, session_bundle
from .lookahead import Lookahead
from .item_prompts import Prompt, check_skill, prompt_for, rollout_kwargs, truth_for
from .training import Job, TrainQueue, batch_job, queue_for, resume_batches

__all__ = ["ReviewSession", "Pending"]

_RETRY_SAMPLING = (5.0, 10.0, 30.0, 60.0)  # seconds between tries when the service is unreachable
_live: "weakref.WeakValueDictionary[tuple, ReviewSession]" = weakref.WeakValueDictionary()


class Pending:
    """One request's rollouts waiting for (or given) rewards.

    Attributes:
        context: the item (or your context object) the request came from.
        image_id: the item's id, when known.
        response: the ``rollouts`` response.
        labelled: the server scored it against ground truth from the data.
        truth: auto mode: the stand-in's ground-truth label (None when it has none).
        sampled_step: the finetune's step (as this client knew it) when the rollouts were sampled.
    """

    def __init__(self, context: Any, response: dict, labelled: bool, truth: Any = None,
                 sampled_step: int = 0, tag: Any = None) -> None:
        self.context, self.response, self.labelled, self.truth = context, response, labelled, truth
        self.sampled_step, self._tag = sampled_step, tag
        self.reviewer: RolloutReviewer | None = None
        self.image_id = (context.image_id if isinstance(context, Item)
                         else context if isinstance(context, str) else None)


class _Tag:
    """What the session keeps of a request in flight (only ``kwargs`` go to the server)."""

    __slots__ = ("context", "labelled", "stand_in", "kwargs", "step")

    def __init__(self, context: Any, labelled: bool, stand_in: Any, kwargs: dict) -> None:
        self.context, self.labelled, self.stand_in, self.kwargs, self.step = context, labelled, stand_in, kwargs, 0


class ReviewSession:
    """Score rollouts by hand (or let ground truth do it), train on them as you go.

    Creating the session returns at once and starts sampling in the background; point/detect
    requests with ground truth are scored by the server and trained on meanwhile, the first
    request that needs you is shown as soon as its rollouts arrive. A labelled query has no
    server reward, so it is shown to you. Submit (button or Enter) scores the request on screen
    and shows the next at once; the train step it completes runs in the background, and its
    result (or its error, with *retry* / *drop*) appears in the training line. :meth:`run` does
    the same unattended and waits for its steps; :meth:`wait` waits for the background work.

    Staleness: a request is sampled from the finetune's latest step when it is sent. One whose
    rollouts come from weights more than ``max_staleness`` steps behind the finetune's current
    step (as this client knows it) when it would be shown to you, or scored by ground truth, is
    sampled again. A request you scored is trained on as you scored it: it waits for its group to
    fill and for the steps queued before it (at most two for ground-truth items), so it can age by
    those too. At most ``lookahead`` requests are sampled ahead; fewer when you are slower than the
    service.

    Resuming: reopening the store resumes. Scored groups not yet sent come back; batches that
    were recorded but never sent are sent; a batch whose step was in flight when the kernel
    stopped is re-sent with the same ``Idempotency-Key`` when the service is known to record
    keys (it echoed one: our local server), so it is trained on exactly once. Moondream Cloud
    does not document the key: there such a batch is not re-sent silently but shown as an
    uncertain step, for you to *retry* (it may then be trained on twice) or *drop*.

    Args:
        ft: the ``Finetune`` to sample from and train.
        source: a :class:`~moondream_nb.data.Dataset` (one request per item, from ``skill`` and
            ``prompt``), or an iterable of ``(context, rollouts_kwargs)`` pairs as for
            ``ft.rollout_stream`` (a pair whose kwargs carry ``ground_truth`` is scored by the server).
        skill, prompt: the request per item (dataset sources); ``prompt`` as in
            :class:`LabelingSession` (None: each item's own label of ``skill``).
        store: a :class:`~moondream_nb.data.LabelStore` or path: rewards (``add_rewards``),
            batches, step results (``add_step``) and done items are recorded; reopening it resumes.
        num_rollouts: rollouts per request (1-16).
        group_size: scored requests per train step (1-64).
        checkpoint_every: save a checkpoint every this many applied steps (None: never).
        lr: learning rate. settings: sampling settings for the rollouts.
        lookahead: the most requests sampled ahead of the one on screen (>= 1).
        concurrency: rollout calls in flight at once (>= 1).
        max_staleness: steps a request's weights may lag behind the finetune (>= 0).
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
        queue: the finetune's training queue. finished: every request was handled.

    Raises:
        ValidationError: naming the argument.
    """

    def __init__(self, ft: Any, source: Dataset | Iterable[tuple[Any, dict]], *, skill: str | None = None,
                 prompt: Prompt = None, store: LabelStore | str | os.PathLike | None = None, num_rollouts: int = 8,
                 group_size: int = 4, checkpoint_every: int | None = None, lr: float = 2e-4,
                 settings: dict | None = None, lookahead: int = 6, concurrency: int = 2, max_staleness: int = 1,
                 rewards: str = "binary", review_labelled: bool = False, oracle: Dataset | None = None,
                 auto: bool | None = None, metrics: bool = True, width: int = 520) -> None:
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
        for name, value, least in (("lookahead", lookahead, 1), ("concurrency", concurrency, 1),
                                   ("max_staleness", max_staleness, 0)):
            if not protocol.is_int(value) or value < least:
                protocol.fail(name, f"must be an integer >= {least}", value)
        protocol.check_number(lr, "lr", 0, 1, lo_open=True)
        self.ft, self.source, self.prompt = ft, source, prompt
        self.store = store if isinstance(store, LabelStore) or store is None else LabelStore(store)
        self.num_rollouts, self.group_size, self.checkpoint_every = num_rollouts, group_size, checkpoint_every
        self.lr, self.settings, self.reward_mode = float(lr), settings, rewards
        self.max_staleness, self.concurrency = max_staleness, concurrency
        self.review_labelled, self.auto, self.width = bool(review_labelled), auto_default(auto), width
        self.oracle = oracle if oracle is not None else (source if isinstance(source, Dataset) else None)
        self.steps: list[dict] = []
        self.checkpoints: list[dict] = []
        self.counts = {"human": 0, "ground_truth": 0, "auto": 0, "skipped": 0}
        self.reviewer: RolloutReviewer | None = None
        self.pending: Pending | None = None
        self.finished = False
        self.queue: TrainQueue = queue_for(ft)
        self._lookahead = Lookahead(lookahead)
        self._cond = threading.Condition(threading.RLock())
        self._ready: deque[Pending] = deque()  # sampled, waiting for the person
        self._redo: deque[_Tag] = deque()  # stale: to sample again
        self._outstanding = 0  # requests sent and not yet handled (in flight, ready or on screen)
        self._groups: list[dict] = []  # scored, not yet in a batch
        self._group_ids: list[str | None] = []
        self._record_ids: list[int] = []
        self._state_key = f"review/{ft.finetune_id}/unsent"
        self._sampled_all = False
        self._closing = False
        self._standing_in = False  # run() is scoring, not the person
        self._shown_at: float | None = None
        self._tries = 0  # rollouts calls failed in a row (the service unreachable)
        self._stream: Any = None
        self.metrics = MetricsPanel(ft, width=420) if metrics else None
        self._train = TrainStatus(self.queue)
        self._view = SessionView([
            Action("skip", "mdnb-session-skip", self.skip, "skip this request (no rewards)"),
            Action("train now", "mdnb-session-train", self.flush, "send the scored requests as a train step now"),
        ], side=self.metrics, footer=self._train.root)
        self._view.set_waiting("sampling rollouts…")
        self._refresh("sampling the first requests…")
        # One live session per finetune (and store): re-running the cell replaces the old one, which
        # stops sampling and accepting at once (its queued steps still land: they are your work).
        live_key = (self.store.key if self.store is not None else None, str(getattr(ft, "endpoint", "")),
                    ft.finetune_id)
        previous = _live.get(live_key)
        if previous is not None:
            previous._stop()
        _live[live_key] = self
        self._pump = threading.Thread(target=self._run_pump, name="mdnb-review", daemon=True)
        self._pump.start()

    # --- display ------------------------------------------------------------------------

    @property
    def widget(self) -> Any:
        """The ipywidgets box: buttons, progress, the reviewer, status and training lines; metrics beside."""
        return self._view.root

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        # The reviewer while one waits for you; the metrics once the source is exhausted.
        panel = self.reviewer if self.reviewer is not None else self.metrics
        return session_bundle(self._view.root, repr(self), panel, **kwargs)

    def _refresh(self, status: str | None = None) -> None:
        with self._cond:
            c = self.counts
            parts = [f"{c['human']} by you", f"{c['ground_truth']} by ground truth"]
            if c["auto"]:
                parts.append(f"{c['auto']} by the stand-in")
            if c["skipped"]:
                parts.append(f"{c['skipped']} skipped")
            parts.append(f"{len(self._groups)}/{self.group_size} toward the next step")
            if self.checkpoints:
                parts.append(f"checkpoints at {', '.join(str(c['step']) for c in self.checkpoints)}")
            self._view.set_progress(" · ".join(parts))
            if status is not None:
                self._view.set_status(status)

    # --- sampling ahead -----------------------------------------------------------------

    def _items(self) -> Iterator[_Tag]:
        """The session's requests, built lazily from the source."""
        if not isinstance(self.source, Dataset):
            for context, kwargs in self.source:
                yield _Tag(context, "ground_truth" in kwargs, None, kwargs)
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
            yield _Tag(item, truth is not None, stand_in, kwargs)

    def _requests(self) -> Iterator[tuple[_Tag, dict]]:
        """What the rollout workers send: stale requests again first, then the source; never more
        than the look-ahead outstanding. Ends when the source is done and nothing can come back."""
        source = self._items()
        exhausted = False
        while True:
            with self._cond:
                while not self._closing and not self._redo and (
                        self._outstanding >= self._lookahead.depth() + 1 or (exhausted and self._outstanding)):
                    self._cond.wait(0.25)
                if self._closing or (exhausted and not self._redo):
                    return
                tag = self._redo.popleft() if self._redo else None
            if tag is None:
                try:
                    tag = next(source)
                except StopIteration:
                    exhausted = True
                    continue
            with self._cond:
                self._outstanding += 1
                tag.step = self.ft.step or 0  # the call starts now, from the weights of this step (or newer)
            yield tag, tag.kwargs

    def _sample(self, **kwargs: Any) -> tuple[Any, float]:
        """One rollouts call, timed; an error is returned, not raised (it must not end the stream)."""
        started = time.monotonic()
        try:
            response: Any = self.ft.rollouts(**kwargs)
        except MoondreamError as exc:
            response = exc
        return response, time.monotonic() - started

    def _run_pump(self) -> None:
        """The background thread: resume what the store holds, then take rollouts as they arrive."""
        try:
            self._resume()
            self._stream = stream_calls(self._sample, self._requests(), max_concurrency=self.concurrency,
                                        buffer_size=1, ordered=True,  # the person sees the source's order
                                        thread_name="mdnb-review-rollouts")
            for tag, (response, seconds) in self._stream:
                if self._closing:
                    break
                if isinstance(response, MoondreamError):
                    self._sampling_failed(tag, response)
                    continue
                self._lookahead.call_took(seconds)
                self._take(tag, response)
        except Exception as exc:  # never a silent dead thread: the person sees why sampling stopped
            self._refresh(f"⚠ sampling stopped: {type(exc).__name__}: {exc}")
        finally:
            if self._stream is not None:
                self._stream.close()  # joins the rollout workers (on this thread: it iterates the stream)
            with self._cond:
                self._sampled_all = True
                if self.pending is None and not self._closing:
                    self._show_next()
                self._cond.notify_all()

    def _sampling_failed(self, tag: _Tag, error: MoondreamError) -> None:
        where = f"{tag.context.image_id}: " if isinstance(tag.context, Item) else ""
        if isinstance(error, (AuthenticationError, NotFoundError)):  # nothing more can be sampled here
            with self._cond:
                self._outstanding -= 1
                self._closing = True
                self._cond.notify_all()
            self._refresh(f"⚠ sampling stopped: {type(error).__name__}: {error} (a revoked key or a deleted "
                          "finetune); fix it and create the session again")
            return
        if isinstance(error, (TransportError, ServerError, RateLimitError)):  # the service, not the request
            with self._cond:
                self._tries += 1
                wait = _RETRY_SAMPLING[min(self._tries, len(_RETRY_SAMPLING)) - 1]
                self._redo.appendleft(tag)
                self._outstanding -= 1
            self._refresh(f"⚠ rollouts failed ({type(error).__name__}: {error}); trying again in {wait:g} s")
            with self._cond:
                self._cond.wait_for(lambda: self._closing, timeout=wait)
                self._cond.notify_all()
            return
        with self._cond:  # this request is wrong (4xx): leave it for now, pending in the store
            self._outstanding -= 1
            self._cond.notify_all()
        self._refresh(f"⚠ {where}rollouts refused ({type(error).__name__}: {error}); left pending, going on")

    def _stale(self, pending: Pending | _Tag) -> bool:
        step = pending.sampled_step if isinstance(pending, Pending) else pending.step
        return (self.ft.step or 0) - step > self.max_staleness

    def _again(self, tag: _Tag) -> None:
        """Sample ``tag`` again (its rollouts are too stale)."""
        with self._cond:
            self._redo.append(tag)
            self._outstanding -= 1
            self._cond.notify_all()

    def _take(self, tag: _Tag, response: dict) -> None:
        self._tries = 0
        pending = Pending(tag.context, response, tag.labelled, tag.stand_in, tag.step, tag)
        if tag.labelled and response.get("rewards") is not None and not self.review_labelled:
            self._wait_for_room()
            if self._stale(pending):  # checked after the wait: steps may have landed meanwhile
                self._again(tag)
                return
            with self._cond:
                if self._closing:
                    return
                self._accept(pending, {"mode": "rl", "request": response["request"], "rollouts": response["rollouts"],
                                       "rewards": [float(r) for r in response["rewards"]]}, "ground_truth")
                self._outstanding -= 1
                self._cond.notify_all()
                if self.pending is None:
                    self._refresh("scoring labelled requests by ground truth…")
            return
        if self._stale(pending):
            self._again(tag)
            return
        # Built here, off the kernel's thread: showing it after Enter is then a swap.
        pending.reviewer = RolloutReviewer(response, rewards=self.reward_mode, width=self.width)
        pending.reviewer.on_submit(self.submit)
        with self._cond:
            if self._closing:
                pending.reviewer.close()
                return
            self._ready.append(pending)
            if self.pending is None:
                self._show_next()
            self._cond.notify_all()

    def _wait_for_room(self) -> None:
        """Ground-truth items train without the person: they wait while two steps are queued or
        running, or a failed step holds the queue (the training line says so; :meth:`run` raises)."""
        told = False
        with self._cond:
            while not self._closing and (self.queue.failed is not None or self.queue.active >= 2):
                if self.queue.failed is not None and not told and self.pending is None:
                    self._refresh("waiting: a failed train step holds the queue; retry or drop it below")
                    told = True
                self._cond.wait(0.1)  # the queue does not notify us: poll

    def _show_next(self) -> None:
        """(Under the lock.) Put the next fresh sampled request on screen, or the waiting state."""
        while self._ready:
            pending = self._ready.popleft()
            if self._stale(pending):
                pending.reviewer.close()
                self._redo.append(pending._tag)
                self._outstanding -= 1
                self._cond.notify_all()
                continue
            self.pending, self.reviewer = pending, pending.reviewer
            self._view.set_panel(pending.reviewer)
            self._shown_at = time.monotonic()
            where = f"{pending.image_id} · " if pending.image_id else ""
            self._refresh(f"{where}score the rollouts, then Submit (Enter)")
            return
        self.pending, self.reviewer = None, None
        if self._sampled_all:
            self._finish()
        else:
            self._view.set_waiting("sampling the next request…")
            self._refresh("sampling the next request…")

    def _finish(self) -> None:
        self.finished = True
        self._view.set_panel(None)
        self._refresh("no more requests" + (f"; {len(self._groups)} scored requests wait: train now sends them"
                                            if self._groups else ""))

    # --- scoring ------------------------------------------------------------------------

    def submit(self, reviewer: RolloutReviewer | None = None) -> None:
        """Use the reviewer's rewards for the request on screen, then show the next one at once.

        (The reviewer's Submit button and Enter call this.) The train step this completes runs
        in the background.
        """
        with self._cond:
            reviewer = reviewer or self.reviewer
            if reviewer is None or self.pending is None or reviewer is not self.reviewer or self._closing:
                return
            group = reviewer.group()
            unscored = len(reviewer.unscored)
            source = "auto" if self._standing_in else "human"
            if source == "human" and self._shown_at is not None:
                self._lookahead.person_took(time.monotonic() - self._shown_at)
            self._accept(self.pending, group, source)
            self._outstanding -= 1
            self._cond.notify_all()
            self._show_next()
            if unscored and source == "human":  # say it: a rollout left at "–" trained as a bad one
                self._view.set_status(f"last scene: {unscored} of {len(group['rewards'])} rollouts were unscored "
                                      "and counted as bad (0)")

    def skip(self) -> None:
        """Drop the request on screen (marked skipped in the store) and show the next one."""
        with self._cond:
            if self.pending is None or self._closing:
                return
            if self.store is not None and self.pending.image_id is not None:
                self.store.mark(self.pending.image_id, "skipped")
            self.counts["skipped"] += 1
            self._outstanding -= 1
            self._cond.notify_all()
            self._show_next()

    def _accept(self, pending: Pending, group: dict, source: str) -> None:
        """(Under the lock.) Record a scored RL group; a full batch of them makes a train step."""
        if self.store is not None:  # one transaction: rewards, the item done, and it listed as unsent
            self._record_ids.append(self.store.add_rewards(
                group, image_id=pending.image_id, source=source, done=True,
                state=lambda record_id: {self._state_key: [*self._record_ids, record_id]}))
        self._groups.append(group)
        self._group_ids.append(pending.image_id)
        self.counts[source] += 1
        if len(self._groups) >= self.group_size:
            self._send_groups()

    # --- training -----------------------------------------------------------------------

    def flush(self) -> Job | None:
        """Send the scored requests now as one train step (in the background; checkpoint when due).

        Returns:
            The queued :class:`~moondream_nb.sessions.training.Job` (``job.wait()`` for its
            result), or None when nothing is waiting.
        """
        with self._cond:
            return self._send_groups()

    def _stop(self) -> None:
        """Stop sampling and accepting without waiting (a newer session of the same finetune took over)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._refresh("replaced by a newer session of this finetune (re-run cell): this one is closed")

    def _send_groups(self) -> Job | None:
        """(Under the lock.) Record the scored groups as a batch and queue its train step."""
        if not self._groups:
            return None
        groups, ids = self._groups, self._group_ids
        self._groups, self._group_ids, self._record_ids = [], [], []
        batch = None
        if self.store is not None:
            batch = self.store.add_batch(self.ft.finetune_id, groups, ids, self.lr, source="review",
                                         state={self._state_key: []})
        job = self._train_job(batch, groups)
        self._refresh()
        return self.queue.submit(job)

    def _train_job(self, batch: BatchRecord | None, groups: list[dict] | None = None) -> Job:
        n = len(groups if groups is not None else batch.groups)
        return batch_job(f"train step of {n} group{'s' if n != 1 else ''}", self.ft, self.lr, store=self.store,
                         batch=batch, groups=groups, image_of=lambda i: self.source[i].image,
                         on_result=self._stepped)

    def _stepped(self, result: dict) -> None:
        """A step's answer came (on the queue's thread): record it, checkpoint when due."""
        with self._cond:
            self.steps.append(result)
            applied = sum(1 for s in self.steps if s.get("applied"))
            due = bool(result.get("applied") and self.checkpoint_every and applied % self.checkpoint_every == 0)
            mean = result.get("reward_mean")
            if result.get("applied"):
                self._train.last = f"step {result.get('step')}" + (
                    f", reward {mean:.2f}" if isinstance(mean, (int, float)) else "")
            else:
                self._train.last = "a step carried no signal (equal rewards): not applied"
        if due:
            # first: it must save this step, not the one queued behind it
            self.queue.submit(Job("checkpoint save", self.ft.save_checkpoint, self._saved), first=True)
        if self.metrics is not None:
            self.metrics.refresh()
        self._refresh()

    def _saved(self, result: dict) -> None:
        with self._cond:
            self.checkpoints.append(result["checkpoint"])
        self._refresh()

    def _resume(self) -> None:
        """Reload what a previous session left in the store (dataset sources only)."""
        if self.store is None or not isinstance(self.source, Dataset):
            return
        wanted = set(self.store.get_state(self._state_key, []))
        with self._cond:
            for record in self.store.rewards():
                if record.id in wanted and record.image_id in self.source:
                    self._groups.append(record.group(self.source[record.image_id].image))
                    self._group_ids.append(record.image_id)
                    self._record_ids.append(record.id)
            resumed_full = len(self._groups) >= self.group_size
        others = resume_batches(self.queue, self.store, self.ft, "review", lambda i: i in self.source,
                                self._train_job)
        if others:
            self._view.set_status(f"{others} recorded train step(s) of this finetune hold images of another "
                                  "dataset: left for the session they belong to")
        if resumed_full:  # a full group was scored before the restart: its step is due (behind the batches)
            with self._cond:
                self._send_groups()
        self._refresh()

    # --- waiting and unattended ---------------------------------------------------------

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the session is settled: a request waits for you (or every one is done) and
        no train step is queued or in flight (a failed one, waiting for retry, counts as settled).

        Returns:
            False when ``timeout`` seconds passed first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if not self._cond.wait_for(lambda: self.pending is not None or self.finished or self._closing,
                                       timeout=timeout):
                return False
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        return self.queue.wait_idle(left)

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
            return [answer_match(r["output"].get("answer"), truth.target["answer"]) for r in response["rollouts"]]
        return None

    def run(self, limit: int | None = None) -> dict:
        """Unattended: the stand-in scores each request on screen (skipping what it cannot
        score), through the same submit path as the button, until the source is exhausted or
        ``limit`` requests were handled; then the last partial batch is sent and the session
        waits for its train steps and checkpoints.

        Returns:
            :attr:`counts` plus ``steps`` (train steps answered) and ``checkpoints`` (saved).
        Raises:
            the error of a train step that failed (the queue holds it for retry).
        """
        handled = 0
        self._standing_in = True
        try:
            while limit is None or handled < limit:
                with self._cond:
                    while not (self.pending is not None or self.finished or self._closing
                               or self.queue.failed is not None):
                        self._cond.wait(0.1)  # the queue does not notify us: poll
                    pending = self.pending
                failed = self.queue.failed
                if failed is not None and failed.error is not None:
                    raise failed.error
                if pending is None:
                    break
                rewards = self.stand_in_rewards(pending)
                if rewards is None:
                    self.skip()
                else:
                    pending.reviewer.rewards = rewards
                    pending.reviewer.submit()
                handled += 1
        finally:
            self._standing_in = False
        if self.finished:
            self.flush()
        self.wait()
        failed = self.queue.failed
        if failed is not None and failed.error is not None:
            raise failed.error
        return dict(self.counts, steps=len(self.steps), checkpoints=len(self.checkpoints))

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (the panel then no longer samples or trains)."""
        return self._closing

    def close(self, wait: bool = True) -> None:
        """Stop sampling ahead (joins the workers) and the metrics poller; with ``wait``, first
        let the queued train steps and checkpoints finish (they are your work)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._pump is not threading.current_thread():
            self._pump.join(timeout=30)
        if wait:
            self.queue.wait_idle()
        self._train.close()
        if self.metrics is not None:
            self.metrics.close()

    def __repr__(self) -> str:
        return f"ReviewSession({self.ft.finetune_id}, {self.counts}, {len(self.steps)} steps)"
