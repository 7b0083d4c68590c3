"""Finetune weights: the live adapter + AdamW state of each finetune, and saved checkpoints.

Files: ``<root>/<finetune_id>/step-<n>.safetensors`` (adapter and optimizer moments, written
atomically). The weights of step n are written BEFORE the step's row is committed, so the newest
step whose row exists always has its file; newer files are orphans of a crash and are removed.
Files of older steps are pruned unless a saved checkpoint needs them.

Locking: each finetune has a readers-writer lock. Rollouts read the adapter (many at once); train
steps, saves and deletes write (one at a time, in arrival order).

Memory: loaded states (adapter + AdamW moments, about 3x the adapter's bytes) are kept within a
budget, least recently used first out (``$MOONDREAM_NB_ADAPTER_MEMORY_MB``, default 256 MB; the
one in use always stays). An evicted finetune is reloaded from its current step file on its next
use: nothing is lost, because a step's file is written before its row is committed.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
from safetensors.torch import load_file

from .engine import Engine, release_memory
from .model import Adapter
from .store import Finetune, Store, is_ulid
from .train import load_state_tensors, make_optimizer, state_tensors
from .weights import atomic_save

_STEP_FILE = re.compile(r"^step-(\d+)\.safetensors$")
ADAPTER_MEMORY_ENV = "MOONDREAM_NB_ADAPTER_MEMORY_MB"
DEFAULT_ADAPTER_MEMORY_MB = 256


def adapter_memory_budget() -> int:
    """Bytes of loaded finetune state to keep: ``$MOONDREAM_NB_ADAPTER_MEMORY_MB`` or 256 MB."""
    raw = os.environ.get(ADAPTER_MEMORY_ENV, "")
    return (int(raw) if raw.isdigit() else DEFAULT_ADAPTER_MEMORY_MB) * 2**20


class RWLock:
    """Many readers or one writer; a waiting writer blocks new readers (train steps are not starved)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writer and not self._writers_waiting)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            self._cond.wait_for(lambda: not self._writer and self._readers == 0)
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


@dataclass
class State:
    adapter: Adapter
    optimizer: torch.optim.Optimizer
    step: int


@dataclass
class Live:
    """One finetune in memory: its lock and (once loaded) its trainable state."""

    finetune_id: str
    lock: RWLock = field(default_factory=RWLock)
    state: State | None = None
    loading: threading.Lock = field(default_factory=threading.Lock)


def adapter_seed(finetune_id: str) -> int:
    """The LoRA init seed of a finetune: fixed by its id, so step 0 is the same after a restart."""
    return int.from_bytes(hashlib.sha256(finetune_id.encode()).digest()[:4], "little")


