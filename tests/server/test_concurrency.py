"""8 clients sending rollouts and train steps at once: no error, no lost or doubled step, dense steps."""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict

from .conftest import Api, item

T = "/v1/tuning"
CLIENTS = 8
SECONDS = float(os.environ.get("MOONDREAM_NB_CONCURRENCY_SECONDS", "60"))


def test_eight_clients_for_a_minute(server):
    api = Api(server.url, server.api_key)
    finetunes = [api.finetune(f"busy-{i}") for i in range(3)]
    acked: dict[str, list[int]] = defaultdict(list)
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + SECONDS

    def client(n: int) -> None:
        mine = Api(server.url, server.api_key)  # own connection, like a separate notebook
        k = 0
        while time.monotonic() < deadline and not errors:
            fid = finetunes[(n + k) % len(finetunes)]
            request, gt = item(n * 100_000 + k)
            resp = mine.call("POST", f"{T}/rollouts", {"finetune_id": fid, "num_rollouts": 4, "request": request,
                                                        "ground_truth": gt})
            if resp.status_code != 200:
                errors.append(f"rollouts {resp.status_code} {resp.text[:200]}")
                return
            rollouts = resp.json()
            groups = [{"mode": "rl", "request": rollouts["request"], "rollouts": rollouts["rollouts"],
                       "rewards": [1.0, 0.0, 0.0, 0.0]},  # always a spread: every step applies
                      {"mode": "sft", "request": request, "target": gt}]
            resp = mine.call("POST", f"{T}/train_step", {"finetune_id": fid, "groups": groups})
            if resp.status_code != 200:
                errors.append(f"train_step {resp.status_code} {resp.text[:200]}")
                return
            with lock:
                acked[fid].append(resp.json()["step"])
            k += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    for fid in finetunes:
        steps = sorted(acked[fid])
        assert steps == list(range(1, len(steps) + 1)), f"{fid}: lost or doubled steps {steps}"
        assert api.ok("GET", f"{T}/finetunes/{fid}")["finetune"]["step"] == len(steps)
        history = api.ok("GET", f"{T}/finetunes/{fid}/steps", params={"limit": 100})
        assert [s["step"] for s in history["steps"]] == steps[:100]
    assert sum(len(v) for v in acked.values()) >= CLIENTS  # every client got work done
