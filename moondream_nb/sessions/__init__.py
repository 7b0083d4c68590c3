"""Sessions: the widgets, the label store and the client tied into the jobs a person does.

- :class:`LabelingSession`: label a dataset item by item in a ``TargetEditor`` (pre-filled by
  the model), autosaved to a ``LabelStore``, resumable, with optional SFT every k items.
- :class:`ReviewSession`: human-in-the-loop RL: rollouts sampled ahead, scored in a
  ``RolloutReviewer`` (or by ground truth where the data has it), train steps and checkpoints
  as you go, with live metrics.

Neither makes the person wait on the network: constructors return at once, answers and rollouts
are fetched ahead, and train steps and checkpoint saves run on the finetune's
:class:`TrainQueue` (in order, one in flight, exactly once across a kernel restart where the
service records Idempotency-Keys).

Both run unattended with ``auto=True`` (default ``$MOONDREAM_NB_AUTO=1``): ground truth stands
in for the person (``.run()``), so notebooks execute in CI. Needs the ``notebook`` extra.
"""

from .auto import AUTO_ENV, auto_default
from .labeling import LabelingSession
from .review import Pending, ReviewSession
from .training import Job, TrainQueue, UncertainStep, queue_for

__all__ = ["AUTO_ENV", "Job", "LabelingSession", "Pending", "ReviewSession", "TrainQueue", "UncertainStep",
           "auto_default", "queue_for"]
