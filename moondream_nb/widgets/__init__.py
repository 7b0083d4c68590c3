"""Notebook panels on anywidget: ImageCanvas, RolloutReviewer, TargetEditor, MetricsPanel,
CheckpointBrowser, EvaluationPanel. Needs the ``notebook`` extra (ipywidgets, anywidget, matplotlib, pandas).

The ES modules and CSS ship in ``moondream_nb/widgets/static`` (no build step, no CDN).
"""

from .canvas import ImageCanvas
from .checkpoints import CheckpointBrowser
from .evaluation import EvaluationPanel
from .metrics import MetricsPanel
from .reviewer import RolloutReviewer
from .target import TargetEditor

__all__ = ["ImageCanvas", "RolloutReviewer", "TargetEditor", "MetricsPanel", "CheckpointBrowser", "EvaluationPanel"]