class Registry:
    """Live adapters by finetune, checkpoint adapters for inference (LRU), and their files."""

    def __init__(self, engine: Engine, store: Store, root: Path, checkpoint_cache: int = 4,
                 memory_budget: int | None = None):
        self.engine = engine
        self.store = store
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._live: dict[str, Live] = {}
        self._mutex = threading.Lock()
        self._checkpoints: OrderedDict[tuple[str, int], Adapter] = OrderedDict()
        self._checkpoint_cache = checkpoint_cache
        self._budget = adapter_memory_budget() if memory_budget is None else memory_budget
        self._loaded: OrderedDict[str, int] = OrderedDict()  # finetune_id -> bytes, least recent first

    def directory(self, finetune_id: str) -> Path:
        if not is_ulid(finetune_id):  # ids become paths: only our own ULIDs ever get here
            raise ValueError("finetune_id: not a ULID")
        return self.root / finetune_id

    def step_file(self, finetune_id: str, step: int) -> Path:
        return self.directory(finetune_id) / f"step-{int(step)}.safetensors"

    def live(self, finetune_id: str) -> Live:
        with self._mutex:
            entry = self._live.get(finetune_id)
            if entry is None:
                entry = self._live[finetune_id] = Live(finetune_id)
            return entry

    def state(self, live: Live, ft: Finetune) -> State:
        """The loaded state of ``live`` at its committed step, loading it and tidying files if needed."""
        with live.loading:
            state = live.state  # a local: an eviction may clear live.state at any moment
            if state is None:
                adapter = self.engine.new_adapter(ft.rank, seed=adapter_seed(ft.finetune_id))
                optimizer = make_optimizer(adapter)
                if ft.step > 0:
                    load_state_tensors(adapter, optimizer, load_file(str(self.step_file(ft.finetune_id, ft.step))))
                state = live.state = State(adapter, optimizer, ft.step)
                self.prune(ft.finetune_id, ft.step)
        self._touch(live, state)
        return state

    def _touch(self, live: Live, state: State) -> None:
        """Mark ``live`` most recently used; evict the least recent states beyond the budget."""
        size = 3 * sum(p.numel() * p.element_size() for pair in state.adapter.params.values() for p in pair)
        evicted = False
        with self._mutex:
            self._loaded[live.finetune_id] = size
            self._loaded.move_to_end(live.finetune_id)
            total = sum(self._loaded.values())
            while total > self._budget and len(self._loaded) > 1:
                victim, freed = self._loaded.popitem(last=False)
                total -= freed
                entry = self._live.get(victim)
                if entry is not None:
                    # A thread using it holds its own reference and finishes; the next use reloads.
                    entry.state = None
                    evicted = True
        if evicted:
            release_memory()

    def loaded(self) -> list[str]:
        """Finetune ids whose state is in memory, least recently used first."""
        with self._mutex:
            return list(self._loaded)

    def forget(self, live: Live) -> None:
        """Drop the in-memory state (after a failed step) so the next use reloads the committed one."""
        live.state = None
        with self._mutex:
            self._loaded.pop(live.finetune_id, None)

    def write_step(self, finetune_id: str, state: State, step: int) -> None:
        atomic_save(state_tensors(state.adapter, state.optimizer), self.step_file(finetune_id, step),
                    {"finetune_id": finetune_id, "step": str(step), "rank": str(state.adapter.rank)})

    def prune(self, finetune_id: str, current: int) -> None:
        """Remove step files other than the current one and saved checkpoints (incl. crash orphans)."""
        directory = self.directory(finetune_id)
        if not directory.is_dir():
            return
        saved = self.store.saved_steps(finetune_id)
        for path in directory.iterdir():
            match = _STEP_FILE.match(path.name)
            if path.name.endswith(".tmp") or (match and int(match[1]) != current and int(match[1]) not in saved):
                path.unlink(missing_ok=True)

    def checkpoint(self, finetune_id: str, step: int, rank: int) -> Adapter | None:
        """The adapter of a saved checkpoint (cached), or None when its file is gone."""
        key = (finetune_id, step)
        with self._mutex:
            hit = self._checkpoints.get(key)
            if hit is not None:
                self._checkpoints.move_to_end(key)
                return hit
        path = self.step_file(finetune_id, step)
        try:
            tensors = load_file(str(path))
        except (FileNotFoundError, OSError):
            return None
        adapter = self.engine.new_adapter(rank, seed=adapter_seed(finetune_id))
        adapter.load_state_dict(tensors)
        with self._mutex:
            self._checkpoints[key] = adapter
            while len(self._checkpoints) > self._checkpoint_cache:
                self._checkpoints.popitem(last=False)
        return adapter

    def drop_checkpoint(self, finetune_id: str, step: int, current: int) -> None:
        with self._mutex:
            self._checkpoints.pop((finetune_id, step), None)
        if step != current:  # the current step's file is what training resumes from
            self.step_file(finetune_id, step).unlink(missing_ok=True)

    def drop(self, finetune_id: str) -> None:
        """Forget a deleted finetune and remove its files."""
        with self._mutex:
            self._live.pop(finetune_id, None)
            self._loaded.pop(finetune_id, None)
            for key in [k for k in self._checkpoints if k[0] == finetune_id]:
                del self._checkpoints[key]
        shutil.rmtree(self.directory(finetune_id), ignore_errors=True)
        release_memory()

    def sweep(self, live_ids: set[str]) -> None:
        """At startup: remove directories of finetunes deleted (or never committed) before a crash."""
        for path in self.root.iterdir():
            if path.is_dir() and path.name not in live_ids:
                shutil.rmtree(path, ignore_errors=True)
