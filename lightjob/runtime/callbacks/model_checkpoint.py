"""ModelCheckpoint: save the top-k checkpoints by a monitored metric, and/or the last."""

from __future__ import annotations

import math
import os
import re
import sys
import time
from typing import TYPE_CHECKING, Any

import torch

from lightjob.runtime.callbacks.callback import Callback, missing_monitor
from lightjob.runtime.errors import MisconfigurationException

if TYPE_CHECKING:
    from lightjob.runtime.module import LightningModule
    from lightjob.runtime.trainer import Trainer


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
            raise missing_monitor("ModelCheckpoint", self.monitor, trainer.callback_metrics)

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
            and trainer.is_last_batch
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
        return not trainer.enable_validation

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
            raise missing_monitor("ModelCheckpoint", str(self.monitor), trainer.callback_metrics)
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


def _seconds(value: Any) -> float | None:
    if value is None:
        return None
    if hasattr(value, "total_seconds"):
        return float(value.total_seconds())
    return float(value)
