"""Lightning's read-only Trainer properties: what the Trainer reports about the run.

`Trainer` inherits them. Each reads only the Trainer's public attributes (declared below):
its strategy, state, progress, callbacks and metrics sink.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import torch

from lightjob.runtime.callbacks import Callback, EarlyStopping, ModelCheckpoint, TQDMProgressBar

if TYPE_CHECKING:
    from lightjob.runtime.loggers import Logger
    from lightjob.runtime.results import MetricsSink
    from lightjob.runtime.resume import Progress
    from lightjob.runtime.schedule import Schedule


class TrainerState:
    """Which entry point runs (fn), which part of it (stage), and how it ended (status)."""

    def __init__(self) -> None:
        self.fn: str | None = None  # "fit", "validate", "test", "predict"
        self.stage: str | None = None  # "train", "sanity_check", "validate", "test", "predict"
        self.status = "initializing"  # "running", "finished", "interrupted", "failed", "preempted"


class TrainerProperties:
    strategy: Any
    state: TrainerState
    progress: Progress
    callbacks: list[Callback]
    metrics_sink: MetricsSink
    schedule: Schedule
    default_root_dir: str
    num_training_batches: float
    accumulate_grad_batches: int

    @property
    def max_epochs(self) -> int:
        return self.schedule.max_epochs

    @property
    def max_steps(self) -> int:
        return self.schedule.max_steps

    @property
    def min_epochs(self) -> int:
        return self.schedule.min_epochs

    @property
    def log_every_n_steps(self) -> int:
        return self.schedule.log_every_n_steps

    @log_every_n_steps.setter
    def log_every_n_steps(self, value: int) -> None:
        self.schedule = dataclasses.replace(self.schedule, log_every_n_steps=value)

    @property
    def estimated_stepping_batches(self) -> float:
        """Optimizer steps the fit will take (inf when only max_time bounds it)."""
        return self.schedule.estimated_stepping_batches(
            self.num_training_batches, self.accumulate_grad_batches
        )

    @property
    def current_epoch(self) -> int:
        return self.progress.epoch

    @property
    def global_step(self) -> int:
        return self.progress.global_step

    @property
    def is_last_batch(self) -> bool:
        """Whether the training batch just run is the epoch's last; also True during the
        validation at the epoch's end (ModelCheckpoint saves after that one)."""
        return self.progress.is_last_batch

    @property
    def world_size(self) -> int:
        return self.strategy.world_size

    @property
    def global_rank(self) -> int:
        return self.strategy.global_rank

    @property
    def local_rank(self) -> int:
        return self.strategy.local_rank

    @property
    def node_rank(self) -> int:
        return self.strategy.node_rank

    @property
    def num_nodes(self) -> int:
        return self.strategy.num_nodes

    @property
    def is_global_zero(self) -> bool:
        return self.strategy.is_global_zero

    @property
    def logger(self) -> Logger | None:
        return self.loggers[0] if self.loggers else None

    @property
    def log_dir(self) -> str | None:
        return self.logger.log_dir if self.logger is not None else self.default_root_dir

    @property
    def checkpoint_callback(self) -> ModelCheckpoint | None:
        return next((c for c in self.callbacks if isinstance(c, ModelCheckpoint)), None)

    @property
    def checkpoint_callbacks(self) -> list[ModelCheckpoint]:
        return [c for c in self.callbacks if isinstance(c, ModelCheckpoint)]

    @property
    def early_stopping_callback(self) -> EarlyStopping | None:
        return next((c for c in self.callbacks if isinstance(c, EarlyStopping)), None)

    @property
    def progress_bar_callback(self) -> TQDMProgressBar | None:
        return next((c for c in self.callbacks if isinstance(c, TQDMProgressBar)), None)

    @property
    def training(self) -> bool:
        return self.state.stage == "train"

    @property
    def training_in_progress(self) -> bool:
        return self.state.fn == "fit" and self.state.stage in ("train", "validate")

    @property
    def sanity_checking(self) -> bool:
        return self.state.stage == "sanity_check"

    @property
    def validating(self) -> bool:
        return self.state.stage == "validate"

    @property
    def testing(self) -> bool:
        return self.state.stage == "test"

    @property
    def predicting(self) -> bool:
        return self.state.stage == "predict"

    @property
    def interrupted(self) -> bool:
        return self.state.status == "interrupted"

    @property
    def callback_metrics(self) -> dict[str, torch.Tensor]:
        return self.metrics_sink.callback_metrics

    @property
    def logged_metrics(self) -> dict[str, float]:
        return self.metrics_sink.logged_metrics

    @property
    def progress_bar_metrics(self) -> dict[str, float]:
        return self.metrics_sink.progress_bar_metrics

    @property
    def loggers(self) -> list[Logger]:
        return self.metrics_sink.loggers

    @loggers.setter
    def loggers(self, loggers: list[Logger]) -> None:
        self.metrics_sink.loggers = list(loggers)
