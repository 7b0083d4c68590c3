"""The local server's memory stays bounded as finetunes pile up (issue 22): loaded adapters live
within a budget (least recently used out, reloaded from their step files), deleting gives memory
back, and the idempotency table keeps what a replay needs, not the echoed image. Memory is read
from the server process (/proc/<pid>/status)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
import torch

from moondream_nb.local import serve
from moondream_nb.local.finetunes import DEFAULT_ADAPTER_MEMORY_MB

from .conftest import Api, item

T = "/v1/tuning"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise KeyError("VmRSS")


@pytest.fixture(scope="module")
def busy(tmp_path_factory):
    with serve(data_dir=tmp_path_factory.mktemp("memory"), threads=1) as srv:
        yield srv


def _group(api: Api, fid: str, seed: int = 7) -> dict:
    request, _ = item(seed)
    resp = api.ok("POST", f"{T}/rollouts", {"finetune_id": fid, "num_rollouts": 4, "request": request})
    return {"mode": "rl", "request": resp["request"], "rollouts": resp["rollouts"], "rewards": [0.0, 0.2, 0.7, 1.0]}


def _hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise KeyError("VmHWM")


def test_a_large_train_step_stays_under_the_memory_bound_and_gives_it_back(busy):
    """4 RL groups x 32 rollouts x 100 points each (every field within API.md's limits): one batch of
    every example peaked 3.95 GB above the idle server and kept 2.8 GB; in micro-batches it stays
    under 1.5 GB and returns (the 64-group maximum: 1.0 GB, benchmarks/results/train_memory.txt)."""
    import random

    api = Api(busy.url, busy.api_key)
    fid = api.finetune("big-step")
    api.ok("POST", f"{T}/train_step", {"finetune_id": fid, "groups": [_group(api, fid)]})  # warm
    rng = random.Random(4)
    groups = []
    for g in range(4):
        request, _ = item(40 + g)
        outs = [{"skill": "point", "output": {"points": [{"x": rng.random(), "y": rng.random()} for _ in range(100)]}}
                for _ in range(32)]
        groups.append({"mode": "rl", "request": request, "rollouts": outs, "rewards": [rng.random() for _ in range(32)]})
    pid = busy.process.pid
    time.sleep(0.5)
    idle = rss_mb(pid)
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    assert api.ok("POST", f"{T}/train_step", {"finetune_id": fid, "groups": groups})["applied"] is True
    peak, after = _hwm_mb(pid) - idle, rss_mb(pid) - idle
    assert peak < 1500, f"peak {peak:.0f} MB above idle"
    assert after < 300, f"{after:.0f} MB above idle kept after the step"


def test_a_hundred_finetunes_keep_memory_within_the_adapter_budget(busy):
    api = Api(busy.url, busy.api_key)
    first = api.finetune("many-0", rank=32)
    group = _group(api, first)
    api.ok("POST", f"{T}/train_step", {"finetune_id": first, "groups": [group]})
    time.sleep(0.5)
    idle = rss_mb(busy.process.pid)
    fids = [first] + [api.finetune(f"many-{i}", rank=32) for i in range(1, 100)]
    for fid in fids[1:]:
        assert api.ok("POST", f"{T}/train_step", {"finetune_id": fid, "groups": [group]})["step"] == 1
    grown = rss_mb(busy.process.pid) - idle
    # each rank-32 finetune holds 13.4 MB loaded: 100 of them were 1.3 GB before the budget
    assert grown < 500, f"{grown:.0f} MB above idle after 100 finetunes (budget {DEFAULT_ADAPTER_MEMORY_MB} MB)"
    # the first one was evicted long ago: it reloads from its step file and trains on from step 1
    assert api.ok("POST", f"{T}/train_step", {"finetune_id": first, "groups": [group]})["step"] == 2
    for fid in fids[1:]:
        api.ok("DELETE", f"{T}/finetunes/{fid}")
    assert rss_mb(busy.process.pid) - idle < 150


def test_an_evicted_state_reloads_exactly(tmp_path):
    from moondream_nb.local.engine import Engine
    from moondream_nb.local.finetunes import Registry
    from moondream_nb.local.store import Store
    from moondream_nb.local.train import state_tensors

    engine, store = Engine(), Store(tmp_path / "db.sqlite3")
    registry = Registry(engine, store, tmp_path / "finetunes", memory_budget=1)  # room for one only
    owner = "o" * 32
    fids = [store.create_finetune(owner, f"evict-{i}", 8, None)[0]["finetune_id"] for i in range(2)]
    request, _ = item(11)
    groups = [{"mode": "rl", "request": request, "rollouts": engine.sample(request, 4),
               "rewards": [0.0, 0.3, 0.6, 1.0]}]
    ft = store.finetune(owner, fids[0])
    live = registry.live(fids[0])
    state = registry.state(live, ft)
    engine.train(state.adapter, state.optimizer, groups, 1e-3)
    registry.write_step(fids[0], state, 1)
    store.commit_step(fids[0], 1, 1e-3, 1, 0, {}, {}, None)
    before = {k: v.clone() for k, v in state_tensors(state.adapter, state.optimizer).items()}

    registry.state(registry.live(fids[1]), store.finetune(owner, fids[1]))  # the other one evicts it
    assert live.state is None and registry.loaded() == [fids[1]]
    again = registry.state(live, store.finetune(owner, fids[0]))
    after = state_tensors(again.adapter, again.optimizer)
    assert again is not state and set(after) == set(before)
    assert all(torch.equal(after[k], before[k]) for k in before)  # weights and AdamW moments
    store.close()


def test_rollouts_replies_are_kept_for_replay_without_the_image(busy):
    api = Api(busy.url, busy.api_key)
    fid = api.finetune("replay-small")
    request, _ = item(21)
    body = {"finetune_id": fid, "num_rollouts": 3, "request": request}
    first = api.ok("POST", f"{T}/rollouts", body, headers={"Idempotency-Key": "small-replay"})
    again = api.ok("POST", f"{T}/rollouts", body, headers={"Idempotency-Key": "small-replay"})
    assert again == first and again["request"]["image_url"] == request["image_url"]
    with sqlite3.connect(busy.data_dir / "moondream.sqlite3") as db:
        stored = db.execute("SELECT response FROM idempotency WHERE key='small-replay'").fetchone()[0]
    assert len(stored) < len(request["image_url"]) and "base64" not in stored


def test_the_idempotency_table_is_pruned_while_running(tmp_path, monkeypatch):
    from moondream_nb.local import store as store_mod
    from moondream_nb.local.store import Idem, Store

    clock = [1_000_000_000_000]
    monkeypatch.setattr(store_mod, "now_ms", lambda: clock[0])
    monkeypatch.setattr(store_mod, "IDEMPOTENCY_MAX_ROWS", 50)
    store = Store(tmp_path / "db.sqlite3")

    def put(key: str) -> None:
        store.idem_put(Idem("o", "POST /x|", key, "h"), {"ok": key})

    for n in range(20):
        put(f"old-{n}")
    clock[0] += store_mod.IDEMPOTENCY_TTL_MS + store_mod.PRUNE_EVERY_MS  # two days on, no restart
    put("new-0")
    assert store.idem_get(Idem("o", "POST /x|", "old-0", "h")) is None  # past the TTL: gone
    assert store.idem_get(Idem("o", "POST /x|", "new-0", "h")) == {"ok": "new-0"}
    for n in range(1, 2 * store_mod.PRUNE_EVERY_WRITES):
        put(f"new-{n}")
    rows = store._one("SELECT COUNT(*) FROM idempotency")[0]
    assert rows <= 50 + store_mod.PRUNE_EVERY_WRITES  # the cap holds within one prune interval
    assert store.idem_get(Idem("o", "POST /x|", f"new-{2 * store_mod.PRUNE_EVERY_WRITES - 1}", "h")) is not None
    store.close()
