"""One LoRA train step on the built-in model: RL groups (GRPO + KL to the base) and SFT targets.

The server hands this module plain examples: a preprocessed image, the skill request, and the
output to score (a rollout's ``output`` for RL, the target for SFT). Tokens are re-derived from
``output`` with the deterministic tokenizer, so client-built rollouts work and tampered
metadata cannot corrupt a step.
"""

from __future__ import annotations

import math
import random
import zlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F

from .. import scenes as sc
from . import tokenizer as tk
from .model import VLM, Adapter, Memory
from .sampler import Row, generate

KL_COEF = 0.05
RETAIN_COEF = 1.0
ANCHORS_PER_IMAGE = 2
ANCHORS_PER_STEP = 8  # a cap: an anchor's forward and backward cost as much as an SFT example's
ANCHORS_PRESENT = 0.75  # the share of anchors about something the base sees in the image
CLIP_NORM = 1.0
# Padded tokens per forward/backward. A step's memory is bounded by this, not by its size: the
# largest valid step (64 RL groups x 16 rollouts of long answers) runs as chunks whose gradients add
# up to the one-batch gradient (same update within float tolerance). Peaks measured in
# benchmarks/results/train_memory.txt.
TOKENS_PER_CHUNK = 4096


@dataclass
class Example:
    """One sequence: ``image`` indexes the step's image tensor; ``output`` is scored for ``request``."""

    image: int
    frame: tk.Frame
    request: dict[str, Any]
    output: dict[str, Any]

    @cached_property
    def tokens(self) -> tuple[list[int], list[int], list[int]]:
        """(prompt, answer, grammar states) token ids, derived once."""
        skill = self.request["skill"]
        reasoning = bool(self.request.get("reasoning")) and skill == "query"
        prompt = tk.prompt_tokens(self.frame, self.request)
        answer = tk.answer_tokens(self.frame, skill, self.output, reasoning=reasoning)
        states = tk.states_for(skill, answer, reasoning=reasoning)
        return prompt, answer, states


@dataclass
class RLGroup:
    examples: list[Example]
    rewards: list[float]


@dataclass
class StepResult:
    applied: bool
    kl: float | None = None
    grad_norm: float | None = None
    reward_mean: float | None = None
    reward_std: float | None = None
    sft_loss: float | None = None
    extra: dict[str, float] = field(default_factory=dict)


def _batch(examples: Sequence[Example], rows: dict[int, int] | None = None) -> dict[str, torch.Tensor]:
    """Padded teacher-forcing tensors; ``rows`` maps an example's image to its row in the memory the
    batch is run over (default: the image index itself)."""
    seqs = []
    for ex in examples:
        prompt, answer, states = ex.tokens
        seq = prompt + answer
        seqs.append((seq[:-1], [-100] * (len(prompt) - 1) + answer, [tk.S_NONE] * (len(prompt) - 1) + states))
    t = max(len(s[0]) for s in seqs)
    tokens = torch.full((len(seqs), t), tk.PAD)
    targets = torch.full((len(seqs), t), -100)
    states = torch.full((len(seqs), t), tk.S_NONE)
    for k, (inp, tgt, st) in enumerate(seqs):
        tokens[k, : len(inp)] = torch.tensor(inp)
        targets[k, : len(tgt)] = torch.tensor(tgt)
        states[k, : len(st)] = torch.tensor(st)
    index = [ex.image if rows is None else rows[ex.image] for ex in examples]
    return {"tokens": tokens, "targets": targets, "states": states, "index": torch.tensor(index)}


def _length(ex: Example) -> int:
    prompt, answer, _ = ex.tokens
    return len(prompt) + len(answer) - 1


def _answer_tokens(ex: Example) -> int:
    return len(ex.tokens[1])


def chunks(items: Sequence[Any], example: Any = lambda x: x, budget: int | None = None) -> Iterator[list[Any]]:
    """``items`` in runs whose padded size (count x longest) stays within ``budget`` tokens
    (default :data:`TOKENS_PER_CHUNK`), those of one image together (a chunk encodes only its own
    images); a single longer example is a run of its own."""
    budget = TOKENS_PER_CHUNK if budget is None else budget
    order = sorted(items, key=lambda it: example(it).image)
    run: list[Any] = []
    longest = 0
    for it in order:
        n = _length(example(it))
        if run and max(longest, n) * (len(run) + 1) > budget:
            yield run
            run, longest = [], 0
        run.append(it)
        longest = max(longest, n)
    if run:
        yield run


