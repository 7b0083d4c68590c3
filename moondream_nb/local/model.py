"""The built-in vision-language model: a conv encoder over image cells and a small causal decoder.

Design (what made it learn on two CPU cores, see ``pretrain.py``):

- The encoder turns a 96×96 letterboxed image into 12×12 cell features (conv stack with 2-D
  positions and the cell's mean colour, then two bidirectional transformer blocks). During
  pretraining an auxiliary head predicts, per cell, the shape, colour, centre offset and size of
  the object centred there, so the encoder learns to localize from the first minute, and the
  cell's own column and row, so that position survives the encoder blocks ("which side is X on").
  The head ships with the weights: train steps read from it what known things an image holds.
- The decoder reads one token sequence (prompt bytes, special tokens, coordinate tokens) and
  cross-attends to the cells. Pointing is *selecting a cell*: the logits of the cell tokens are
  the decoder state against each cell's features (a pointer), and a cell token's input embedding
  is that cell's feature, so the next tokens (offset inside the cell, box width and height) and
  spatial references in prompts see what lies there. Answers list items in cell order (a quarter
  of pretraining's in a random order), and a learned bias per attention head and on the pointer
  tells apart the cells already listed, the cells next to one, and the rest, so "is there one
  more?" is one attention over the cells not yet listed, and a thing skipped can still come next.
  (``listed_bias=False``: the three biases are for the cells before, at and after the last one
  listed, as in weights before it.)
- Between list items the logit of ending the list is one learned constant (``stop_pointer``), not a
  reading of the decoder state: the list ends when no cell left scores above it. What an adapter
  teaches the pointer about a new concept ("these cells are purple") then also decides whether one
  more is left (``stop_pointer=False``: the vocabulary head's EOS logit, as in weights before it).
  With ``list_query`` the pointer's query is the one at the prompt's end for the whole answer, so
  which cells score above the threshold depends on the prompt, the cell and the listed biases only,
  not on how many items came before. With ``listed_mask`` a cell already listed cannot be selected
  again at all (a learned bias could not hold one down once an adapter raised its score).
- With ``colour_code`` the pointer also scores each cell's mean colour as a fixed code of Gaussian
  bumps in RGB, weighted by a second part of its query. Pretraining blurs the hues it never names
  in the encoder's features; it cannot blur the code, so an adapter that learns a new colour only
  has to learn where purple lies in the code (``benchmarks/results/colour_code.txt``).
- Every attention and MLP projection is a :class:`LoRALinear`; an :class:`Adapter` (rank 8–32)
  passed to ``forward`` adds its low-rank update, so one frozen base serves many finetunes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import scenes as sc
from . import tokenizer as tk

N_SHAPE_CLASSES = len(sc.PRETRAINING_SHAPES) + 1  # every shape pretraining may draw + "none"

# The colour code: Gaussian bumps on a 4×4×4 grid of the RGB cube, σ a half grid step. Fixed, never
# learned: pretraining tunes the encoder to the colours it names and blurs the hues between them, but
# it cannot blur this code, so an adapter can still pick out a colour pretraining never named.
_LEVELS = torch.linspace(-1.0, 1.0, 4)
CODE_CENTRES = torch.cartesian_prod(_LEVELS, _LEVELS, _LEVELS)  # [64, 3]
CODE_SIGMA = 1.0 / 3.0


def colour_code(images: torch.Tensor) -> torch.Tensor:
    """``[B, cells, 64]``: each cell's mean colour (images in [-1, 1]) as Gaussian bumps around ``CODE_CENTRES``."""
    rgb = F.avg_pool2d(images, images.shape[-1] // tk.GRID).flatten(2).transpose(1, 2)
    d2 = (rgb.unsqueeze(2) - CODE_CENTRES).pow(2).sum(-1)
    return torch.exp(-d2 / (2 * CODE_SIGMA**2))


@dataclass(frozen=True)
class Config:
    d: int = 160
    heads: int = 4
    enc_layers: int = 2
    dec_layers: int = 4
    mlp: int = 4
    max_len: int = 320
    colours: int = len(sc.PRETRAINING_COLOURS)  # colours the per-cell head names: the first of scenes.PRETRAINING_COLOURS
    cell_rgb: bool = True  # the per-cell head also reconstructs each cell's mean colour (off: pretrain --no-cell-rgb)
    order_bias: bool = True  # learned cross-attention and pointer biases by where a cell stands to the cells listed (off: pretrain --no-order-bias)
    listed_bias: bool = True  # with order_bias: the biases mark cells listed / next to a listed one / neither, not before / at / after the last listed (off: pretrain --no-listed-bias)
    stop_pointer: bool = True  # between list items, ending the list scores against the cells as one learned threshold (off: pretrain --no-stop-pointer)
    list_query: bool = True  # every answer position points with the pointer query of the prompt's end (off: pretrain --no-list-query)
    listed_mask: bool = True  # with listed_bias: the pointer never selects a cell already listed (off: pretrain --no-listed-mask)
    colour_code: bool = True  # the pointer also scores each cell's fixed colour code (off: pretrain --no-colour-code)

    @classmethod
    def of(cls, saved: dict) -> "Config":
        """The config a weights file was trained with (its ``meta["config"]``): fields added after the
        file was written take the values such files were trained with, not today's defaults."""
        return cls(**{**LEGACY, **saved})


# What weights written before a field existed were trained with.
LEGACY = {"colours": len(sc.COLOURS), "cell_rgb": False, "order_bias": False, "listed_bias": False, "stop_pointer": False,
          "list_query": False, "listed_mask": False, "colour_code": False}


class Adapter:
    """LoRA weights for every :class:`LoRALinear` of a model: ``A`` (r × in), ``B`` (out × r).

    ``B`` starts at zero, so a fresh adapter leaves the base model's outputs unchanged.
    """

    def __init__(self, model: "VLM", rank: int, alpha: float | None = None, seed: int = 0):
        self.rank = rank
        self.scale = (alpha if alpha is not None else 2.0 * rank) / rank
        g = torch.Generator().manual_seed(seed)
        self.params: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for name, mod in model.lora_modules().items():
            a = torch.randn(rank, mod.in_features, generator=g) / math.sqrt(mod.in_features)
            b = torch.zeros(mod.out_features, rank)
            self.params[name] = (a.requires_grad_(), b.requires_grad_())

    def parameters(self) -> list[torch.Tensor]:
        return [t for ab in self.params.values() for t in ab]

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {}
        for name, (a, b) in self.params.items():
            out[f"{name}.lora_A"] = a.detach().contiguous()
            out[f"{name}.lora_B"] = b.detach().contiguous()
        return out

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, (a, b) in self.params.items():
                a.copy_(sd[f"{name}.lora_A"])
                b.copy_(sd[f"{name}.lora_B"])


class LoRALinear(nn.Linear):
    """``nn.Linear`` that adds an adapter's low-rank update when one is passed."""

    lora_name = ""

    def forward(self, x: torch.Tensor, adapter: Adapter | None = None) -> torch.Tensor:  # type: ignore[override]
        y = F.linear(x, self.weight, self.bias)
        if adapter is not None:
            a, b = adapter.params[self.lora_name]
            y = y + F.linear(F.linear(x, a), b) * adapter.scale
        return y


class Attention(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = LoRALinear(d, d)
        self.k = LoRALinear(d, d)
        self.v = LoRALinear(d, d)
        self.o = LoRALinear(d, d)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        return x.view(b, t, self.heads, d // self.heads).transpose(1, 2)

    def kv(self, src: torch.Tensor, ad: Adapter | None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.split(self.k(src, ad)), self.split(self.v(src, ad))

    def attend(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ad: Adapter | None,
               causal: bool = False, mask: torch.Tensor | None = None) -> torch.Tensor:
        q = self.split(self.q(x, ad))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None)
        b, h, t, dh = y.shape
        return self.o(y.transpose(1, 2).reshape(b, t, h * dh), ad)


class MLP(nn.Module):
    def __init__(self, d: int, mult: int):
        super().__init__()
        self.fc1 = LoRALinear(d, d * mult)
        self.fc2 = LoRALinear(d * mult, d)

    def forward(self, x: torch.Tensor, ad: Adapter | None) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x, ad)), ad)


