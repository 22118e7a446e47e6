"""`from lightning.pytorch.loggers import X` becomes `from lightjob.loggers import X`.

`CometLogger` and `LitLogger` import but raise ImportError when built: lightjob does not
provide them.
"""

from lightjob.runtime.loggers import (
    CometLogger,
    CSVLogger,
    LitLogger,
    Logger,
    MLFlowLogger,
    TensorBoardLogger,
    WandbLogger,
)

__all__ = [
    "CSVLogger",
    "CometLogger",
    "LitLogger",
    "Logger",
    "MLFlowLogger",
    "TensorBoardLogger",
    "WandbLogger",
]
