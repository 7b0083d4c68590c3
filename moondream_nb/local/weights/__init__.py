"""The shipped base weights (``base.safetensors``) and how to save / load them.

Weights are stored as float16 (the file stays small), with the per-cell auxiliary head: train
steps use it to see which known things an image holds (``train.anchors``). Files are written
atomically: temp file, fsync, rename.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

BASE = Path(__file__).with_name("base.safetensors")


def atomic_save(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """Write a safetensors file so that a crash leaves either the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_base(model: torch.nn.Module, path: str | os.PathLike, meta: dict[str, Any]) -> None:
    sd = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    atomic_save(sd, path, {"meta": json.dumps(meta)})


def read_meta(path: str | os.PathLike = BASE) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return json.loads((f.metadata() or {}).get("meta", "{}"))


def load_base_into(model: torch.nn.Module, path: str | os.PathLike = BASE) -> None:
    sd = {k: v.float() for k, v in load_file(str(path)).items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not fit the model (missing {missing[:5]}, unexpected {unexpected[:5]})")
