"""Pretrain the built-in model from scratch on procedurally generated scenes.

    python -m moondream_nb.local.pretrain --out moondream_nb/local/weights/base.safetensors --minutes 60 --threads 2

Every step renders fresh scenes (never the held-out ``star`` / ``purple``; besides the demo shapes and
colours also ``scenes.EXTRA_SHAPES`` and ``scenes.EXTRA_COLOURS``, whose only job is to make the encoder
tell shapes and hues apart), asks several tasks of each (query, caption, point, detect) and trains on
teacher-forced cross-entropy under the grammar masks plus an auxiliary per-cell loss (shape, colour,
centre, size, and the cell's mean RGB; the encoder alone on it for the first minutes).
A third of the scenes repeat a colour or a shape and half the point/detect requests ask for a
repeated one, so the model learns to find every match and not only the first.
Held-out metrics (greedy, fresh seeds) are logged as it goes; the weights are saved at every
evaluation and at the end. The budget is wall time, so a faster machine trains more steps.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .. import scenes as sc
from ..rewards import detect_reward, point_reward
from . import tokenizer as tk
from .model import VLM, Config, Memory, preprocess
from .sampler import Row, generate
from .weights import save_base

SKILL_MIX = (("query", 0.43), ("point", 0.26), ("detect", 0.26), ("caption", 0.05))
EVAL_SEED0 = 10**9  # held-out scenes: seeds no training step uses
# Several matching objects are rare in random scenes (12% of detect tasks over nine shapes), and
# the model learned to stop after the first: of the 2-match detect requests it answered one box
# in 23 of 59 (matched IoU 0.93, so the boxes were right, the count was not). Some scenes
# therefore repeat a colour or a shape, and some point/detect requests ask for a repeated one.
REPEAT_SCENES = 0.35
REPEAT_TARGETS = 0.5
# Padded tokens per decoder chunk: the loss is the same for any chunking; 512 made a step of 32 scenes ×
# 4 tasks 1.08 s instead of 1.69 s with 32-row chunks (this 2-core CPU, benchmarks/results/pretrain_speed.txt).
CHUNK_TOKENS = 512
# With ``Config.listed_bias``, this share of point / detect answers lists its items in a random order, so that
# the model also learns to come back for a thing it skipped (the reading-order base stopped instead: 24 of the
# 26 red things it missed in 150 scenes lay before a thing it listed; benchmarks/results/listed_bias.txt).
SHUFFLE_ITEMS = 0.25
CELL_RGB_WEIGHT = 4.0  # the colour's MSE falls to ≈0.01 within minutes; ×4 keeps it felt


def example_tokens(frame: tk.Frame, request: dict[str, Any], answer: dict[str, Any], reasoning: bool,
                   shuffle: random.Random | None = None) -> tuple[list[int], list[int], list[int]]:
    """(input tokens, targets, grammar states); targets are -100 on the prompt. With ``shuffle``, the
    points / boxes of the answer come in a random order instead of reading order."""
    skill = request["skill"]
    prompt = tk.prompt_tokens(frame, request)
    output = {"objects": answer["boxes"]} if skill == "detect" else answer
    ans = tk.answer_tokens(frame, skill, output, reasoning=reasoning)
    if shuffle is not None and skill in ("point", "detect"):
        per = 2 if skill == "point" else 4
        items = [ans[i:i + per] for i in range(0, len(ans) - 1, per)]
        shuffle.shuffle(items)
        ans = [t for item in items for t in item] + [tk.EOS]
    states = tk.states_for(skill, ans, reasoning=reasoning)
    seq = prompt + ans
    targets = [-100] * (len(prompt) - 1) + ans
    st = [tk.S_NONE] * (len(prompt) - 1) + states
    return seq[:-1], targets, st


def aux_targets(scene: sc.Scene, frame: tk.Frame, shapes: tuple[str, ...] = sc.SHAPES) -> torch.Tensor:
    """Per cell: [shape, colour, centre, offset, width bin, height bin] (-100: no label).

    Shape and colour label every cell whose centre lies in the inner half of an object's box
    (dense, so the encoder sees many positive cells per object), ``centre`` marks the cell an
    object's centre falls in, and offset and size are labelled at centre cells only.
    """
    t = torch.full((tk.N_CELLS, 6), -100, dtype=torch.long)
    t[:, 2] = 0
    grid = (torch.arange(tk.GRID) + 0.5) / tk.GRID
    for o in scene.objects:  # later objects are drawn on top: they win overlapping cells
        (u0, v0), (u1, v1) = frame.to_model(o.box[0], o.box[1]), frame.to_model(o.box[2], o.box[3])
        inside_x = (grid - (u0 + u1) / 2).abs() <= (u1 - u0) / 4
        inside_y = (grid - (v0 + v1) / 2).abs() <= (v1 - v0) / 4
        cells = (inside_y[:, None] & inside_x[None, :]).flatten()
        label = torch.tensor([shapes.index(o.shape), list(sc.PRETRAINING_COLOURS).index(o.colour)])
        t[cells, :2] = label
        toks = tk.box_tokens(frame, o.box_dict)
        c = toks[0] - tk.CELL0
        t[c, :2] = label
        t[c, 2:] = torch.tensor([1, toks[1] - tk.OFF0, toks[2] - tk.SIZE0, toks[3] - tk.SIZE0])
    return t


def repeats(rng: random.Random, shapes: tuple[str, ...], max_objects: int,
            colours: tuple[str, ...] = tuple(sc.COLOURS)) -> list[tuple[str, str]]:
    """(colour, shape) pairs for ``make_scene(include=...)``: usually none, sometimes 2–4 objects
    sharing a colour or a shape."""
    if max_objects < 2 or rng.random() >= REPEAT_SCENES:
        return []
    k = rng.randint(2, min(4, max_objects))
    if rng.random() < 0.5:
        colour = rng.choice(colours)
        return [(colour, rng.choice(shapes)) for _ in range(k)]
    shape = rng.choice(shapes)
    return [(rng.choice(colours), shape) for _ in range(k)]


def repeated_target(rng: random.Random, scene: sc.Scene) -> tuple[str | None, str | None] | None:
    """A (colour, shape) filter that several objects of ``scene`` match, or None."""
    groups: dict[tuple[str | None, str | None], int] = {}
    for o in scene.objects:
        for key in ((o.colour, None), (None, o.shape), (o.colour, o.shape)):
            groups[key] = groups.get(key, 0) + 1
    many = [key for key, n in groups.items() if n >= 2]
    return rng.choice(many) if many else None


def make_batch(rng: random.Random, n_images: int, tasks: int, max_objects: int, chunk_tokens: int = CHUNK_TOKENS,
               shapes: tuple[str, ...] = sc.SHAPES, colours: tuple[str, ...] = tuple(sc.COLOURS),
               shuffle_items: float = 0.0) -> dict[str, Any]:
    images, auxes, seqs, index = [], [], [], []
    skills, weights = zip(*SKILL_MIX)
    for i in range(n_images):
        scene = sc.make_scene(rng.getrandbits(62), max_objects=max_objects, shapes=shapes, colours=colours,
                              include=repeats(rng, shapes, max_objects, colours))
        x, frame = preprocess(scene.image)
        images.append(x)
        auxes.append(aux_targets(scene, frame, shapes))
        for _ in range(tasks):
            skill = rng.choices(skills, weights)[0]
            target = repeated_target(rng, scene) if skill in ("point", "detect") and rng.random() < REPEAT_TARGETS else None
            request, answer = sc.make_task(scene, skill, rng, shapes=shapes, colours=colours, target=target)
            reasoning = skill == "query" and rng.random() < 0.15
            shuffle = rng if shuffle_items and skill in ("point", "detect") and rng.random() < shuffle_items else None
            seqs.append(example_tokens(frame, request, answer, reasoning, shuffle))
            index.append(i)
    # Sorted by length and cut into chunks of at most ``chunk_tokens`` padded tokens: captions and
    # reasoning are 5–10× longer than the rest, and fixed 32-row chunks spent most of the decoder's time on padding.
    order = sorted(range(len(seqs)), key=lambda k: len(seqs[k][0]))
    groups: list[list[int]] = []
    for k in order:
        if not groups or (len(groups[-1]) + 1) * len(seqs[k][0]) > chunk_tokens:
            groups.append([])
        groups[-1].append(k)
    chunks = []
    for ids in groups:
        t = max(len(seqs[k][0]) for k in ids)
        tokens = torch.full((len(ids), t), tk.PAD)
        targets = torch.full((len(ids), t), -100)
        states = torch.full((len(ids), t), tk.S_NONE)
        for row, k in enumerate(ids):
            inp, tgt, st = seqs[k]
            tokens[row, : len(inp)] = torch.tensor(inp)
            targets[row, : len(tgt)] = torch.tensor(tgt)
            states[row, : len(st)] = torch.tensor(st)
        chunks.append({"tokens": tokens, "targets": targets, "states": states, "index": torch.tensor([index[k] for k in ids])})
    return {"images": torch.stack(images), "aux": torch.stack(auxes), "chunks": chunks}


def masked_ce(model: VLM, logits: torch.Tensor, targets: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the tokens the grammar allows at each position (mean over answer tokens)."""
    logits = model.masked(logits, states)
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)


