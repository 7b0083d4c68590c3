"""Can the frozen encoder tell a held-out concept from what it was pretrained on? A linear probe.

    python benchmarks/concept_probe.py [--concept star|purple] [--weights PATH ...] [--scenes 700] [--colour-code]

For every object of fresh scenes that may hold the held-out concept (the star among all shapes, or
purple among all colours), takes the encoder's feature of the cell the object's centre falls in,
fits a logistic regression "concept or not" on the first 70 % and reports accuracy, recall and
precision on the rest; also with only 120 and 400 training objects, about as many examples as a
32-example SFT set shows. How well a LoRA can learn the concept is bounded by how separable it
already is. ``--colour-code`` probes the pointer's fixed colour code of the same cells instead (no
weights involved). A measurement, not a test.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from moondream_nb import scenes as sc
from moondream_nb.local import tokenizer as tk
from moondream_nb.local.model import VLM, Config, colour_code, preprocess
from moondream_nb.local.weights import BASE, load_base_into, read_meta


def features(model: VLM | None, concept: str, scenes: int, seed0: int = 5 * 10**9) -> tuple[torch.Tensor, torch.Tensor]:
    """Per object, the feature of its centre cell: the encoder's, or without a model the colour code."""
    xs, ys = [], []
    for k in range(scenes):
        if concept in sc.HELD_OUT_SHAPES:
            scene = sc.make_scene(seed0 + k, shapes=sc.ALL_SHAPES, n_objects=4)
        else:
            scene = sc.make_scene(seed0 + k, colours=list(sc.ALL_COLOURS), n_objects=4)
        image, frame = preprocess(scene.image)
        with torch.no_grad():
            cells = colour_code(image[None])[0] if model is None else model.encoder(image[None], None)[0]
        for o in scene.objects:
            x = (frame.ox + o.centre[0] * frame.sw) / tk.RES
            y = (frame.oy + o.centre[1] * frame.sh) / tk.RES
            cell = min(tk.GRID - 1, int(y * tk.GRID)) * tk.GRID + min(tk.GRID - 1, int(x * tk.GRID))
            xs.append(cells[cell])
            ys.append(float(concept in (o.shape, o.colour)))
    return torch.stack(xs), torch.tensor(ys)


def probe(x: torch.Tensor, y: torch.Tensor, n_train: int, test: slice) -> dict[str, float]:
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=0.01)
    for _ in range(1500):
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(x[:n_train] @ w + b, y[:n_train]) + 1e-4 * w.square().sum()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred, truth = (x[test] @ w + b) > 0, y[test].bool()
    hits = float((pred & truth).sum())
    return {"train_objects": n_train, "train_positives": int(y[:n_train].sum()),
            "accuracy": round(float((pred == truth).float().mean()), 3),
            "recall": round(hits / max(1.0, float(truth.sum())), 3),
            "precision": round(hits / max(1.0, float(pred.sum())), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concept", choices=sc.HELD_OUT_SHAPES + tuple(sc.HELD_OUT_COLOURS), default="star")
    ap.add_argument("--weights", nargs="+", default=[str(BASE)])
    ap.add_argument("--scenes", type=int, default=700)
    ap.add_argument("--colour-code", action="store_true", help="probe the fixed colour code, not a model's encoder")
    args = ap.parse_args()
    if args.colour_code:
        x, y = features(None, args.concept, args.scenes)
        n = int(0.7 * len(x))
        for n_train in (120, 400, n):
            print("colour code", probe(x, y, n_train, slice(n, None)), flush=True)
        return
    for path in args.weights:
        torch.manual_seed(0)
        model = VLM(Config.of(read_meta(path).get("config", {})))
        load_base_into(model, path)
        model.eval()
        x, y = features(model, args.concept, args.scenes)
        n = int(0.7 * len(x))
        for n_train in (120, 400, n):
            print(path, probe(x, y, n_train, slice(n, None)), flush=True)


if __name__ == "__main__":
    main()