class _Chunk:
    """One micro-batch: its examples' tensors over the adapter's (with grad) and the base's (no
    grad) memory of just the images it uses."""

    def __init__(self, model: VLM, adapter: Adapter, images: torch.Tensor, examples: Sequence[Example],
                 base: Memory | None) -> None:
        used = sorted({ex.image for ex in examples})
        rows = {image: k for k, image in enumerate(used)}
        index = torch.tensor(used)
        self.images = images[index]
        self.batch = _batch(examples, rows)
        self.memory = model.encode(self.images, adapter)
        self.base = base.select(index) if base is not None else None

def token_logprobs(model: VLM, adapter: Adapter | None, images: torch.Tensor, b: dict[str, torch.Tensor],
                   memory: Memory | None = None) -> torch.Tensor:
    """Log-probability of each target token under the grammar masks ``[N, T]`` (0 off-answer)."""
    logp = _masked_logp(model, adapter, images, b, memory)
    tgt = b["targets"].clamp_min(0)
    out = logp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
    return out * (b["targets"] != -100)


def _masked_logp(model: VLM, adapter: Adapter | None, images: torch.Tensor, b: dict[str, torch.Tensor],
                 memory: Memory | None) -> torch.Tensor:
    logits = model.masked(model(images, b["tokens"], b["index"], adapter, memory=memory), b["states"])
    return torch.log_softmax(logits, -1)


def seen(model: VLM, base: Memory) -> list[list[tuple[str, str]]]:
    """Per image, the (colour, shape) of each object the base's per-cell head finds centred in a cell.

    A cell counts when its centre logit is positive and the largest of its 3×3 neighbourhood (an
    object's centre also lights up the cells next to it).
    """
    shape, colour = model.cell_heads(base.cells)[:2]
    names = model.colour_names
    logit = shape[..., -1]
    peak = F.max_pool2d(logit.view(-1, 1, tk.GRID, tk.GRID), 3, 1, 1).flatten(1)
    centre = (logit > 0) & (logit >= peak)
    shapes, colours = shape[..., :-1].argmax(-1), colour[..., :-1].argmax(-1)
    return [[(names[int(colours[b, c])], sc.PRETRAINING_SHAPES[int(shapes[b, c])]) for c in centre[b].nonzero().flatten().tolist()]
            for b in range(shape.shape[0])]


def anchors(model: VLM, base: Memory, examples: Sequence[Example]) -> list[Example]:
    """Known-concept point/detect requests on the step's images, answered greedily by the base.

    Learning without Forgetting (Li & Hoiem, 2016): the train step also keeps the adapter's answers
    to these close to the base's, on the very images it trains on, because a new concept otherwise
    leaks into what the base already knew (after RL on "star", "point at the circles" stopped after
    one circle). Most anchors ask about something the base sees in the image (:func:`seen`), so
    they hold how known things are found, not only that absent things are not; the rest ask about
    a random known shape or colour. A shape or colour the step itself asks about is never an
    anchor, so a finetune can still change how a known concept is answered.
    """
    frames: dict[int, tk.Frame] = {}
    asked = set()
    for ex in examples:
        frames.setdefault(ex.image, ex.frame)
        asked.update(str(ex.request.get("object") or ex.request.get("question") or "").lower().split())
    shapes = [s for s in sc.PRETRAINING_SHAPES if s not in asked and sc.plural(s) not in asked]
    colours = [c for c in model.colour_names if c not in asked]
    if not shapes or not colours:
        return []
    # Seeded by the step's content: a replayed step trains on the same anchors.
    rng = random.Random(zlib.crc32(repr(sorted((k, f) for k, f in frames.items())).encode()
                                   + repr([ex.request.get("object") for ex in examples]).encode()))
    ordered = sorted(frames.items(), key=lambda kv: kv[0])
    visible = seen(model, base)
    requests: list[tuple[int, tk.Frame, dict[str, Any]]] = []
    pairs = [ik for _ in range(ANCHORS_PER_IMAGE) for ik in ordered]  # every image once before any twice
    for image, frame in pairs[:ANCHORS_PER_STEP]:
        present = [f for c, s in visible[image] for f in ((c, None), (None, s), (c, s))
                   if (f[0] is None or f[0] in colours) and (f[1] is None or f[1] in shapes)]
        if present and rng.random() < ANCHORS_PRESENT:
            colour, shape = rng.choice(present)
        else:
            kind = rng.random()
            colour = rng.choice(colours) if kind >= 0.4 else None
            shape = rng.choice(shapes) if kind < 0.75 or colour is None else None
        skill = rng.choice(("point", "detect"))
        requests.append((image, frame, {"skill": skill, "object": sc.object_prompt(rng, colour, shape)}))
    rows = [Row(image, tk.prompt_tokens(frame, req), req["skill"], temperature=0.0, max_objects=8)
            for image, frame, req in requests]
    out = []
    for (image, frame, req), sample in zip(requests, generate(model, base, rows)):
        output = tk.decode(frame, req["skill"], sample.tokens)
        out.append(Example(image, frame, req, {k: v for k, v in output.items() if k in ("points", "objects")}))
    return out


