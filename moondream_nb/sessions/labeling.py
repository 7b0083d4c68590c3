"""``LabelingSession``: label a dataset one item at a time in a ``TargetEditor``.

Every edit is saved to the :class:`~moondream_nb.data.LabelStore` as it is made, so a kernel
restart loses nothing: reopen the same store and the session continues at the next undone item.
With a finetune, the editor starts from the model's greedy answer (correcting is faster than
drawing) and an SFT step can run every ``train_every`` labelled items. Neither makes the person
wait: answers are fetched ahead for the next items, and the SFT steps run on the finetune's
:class:`~moondream_nb.sessions.training.TrainQueue` while labeling goes on.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from .. import protocol
from ..data import BatchRecord, Dataset, Item, Label, LabelStore, Progress, sft_groups
from ..errors import MoondreamError, ValidationError
from ..widgets import TargetEditor
from ..widgets._shapes import normalize_layers
from .auto import auto_default
from .controls import Action, SessionView, TrainStatus, session_bundle
from .lookahead import Lookahead
from .prefetch import Prefetch
from .item_prompts import Prompt, check_skill, fit_target, prompt_for, rollout_kwargs, truth_for
from .training import Job, batch_job, queue_for, resume_batches

__all__ = ["LabelingSession"]


class LabelingSession:
    """Label ``dataset`` for one skill, item by item, with autosave, resume and optional SFT.

    Buttons (and keys in the editor): *save & next* (Enter, PageDown), *previous* (PageUp),
    *skip* (x). Saving marks the item done; skipping marks it skipped (and drops its draft).

    Args:
        dataset: the items to label (:class:`~moondream_nb.data.Dataset`).
        store: a :class:`~moondream_nb.data.LabelStore` or the path of one (opened here).
        skill: ``"point"``, ``"detect"`` or ``"query"``.
        prompt: the object / question for every item, a function ``item -> str``, or None to
            take each item's own ground-truth label prompt for ``skill``.
        ft: a ``Finetune``: the greedy answer of its current step pre-fills the editor, and SFT
            steps go to it.
        vl: an inference client (``conn.vl()``) to pre-fill from when there is no ``ft``.
        prefill: start each new item from the model's answer (needs ``ft`` or ``vl``).
        train_every: after this many newly labelled items, send them as one SFT train step
            (needs ``ft``; in the background); None: never (call :meth:`train` yourself).
        lr: learning rate of those steps.
        lookahead: the most items whose answers are fetched ahead (fewer when you are slower
            than the model); an answer made before an SFT step landed is still used when it is
            at most one step old.
        reasoning: query only: the target has reasoning text too.
        auto: stand in for the person with each item's ground-truth label (:meth:`run`);
            default ``$MOONDREAM_NB_AUTO``.
        width: editor width in CSS pixels.

    Attributes:
        current: the item on screen (None when everything is done or skipped).
        editor: its ``TargetEditor`` (None when finished).
        steps: the train-step results this session received.
        queue: the finetune's training queue (None without ``ft``).

    Resuming behaves as for :class:`ReviewSession`: labels sent in a step whose answer never came
    are re-sent with the same ``Idempotency-Key`` where the service records keys, and shown for
    you to retry or drop where it is not known to.

    Raises:
        ValidationError: naming the argument (``skill``, ``train_every``, ...).
    """

    def __init__(self, dataset: Dataset, store: LabelStore | str | os.PathLike, skill: str, prompt: Prompt = None,
                 *, ft: Any = None, vl: Any = None, prefill: bool = True, train_every: int | None = None,
                 lr: float = 2e-4, lookahead: int = 4, reasoning: bool = False, auto: bool | None = None,
                 width: int = 560) -> None:
        self.skill = check_skill(skill)
        if not isinstance(dataset, Dataset):
            protocol.fail("dataset", f"must be a Dataset, not {type(dataset).__name__}")
        if train_every is not None:
            if not protocol.is_int(train_every) or train_every < 1:
                protocol.fail("train_every", "must be an integer >= 1 or None", train_every)
            if ft is None:
                protocol.fail("train_every", "needs ft= (the finetune the SFT steps go to)")
        if reasoning and skill != "query":
            protocol.fail("reasoning", "only for query")
        protocol.check_number(lr, "lr", 0, 1, lo_open=True)
        if not protocol.is_int(lookahead) or lookahead < 1:
            protocol.fail("lookahead", "must be an integer >= 1", lookahead)
        self.dataset, self.prompt, self.ft, self.vl = dataset, prompt, ft, vl
        self.store = store if isinstance(store, LabelStore) else LabelStore(store)
        self.prefill, self.train_every, self.lr = bool(prefill), train_every, float(lr)
        self.reasoning, self.auto, self.width = bool(reasoning), auto_default(auto), width
        self.steps: list[dict] = []
        self._state_key = f"labeling/{self.skill}/untrained"
        self.current: Item | None = None
        self.editor: TargetEditor | None = None
        self._prefilled: dict | None = None
        self._touched = False  # the person changed the editor (a late model answer must not overwrite it)
        self._applying = False  # we are setting the editor ourselves
        self._shown_at: float | None = None
        self._lock = threading.RLock()
        self._standing_in = False  # run() is answering, not the person
        self._lookahead = Lookahead(lookahead, least=1)
        self._closed = False
        self._prefetch = Prefetch(self._greedy, lambda: (self.ft.step or 0) if self.ft is not None else None,
                                  lookahead=self._lookahead)
        self.queue = queue_for(ft) if ft is not None else None
        self._train = TrainStatus(self.queue) if self.queue is not None else None
        self._view = SessionView([
            Action("◀ previous", "mdnb-session-prev", self.previous, "previous item (PageUp)"),
            Action("skip", "mdnb-session-skip", self.skip, "skip this item (x)"),
            Action("save & next ▶", "mdnb-session-next", self.next, "save the label, next item (Enter)",
                   primary=True),
        ], footer=self._train.root if self._train is not None else None)
        self._resume()
        self._show(self.store.next_item(self.dataset))

    # --- what is on screen ------------------------------------------------------------

    @property
    def widget(self) -> Any:
        """The ipywidgets box: buttons, progress, the editor, a status line."""
        return self._view.root

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        where = f"{self.current.image_id}: " if self.current is not None else ""
        return session_bundle(self._view.root, f"{where}{self.progress}", self.editor, **kwargs)

    @property
    def progress(self) -> Progress:
        """Done / skipped / total over the dataset, and the rate (items per minute)."""
        return self.store.progress(self.dataset)

    @property
    def untrained(self) -> list[str]:
        """Ids of labelled items not yet sent in a train step (kept in the store, so it survives a restart)."""
        return list(self.store.get_state(self._state_key, []))

    def prompt_of(self, item: Item) -> str:
        """The object / question asked about ``item``."""
        return prompt_for(item, self.skill, self.prompt)

    def saved_label(self, item: Item) -> Label | None:
        """The label saved for ``item`` in this session's skill and prompt, or None."""
        found = self.store.labels(item.image_id, skill=self.skill, prompt=self.prompt_of(item))
        return found[-1] if found else None

    def _show(self, item: Item | None) -> None:
        with self._lock:
            self.current, self._prefilled, self._touched = item, None, False
            if item is None:
                self.editor = None
                self._view.set_panel(None)
                self._refresh("all items are done or skipped")
                return
            prompt = self.prompt_of(item)
            saved = self.saved_label(item)
            note, initial, waiting = "", None, False
            if saved is not None:
                initial, note = saved.target, "your saved label"
            elif self._prefills and not self._standing_in:  # unattended, the stand-in answers
                ready, answer = self._prefetch.peek(item)
                if ready:
                    initial, note = answer
                    self._prefilled = initial
                else:
                    waiting = True
            kwargs = {"question": prompt} if self.skill == "query" else {"object": prompt}
            editor = TargetEditor(item.image, self.skill, initial=initial, reasoning=self.reasoning,
                                  width=self.width, nav=True, **kwargs)
            editor.on_nav(self._on_nav)
            editor.observe(self._autosave, names=["layers", "answer", "reasoning_text"])
            self.editor = editor
            self._view.set_panel(editor)
            self._shown_at = time.monotonic()
            self._refresh(f"{item.image_id}" + (f" · starts from {note}" if note else "")
                          + (" · the model's answer is on its way (draw if you like: it will not overwrite you)"
                             if waiting else ""))
        if waiting:
            self._prefetch.when_ready(item, lambda answer: self._late_prefill(item, editor, answer))
        if self._prefills and not self._standing_in:
            self._prefetch.ahead(self._upcoming(item, self._lookahead.depth()))

    def _upcoming(self, item: Item, n: int) -> list[Item]:
        """The next ``n`` undone items after ``item`` that have no saved label (to prefill)."""
        out: list[Item] = []
        after = item.image_id
        while len(out) < n:
            nxt = self.store.next_item(self.dataset, after=after)
            if nxt is None or nxt.image_id == item.image_id or any(o.image_id == nxt.image_id for o in out):
                break
            if self.saved_label(nxt) is None:
                out.append(nxt)
            after = nxt.image_id
        return out

    def _late_prefill(self, item: Item, editor: TargetEditor, answer: Any) -> None:
        """The model's answer arrived after the item was shown (worker thread): put it in the
        editor unless the person has moved on or already changed it."""
        with self._lock:
            if self.editor is not editor or self._touched:
                return
            if isinstance(answer, BaseException):
                self._view.set_status(f"{item.image_id} · the model call failed ({answer}); draw the answer")
                return
            target, who = answer
            if target is None:
                self._view.set_status(f"{item.image_id} · starts from {who}")
                return
            self._applying = True
            try:
                self._put(editor, target)
            finally:
                self._applying = False
            self._prefilled = fit_target(self.skill, target, reasoning=self.reasoning)
            self._view.set_status(f"{item.image_id} · starts from {who}")

    @property
    def _prefills(self) -> bool:
        return self.prefill and (self.ft is not None or self.vl is not None)

    def _greedy(self, item: Item) -> tuple[dict | None, str]:
        """The model's greedy answer as a target; (None, why) when the call fails (labeling goes on)."""
        prompt = self.prompt_of(item)
        try:
            if self.ft is not None:
                resp = self.ft.rollouts(**rollout_kwargs(item, self.skill, prompt, reasoning=self.reasoning),
                                        num_rollouts=1, settings={"temperature": 0.0})
                output = resp["rollouts"][0]["output"]
                who = f"the finetune's answer (step {self.ft.step or 0})"
            else:
                image = item.image
                if self.skill == "point":
                    output = self.vl.point(image, prompt)
                elif self.skill == "detect":
                    output = self.vl.detect(image, prompt)
                else:
                    output = self.vl.query(image, prompt, reasoning=self.reasoning)
                who = "the model's answer"
        except MoondreamError as exc:
            return None, f"an empty answer (the model call failed: {exc})"
        return protocol.output_target(self.skill, output, reasoning=self.reasoning), who

    def _refresh(self, status: str) -> None:
        p = self.progress
        where = ""
        if self.current is not None:
            where = f"item {self.dataset.index(self.current.image_id) + 1}/{len(self.dataset)} · "
        steps = f" · {len(self.steps)} SFT steps" if self.steps else ""
        self._view.set_progress(f"{where}{p}{steps}")
        self._view.set_status(status)

    # --- labels -------------------------------------------------------------------------

    def label(self) -> Label | None:
        """The editor's current answer as a :class:`Label` (None for an empty query answer)."""
        if self.editor is None or self.current is None:
            return None
        target = fit_target(self.skill, self.editor.target, reasoning=self.reasoning)
        if self.skill == "query" and not target["answer"].strip():
            return None
        source = "auto" if self._standing_in else ("model" if self._prefilled == target else "human")
        return Label(self.current.image_id, self.skill, self.prompt_of(self.current), target,
                     meta={"source": source, "time": time.time()})

    def _autosave(self, _change: Any = None) -> None:
        # Saved on every edit, not only on "next": a crash mid-item keeps the work so far.
        if self._applying:  # the model's late answer: a starting point, not the person's label yet
            return
        with self._lock:  # a late model answer checks this under the same lock before it writes
            self._touched = True
        try:
            label = self.label()
        except ValidationError as exc:  # e.g. points and boxes mixed: keep the last good one
            self._view.set_status(f"not saved: {exc}")
            return
        if label is not None:
            self.store.put(label)

    def set_target(self, target: dict) -> None:
        """Put ``target`` (API shape) in the editor, as if drawn or typed (and autosave it)."""
        if self.editor is None:
            raise ValidationError("the session is finished: no item on screen")
        self._put(self.editor, target)

    def _put(self, editor: TargetEditor, target: dict) -> None:
        target = fit_target(self.skill, target, reasoning=self.reasoning)
        if self.skill == "query":
            editor.reasoning_text = (target.get("reasoning") or {}).get("text", "")
            editor.answer = target.get("answer", "")
        else:
            editor.layers = normalize_layers(target, "target")

    # --- navigation ---------------------------------------------------------------------

    def _on_nav(self, action: str) -> None:
        self._view.guarded({"next": self.next, "previous": self.previous, "skip": self.skip}[action])

    def next(self) -> None:
        """Save the editor's answer, mark the item done, maybe train, show the next undone item.

        Raises:
            ValidationError: the answer is not valid (e.g. an empty query answer); nothing moves.
        """
        item = self.current
        if item is None:
            return
        label = self.label()
        if label is None:
            protocol.fail("target.answer", "type the answer first (it is empty)")
        if not self._standing_in and self._shown_at is not None:
            self._lookahead.person_took(time.monotonic() - self._shown_at)
        state = None
        if self.ft is not None:
            state = {self._state_key: [i for i in self.untrained if i != item.image_id] + [item.image_id]}
        self.store.put(label, done=True, state=state)  # one transaction: a crash keeps all three or none
        if self.train_every is not None and len(self.untrained) >= self.train_every:
            self.train()  # queued: the next item shows at once
        self._show(self.store.next_item(self.dataset, after=item.image_id))

    def skip(self) -> None:
        """Mark the item skipped (its draft label is removed) and show the next undone item."""
        item = self.current
        if item is None:
            return
        saved = self.saved_label(item)
        if saved is not None:
            self.store.delete(saved)
        self.store.mark(item.image_id, "skipped")
        self.store.set_state(self._state_key, [i for i in self.untrained if i != item.image_id])
        self._show(self.store.next_item(self.dataset, after=item.image_id))

    def previous(self) -> None:
        """Show the item before the current one in dataset order (its saved label, if any)."""
        if self.current is None:
            if len(self.dataset):
                self._show(self.dataset[-1])
            return
        i = self.dataset.index(self.current.image_id)
        if i > 0:
            self._show(self.dataset[i - 1])

    def goto(self, image_id: str) -> None:
        """Show the item with ``image_id``."""
        self._show(self.dataset[image_id])

    # --- training -----------------------------------------------------------------------

    def train(self) -> Job | None:
        """Send the labels not yet trained on as SFT steps (64 groups each), in the background.

        The labels are recorded in the store as a batch first (with the step's Idempotency-Key),
        so a crash loses none and sends none twice; each answer is saved with ``store.add_step``.

        Returns:
            The last queued :class:`~moondream_nb.sessions.training.Job` (``job.wait()`` for
            its result), or None when there is nothing to send.
        Raises:
            ValidationError: no finetune was given.
        """
        if self.ft is None:
            protocol.fail("ft", "train() needs the session's ft=")
        labels = []
        for image_id in self.untrained:
            if image_id in self.dataset and self.store.status(image_id) == "done":
                saved = self.saved_label(self.dataset[image_id])
                if saved is not None:
                    labels.append(saved)
        if not labels:
            self.store.set_state(self._state_key, [])
            return None
        job = None
        for start in range(0, len(labels), protocol.MAX_GROUPS):
            chunk = labels[start:start + protocol.MAX_GROUPS]
            groups = sft_groups(chunk, self.dataset, reasoning=self.reasoning)
            rest = [lb.image_id for lb in labels[start + protocol.MAX_GROUPS:]]  # not yet in a batch
            batch = self.store.add_batch(self.ft.finetune_id, groups, [lb.image_id for lb in chunk], self.lr,
                                         source="labeling", state={self._state_key: rest})
            job = self.queue.submit(self._train_job(batch, groups))
        return job

    def _train_job(self, batch: BatchRecord, groups: list[dict] | None = None) -> Job:
        def done(result: dict) -> None:
            self.steps.append(result)
            loss = result.get("sft_loss")
            self._train.last = (f"SFT step {result.get('step')} on {len(batch.groups)} labels"
                                + (f", loss {loss:.3f}" if isinstance(loss, (int, float)) else ""))
            self._train.update()

        n = len(batch.groups)
        return batch_job(f"SFT step of {n} label{'s' if n != 1 else ''}", self.ft, batch.lr, store=self.store,
                         batch=batch, groups=groups, image_of=lambda i: self.dataset[i].image, on_result=done)

    def _resume(self) -> None:
        """Queue the batches a previous session recorded and did not see answered."""
        if self.queue is not None:
            others = resume_batches(self.queue, self.store, self.ft, "labeling", lambda i: i in self.dataset,
                                    self._train_job)
            if others:
                self._view.set_status(f"{others} recorded SFT step(s) of this finetune hold images of another "
                                      "dataset: left for the session they belong to")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no SFT step of this finetune is queued or in flight (a failed one,
        waiting for retry, counts as done). Returns False when ``timeout`` passed first."""
        return self.queue.wait_idle(timeout) if self.queue is not None else True

    def run(self, limit: int | None = None) -> Progress:
        """Unattended: each item's ground-truth label stands in for the person (items without
        one are skipped), through the same save / next / train path as the buttons; then waits
        for the SFT steps it queued.

        Args:
            limit: stop after this many items (None: until every item is done or skipped).
        Returns:
            :attr:`progress`.
        Raises:
            the error of an SFT step that failed (the queue holds it for retry).
        """
        count = 0
        self._standing_in = True
        try:
            while self.current is not None and (limit is None or count < limit):
                item = self.current
                truth = truth_for(item, self.skill, self.prompt_of(item))
                if truth is None:
                    self.skip()
                else:
                    self.set_target(truth.target)
                    self.next()
                count += 1
        finally:
            self._standing_in = False
        self.wait()
        failed = self.queue.failed if self.queue is not None else None
        if failed is not None and failed.error is not None:
            raise failed.error
        return self.progress

    def labels(self) -> list[Label]:
        """Every saved label of this session's skill on the dataset's items, oldest first."""
        return [lb for lb in self.store.labels(skill=self.skill) if lb.image_id in self.dataset]

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (the panel then no longer fetches answers or trains)."""
        return self._closed

    def close(self, wait: bool = True) -> None:
        """Stop fetching answers ahead; with ``wait``, first let the queued SFT steps finish (the
        store stays open: it is yours)."""
        self._closed = True
        self._prefetch.close()
        if wait:
            self.wait()
        if self._train is not None:
            self._train.close()

    def __repr__(self) -> str:
        return f"LabelingSession({self.skill}, {self.progress}, store={self.store.path!r})"
