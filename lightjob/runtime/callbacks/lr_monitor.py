"""LearningRateMonitor: each optimizer's learning rate, to the loggers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lightjob.runtime.callbacks.callback import Callback
from lightjob.runtime.errors import MisconfigurationException

if TYPE_CHECKING:
    from lightjob.runtime.module import LightningModule
    from lightjob.runtime.trainer import Trainer


class LearningRateMonitor(Callback):
    """Log each optimizer's learning rate (`lr-Adam`, `lr-SGD/pg1`, ...) to the loggers."""

    def __init__(
        self,
        logging_interval: str | None = None,
        log_momentum: bool = False,
        log_weight_decay: bool = False,
    ) -> None:
        if logging_interval not in (None, "step", "epoch"):
            raise MisconfigurationException(
                f"LearningRateMonitor(logging_interval={logging_interval!r}): use 'step', 'epoch' or None"
            )
        self.logging_interval = logging_interval
        self.log_momentum = log_momentum
        self.log_weight_decay = log_weight_decay
        self.lrs: dict[str, list[float]] = {}

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.loggers:
            raise MisconfigurationException(
                "LearningRateMonitor needs a logger: remove logger=False from the Trainer"
            )

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.logging_interval != "epoch" and trainer.should_update_logs:
            self._log(trainer, interval="step")

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.logging_interval != "step":
            self._log(trainer, interval="epoch")

    def _log(self, trainer: Trainer, interval: str) -> None:
        intervals = {id(c.optimizer): c.interval for c in trainer.lr_scheduler_configs}
        stats: dict[str, float] = {}
        names: dict[str, int] = {}
        for optimizer in trainer.optimizers:
            name = f"lr-{type(optimizer).__name__}"
            names[name] = names.get(name, 0) + 1
            if names[name] > 1:
                name = f"{name}-{names[name] - 1}"
            scheduled = intervals.get(id(optimizer), "step")
            if self.logging_interval is None and scheduled != interval:
                continue
            groups = optimizer.param_groups
            for i, group in enumerate(groups):
                key = name if len(groups) == 1 else f"{name}/pg{i + 1}"
                stats[key] = float(group["lr"])
                if self.log_momentum:
                    momentum = group.get("momentum", group.get("betas", (0.0,))[0])
                    stats[key.replace("lr-", "lr-", 1) + "-momentum"] = float(momentum)
                if self.log_weight_decay:
                    stats[key + "-weight_decay"] = float(group.get("weight_decay", 0.0))
        for key, value in stats.items():
            self.lrs.setdefault(key, []).append(value)
        if stats and trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(stats, step=trainer.global_step)