def retention_kl(model: VLM, adapter: Adapter, images: torch.Tensor, anchor: Sequence[Example],
                 memory: Memory, base: Memory) -> torch.Tensor:
    """Mean KL(base ‖ adapter) of the next-token distributions over the anchors' answer tokens."""
    total, count = _retention_sum(model, adapter, images, _batch(anchor), memory, base)
    return total / max(count, 1)


def _retention_sum(model: VLM, adapter: Adapter, images: torch.Tensor, b: dict[str, torch.Tensor],
                   memory: Memory, base: Memory) -> tuple[torch.Tensor, int]:
    """(sum over answer tokens of KL(base ‖ adapter), how many tokens)."""
    logp = _masked_logp(model, adapter, images, b, memory)
    with torch.no_grad():
        ref = _masked_logp(model, None, images, b, base)
    on = (b["targets"] != -100).float()
    kl = (ref.exp() * (ref - logp)).sum(-1)
    return (kl * on).sum(), int(on.sum())


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population std of any finite numbers: computed on values scaled by their largest
    magnitude, so rewards near 1e308 do not overflow (their squares would)."""
    scale = max((abs(v) for v in values), default=0.0) or 1.0
    scaled = [v / scale for v in values]
    mean = math.fsum(scaled) / len(scaled)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in scaled) / len(scaled))
    return mean * scale, std * scale


def advantages(rewards: Sequence[float]) -> list[float] | None:
    """Group-normalized advantages, or None when the group carries no signal (equal rewards).

    Scale-free: a group's rewards times any factor give the same advantages."""
    scale = max(abs(r) for r in rewards) or 1.0
    mean, std = mean_std([r / scale for r in rewards])
    if std * scale < 1e-6:  # no spread, in the rewards' own units
        return None
    return [(r / scale - mean) / std for r in rewards]


