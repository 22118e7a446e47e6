"""`lightning.pytorch.loggers.logger` -> `lightjob.loggers.logger`."""

from lightjob.runtime.loggers.base import DummyExperiment, Logger, rank_zero_experiment

__all__ = ["DummyExperiment", "Logger", "rank_zero_experiment"]
