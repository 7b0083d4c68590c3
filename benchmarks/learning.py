"""Learning held-out concepts with LoRA on the built-in model, and the speed of its parts.

    python benchmarks/learning.py [--seeds 3] [--rl-steps 60] [--sft-steps 30] [--out runs/learning]

Prints the base reward on each held-out concept, the RL and SFT curves (median over seeds), the
known-concept rewards before and after, the timing of rollouts and train steps, and saves the
curves as PNG. A measurement, never a pass/fail test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from moondream_nb.local import learning as L
from moondream_nb.local.engine import Engine
from moondream_nb.local.train import make_optimizer


def timings(engine: Engine, reps: int = 15) -> dict[str, float]:
    """Median milliseconds: 8 rollouts (point, detect), one RL step on a group of 8, one SFT step on 8."""
    out = {}
    for concept in (L.KNOWN_POINT, L.KNOWN_DETECT):
        request, _ = concept.item(1)
        engine.sample(request, 8)  # decode the image once, as the server's cache does
        ts = []
        for k in range(reps):
            t = time.perf_counter()
            engine.sample(request, 8, seed=k)
            ts.append(time.perf_counter() - t)
        out[f"rollouts_8_{concept.skill}_ms"] = 1000 * statistics.median(ts)
    adapter = engine.new_adapter(8)
    opt = make_optimizer(adapter)
    request, gt = L.KNOWN_POINT.item(2)
    rolls = engine.sample(request, 8, seed=0)
    rewards = [float(k % 2) for k in range(8)]
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        engine.train(adapter, opt, [{"mode": "rl", "request": request, "rollouts": rolls, "rewards": rewards}], 2e-4)
        ts.append(time.perf_counter() - t)
    out["rl_step_group_of_8_ms"] = 1000 * statistics.median(ts)
    items = [L.KNOWN_POINT.item(10 + k) for k in range(8)]
    groups = [{"mode": "sft", "request": r, "target": {"points": g["points"]}} for r, g in items]
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        engine.train(adapter, opt, groups, 2e-4)
        ts.append(time.perf_counter() - t)
    out["sft_step_8_examples_ms"] = 1000 * statistics.median(ts)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=None)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rl-steps", type=int, default=60)
    ap.add_argument("--sft-steps", type=int, default=30)
    ap.add_argument("--eval-scenes", type=int, default=60)
    ap.add_argument("--out", default="runs/learning")
    args = ap.parse_args()
    engine = Engine(args.weights)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"torch_threads": torch.get_num_threads(), "timings_ms": timings(engine)}
    print("speed (median ms):", json.dumps({k: round(v, 1) for k, v in report["timings_ms"].items()}))
    held = range(10**8, 10**8 + args.eval_scenes)
    known = {c.name: L.evaluate(engine, c, None, held) for c in (L.KNOWN_POINT, L.KNOWN_DETECT)}
    print("known concepts, base:", json.dumps({k: round(v, 3) for k, v in known.items()}))
    for concept in (L.STAR_POINT, L.PURPLE_DETECT):
        base = L.evaluate(engine, concept, None, held)
        rl_curves, rl_after, sft_held, known_after, known_after_sft, walls = [], [], [], [], [], []
        for seed in range(args.seeds):
            t = time.perf_counter()
            adapter, curve = L.rl_run(engine, concept, args.rl_steps, seed=seed)
            walls.append(time.perf_counter() - t)
            rl_curves.append(curve)
            rl_after.append(L.evaluate(engine, concept, adapter, held))
            known_after.append({c.name: L.evaluate(engine, c, adapter, held) for c in (L.KNOWN_POINT, L.KNOWN_DETECT)})
            sft_adapter, _, h = L.sft_run(engine, concept, args.sft_steps, seed=seed, eval_seeds=held)
            sft_held.append(h)
            known_after_sft.append({c.name: L.evaluate(engine, c, sft_adapter, held)
                                    for c in (L.KNOWN_POINT, L.KNOWN_DETECT)})
        median_curve = [statistics.median(c[k] for c in rl_curves) for k in range(args.rl_steps)]
        sft_median = [(h[0], statistics.median(s[i][1] for s in sft_held)) for i, h in enumerate(sft_held[0])]
        rec = {
            "concept": concept.name, "base_reward": base,
            "rl_reward_mean_median_curve": median_curve, "rl_held_out_after": rl_after,
            "rl_wall_s_median": statistics.median(walls),
            "sft_held_out_median": sft_median, "known_after_rl": known_after, "known_after_sft": known_after_sft,
        }
        report[concept.name] = rec
        print(f"\n{concept.name}: base held-out reward {base:.3f}")
        print("  RL reward_mean (median over seeds) by step:")
        for k in range(0, args.rl_steps, 5):
            print(f"    step {k + 1:3d}: {median_curve[k]:.3f}")
        print(f"  RL held-out after {args.rl_steps} steps: {[round(v, 3) for v in rl_after]}; wall {rec['rl_wall_s_median']:.0f} s")
        print("  SFT held-out reward (median):", [(s, round(v, 3)) for s, v in sft_median])
        print("  known concepts after RL:", [{k: round(v, 3) for k, v in d.items()} for d in known_after])
        print("  known concepts after SFT:", [{k: round(v, 3) for k, v in d.items()} for d in known_after_sft])
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
            for c in rl_curves:
                ax[0].plot(range(1, len(c) + 1), c, alpha=0.35)
            ax[0].plot(range(1, len(median_curve) + 1), median_curve, "k", lw=2, label="median")
            ax[0].set(title=f"RL: {concept.name}", xlabel="step", ylabel="reward_mean", ylim=(0, 1))
            ax[1].plot([s for s, _ in sft_median], [v for _, v in sft_median], "o-")
            ax[1].set(title="SFT on 32 examples: held-out reward", xlabel="step", ylim=(0, 1))
            fig.tight_layout()
            fig.savefig(out / f"{concept.skill}_{concept.colour or concept.shape}.png", dpi=110)
        except ImportError:
            pass
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print(f"\nwrote {out / 'report.json'}")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