def lm_loss(model: VLM, batch: dict[str, Any], memory: Memory) -> torch.Tensor:
    """Masked cross-entropy over every answer token of ``batch`` (a token-weighted mean over its chunks,
    so it does not depend on how the sequences were chunked)."""
    n_tok = sum(int((c["targets"] != -100).sum()) for c in batch["chunks"])
    return sum(masked_ce(model, model(batch["images"], c["tokens"], c["index"], memory=memory), c["targets"], c["states"])
               * int((c["targets"] != -100).sum()) for c in batch["chunks"]) / n_tok


def joint_losses(model: VLM, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """(answer-token loss, per-cell loss) of one batch after the encoder's warm-up."""
    memory = model.encode(batch["images"])
    return lm_loss(model, batch, memory), aux_loss(model, memory.cells, batch["aux"], batch["images"])


def aux_loss(model: VLM, cells: torch.Tensor, aux: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Per-cell supervision of the encoder. Shape and colour are learned only where an object
    lies: averaged over all cells, the ~97% empty ones drown the signal and the encoder never
    learns shapes (measured: centre-cell shape accuracy 0.16 after 55 min, vs 0.92 after 4 min)."""
    shape, colour, offset, width, height, col, row, rgb = model.cell_heads(cells)
    loss = F.cross_entropy(shape[..., :-1].flatten(0, 1), aux[..., 0].flatten(), ignore_index=-100)
    loss = loss + F.cross_entropy(colour[..., :-1].flatten(0, 1), aux[..., 1].flatten(), ignore_index=-100)
    centre = aux[..., 2].float()
    loss = loss + F.binary_cross_entropy_with_logits(shape[..., -1], centre, pos_weight=torch.tensor(10.0))
    if bool(centre.any()):
        for k, part in ((3, offset), (4, width), (5, height)):
            loss = loss + 0.3 * F.cross_entropy(part.flatten(0, 1), aux[..., k].flatten(), ignore_index=-100)
    # Every cell names its own column and row: without this the decoder could not tell left from
    # right (measured: "Which side is X on?" 0.55, always "right").
    cell = torch.arange(tk.N_CELLS).repeat(cells.shape[0])
    loss = loss + 0.3 * (F.cross_entropy(col.flatten(0, 1), cell % tk.GRID) + F.cross_entropy(row.flatten(0, 1), cell // tk.GRID))
    if model.cfg.cell_rgb:
        # Named colours alone let the cells drift toward the names (even with the extra colours drawn, a purple probe from 11 examples:
        # recall 0.91 after 22 minutes, 0.41 after 60); reconstructing the colour keeps the hue.
        loss = loss + CELL_RGB_WEIGHT * F.mse_loss(rgb, cell_colours(images))
    return loss


def cell_colours(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) model inputs → (B, cells, 3): each cell's mean colour, in [-1, 1]."""
    return F.adaptive_avg_pool2d(images, tk.GRID).flatten(2).transpose(1, 2)


EVAL_BUDGET = {"query": 24, "caption": 200, "point": 10, "detect": 10}  # tokens / objects per skill


@torch.no_grad()
def evaluate(model: VLM, n: int = 200, seed0: int = EVAL_SEED0, batch: int = 50) -> dict[str, float]:
    """Greedy held-out quality on ``n`` fresh scenes: query exact match, point and detect reward.

    Each skill decodes as its own batch so short answers never wait for long captions.
    """
    model.eval()
    rng = random.Random(seed0)
    scores: dict[str, list[float]] = {"query": [], "caption": [], "point": [], "detect": []}
    for start in range(0, n, batch):
        scenes = [sc.make_scene(seed0 + start + i) for i in range(min(batch, n - start))]
        pre = [preprocess(s.image) for s in scenes]
        memory = model.encode(torch.stack([p[0] for p in pre]))
        for skill, budget in EVAL_BUDGET.items():
            rows, truths = [], []
            for i, (s, (_, frame)) in enumerate(zip(scenes, pre)):
                request, answer = sc.make_task(s, skill, rng)
                rows.append(Row(i, tk.prompt_tokens(frame, request), skill, temperature=0.0, max_tokens=budget, max_objects=budget))
                truths.append((frame, answer))
            for (frame, answer), sample in zip(truths, generate(model, memory, rows)):
                out = tk.decode(frame, skill, sample.tokens)
                if skill == "query":
                    scores[skill].append(float(out["answer"].strip().lower() == answer["answer"]))
                elif skill == "caption":
                    scores[skill].append(float(out["caption"] == answer["caption"]))
                elif skill == "point":
                    scores[skill].append(point_reward(out["points"], answer))
                else:
                    scores[skill].append(detect_reward(out["objects"], answer))
    model.train()
    mean = lambda v: sum(v) / max(1, len(v))  # noqa: E731
    return {"query_em": mean(scores["query"]), "point_reward": mean(scores["point"]),
            "detect_reward": mean(scores["detect"]), "caption_em": mean(scores["caption"])}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="safetensors file to write")
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--images", type=int, default=32, help="scenes per step")
    ap.add_argument("--tasks", type=int, default=4, help="tasks per scene")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--eval-every", type=float, default=5.0, help="minutes between evaluations")
    ap.add_argument("--eval-scenes", type=int, default=200)
    ap.add_argument("--warmup-minutes", type=float, default=3.0,
                    help="train the encoder alone on the per-cell loss first (≈3× faster steps)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--init", default=None, help="continue from these weights")
    ap.add_argument("--basic-colours", action="store_true",
                    help=f"draw only {', '.join(sc.COLOURS)}, not also {', '.join(sc.EXTRA_COLOURS)} "
                         "(the encoder then blurs the hues between them; benchmarks/results/extra_colours.txt)")
    ap.add_argument("--no-cell-rgb", action="store_true",
                    help="the per-cell head does not reconstruct each cell's mean colour "
                         "(purple is then learned less well; benchmarks/results/extra_colours.txt)")
    ap.add_argument("--no-order-bias", action="store_true",
                    help="no learned attention and pointer biases by what was listed (nor --no-listed-bias's); "
                         "held-out purple is then learned less well (benchmarks/results/order_bias.txt)")
    ap.add_argument("--no-listed-bias", action="store_true",
                    help="the attention and pointer biases mark the cells before / at / after the last one listed, not "
                         "the cells listed / next to a listed one / neither, and answers are taught in reading order only "
                         "(the base then stops after skipping a thing; benchmarks/results/listed_bias.txt)")
    ap.add_argument("--no-stop-pointer", action="store_true",
                    help="between list items the vocabulary head's EOS logit ends the list, not one learned threshold "
                         "the cells score against (benchmarks/results/stop_pointer.txt)")
    ap.add_argument("--no-list-query", action="store_true",
                    help="the pointer's query follows the decoder state through the answer, not the prompt's end")
    ap.add_argument("--no-listed-mask", action="store_true",
                    help="a learned pointer bias holds down the cells already listed, not a mask "
                         "(adapters then list a new concept's things twice; benchmarks/results/stop_pointer.txt)")
    ap.add_argument("--no-colour-code", action="store_true",
                    help="the pointer scores the cells' encoder features only, not also their fixed colour code "
                         "(60 RL steps then taught purple to 0.76-0.78, not 0.87; benchmarks/results/colour_code.txt)")
    ap.add_argument("--basic-shapes", action="store_true",
                    help=f"draw only {', '.join(sc.SHAPES)}, not also {', '.join(sc.EXTRA_SHAPES)} "
                         "(the star then stays harder to learn; benchmarks/results/extra_shapes_12min.txt)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    colours = tuple(sc.COLOURS if args.basic_colours else sc.PRETRAINING_COLOURS)
    cfg = Config(colours=len(colours), cell_rgb=not args.no_cell_rgb, order_bias=not args.no_order_bias,
                 listed_bias=not (args.no_order_bias or args.no_listed_bias), stop_pointer=not args.no_stop_pointer,
                 list_query=not args.no_list_query,
                 listed_mask=not (args.no_order_bias or args.no_listed_bias or args.no_listed_mask),
                 colour_code=not args.no_colour_code)
    model = VLM(cfg)
    if args.init:
        from .weights import load_base_into
        load_base_into(model, args.init)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    budget = args.minutes * 60
    t0 = time.time()
    next_eval = args.eval_every * 60
    step, joint_steps, ema = 0, 0, None
    shapes = sc.SHAPES if args.basic_shapes else sc.PRETRAINING_SHAPES
    log = Path(args.out).with_suffix(".log.jsonl")
    log.parent.mkdir(parents=True, exist_ok=True)
    while True:
        elapsed = time.time() - t0
        if elapsed > budget:
            break
        progress = elapsed / budget
        warm = elapsed < args.warmup_minutes * 60
        joint_steps += not warm
        lr = args.lr * min(1.0, (step + 1) / 150, 0.05 + joint_steps / 100 if not warm else 1.0) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        for g in opt.param_groups:
            g["lr"] = lr
        max_objects = min(6, 2 + int(4 * progress / 0.25))  # curriculum: few objects first
        if warm:
            # Encoder first: the decoder can only bind words to objects once cells know their shape.
            b = make_batch(rng, args.images, 0, 6, shapes=shapes, colours=colours)
            lm = torch.zeros(())
            la = aux_loss(model, model.encoder(b["images"], None), b["aux"], b["images"])
        else:
            b = make_batch(rng, args.images, args.tasks, max_objects, shapes=shapes, colours=colours,
                           shuffle_items=SHUFFLE_ITEMS if cfg.listed_bias else 0.0)
            lm, la = joint_losses(model, b)
        loss = lm + la
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if step % 25 == 0:
            rec = {"step": step, "min": round(elapsed / 60, 2), "loss": round(ema, 4), "lm": round(lm.item(), 4),
                   "aux": round(la.item(), 4), "lr": lr, "max_objects": max_objects}
            print(json.dumps(rec), flush=True)
            with log.open("a") as f:
                f.write(json.dumps(rec) + "\n")
        if time.time() - t0 > next_eval:
            next_eval += args.eval_every * 60
            rec = {"step": step, "min": round((time.time() - t0) / 60, 2), "eval": evaluate(model, args.eval_scenes)}
            print(json.dumps(rec), flush=True)
            with log.open("a") as f:
                f.write(json.dumps(rec) + "\n")
            save_base(model, args.out, {"config": asdict(cfg), "step": step})
    rec = {"step": step, "min": round((time.time() - t0) / 60, 2), "final_eval": evaluate(model, args.eval_scenes)}
    print(json.dumps(rec), flush=True)
    with log.open("a") as f:
        f.write(json.dumps(rec) + "\n")
    save_base(model, args.out, {"config": asdict(cfg), "step": step, "eval": rec["final_eval"]})


if __name__ == "__main__":
    main()
