"""Callbacks: the hook points, and the built-in ones.

Hook order (the same for every hook point): the LightningModule's hook first, then the
callbacks in the order given, with ModelCheckpoint callbacks moved last. So a metric the
module logs in `on_validation_epoch_end` is already there when EarlyStopping and
ModelCheckpoint look for it, and a checkpoint records what EarlyStopping just decided.
docs/runtime.md lists when each hook runs.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
import warnings
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from lightjob.runtime.errors import MisconfigurationException

if TYPE_CHECKING:
    from lightjob.runtime.module import LightningModule
    from lightjob.runtime.trainer import Trainer


class Callback:
    """Override any of these; unused hooks cost nothing (the Trainer skips them)."""

    @property
    def state_key(self) -> str:
        return type(self).__qualname__

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None: ...
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None: ...
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None: ...
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None: ...
    def on_sanity_check_start(self, trainer: Trainer, pl_module: LightningModule) -> None: ...
    def on_sanity_check_end(self, trainer: Trainer, pl_module: LightningModule) -> None: ...
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None: ...
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None: ...
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None: ...
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None: ...
    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None: ...
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None: ...
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None: ...
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None: ...
    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None: ...
    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None: ...
    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None: ...
    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None: ...
    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None: ...
    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None: ...
    def on_predict_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None: ...
    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None: ...

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None: ...

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None: ...

    def on_validation_batch_start(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None: ...

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None: ...

    def on_test_batch_start(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None: ...

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None: ...

    def on_predict_batch_start(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None: ...

    def on_predict_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None: ...

    def on_before_backward(
        self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor
    ) -> None: ...
    def on_after_backward(self, trainer: Trainer, pl_module: LightningModule) -> None: ...
    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: Any
    ) -> None: ...
    def on_before_zero_grad(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: Any
    ) -> None: ...
    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None: ...
    def on_load_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None: ...
    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None: ...


def _missing_monitor(
    owner: str, monitor: str, metrics: dict[str, Any]
) -> MisconfigurationException:
    logged = ", ".join(sorted(metrics)) or "none"
    return MisconfigurationException(
        f"{owner}(monitor={monitor!r}) found no metric of that name. Metrics logged so far: "
        f"{logged}. Log it with self.log({monitor!r}, ...) or fix the monitor name."
    )


def _runs_at_validation_end(trainer: Trainer, explicit: bool | None) -> bool:
    if explicit is not None:
        return not explicit
    return trainer._has_validation


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
            raise _missing_monitor("EarlyStopping", self.monitor, trainer.callback_metrics)

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
                raise _missing_monitor("EarlyStopping", self.monitor, metrics)
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


class ModelCheckpoint(Callback):
    """Save checkpoints as training goes: the top-k by a monitored metric, and/or the last."""

    CHECKPOINT_JOIN_CHAR = "-"
    CHECKPOINT_EQUALS_CHAR = "="
    CHECKPOINT_NAME_LAST = "last"
    FILE_EXTENSION = ".ckpt"

    def __init__(
        self,
        dirpath: str | os.PathLike[str] | None = None,
        filename: str | None = None,
        monitor: str | None = None,
        verbose: bool = False,
        save_last: bool | str | None = None,
        save_top_k: int = 1,
        save_weights_only: bool = False,
        mode: str = "min",
        auto_insert_metric_name: bool = True,
        every_n_train_steps: int | None = None,
        train_time_interval: Any = None,
        every_n_epochs: int | None = None,
        save_on_train_epoch_end: bool | None = None,
        enable_version_counter: bool = True,
    ) -> None:
        if mode not in ("min", "max"):
            raise MisconfigurationException(f"ModelCheckpoint(mode={mode!r}): use 'min' or 'max'")
        if save_top_k < -1:
            raise MisconfigurationException(
                f"ModelCheckpoint(save_top_k={save_top_k}) must be >= -1"
            )
        if monitor is None and save_top_k not in (-1, 0, 1):
            raise MisconfigurationException(
                f"ModelCheckpoint(save_top_k={save_top_k}) needs a monitor to rank checkpoints"
            )
        self.dirpath = os.fspath(dirpath) if dirpath is not None else None
        self.filename = filename
        self.monitor = monitor
        self.verbose = verbose
        self.save_last = save_last
        self.save_top_k = save_top_k
        self.save_weights_only = save_weights_only
        self.mode = mode
        self.auto_insert_metric_name = auto_insert_metric_name
        self.every_n_train_steps = every_n_train_steps or 0
        self.train_time_interval = _seconds(train_time_interval)
        if every_n_epochs is None:
            every_n_epochs = 0 if (self.every_n_train_steps or self.train_time_interval) else 1
        self.every_n_epochs = every_n_epochs
        self._save_on_train_epoch_end = save_on_train_epoch_end
        self.enable_version_counter = enable_version_counter
        self.best_k_models: dict[str, torch.Tensor] = {}
        self.kth_best_model_path = ""
        self.best_model_score: torch.Tensor | None = None
        self.best_model_path = ""
        self.last_model_path = ""
        self.current_score: torch.Tensor | None = None
        self._last_global_step_saved = -1
        self._last_time_saved = time.monotonic()

    @property
    def state_key(self) -> str:
        return (
            f"ModelCheckpoint{{'monitor': {self.monitor!r}, 'mode': {self.mode!r}, "
            f"'every_n_train_steps': {self.every_n_train_steps}, "
            f"'every_n_epochs': {self.every_n_epochs}}}"
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "best_model_score": self.best_model_score,
            "best_model_path": self.best_model_path,
            "current_score": self.current_score,
            "dirpath": self.dirpath,
            "best_k_models": self.best_k_models,
            "kth_best_model_path": self.kth_best_model_path,
            "last_model_path": self.last_model_path,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("dirpath") != self.dirpath:
            return  # another directory: start a fresh ranking, as Lightning does
        self.best_model_score = state_dict["best_model_score"]
        self.best_model_path = state_dict["best_model_path"]
        self.current_score = state_dict.get("current_score")
        self.best_k_models = dict(state_dict.get("best_k_models", {}))
        self.kth_best_model_path = state_dict.get("kth_best_model_path", "")
        self.last_model_path = state_dict.get("last_model_path", "")

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.dirpath is None:
            base = trainer.log_dir or trainer.default_root_dir
            self.dirpath = os.path.join(base, "checkpoints")

    def on_sanity_check_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if (
            self.monitor is not None
            and self.save_top_k != 0
            and not self._on_train_epoch_end(trainer)
            and not self.every_n_train_steps
            and self.monitor not in trainer.callback_metrics
        ):
            raise _missing_monitor("ModelCheckpoint", self.monitor, trainer.callback_metrics)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if (not self.every_n_train_steps and self.train_time_interval is None) or self._skip(
            trainer
        ):
            return
        due_steps = self.every_n_train_steps and trainer.global_step % self.every_n_train_steps == 0
        due_time = (
            self.train_time_interval is not None
            and time.monotonic() - self._last_time_saved >= self.train_time_interval
        )
        if self.train_time_interval is not None:
            # All ranks must agree, or only some of them would enter the save.
            due_time = trainer.strategy.reduce_boolean_decision(bool(due_time), all=False)
        if due_steps or due_time:
            self._save(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if (
            not self._skip(trainer)
            and self._on_train_epoch_end(trainer)
            and self._epoch_due(trainer)
        ):
            self._save(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if (
            not self._skip(trainer)
            and not self._on_train_epoch_end(trainer)
            and self._epoch_due(trainer)
            and trainer._is_last_validation_of_epoch
        ):
            self._save(trainer)

    def _skip(self, trainer: Trainer) -> bool:
        return (
            bool(trainer.fast_dev_run)
            or trainer.sanity_checking
            or not trainer.training_in_progress
            or self._last_global_step_saved == trainer.global_step
        )

    def _on_train_epoch_end(self, trainer: Trainer) -> bool:
        if self._save_on_train_epoch_end is not None:
            return self._save_on_train_epoch_end
        return not trainer._has_validation

    def _epoch_due(self, trainer: Trainer) -> bool:
        return self.every_n_epochs > 0 and (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def _save(self, trainer: Trainer) -> None:
        self._last_global_step_saved = trainer.global_step
        self._last_time_saved = time.monotonic()
        metrics = {k: v for k, v in trainer.callback_metrics.items()}
        metrics["epoch"] = torch.tensor(trainer.current_epoch)
        metrics["step"] = torch.tensor(trainer.global_step)
        if self.save_top_k != 0:
            if self.monitor is None:
                self._save_unranked(trainer, metrics)
            else:
                self._save_ranked(trainer, metrics)
        if self.save_last:
            self._save_last(trainer, metrics)

    def _save_unranked(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        path = self._unique(self.format_checkpoint_name(metrics))
        previous = self.best_model_path
        trainer.save_checkpoint(path, self.save_weights_only)
        self.best_model_path = path
        if self.save_top_k == 1 and previous and previous != path:
            self._remove(trainer, previous)

    def _save_ranked(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        if self.monitor not in metrics:
            raise _missing_monitor("ModelCheckpoint", str(self.monitor), trainer.callback_metrics)
        current = metrics[self.monitor].detach().float().cpu()
        if torch.isnan(current):
            current = torch.tensor(math.inf if self.mode == "min" else -math.inf)
        self.current_score = current
        better = torch.lt if self.mode == "min" else torch.gt
        full = self.save_top_k != -1 and len(self.best_k_models) >= self.save_top_k
        if full and not better(current, self.best_k_models[self.kth_best_model_path]):
            return
        path = self._unique(self.format_checkpoint_name(metrics))
        trainer.save_checkpoint(path, self.save_weights_only)
        self.best_k_models[path] = current
        if full:
            worst = self.kth_best_model_path
            del self.best_k_models[worst]
            self._remove(trainer, worst)
        pick = max if self.mode == "min" else min
        self.kth_best_model_path = pick(
            self.best_k_models, key=lambda p: float(self.best_k_models[p])
        )
        best = min if self.mode == "min" else max
        self.best_model_path = best(self.best_k_models, key=lambda p: float(self.best_k_models[p]))
        self.best_model_score = self.best_k_models[self.best_model_path]
        if self.verbose and trainer.is_global_zero:
            print(
                f"Epoch {trainer.current_epoch}, step {trainer.global_step}: "
                f"{self.monitor}={float(current):.5g} saved to {path}",
                file=sys.stderr,
            )

    def _save_last(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        name = self.CHECKPOINT_NAME_LAST
        if self.filename and "{" in self.CHECKPOINT_NAME_LAST:
            name = self._format(self.CHECKPOINT_NAME_LAST, metrics)
        path = os.path.join(str(self.dirpath), name + self.FILE_EXTENSION)
        if self.save_last == "link" and self.best_model_path and "://" not in path:
            if trainer.is_global_zero:
                if os.path.lexists(path):
                    os.remove(path)
                os.symlink(os.path.relpath(self.best_model_path, os.path.dirname(path)), path)
            trainer.strategy.barrier("ModelCheckpoint.save_last")
        else:
            trainer.save_checkpoint(path, self.save_weights_only)
        self.last_model_path = path

    def _remove(self, trainer: Trainer, path: str) -> None:
        # Never delete the checkpoint this run resumed from (Lightning #21813).
        if trainer.is_global_zero and path != trainer.ckpt_path and os.path.exists(path):
            os.remove(path)

    def _unique(self, path: str) -> str:
        if not self.enable_version_counter or not os.path.exists(path):
            return path
        stem, version = path[: -len(self.FILE_EXTENSION)], 1
        while os.path.exists(f"{stem}-v{version}{self.FILE_EXTENSION}"):
            version += 1
        return f"{stem}-v{version}{self.FILE_EXTENSION}"

    def format_checkpoint_name(self, metrics: dict[str, Any], filename: str | None = None) -> str:
        template = filename or self.filename or "{epoch}" + self.CHECKPOINT_JOIN_CHAR + "{step}"
        return os.path.join(
            str(self.dirpath), self._format(template, metrics) + self.FILE_EXTENSION
        )

    def _format(self, template: str, metrics: dict[str, Any]) -> str:
        def substitute(match: re.Match[str]) -> str:
            name, spec = match.group(1), match.group(2) or ""
            value = metrics.get(name, 0)
            value = value.item() if isinstance(value, torch.Tensor) else value
            if not spec and name in ("epoch", "step"):
                spec = "d"
            text = format(value, spec) if spec else str(value)
            if self.auto_insert_metric_name:
                return f"{name}{self.CHECKPOINT_EQUALS_CHAR}{text}"
            return text

        return re.sub(r"\{([^{}:]+)(?::([^{}]*))?\}", substitute, template).replace("/", "_")


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
        if self.logging_interval != "epoch" and trainer._should_log_this_step():
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


class TQDMProgressBar(Callback):
    """Epoch, step, rate and the prog_bar metrics, on global rank 0."""

    def __init__(
        self, refresh_rate: int = 1, process_position: int = 0, leave: bool = False
    ) -> None:
        self.refresh_rate = refresh_rate
        self.process_position = process_position
        self.leave = leave
        self._bar: Any = None
        self._last_postfix = 0.0
        # Not a terminal (CI, `kubectl logs`): redraw rarely, so logs stay readable.
        self._min_interval = 0.1 if sys.stderr.isatty() else 10.0

    @property
    def is_enabled(self) -> bool:
        return self.refresh_rate > 0

    def _new_bar(self, trainer: Trainer, description: str, total: float, leave: bool) -> Any:
        from tqdm.auto import tqdm

        return tqdm(
            desc=description,
            total=None if math.isinf(total) else int(total),
            position=2 * self.process_position,
            leave=leave,
            dynamic_ncols=True,
            file=sys.stderr,
            mininterval=self._min_interval,
            disable=not trainer.is_global_zero,
            smoothing=0,
        )

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._close()
        self._bar = self._new_bar(
            trainer, f"Epoch {trainer.current_epoch}", trainer.num_training_batches, True
        )

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._bar is None:
            return
        self._bar.update(1)
        now = time.monotonic()
        if now - self._last_postfix >= max(self._min_interval, 0.5):
            self._last_postfix = now
            self._bar.set_postfix(self._postfix(trainer), refresh=False)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._bar is not None:
            self._bar.set_postfix(self._postfix(trainer), refresh=True)
            self._close()

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._close()

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        self._close()

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _postfix(self, trainer: Trainer) -> dict[str, str]:
        shown = {}
        if trainer.logger is not None and not isinstance(trainer.logger.version, str):
            shown["v_num"] = str(trainer.logger.version)
        for key, value in trainer.progress_bar_metrics.items():
            shown[key] = f"{value:.3g}" if isinstance(value, float) else str(value)
        return shown


class ModelSummary(Callback):
    """Print the module's layers and parameter counts when fitting starts."""

    def __init__(self, max_depth: int = 1) -> None:
        self.max_depth = max_depth

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.is_global_zero and self.max_depth != 0:
            print(summarize(pl_module, self.max_depth))


