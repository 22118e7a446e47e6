"""Callbacks: the hook points, and the built-in ones.

Hook order (the same for every hook point): the LightningModule's hook first, then the
callbacks in the order given, with ModelCheckpoint callbacks moved last. So a metric the
module logs in `on_validation_epoch_end` is already there when EarlyStopping and
ModelCheckpoint look for it, and a checkpoint records what EarlyStopping just decided.
docs/runtime.md lists when each hook runs.
"""

from lightjob.runtime.callbacks.callback import Callback
from lightjob.runtime.callbacks.early_stopping import EarlyStopping
from lightjob.runtime.callbacks.lr_monitor import LearningRateMonitor
from lightjob.runtime.callbacks.model_checkpoint import ModelCheckpoint
from lightjob.runtime.callbacks.model_summary import ModelSummary, summarize
from lightjob.runtime.callbacks.progress import TQDMProgressBar

__all__ = [
    "Callback",
    "EarlyStopping",
    "LearningRateMonitor",
    "ModelCheckpoint",
    "ModelSummary",
    "TQDMProgressBar",
    "summarize",
]
