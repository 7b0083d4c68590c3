"""Seconds per pretraining step by decoder chunk size (median over batches, after a warm-up step).

    OMP_NUM_THREADS=2 python benchmarks/pretrain_speed.py [--budgets 256 512 1024 2048 1000000000] [--steps 6]

Each step is the real one of ``moondream_nb.local.pretrain`` (32 scenes × 4 tasks, up to 6 objects, the
full-size model): encode, masked cross-entropy over every answer token, per-cell loss, backward, AdamW.
The same batches are used for every budget, so only the padding differs; the loss does not.
A measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

import torch

from moondream_nb import scenes as sc
from moondream_nb.local.model import VLM, Config
from moondream_nb.local.pretrain import joint_losses, make_batch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budgets", type=int, nargs="+", default=[256, 512, 1024, 2048, 10**9])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    colours = tuple(sc.PRETRAINING_COLOURS)
    model = VLM(Config())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times: dict[int, list[float]] = {b: [] for b in args.budgets}
    padding: dict[int, list[float]] = {b: [] for b in args.budgets}
    for k in range(args.steps + 1):
        for budget in args.budgets:  # interleaved, so drift in the machine's speed hits every budget alike
            b = make_batch(random.Random(k), 32, 4, 6, chunk_tokens=budget, shapes=sc.PRETRAINING_SHAPES, colours=colours)
            t0 = time.perf_counter()
            loss = sum(joint_losses(model, b))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if k:
                times[budget].append(time.perf_counter() - t0)
                answer = sum(int((c["targets"] != -100).sum()) for c in b["chunks"])
                padding[budget].append(sum(c["tokens"].numel() for c in b["chunks"]) / answer)
    for budget in args.budgets:
        print(json.dumps({"chunk_tokens": budget, "step_s": round(statistics.median(times[budget]), 3),
                          "padded_tokens_per_answer_token": round(statistics.median(padding[budget]), 1)}))


if __name__ == "__main__":
    main()