class EncoderBlock(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d)
        self.attn = Attention(cfg.d, cfg.heads)
        self.ln2 = nn.LayerNorm(cfg.d)
        self.mlp = MLP(cfg.d, cfg.mlp)

    def forward(self, x: torch.Tensor, ad: Adapter | None) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.attn.attend(h, *self.attn.kv(h, ad), ad)
        return x + self.mlp(self.ln2(x), ad)


class DecoderBlock(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d)
        self.self_attn = Attention(cfg.d, cfg.heads)
        self.ln2 = nn.LayerNorm(cfg.d)
        self.cross = Attention(cfg.d, cfg.heads)
        self.ln3 = nn.LayerNorm(cfg.d)
        self.mlp = MLP(cfg.d, cfg.mlp)

    def forward(self, x: torch.Tensor, cross_kv: tuple[torch.Tensor, torch.Tensor], ad: Adapter | None, *,
                cache: "KVCache | None" = None, layer: int = 0, mask: torch.Tensor | None = None,
                cross_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Self-attention (causal, or appending to ``cache`` at ``layer``), cross-attention to the
        image's ``cross_kv`` (biased by ``cross_mask``), then the MLP; each pre-norm and residual."""
        h = self.ln1(x)
        k, v = self.self_attn.kv(h, ad)
        if cache is not None:
            k, v = cache.extend(layer, k, v)
        x = x + self.self_attn.attend(h, k, v, ad, causal=cache is None, mask=mask)
        x = x + self.cross.attend(self.ln2(x), *cross_kv, ad, mask=cross_mask)
        return x + self.mlp(self.ln3(x), ad)


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.GroupNorm(8, cout), nn.GELU())


