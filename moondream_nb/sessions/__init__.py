"""Sessions: the widgets, the label store and the client tied into the jobs a person does.

- :class:`LabelingSession`: label a dataset item by item in a ``TargetEditor`` (pre-filled by
  the model), autosaved to a ``LabelStore``, resumable, with optional SFT every k items.
- :class:`ReviewSession`: human-in-the-loop RL: rollouts sampled ahead, scored in a
  ``RolloutReviewer`` (or by ground truth where the data has it), train steps and checkpoints
  as you go, with live metrics.

Both run unattended with ``auto=True`` (default ``$MOONDREAM_NB_AUTO=1``): ground truth stands
in for the person (``.run()``), so notebooks execute in CI. Needs the ``notebook`` extra.
"""

from .auto import AUTO_ENV, auto_default
from .labeling import LabelingSession
from .review import Pending, ReviewSession

__all__ = ["AUTO_ENV", "LabelingSession", "Pending", "ReviewSession", "auto_default"]
