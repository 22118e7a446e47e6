"""lightjob: PyTorch Lightning's API, run as Kubernetes jobs.

`import lightjob` stays cheap (no torch): the training API is loaded on first use, so
`import lightjob as L; L.Trainer` works while the operator never pays for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> the module that defines it (PEP 562 lazy attributes).
_LAZY = {
    "Trainer": "lightjob.runtime.trainer",
    "LightningModule": "lightjob.runtime.module",
    "LightningDataModule": "lightjob.runtime.module",
    "Callback": "lightjob.runtime.callbacks",
    "seed_everything": "lightjob.runtime.seed",
}
_SUBMODULES = ("callbacks", "loggers", "strategies", "utilities")

__all__ = ["__version__", *_LAZY, *_SUBMODULES]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"lightjob.{name}")
    raise AttributeError(f"module 'lightjob' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
