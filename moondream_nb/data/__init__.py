"""Data for labelling and tuning: datasets, the label store, label files, the demo dataset.

- :class:`Label`: the right answer for one image and prompt (point, detect or query), in API shapes.
- :class:`Dataset` / :class:`Item`: images with stable ids (relative path or content hash),
  loaded lazily, with optional ground-truth labels; from a folder, paths, PIL images,
  a pandas DataFrame (:func:`from_frame`) or a Hugging Face dataset (:func:`from_hf`).
- :class:`LabelStore`: every label, item status, reward and train-step result in SQLite,
  durable as it is made; reopen to resume.
- Label files: COCO JSON, YOLO txt, CSV and JSONL readers/writers (atomic writes; errors name
  the file and line or JSON path); :func:`sft_groups` for ``train_step``.
- :func:`demo_dataset`: scenes from the generator the built-in model learned on, including
  concepts it does not know.

Nothing here imports pandas, numpy or ``datasets`` at import time.
"""

from .coco import read_coco, write_coco
from .csv_labels import read_csv, write_csv
from .dataset import Dataset, Item, image_id_for, load_image
from .demo import demo_dataset
from .fileio import FormatError
from .jsonl import read_jsonl, write_jsonl
from .labels import Label
from .sft import sft_groups
from .label_store import BatchRecord, LabelStore, Progress, RewardRecord, StepRecord
from .tabular import from_frame, from_hf
from .yolo import read_classes, read_yolo, write_yolo

__all__ = [
    "BatchRecord",
    "Dataset",
    "FormatError",
    "Item",
    "Label",
    "LabelStore",
    "Progress",
    "RewardRecord",
    "StepRecord",
    "demo_dataset",
    "from_frame",
    "from_hf",
    "image_id_for",
    "load_image",
    "read_classes",
    "read_coco",
    "read_csv",
    "read_jsonl",
    "read_yolo",
    "sft_groups",
    "write_coco",
    "write_csv",
    "write_jsonl",
    "write_yolo",
]
