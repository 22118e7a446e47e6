"""Experiment loggers, as Lightning 2.6's. The Trainer calls them on global rank 0 only.

`lightjob.loggers` is the public path; its modules mirror Lightning's (`lightjob.loggers.csv_logs`
for `lightning.pytorch.loggers.csv_logs`, ...).
"""

from lightjob.runtime.loggers.base import DummyExperiment, Logger, rank_zero_experiment
from lightjob.runtime.loggers.csv_logs import CSVLogger, ExperimentWriter
from lightjob.runtime.loggers.default import default_logger
from lightjob.runtime.loggers.mlflow import MLFlowLogger
from lightjob.runtime.loggers.tensorboard import TensorBoardLogger
from lightjob.runtime.loggers.unsupported import CometLogger, LitLogger
from lightjob.runtime.loggers.wandb import WandbLogger

__all__ = [
    "CSVLogger",
    "CometLogger",
    "DummyExperiment",
    "ExperimentWriter",
    "LitLogger",
    "Logger",
    "MLFlowLogger",
    "TensorBoardLogger",
    "WandbLogger",
    "default_logger",
    "rank_zero_experiment",
]
