"""The built-in model behind the protocol: rollouts, inference and train steps in API shapes.

``Engine`` holds one frozen base model; adapters (one per finetune) are passed in by the caller,
which owns their storage. Requests and outputs are the wire dicts of ``API.md`` (images as data
URLs), already validated by the caller.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from PIL import Image

from . import tokenizer as tk
from .model import VLM, Adapter, Config, preprocess
from .sampler import Row, generate
from .train import Example, RLGroup, StepResult, train_step
from ..errors import ValidationError
from ..protocol import GroupView, join, validate_group
from .weights import BASE, load_base_into, read_meta

MAX_PIXELS = 16_000_000
MAX_IMAGE_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_TOKENS = {"query": 128, "caption": 128, "point": 128, "detect": 256}
MODEL_MAX_OBJECTS = 20  # what the 320-token context can hold for detect (4 tokens a box)
# The protocol's default lr (2e-4) is tuned for Moondream's own LoRA; this 3M-parameter model
# needs ~5x larger Adam steps to learn a concept in tens of steps, so the API's lr is scaled here
# and notebooks run unchanged against either. 10x learned no faster on held-out scenes and eroded
# known concepts by up to 0.1 (benchmarks/results/learning).
LR_SCALE = 5.0
# Sampling settings beyond these change nothing the model can show (uniform, or greedy), but would
# overflow float32 (a temperature of 1e300) or empty the nucleus (top_p of 1e-50); clamp them.
MAX_TEMPERATURE = 100.0
MIN_TOP_P = 1e-6
MIN_ANSWER_ROOM = 8  # tokens a prompt must leave free for the answer


class ImageError(ValueError):
    """The image cannot be used: bad data URL, not an image, or too large (``too_large``);
    ``param`` is its field path when known."""

    def __init__(self, message: str, too_large: bool = False, param: str | None = None):
        super().__init__(message)
        self.too_large = too_large
        self.param = param


FORMATS = {"image/jpeg": "JPEG", "image/jpg": "JPEG", "image/png": "PNG", "image/webp": "WEBP", "image/gif": "GIF"}


def decode_image(image_url: str) -> Image.Image:
    """A ``data:image/...;base64,`` URL (or bare base64) → RGB PIL image, with size limits.

    Only the formats API.md lists (JPEG, PNG, WebP, GIF's first frame), and a data URL's media
    type must say which one the bytes are.
    """
    data, declared = image_url, None
    if image_url.startswith("data:"):
        head, _, data = image_url.partition(",")
        if not head.endswith(";base64"):
            raise ImageError("image_url: must be a base64 data URL (data:image/...;base64,...)")
        mime = head[len("data:"):-len(";base64")].strip().lower()
        declared = FORMATS.get(mime)
        if declared is None:
            raise ImageError(f"image_url: media type {mime!r} is not one of image/jpeg, image/png, image/webp, "
                             "image/gif")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ImageError("image_url: is not valid base64") from None
    if len(raw) > MAX_IMAGE_BYTES:
        raise ImageError(f"image_url: encoded image is {len(raw)} bytes, over the {MAX_IMAGE_BYTES} byte limit", True)
    try:
        img = Image.open(io.BytesIO(raw), formats=sorted(set(FORMATS.values())))
        if declared is not None and img.format != declared:
            raise ImageError(f"image_url: the data is {img.format} but the data URL says "
                             f"{next(m for m, f in FORMATS.items() if f == declared)}")
        if img.width * img.height > MAX_PIXELS:
            raise ImageError(f"image_url: image is {img.width}x{img.height}, over the {MAX_PIXELS} pixel limit", True)
        img.draft("RGB", (4 * tk.RES, 4 * tk.RES))  # JPEG: decode at reduced scale, we only need 96 px
        img.seek(0)
        return img.convert("RGB")
    except ImageError:
        raise
    except Image.DecompressionBombError:  # PIL's own guard fires first for absurd sizes
        raise ImageError(f"image_url: image is over the {MAX_PIXELS} pixel limit", True) from None
    except Exception:
        raise ImageError("image_url: data is not a JPEG, PNG, WebP or GIF image") from None


@dataclass
class Prepared:
    tensor: torch.Tensor
    frame: tk.Frame


class Engine:
    """The base model plus an LRU of decoded images (each distinct image is decoded once)."""

    def __init__(self, weights: str | None = None, cache_size: int = 256):
        self.model = VLM(Config.of(read_meta(weights or BASE).get("config", {})))
        load_base_into(self.model, weights or BASE)
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self._images: OrderedDict[str, Prepared] = OrderedDict()
        self._lock = threading.Lock()
        self._cache_size = cache_size

    # ---- images

    def prepare(self, image_url: str) -> Prepared:
        key = hashlib.sha1(image_url.encode()).hexdigest()
        with self._lock:
            hit = self._images.get(key)
            if hit is not None:
                self._images.move_to_end(key)
                return hit
        tensor, frame = preprocess(decode_image(image_url))
        prepared = Prepared(tensor, frame)
        with self._lock:
            self._images[key] = prepared
            while len(self._images) > self._cache_size:
                self._images.popitem(last=False)
        return prepared

    def _blank(self) -> Prepared:
        # A text-only query still needs image cells to attend to: a uniform grey square.
        return Prepared(torch.zeros(3, tk.RES, tk.RES), tk.Frame.of(tk.RES, tk.RES))

    def _image_of(self, request: Mapping[str, Any]) -> Prepared:
        url = request.get("image_url")
        return self.prepare(url) if url else self._blank()

    def prepare_at(self, request: Mapping[str, Any], path: str) -> Prepared:
        """The request's image decoded (cached), or a blank one; ImageError names ``path.image_url``."""
        try:
            return self._image_of(request)
        except ImageError as exc:
            where = join(path, "image_url")
            raise ImageError(f"{where}: {str(exc).removeprefix('image_url:').strip()}", exc.too_large, where) from None

    # ---- sampling

    def new_adapter(self, rank: int, seed: int = 0) -> Adapter:
        return Adapter(self.model, rank, seed=seed)

    def sample(self, request: dict[str, Any], n: int, adapter: Adapter | None = None, *, greedy_default: bool = False,
               seed: int | None = None) -> list[dict[str, Any]]:
        """``n`` rollouts of one skill request → API rollout dicts (with training metadata)."""
        skill = request["skill"]
        settings = request.get("settings") or {}
        prep = self._image_of(request)
        reasoning = skill == "query" and bool(request.get("reasoning"))
        temperature = float(settings.get("temperature", 0.0 if greedy_default else 1.0))
        row = Row(
            image=0,
            prompt=tk.prompt_tokens(prep.frame, request),
            skill=skill,
            reasoning=reasoning,
            temperature=min(temperature, MAX_TEMPERATURE),
            top_p=max(float(settings.get("top_p", 1.0)), MIN_TOP_P),
            max_tokens=int(settings.get("max_tokens", DEFAULT_MAX_TOKENS[skill])),
            max_objects=min(int(settings.get("max_objects", MODEL_MAX_OBJECTS)), MODEL_MAX_OBJECTS),
        )
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        with torch.no_grad():
            memory = self.model.encode(prep.tensor.unsqueeze(0), adapter)
            samples = generate(self.model, memory, [row] * n, adapter, gen)
        return [self._rollout(skill, prep.frame, s.tokens, s.finish_reason, reasoning) for s in samples]

    def check_fits(self, request: Mapping[str, Any], path: str) -> None:
        """Raise ValidationError when ``request``'s prompt leaves no room for an answer.

        The protocol allows 1,000-character questions; the built-in model reads 320 tokens. Token
        counts do not depend on the image, so this runs before any image is decoded.
        """
        skill = request["skill"]
        prompt = len(tk.prompt_tokens(tk.Frame.of(tk.RES, tk.RES), request))
        limit = self.model.cfg.max_len
        if prompt + MIN_ANSWER_ROOM > limit:
            field = "question" if skill == "query" else "object" if skill in ("point", "detect") else "length"
            if request.get("spatial_refs"):
                field = "spatial_refs"
            where = join(path, field)
            raise ValidationError(
                f"{where}: the prompt takes {prompt} tokens; the built-in model reads {limit}, "
                f"{MIN_ANSWER_ROOM} of them for the answer (1 token per UTF-8 byte, 2-4 per spatial ref)",
                param=where)

    def _check_example(self, example: Example, path: str) -> Example:
        """``example`` when its prompt and answer fit the context, else ValidationError naming ``path``
        (its tokens, computed here, are the ones the step trains on)."""
        prompt, answer, _ = example.tokens
        limit = self.model.cfg.max_len
        if len(prompt) + len(answer) - 1 > limit:
            raise ValidationError(f"{path}: prompt and answer take {len(prompt) + len(answer)} tokens; the built-in "
                                  f"model reads {limit}", param=path)
        return example

    @staticmethod
    def _rollout(skill: str, frame: tk.Frame, toks: list[int], finish: str, reasoning: bool) -> dict[str, Any]:
        output = tk.decode(frame, skill, toks, reasoning=reasoning)
        body = [t for t in toks if t != tk.EOS]
        thinking: list[int] = []
        has_sep = False
        if reasoning and body and body[0] == tk.THINK:
            has_sep = tk.ANSWER in body
            end = body.index(tk.ANSWER) if has_sep else len(body)
            thinking, body = body[1:end], body[end + 1:]
        coords, sizes = [], []
        if skill in ("point", "detect"):
            per = 2 if skill == "point" else 4
            for k in range(0, len(body) - per + 1, per):
                cell, off = body[k] - tk.CELL0, body[k + 1] - tk.OFF0
                coords.append([(cell % tk.GRID) * tk.OFFS + off % tk.OFFS, (cell // tk.GRID) * tk.OFFS + off // tk.OFFS])
                if per == 4:
                    sizes.append([body[k + 2] - tk.SIZE0, body[k + 3] - tk.SIZE0])
        return {"skill": skill, "finish_reason": finish, "output": output, "answer_tokens": body,
                "thinking_tokens": thinking, "has_answer_separator": has_sep, "coords": coords, "sizes": sizes}

    def infer(self, kind: str, body: dict[str, Any], adapter: Adapter | None = None) -> dict[str, Any]:
        """One inference call (/query, /caption, /point, /detect) → output dict + ``finish_reason``, ``usage``."""
        request = dict(body, skill=kind)
        rollout = self.sample(request, 1, adapter, greedy_default=True)[0]
        out = dict(rollout["output"])
        if kind == "query" and not body.get("reasoning"):
            out.pop("reasoning", None)
        out["finish_reason"] = rollout["finish_reason"]
        # The image is read as one token per cell, the prompt and the answer one token each.
        prompt = tk.prompt_tokens(tk.Frame.of(tk.RES, tk.RES), request)
        out["usage"] = {"input_tokens": tk.N_CELLS + len(prompt),
                        "output_tokens": len(rollout["answer_tokens"]) + len(rollout["thinking_tokens"])}
        return out

    # ---- training

    def step_input(self, groups: Sequence[GroupView]) -> "StepInput":
        """A train step's groups as the trainer's examples: each distinct image decoded once, each
        answer made trainable and tokenized once (the length check reads the tokens the step trains on).

        Raises:
            ValidationError: a prompt or prompt + answer too long, naming the field.
            ImageError: an image that cannot be used, naming the field (``param``).
        """
        keys: dict[str, int] = {}
        tensors: list[torch.Tensor] = []
        rl: list[RLGroup] = []
        sft: list[Example] = []
        for g in groups:
            self.check_fits(g.request, g.request_path)
            prep = self.prepare_at(g.request, g.request_path)
            idx = keys.setdefault(g.request.get("image_url") or "", len(tensors))
            if idx == len(tensors):
                tensors.append(prep.tensor)
            request = g.request
            if g.mode == "rl":
                examples = [self._check_example(Example(idx, prep.frame, request, trainable(g.skill, out)),
                                                g.output_path(i)) for i, out in enumerate(g.outputs)]
                rl.append(RLGroup(examples, list(g.rewards)))
            else:
                sft.append(self._check_example(Example(idx, prep.frame, request, trainable(g.skill, g.target)),
                                               g.target_path))
        return StepInput(torch.stack(tensors), rl, sft)

    def train(self, adapter: Adapter, optimizer: torch.optim.Optimizer, groups: Sequence[Mapping[str, Any]],
              lr: float) -> StepResult:
        """One train step from API groups (in process: validated here, as the server does on receipt)."""
        views = [validate_group(g, f"groups[{i}]") for i, g in enumerate(groups)]
        return self.train_on(adapter, optimizer, self.step_input(views), lr)

    def train_on(self, adapter: Adapter, optimizer: torch.optim.Optimizer, step: "StepInput", lr: float) -> StepResult:
        """One train step over :meth:`step_input`'s examples (RL groups and SFT examples)."""
        try:
            with torch.enable_grad():
                return train_step(self.model, adapter, optimizer, step.images, step.rl, step.sft, lr * LR_SCALE)
        finally:
            release_memory()


@dataclass
class StepInput:
    """What one train step trains on: the distinct images (one row each), RL groups, SFT examples."""

    images: torch.Tensor
    rl: list[RLGroup]
    sft: list[Example]


def _trimmer() -> Any:
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to hand back
        return None


_malloc_trim = _trimmer()


def release_memory() -> None:
    """Hand the memory a train step freed back to the OS: glibc keeps freed heap pages in its arenas,
    so without this a server's resident memory stays at the peak of its largest step."""
    if _malloc_trim is not None:
        _malloc_trim(0)


def trainable(skill: str, output: Mapping[str, Any]) -> Mapping[str, Any]:
    """An output or SFT target in the tokenizer's shape: a point target given as boxes → their centres."""
    if skill == "point" and output.get("points") is None and output.get("boxes") is not None:
        return {"points": [{"x": (b["x_min"] + b["x_max"]) / 2, "y": (b["y_min"] + b["y_max"]) / 2}
                           for b in output["boxes"]]}
    return output