def summarize(module: torch.nn.Module, max_depth: int = 1) -> str:
    rows = []
    for name, child in module.named_modules():
        depth = name.count(".") + 1
        if not name or (max_depth >= 0 and depth > max_depth):
            continue
        params = sum(p.numel() for p in child.parameters())
        rows.append(
            (name, type(child).__name__, _human(params), "train" if child.training else "eval")
        )
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    total = sum(p.numel() for p in module.parameters())
    size_mb = sum(p.numel() * p.element_size() for p in module.parameters()) / 1e6
    header = ("", "Name", "Type", "Params", "Mode")
    table = [header] + [(str(i), *row) for i, row in enumerate(rows)]
    widths = [max(len(r[c]) for r in table) for c in range(len(header))]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in table]
    rule = "-" * max(len(line) for line in lines)
    return "\n".join(
        [
            rule,
            lines[0],
            rule,
            *lines[1:],
            rule,
            f"{_human(trainable):<8}Trainable params",
            f"{_human(total - trainable):<8}Non-trainable params",
            f"{_human(total):<8}Total params",
            f"{size_mb:<8.3f}Total estimated model params size (MB)",
        ]
    )


def _human(count: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return str(count)


def _seconds(value: Any) -> float | None:
    if value is None:
        return None
    if hasattr(value, "total_seconds"):
        return float(value.total_seconds())
    return float(value)
