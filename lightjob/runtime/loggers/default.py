"""The logger `Trainer(logger=True)` gets, chosen as Lightning 2.6 chooses it."""

from __future__ import annotations

import os
import warnings

from lightjob.runtime.loggers.base import Logger
from lightjob.runtime.loggers.csv_logs import CSVLogger
from lightjob.runtime.loggers.tensorboard import TensorBoardLogger, is_tensorboard_available


def default_logger(default_root_dir: str | os.PathLike[str]) -> Logger:
    """TensorBoardLogger under `default_root_dir` when `tensorboard` is installed (its version
    is the SLURM job id inside a SLURM batch job, as in Lightning), else CSVLogger, with a
    warning that says how to get TensorBoard."""
    if is_tensorboard_available():
        return TensorBoardLogger(save_dir=default_root_dir, version=slurm_job_id())
    warnings.warn(
        "logger=True uses CSVLogger because the `tensorboard` package is not installed "
        "(Lightning falls back the same way); pip install tensorboard to get TensorBoardLogger",
        stacklevel=2,
    )
    return CSVLogger(save_dir=default_root_dir)


def slurm_job_id() -> int | None:
    """SLURM_JOB_ID as an int in a SLURM batch job; None outside SLURM, in an interactive
    SLURM shell, or when the id is not a number."""
    if os.environ.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return None
    try:
        return int(os.environ["SLURM_JOB_ID"])
    except (KeyError, ValueError):
        return None
