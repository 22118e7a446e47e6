"""`from lightning.pytorch.loggers import X` becomes `from lightjob.loggers import X`."""

from lightjob.runtime.loggers import CSVLogger, Logger, TensorBoardLogger

__all__ = ["CSVLogger", "Logger", "TensorBoardLogger"]
