"""`lightning.pytorch.loggers.mlflow` -> `lightjob.loggers.mlflow`."""

from lightjob.runtime.loggers.mlflow import MLFlowLogger

__all__ = ["MLFlowLogger"]
