"""Lightning's loggers that lightjob does not provide. The names import, so a script that only
imports them still runs; building one says what to use instead."""

from __future__ import annotations

from typing import Any, NoReturn


class _NotProvided:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _refuse(type(self).__name__)


def _refuse(name: str) -> NoReturn:
    raise ImportError(
        f"lightjob does not provide {name}. Log with CSVLogger, TensorBoardLogger, MLFlowLogger "
        "(pip install mlflow) or WandbLogger (pip install wandb) from lightjob.loggers, or "
        "subclass lightjob.loggers.Logger to call your tracker's own client"
    )


class CometLogger(_NotProvided):
    """Not provided by lightjob: constructing one raises ImportError."""


class LitLogger(_NotProvided):
    """Not provided by lightjob: constructing one raises ImportError."""
