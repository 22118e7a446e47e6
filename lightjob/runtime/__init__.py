"""The Trainer runtime: PyTorch Lightning's API, written anew. Imports no Kubernetes code."""

import logging as _logging
import sys as _sys

from lightjob.runtime import telemetry as _telemetry
from lightjob.runtime.callbacks import (
    Callback,
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
    ModelSummary,
    TQDMProgressBar,
)
from lightjob.runtime.distributed import DDPStrategy, rank_zero_only
from lightjob.runtime.errors import MisconfigurationException
from lightjob.runtime.loggers import CSVLogger, Logger, TensorBoardLogger
from lightjob.runtime.module import LightningDataModule, LightningModule
from lightjob.runtime.seed import seed_everything
from lightjob.runtime.trainer import Trainer

__all__ = [
    "CSVLogger",
    "Callback",
    "DDPStrategy",
    "EarlyStopping",
    "LearningRateMonitor",
    "LightningDataModule",
    "LightningModule",
    "Logger",
    "MisconfigurationException",
    "ModelCheckpoint",
    "ModelSummary",
    "TQDMProgressBar",
    "TensorBoardLogger",
    "Trainer",
    "rank_zero_only",
    "seed_everything",
]

# Checkpoint saves, resumes and preemption are reported on the "lightjob" logger; show
# them on stderr unless the application configured that logger itself (as Lightning does).
_log = _logging.getLogger("lightjob")
if not _log.handlers:
    _handler = _logging.StreamHandler(_sys.stderr)
    _handler.setFormatter(_telemetry.LogFormatter(_telemetry.log_format()))
    _log.addHandler(_handler)
    _log.setLevel(_logging.INFO)
    _log.propagate = False
