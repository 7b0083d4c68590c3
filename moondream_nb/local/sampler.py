"""Batched sampling with a KV cache and grammar masks: every row of a batch decodes in lockstep.

Rows may have different prompts (left-padded), images and skills, so one call serves the
``num_rollouts`` of a request as well as a whole evaluation batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import tokenizer as tk
from .model import VLM, Adapter, KVCache, Memory


@dataclass
class Row:
    """One sequence to sample: which image, its prompt tokens and the skill's grammar."""

    image: int
    prompt: list[int]
    skill: str  # query | caption | point | detect
    reasoning: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 128
    max_objects: int = 50


@dataclass
class Sample:
    tokens: list[int]  # answer tokens, EOS included when the model stopped
    finish_reason: str  # "stop" | "length"


def _first_state(row: Row) -> int:
    if row.skill in ("point", "detect"):
        return tk.S_ITEM
    return tk.S_FORCED_THINK if (row.skill == "query" and row.reasoning) else tk.S_TEXT


def _next_state(skill: str, state: int, tok: int, k: int) -> tuple[int, int]:
    """(state, position inside the current item) after emitting ``tok``."""
    if state == tk.S_FORCED_THINK:
        return tk.S_THINK, 0
    if state == tk.S_THINK:
        return (tk.S_TEXT if tok == tk.ANSWER else tk.S_THINK), 0
    if state == tk.S_TEXT:
        return tk.S_TEXT, 0
    per_item = 2 if skill == "point" else 4
    k = (k + 1) % per_item
    return (tk.S_ITEM if k == 0 else tk.S_OFF if k == 1 else tk.S_SIZE), k


def _pick(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    greedy = logits.argmax(-1)
    if bool((temperature == 0).all()):
        return greedy
    probs = torch.softmax(logits / temperature.clamp_min(1e-6).unsqueeze(-1), -1)
    sorted_p, order = probs.sort(-1, descending=True)
    # Keep the smallest prefix whose mass reaches top_p (always at least one token).
    keep = (sorted_p.cumsum(-1) - sorted_p) < top_p.unsqueeze(-1)
    sorted_p = sorted_p * keep
    choice = torch.multinomial(sorted_p, 1, generator=gen).squeeze(-1)
    sampled = order.gather(-1, choice.unsqueeze(-1)).squeeze(-1)
    return torch.where(temperature == 0, greedy, sampled)


@torch.no_grad()
def generate(model: VLM, memory: Memory, rows: list[Row], adapter: Adapter | None = None,
             generator: torch.Generator | None = None) -> list[Sample]:
    """Sample every row to EOS or its budget; ``memory`` holds the encoded images rows point at."""
    n = len(rows)
    plen = max(len(r.prompt) for r in rows)
    budget = [r.max_tokens if r.skill in ("query", "caption") else (2 if r.skill == "point" else 4) * r.max_objects + 1
              for r in rows]
    budget = [min(b, model.cfg.max_len - plen) for b in budget]
    steps = max(budget)
    m = memory.select(torch.tensor([r.image for r in rows]))
    pads = [plen - len(r.prompt) for r in rows]
    prompt = torch.tensor([[tk.PAD] * p + r.prompt for p, r in zip(pads, rows)])
    pad = torch.tensor(pads)
    positions = (torch.arange(plen).unsqueeze(0) - pad.unsqueeze(1)).clamp_min(0)
    key_ok = torch.arange(plen + steps).unsqueeze(0) >= pad.unsqueeze(1)  # [n, T]: not a left pad
    causal = torch.ones(plen, plen, dtype=torch.bool).tril()
    eye = torch.eye(plen, dtype=torch.bool)
    mask = ((causal & key_ok[:, None, :plen]) | eye).unsqueeze(1)
    cfg = model.cfg
    cache = KVCache(cfg.dec_layers, n, cfg.heads, plen + steps, cfg.d // cfg.heads, model.query_dim)
    logits = model.decode(prompt, m, adapter, positions, cache, mask)[:, -1]
    cache.commit()
    temperature = torch.tensor([float(r.temperature) for r in rows])
    top_p = torch.tensor([float(r.top_p) for r in rows])
    states = [_first_state(r) for r in rows]
    item_pos = [0] * n
    out: list[list[int]] = [[] for _ in rows]
    done = [False] * n
    finish = ["length"] * n
    for t in range(steps):
        masked = model.masked(logits, torch.tensor(states))
        toks = _pick(masked, temperature, top_p, generator).tolist()
        for i in range(n):
            if done[i]:
                toks[i] = tk.EOS
                continue
            out[i].append(toks[i])
            if toks[i] == tk.EOS:
                done[i], finish[i] = True, "stop"
                continue
            states[i], item_pos[i] = _next_state(rows[i].skill, states[i], toks[i], item_pos[i])
            if len(out[i]) >= budget[i] or (rows[i].skill in ("point", "detect") and item_pos[i] == 0
                                            and len(out[i]) // (2 if rows[i].skill == "point" else 4) >= rows[i].max_objects):
                done[i] = True
        if all(done):
            break
        step_mask = key_ok[:, None, None, : plen + t + 1]
        logits = model.decode(torch.tensor(toks).unsqueeze(1), m, adapter, (plen - pad + t).unsqueeze(1), cache, step_mask)[:, -1]
        cache.commit()
    return [Sample(o, f) for o, f in zip(out, finish)]
