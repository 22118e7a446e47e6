"""`lightning.pytorch.loggers.tensorboard` -> `lightjob.loggers.tensorboard`."""

from lightjob.runtime.loggers.tensorboard import TensorBoardLogger

__all__ = ["TensorBoardLogger"]
