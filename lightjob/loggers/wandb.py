"""`lightning.pytorch.loggers.wandb` -> `lightjob.loggers.wandb`."""

from lightjob.runtime.loggers.wandb import WandbLogger

__all__ = ["WandbLogger"]
