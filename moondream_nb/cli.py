"""``moondream-nb`` command line.

    moondream-nb demo [--steps N] [--seed S]   the built-in model: rollouts of every skill, then
                                               a LoRA finetune learning a concept it never saw
    moondream-nb serve [--host H] [--port P] [--data-dir DIR] [--api-key KEY ...]
                       [--latency cloud|SPEC] [--rate-limit N/s]
                                               the local tuning/inference/batch server (API.md),
                                               optionally with Moondream-Cloud-like delays and 429s
    moondream-nb lab [--port P] [--no-browser] [--dir DIR] [--data-dir DIR]
                                               the local server (or the cloud with $MOONDREAM_API_KEY),
                                               then JupyterLab with the notebooks
"""

from __future__ import annotations

import argparse
import sys
import time


def demo(steps: int, seed: int) -> int:
    """Run the built-in model in process: base outputs, then RL on "point at the star"."""
    from . import scenes as sc
    from .local import learning as L
    from .local.engine import Engine

    t0 = time.time()
    engine = Engine()
    print(f"built-in model loaded in {time.time() - t0:.1f} s")
    scene = sc.make_scene(seed, size=(320, 240), n_objects=4)
    url = L.data_url(scene.image)
    print("scene:", sc.caption(scene, "long"))
    for request in (
        {"skill": "query", "question": "How many shapes are there?"},
        {"skill": "query", "question": f"What colour is the {scene.objects[0].shape}?", "reasoning": True},
        {"skill": "point", "object": scene.objects[0].shape},
        {"skill": "detect", "object": f"{scene.objects[-1].colour} things"},
    ):
        out = engine.sample(dict(request, image_url=url, settings={"temperature": 0.0}), 1)[0]["output"]
        print(f"  {request['skill']:6} {request.get('question') or request.get('object')!r:40} -> {out}")
    print("caption:", engine.infer("caption", {"image_url": url, "length": "normal"})["caption"])

    held = range(10**8, 10**8 + 40)
    before = L.evaluate(engine, L.STAR_POINT, None, held)
    print(f"\nLoRA RL on a concept the base never saw ({L.STAR_POINT.name!r}); held-out reward before: {before:.2f}")
    t1 = time.time()
    adapter, _ = L.rl_run(engine, L.STAR_POINT, steps, seed=seed, on_step=lambda s, r: print(
        f"  step {s + 1:3d}  reward_mean {r['reward_mean']:.3f}  kl {r['kl'] or 0:.4f}  grad_norm {r['grad_norm'] or 0:.3f}", flush=True))
    after = L.evaluate(engine, L.STAR_POINT, adapter, held)
    print(f"held-out reward after {steps} steps: {after:.2f} (was {before:.2f}); {time.time() - t1:.0f} s of training")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="moondream-nb", description="Jupyter-native Moondream fine-tuning toolkit")
    sub = ap.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="the built-in model: rollouts of every skill and a short LoRA finetune")
    d.add_argument("--steps", type=int, default=30)
    d.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("serve", help="the local server: Moondream's tuning, inference and batch APIs on the built-in model")
    s.add_argument("--host", default="127.0.0.1", help="interface to listen on (default loopback only)")
    s.add_argument("--port", type=int, default=2020, help="TCP port; 0 picks a free one (default 2020)")
    s.add_argument("--data-dir", default=None, help="where finetunes live (default ~/.moondream-nb/local)")
    s.add_argument("--api-key", action="append", default=[], metavar="KEY",
                   help="accepted key (repeatable; also $MOONDREAM_LOCAL_API_KEYS, comma-separated); "
                        "one is generated and printed when none is given")
    s.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"))
    s.add_argument("--latency", default=None, metavar="SPEC",
                   help="cloud-like delays: 'cloud' (train_step 3 s, rollouts 1 s, save 1 s, inference 0.5 s, "
                        "±20 %%) or 'train_step=3,rollouts=0.5,save=1,jitter=0.2' "
                        "(kinds: train_step rollouts save inference metrics read other)")
    s.add_argument("--rate-limit", default=None, metavar="RATE",
                   help="per-key rate limit as Moondream Cloud has, e.g. 2/s (default tier) or 10/s: "
                        "429 with Retry-After beyond it")
    lab = sub.add_parser("lab", help="the local server (or the cloud with $MOONDREAM_API_KEY), then JupyterLab with the notebooks")
    lab.add_argument("--port", type=int, default=8888, help="JupyterLab's port (default 8888)")
    lab.add_argument("--no-browser", action="store_true", help="do not open a browser")
    lab.add_argument("--dir", default=None, help="the notebooks folder (default the repository's notebooks/)")
    lab.add_argument("--data-dir", default=None, help="the local server's data (default ~/.moondream-nb/local)")
    args = ap.parse_args(argv)
    if args.command == "demo":
        return demo(args.steps, args.seed)
    if args.command == "lab":
        from .lab import run_lab

        return run_lab(args.port, not args.no_browser, args.dir, args.data_dir)
    if args.command == "serve":
        from .local.server_process import run

        return run(args.host, args.port, args.data_dir, args.api_key, args.log_level, args.latency, args.rate_limit)
    return 2


if __name__ == "__main__":
    sys.exit(main())
