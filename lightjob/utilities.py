"""`from lightning.pytorch.utilities import rank_zero_only` ports to this module."""

from lightjob.runtime.distributed import rank_zero_only
from lightjob.runtime.errors import MisconfigurationException

__all__ = ["MisconfigurationException", "rank_zero_only"]