def train_step(model: VLM, adapter: Adapter, optimizer: torch.optim.Optimizer, images: torch.Tensor,
               rl: Sequence[RLGroup], sft: Sequence[Example], lr: float, kl_coef: float = KL_COEF,
               retain_coef: float = RETAIN_COEF) -> StepResult:
    """Apply one optimizer step to ``adapter``; ``images`` are the preprocessed images examples index.

    The loss is GRPO with a KL penalty to the base on the RL groups, cross-entropy on the SFT
    targets, and ``retain_coef`` × :func:`retention_kl` on :func:`anchors` of the same images.
    Returns the real figures of the step (``extra["retain_kl"]``); ``applied`` is False (and
    nothing changes) when no RL group has a reward spread and there is no SFT example.
    """
    all_rewards = [r for g in rl for r in g.rewards]
    reward_mean, reward_std = mean_std(all_rewards) if all_rewards else (None, None)
    weighted: list[tuple[Example, float]] = []
    for g in rl:
        adv = advantages(g.rewards)
        if adv is not None:
            weighted += list(zip(g.examples, adv))
    if not weighted and not sft:
        return StepResult(False, reward_mean=reward_mean, reward_std=reward_std)

    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    kl_value = sft_value = None
    extra: dict[str, float] = {}
    base = None
    if weighted or retain_coef > 0:  # the base's view: the RL reference and the anchors' answers
        with torch.no_grad():
            base = model.encode(images, None)
    # Every term is a mean over all the step's examples (or tokens): each chunk adds its share of the
    # sum and backpropagates at once, so the graph of one chunk is alive at a time.
    if weighted:
        kl_total = 0.0
        for run in chunks(weighted, lambda w: w[0]):
            c = _Chunk(model, adapter, images, [ex for ex, _ in run], base)
            mask = (c.batch["targets"] != -100).float()
            n_tok = mask.sum(1).clamp_min(1)
            logp = token_logprobs(model, adapter, c.images, c.batch, c.memory)
            with torch.no_grad():
                ref = token_logprobs(model, None, c.images, c.batch, c.base)
            adv = torch.tensor([a for _, a in run])
            pg = -(adv * (logp.sum(1) / n_tok)).sum() / len(weighted)
            # k3 estimator of KL(policy || base) on the sampled tokens: unbiased and never negative.
            diff = (ref - logp) * mask
            kl_tok = (torch.exp(diff) - diff - 1) * mask
            kl = (kl_tok.sum(1) / n_tok).sum() / len(weighted)
            (pg + kl_coef * kl).backward()
            kl_total += kl.item()
        kl_value = kl_total
    if sft:
        n_target = max(1, sum(_answer_tokens(ex) for ex in sft))
        sft_total = 0.0
        for run in chunks(sft):
            c = _Chunk(model, adapter, images, run, None)
            ce = -token_logprobs(model, adapter, c.images, c.batch, c.memory).sum() / n_target
            ce.backward()
            sft_total += ce.item()
        sft_value = sft_total
    if base is not None and retain_coef > 0:
        anchor = anchors(model, base, [ex for ex, _ in weighted] + list(sft))
        if anchor:
            n_anchor = max(1, sum(_answer_tokens(ex) for ex in anchor))
            retain_total = 0.0
            for run in chunks(anchor):
                c = _Chunk(model, adapter, images, run, base)
                total, _ = _retention_sum(model, adapter, c.images, c.batch, c.memory, c.base)
                (retain_coef * total / n_anchor).backward()
                retain_total += total.item() / n_anchor
            extra["retain_kl"] = retain_total
    grad_norm = float(torch.nn.utils.clip_grad_norm_(adapter.parameters(), CLIP_NORM))
    if not math.isfinite(grad_norm):
        optimizer.zero_grad(set_to_none=True)
        raise FloatingPointError("train step produced a non-finite gradient; the adapter was not changed")
    optimizer.step()
    return StepResult(True, kl=kl_value, grad_norm=grad_norm, reward_mean=reward_mean, reward_std=reward_std,
                      sft_loss=sft_value, extra=extra)


def make_optimizer(adapter: Adapter, lr: float = 2e-4) -> torch.optim.Optimizer:
    return torch.optim.AdamW(adapter.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.99))


def state_tensors(adapter: Adapter, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Adapter weights and AdamW moments as one flat dict for a safetensors file."""
    out = adapter.state_dict()
    state = optimizer.state
    for name, (a, b) in adapter.params.items():
        for suffix, p in (("lora_A", a), ("lora_B", b)):
            st = state.get(p)
            if st:
                out[f"{name}.{suffix}.exp_avg"] = st["exp_avg"].contiguous()
                out[f"{name}.{suffix}.exp_avg_sq"] = st["exp_avg_sq"].contiguous()
                out[f"{name}.{suffix}.step"] = torch.as_tensor(st["step"], dtype=torch.float32).reshape(1)
    return out


def load_state_tensors(adapter: Adapter, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    adapter.load_state_dict(tensors)
    for name, (a, b) in adapter.params.items():
        for suffix, p in (("lora_A", a), ("lora_B", b)):
            key = f"{name}.{suffix}"
            if f"{key}.exp_avg" in tensors:
                optimizer.state[p] = {
                    "step": tensors[f"{key}.step"].reshape(()).clone(),
                    "exp_avg": tensors[f"{key}.exp_avg"].clone(),
                    "exp_avg_sq": tensors[f"{key}.exp_avg_sq"].clone(),
                }