class Encoder(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.stages = nn.ModuleList([
            _conv(3, 32, 2), _conv(32, 32), _conv(32, 64, 2), _conv(64, 64), _conv(64, 128, 2), _conv(128, 128),
        ])
        self.proj = nn.Linear(128 + 3, cfg.d)
        self.pos = nn.Parameter(torch.randn(tk.N_CELLS, cfg.d) * 0.02)
        self.blocks = nn.ModuleList([EncoderBlock(cfg) for _ in range(cfg.enc_layers)])
        self.ln = nn.LayerNorm(cfg.d)

    def forward(self, images: torch.Tensor, ad: Adapter | None) -> torch.Tensor:
        x = images
        for k, stage in enumerate(self.stages):
            y = stage(x)
            x = x + y if k % 2 == 1 else y  # residual on the stride-1 convs
        colour = F.avg_pool2d(images, images.shape[-1] // tk.GRID)  # the cell's mean colour, kept linear
        feats = torch.cat([x, colour], 1).flatten(2).transpose(1, 2)  # [B, cells, 131]
        h = self.proj(feats) + self.pos
        for blk in self.blocks:
            h = blk(h, ad)
        return self.ln(h)


class VLM(nn.Module):
    """Image (B×3×96×96, values in [-1, 1]) + token sequences → next-token logits over ``VOCAB``."""

    def __init__(self, cfg: Config = Config()):
        super().__init__()
        self.cfg = cfg
        d = cfg.d
        self.encoder = Encoder(cfg)
        self.tok = nn.Embedding(tk.VOCAB, d)
        self.pos = nn.Embedding(cfg.max_len, d)
        self.cell_in = nn.Linear(d, d)
        self.blocks = nn.ModuleList([DecoderBlock(cfg) for _ in range(cfg.dec_layers)])
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, tk.VOCAB)
        self.ptr_q = LoRALinear(d, d)
        self.ptr_k = nn.Linear(d, d)
        if cfg.colour_code:
            self.ptr_code = LoRALinear(d, len(CODE_CENTRES))  # the query's weight on each bump of the colour code
        # Per-cell head (trained in pretraining only): shape, colour, offset, width, height of the
        # object centred there, the cell's own column and row, and with ``cell_rgb`` its mean colour.
        self.colour_names = tuple(sc.PRETRAINING_COLOURS)[: cfg.colours]
        if cfg.order_bias:
            # Biases (module docstring) for the cells listed / next to one / neither, or before / at / after the last listed.
            self.cross_order = nn.Parameter(torch.zeros(cfg.dec_layers, cfg.heads, 3))
            self.ptr_order = nn.Parameter(torch.zeros(3))  # with listed_mask the "listed" entry is masked over
        if cfg.stop_pointer:
            self.ptr_stop = nn.Parameter(torch.zeros(()))  # the EOS logit between list items (module docstring)
        self.aux = nn.Linear(d, N_SHAPE_CLASSES + cfg.colours + 1 + tk.N_OFFS + 2 * tk.SIZE_BINS + 2 * tk.GRID
                             + 3 * cfg.cell_rgb)
        for name, mod in self.named_modules():
            if isinstance(mod, LoRALinear):
                mod.lora_name = name
        masks = torch.full((tk.N_STATES, tk.VOCAB), -1e9)
        for s in range(tk.N_STATES):
            masks[s, tk.allowed_ids(s)] = 0.0
        self.register_buffer("state_masks", masks, persistent=False)

    def cell_heads(self, cells: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The per-cell head's logits, split: shape (+ centre last), colour (+ none last), offset,
        width, height, column, row, and the cell's mean RGB in [-1, 1] (empty unless ``cfg.cell_rgb``)."""
        return self.aux(cells).split((N_SHAPE_CLASSES, self.cfg.colours + 1, tk.N_OFFS, tk.SIZE_BINS, tk.SIZE_BINS,
                                      tk.GRID, tk.GRID, 3 * self.cfg.cell_rgb), -1)

    def masked(self, logits: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """``logits [..., VOCAB]`` restricted to what the grammar allows in ``states [...]`` (others −1e9);
        with ``cfg.stop_pointer`` the EOS logit between list items is the learned ``ptr_stop``."""
        out = logits + self.state_masks[states]
        if self.cfg.stop_pointer:
            out[..., tk.EOS] = torch.where(states == tk.S_ITEM, self.ptr_stop, out[..., tk.EOS])
        return out

    @property
    def query_dim(self) -> int:
        """Width of the pointer's query: the key query, then with ``cfg.colour_code`` the colour-code weights."""
        return self.cfg.d + len(CODE_CENTRES) * self.cfg.colour_code

    def lora_modules(self) -> dict[str, LoRALinear]:
        return {m.lora_name: m for m in self.modules() if isinstance(m, LoRALinear)}

    # ---- pieces shared by training and sampling

    def encode(self, images: torch.Tensor, ad: Adapter | None = None) -> "Memory":
        mem = self.encoder(images, ad)
        kv = [blk.cross.kv(mem, ad) for blk in self.blocks]
        return Memory(mem, kv, self.ptr_k(mem), colour_code(images) if self.cfg.colour_code else None)

    def embed(self, tokens: torch.Tensor, mem: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        x = self.tok(tokens) + self.pos(positions)
        cell = (tokens - tk.CELL0).clamp(0, tk.N_CELLS - 1)
        is_cell = ((tokens >= tk.CELL0) & (tokens < tk.CELL0 + tk.N_CELLS)).unsqueeze(-1)
        feats = torch.gather(mem, 1, cell.unsqueeze(-1).expand(-1, -1, mem.shape[-1]))
        return x + is_cell * self.cell_in(feats)

    def order(self, tokens: torch.Tensor, cache: "KVCache | None") -> torch.Tensor:
        """``[B, T, cells, 3]``, one-hot per position: whether a cell lies before / at / after the last cell
        token at or before it (after, everywhere before the first one); with ``cfg.listed_bias``, whether a
        cell was listed at or before it / is next to a listed one / neither."""
        if self.cfg.listed_bias:
            return self._listed(tokens, cache)
        b, t = tokens.shape
        is_cell = (tokens >= tk.CELL0) & (tokens < tk.CELL0 + tk.N_CELLS)
        at = torch.where(is_cell, torch.arange(t).expand(b, t), -1).cummax(1).values
        last = torch.where(at >= 0, (tokens - tk.CELL0).gather(1, at.clamp_min(0)), -1)
        if cache is not None:
            last = torch.where(at >= 0, last, cache.last_cell.unsqueeze(1))
            cache.pending_last_cell = last[:, -1]
        cells = torch.arange(tk.N_CELLS)
        return F.one_hot(2 * (cells > last.unsqueeze(-1)) + (cells == last.unsqueeze(-1)), 3).float()

    def _listed(self, tokens: torch.Tensor, cache: "KVCache | None") -> torch.Tensor:
        b, t = tokens.shape
        is_cell = (tokens >= tk.CELL0) & (tokens < tk.CELL0 + tk.N_CELLS)
        hot = F.one_hot((tokens - tk.CELL0).clamp(0, tk.N_CELLS - 1), tk.N_CELLS) * is_cell.unsqueeze(-1)
        listed = hot.cumsum(1) > 0
        if cache is not None:
            listed = listed | cache.listed.unsqueeze(1)
            cache.pending_listed = listed[:, -1]
        near = F.max_pool2d(listed.float().view(b * t, 1, tk.GRID, tk.GRID), 3, 1, 1).view(b, t, tk.N_CELLS) > 0
        return F.one_hot(2 - near.long() - listed.long(), 3).float()

    def list_query(self, q: torch.Tensor, tokens: torch.Tensor, cache: "KVCache | None") -> torch.Tensor:
        """Pointer queries ``q [B, T, query_dim]`` with every position at or after the prompt's SEP replaced by the query there."""
        b, t = tokens.shape
        at = torch.where(tokens == tk.SEP, torch.arange(t).expand(b, t), -1).cummax(1).values
        fixed = q.gather(1, at.clamp_min(0).unsqueeze(-1).expand_as(q))
        has = at >= 0
        if cache is not None:
            fixed = torch.where(has.unsqueeze(-1), fixed, cache.query.unsqueeze(1))
            has = has | cache.has_query.unsqueeze(1)
            cache.pending_query = (fixed[:, -1], has[:, -1])
        return torch.where(has.unsqueeze(-1), fixed, q)

    def relisted(self, order: torch.Tensor, tokens: torch.Tensor, cache: "KVCache | None") -> torch.Tensor:
        """``[B, T, cells]``: the cells already listed, which the pointer may not select again. Teacher-forced
        (no cache), a target that lists a cell twice (two things centred in one cell) keeps its own cell open."""
        listed = order[..., 0] > 0
        if cache is None:
            nxt = tokens[:, 1:] - tk.CELL0
            is_cell = (nxt >= 0) & (nxt < tk.N_CELLS)
            target = F.one_hot(nxt.clamp(0, tk.N_CELLS - 1), tk.N_CELLS).bool() & is_cell.unsqueeze(-1)
            listed = torch.cat([listed[:, :-1] & ~target, listed[:, -1:]], 1)
        return listed

    def logits(self, h: torch.Tensor, m: "Memory", ad: Adapter | None, order: torch.Tensor | None,
               tokens: torch.Tensor, cache: "KVCache | None") -> torch.Tensor:
        h = self.ln_f(h)
        out = self.head(h)
        d = h.shape[-1]
        q = self.ptr_q(h, ad)
        if self.cfg.colour_code:
            q = torch.cat([q, self.ptr_code(h, ad)], -1)
        if self.cfg.list_query:
            q = self.list_query(q, tokens, cache)
        ptr = torch.einsum("btd,bcd->btc", q[..., :d], m.ptr_k) / math.sqrt(d)
        if self.cfg.colour_code:
            ptr = ptr + torch.einsum("btk,bck->btc", q[..., d:], m.code)
        if order is not None:
            ptr = ptr + order @ self.ptr_order  # products with one-hots: indexing the biases made a step's backward 1.6x slower
            if self.cfg.listed_bias and self.cfg.listed_mask:
                ptr = ptr.masked_fill(self.relisted(order, tokens, cache), -1e9)
        return torch.cat([out[..., : tk.CELL0], ptr, out[..., tk.CELL0 + tk.N_CELLS:]], -1)

    def decode(self, tokens: torch.Tensor, m: "Memory", ad: Adapter | None, positions: torch.Tensor,
               cache: "KVCache | None" = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Run the decoder over ``tokens`` (appending to ``cache`` when given) → logits."""
        x = self.embed(tokens, m.cells, positions)
        order = self.order(tokens, cache) if self.cfg.order_bias else None
        for layer, (blk, cross_kv) in enumerate(zip(self.blocks, m.kv)):
            cross_mask = None if order is None else torch.einsum("btck,hk->bhtc", order, self.cross_order[layer])
            x = blk(x, cross_kv, ad, cache=cache, layer=layer, mask=mask, cross_mask=cross_mask)
        return self.logits(x, m, ad, order, tokens, cache)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor, image_index: torch.Tensor,
                ad: Adapter | None = None, memory: "Memory | None" = None) -> torch.Tensor:
        """Teacher-forced logits ``[N, T, VOCAB]`` for ``tokens [N, T]`` over ``images[image_index]``."""
        m = (memory if memory is not None else self.encode(images, ad)).select(image_index)
        n, t = tokens.shape
        return self.decode(tokens, m, ad, torch.arange(t).unsqueeze(0).expand(n, t))


class KVCache:
    """Preallocated self-attention keys/values for incremental decoding."""

    def __init__(self, layers: int, batch: int, heads: int, length: int, head_dim: int, query_dim: int):
        self.k = torch.zeros(layers, batch, heads, length, head_dim)
        self.v = torch.zeros(layers, batch, heads, length, head_dim)
        self.len = 0
        self._pending = 0
        self.last_cell = torch.full((batch,), -1)  # the last cell token decoded per row (-1: none yet)
        self.pending_last_cell: torch.Tensor | None = None
        self.listed = torch.zeros(batch, tk.N_CELLS, dtype=torch.bool)  # cells listed so far per row (cfg.listed_bias)
        self.pending_listed: torch.Tensor | None = None
        self.query = torch.zeros(batch, query_dim)  # the pointer query at the prompt's end (cfg.list_query)
        self.has_query = torch.zeros(batch, dtype=torch.bool)
        self.pending_query: tuple[torch.Tensor, torch.Tensor] | None = None

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = k.shape[2]
        self.k[layer, :, :, self.len:self.len + t] = k
        self.v[layer, :, :, self.len:self.len + t] = v
        self._pending = t
        return self.k[layer, :, :, : self.len + t], self.v[layer, :, :, : self.len + t]

    def commit(self) -> None:
        self.len += self._pending
        self._pending = 0
        if self.pending_last_cell is not None:
            self.last_cell, self.pending_last_cell = self.pending_last_cell, None
        if self.pending_listed is not None:
            self.listed, self.pending_listed = self.pending_listed, None
        if self.pending_query is not None:
            (self.query, self.has_query), self.pending_query = self.pending_query, None


@dataclass
class Memory:
    """Encoded images: cell features, per-layer cross-attention keys/values, pointer keys, colour code (or None)."""

    cells: torch.Tensor
    kv: list[tuple[torch.Tensor, torch.Tensor]]
    ptr_k: torch.Tensor
    code: torch.Tensor | None = None

    def select(self, index: torch.Tensor) -> "Memory":
        return Memory(self.cells[index], [(k[index], v[index]) for k, v in self.kv], self.ptr_k[index],
                      None if self.code is None else self.code[index])


def preprocess(image) -> tuple[torch.Tensor, tk.Frame]:
    """PIL image → (3×96×96 tensor in [-1, 1], letterbox frame). Aspect ratio kept; grey padding."""
    from PIL import Image

    img = image.convert("RGB")
    frame = tk.Frame.of(*img.size)
    canvas = Image.new("RGB", (tk.RES, tk.RES), (127, 127, 127))
    canvas.paste(img.resize((frame.sw, frame.sh), Image.BILINEAR, reducing_gap=2.0), (frame.ox, frame.oy))
    t = torch.frombuffer(bytearray(canvas.tobytes()), dtype=torch.uint8).view(tk.RES, tk.RES, 3)
    return t.permute(2, 0, 1).float().div(127.5).sub(1.0), frame
