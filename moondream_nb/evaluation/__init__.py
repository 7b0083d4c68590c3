"""Evaluating checkpoints over a labelled dataset: run models through the inference API, score each
image with :mod:`moondream_nb.metrics`, summarize per model.

``evaluate(models, dataset, skill)`` returns an :class:`Evaluation` (per-image and summary pandas
frames, worst images, disagreements, precision-recall curves); outputs are cached per (model,
image, prompt), so running it again only calls what is new.
"""

from .cache import EvalCache
from .result import Case, Evaluation
from .run import evaluate

__all__ = ["Case", "EvalCache", "Evaluation", "evaluate"]
