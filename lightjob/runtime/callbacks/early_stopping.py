"""EarlyStopping: stop when a monitored metric stops improving."""

from __future__ import annotations

import math
import sys
import warnings
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from lightjob.runtime.callbacks.callback import Callback, missing_monitor
from lightjob.runtime.errors import MisconfigurationException

if TYPE_CHECKING:
    from lightjob.runtime.module import LightningModule
    from lightjob.runtime.trainer import Trainer


def _runs_at_validation_end(trainer: Trainer, explicit: bool | None) -> bool:
    if explicit is not None:
        return not explicit
    return trainer.enable_validation


class EarlyStopping(Callback):
    """Stop training when a monitored metric stops improving for `patience` checks."""

    mode_dict: ClassVar[dict[str, Any]] = {"min": torch.lt, "max": torch.gt}

    def __init__(
        self,
        monitor: str,
        min_delta: float = 0.0,
        patience: int = 3,
        verbose: bool = False,
        mode: str = "min",
        strict: bool = True,
        check_finite: bool = True,
        stopping_threshold: float | None = None,
        divergence_threshold: float | None = None,
        check_on_train_epoch_end: bool | None = None,
        log_rank_zero_only: bool = False,
    ) -> None:
        if mode not in self.mode_dict:
            raise MisconfigurationException(f"EarlyStopping(mode={mode!r}): use 'min' or 'max'")
        self.monitor = monitor
        self.min_delta = abs(min_delta)
        self.patience = patience
        self.verbose = verbose
        self.mode = mode
        self.strict = strict
        self.check_finite = check_finite
        self.stopping_threshold = stopping_threshold
        self.divergence_threshold = divergence_threshold
        self._check_on_train_epoch_end = check_on_train_epoch_end
        self.wait_count = 0
        self.stopped_epoch = 0
        self.best_score = torch.tensor(math.inf if mode == "min" else -math.inf)
        self.stopping_reason_message: str | None = None

    @property
    def state_key(self) -> str:
        return f"EarlyStopping{{'monitor': {self.monitor!r}, 'mode': {self.mode!r}}}"

    @property
    def monitor_op(self) -> Any:
        return self.mode_dict[self.mode]

    def state_dict(self) -> dict[str, Any]:
        return {
            "wait_count": self.wait_count,
            "stopped_epoch": self.stopped_epoch,
            "best_score": self.best_score,
            "patience": self.patience,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.wait_count = state_dict["wait_count"]
        self.stopped_epoch = state_dict["stopped_epoch"]
        self.best_score = state_dict["best_score"]
        self.patience = state_dict["patience"]

    def on_sanity_check_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Fail before any training when the monitored validation metric does not exist.
        if (
            self.strict
            and _runs_at_validation_end(trainer, self._check_on_train_epoch_end)
            and self.monitor not in trainer.callback_metrics
        ):
            raise missing_monitor("EarlyStopping", self.monitor, trainer.callback_metrics)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if _runs_at_validation_end(trainer, self._check_on_train_epoch_end):
            self._run_check(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not _runs_at_validation_end(trainer, self._check_on_train_epoch_end):
            self._run_check(trainer)

    def _run_check(self, trainer: Trainer) -> None:
        if trainer.fast_dev_run or trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        if self.monitor not in metrics:
            if self.strict:
                raise missing_monitor("EarlyStopping", self.monitor, metrics)
            warnings.warn(f"EarlyStopping: {self.monitor!r} not logged; skipping", stacklevel=2)
            return
        current = metrics[self.monitor].squeeze().detach().cpu()
        should_stop, reason = self._evaluate(current)
        should_stop = trainer.strategy.reduce_boolean_decision(should_stop, all=False)
        trainer.should_stop = trainer.should_stop or should_stop
        if should_stop:
            self.stopped_epoch = trainer.current_epoch
            self.stopping_reason_message = reason
        if reason and self.verbose and trainer.is_global_zero:
            print(reason, file=sys.stderr)

    def _evaluate(self, current: torch.Tensor) -> tuple[bool, str | None]:
        if self.check_finite and not torch.isfinite(current):
            return True, f"Monitored metric {self.monitor} = {current} is not finite."
        if self.stopping_threshold is not None and self.monitor_op(
            current, self.stopping_threshold
        ):
            return True, f"{self.monitor} = {current} reached the stopping threshold."
        if self.divergence_threshold is not None and self.monitor_op(
            -current, -self.divergence_threshold
        ):
            return True, f"{self.monitor} = {current} crossed the divergence threshold."
        delta = -self.min_delta if self.mode == "min" else self.min_delta
        if self.monitor_op(current - delta, self.best_score.to(current.device)):
            self.best_score = current
            self.wait_count = 0
            return False, f"{self.monitor} improved to {float(current):.6g}."
        self.wait_count += 1
        if self.wait_count >= self.patience:
            return True, (
                f"{self.monitor} did not improve in the last {self.wait_count} checks; "
                f"best {float(self.best_score):.6g}. Stopping."
            )
        return False, None
