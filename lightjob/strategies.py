"""`from lightning.pytorch.strategies import DDPStrategy` ports to this module."""

from lightjob.runtime.distributed import DDPStrategy

__all__ = ["DDPStrategy"]
