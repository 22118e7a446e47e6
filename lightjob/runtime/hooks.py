"""Calling hooks: the LightningModule's first, then the callbacks' in their order.

Only hooks a class overrides are called, so unused hooks cost nothing per step; which ones
those are is worked out once per hook name and stage. docs/runtime.md lists the order.
The batch-transfer hooks are here too: `BatchTransfer` moves a batch to the device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from lightjob.runtime.callbacks import Callback
from lightjob.runtime.data import move_to_device
from lightjob.runtime.errors import MisconfigurationException
from lightjob.runtime.module import LightningDataModule, LightningModule

if TYPE_CHECKING:
    from lightjob.runtime.precision import Precision


def check_module(fn: str, model: Any) -> None:
    """What Trainer.`fn` needs of the object it was given, before anything runs."""
    if not isinstance(model, LightningModule):
        raise MisconfigurationException(
            f"Trainer.{fn} needs a LightningModule; got {type(model).__name__}"
        )
    if fn == "fit" and not overrides(model, "training_step"):
        raise MisconfigurationException(
            f"{type(model).__name__} has no training_step(self, batch, batch_idx); "
            "define it to use Trainer.fit"
        )


def overrides(obj: Any, name: str) -> bool:
    """True when `obj`'s class defines `name` itself rather than inheriting the base no-op."""
    for base in (LightningModule, Callback, LightningDataModule):
        if isinstance(obj, base):
            return getattr(type(obj), name, None) is not getattr(base, name, None)
    return hasattr(obj, name)


class Hooks:
    """The hooks of one stage: `model`'s, then each callback's with (trainer, model, ...);
    and the set-up and tear-down around the stage."""

    def __init__(self, trainer: Any, model: LightningModule | None, callbacks: list[Callback]):
        self.trainer = trainer  # handed to callback hooks, never read here
        self.model = model
        self.callbacks = callbacks
        self._found: dict[str, tuple[list[Callable[..., Any]], list[Callable[..., Any]]]] = {}

    def call(self, name: str, *args: Any) -> Any:
        """Run hook `name`; returns what the module's hook returned (None without one)."""
        found = self._found.get(name)
        if found is None:
            found = self._found[name] = self._collect(name)
        module_hooks, callback_hooks = found
        result = None
        for hook in module_hooks:
            result = hook(*args)
        for hook in callback_hooks:
            hook(self.trainer, self.model, *args)
        return result

    def set_up(
        self, fn: str, datamodule: LightningDataModule | None, strategy: Any, loggers: list[Any]
    ) -> None:
        """The set-up hooks for Trainer.`fn`: prepare_data (on each node's local rank 0,
        the others wait), then setup; for fit, the hyperparameters go to the loggers."""
        model = self.model
        assert model is not None
        if datamodule is not None:
            if strategy.local_rank == 0:
                datamodule.prepare_data()
            strategy.barrier("prepare_data")
            datamodule.setup(stage=fn)
        if strategy.local_rank == 0:
            model.prepare_data()
        strategy.barrier("prepare_data")
        for callback in self.callbacks:
            callback.setup(self.trainer, model, fn)
        model.setup(fn)
        if fn == "fit" and strategy.is_global_zero:
            hparams = {
                **(datamodule.hparams_initial if datamodule else {}),
                **model.hparams_initial,
            }
            if hparams and getattr(model, "_log_hyperparams", True):
                for logger in loggers:
                    logger.log_hyperparams(hparams)

    def tear_down(
        self,
        fn: str,
        datamodule: LightningDataModule | None,
        failed: bool,
        loggers: list[Any],
        is_global_zero: bool,
    ) -> None:
        """After Trainer.`fn`: the teardown hooks, then the loggers' last write (rank 0)."""
        model = self.model
        assert model is not None
        for callback in self.callbacks:
            callback.teardown(self.trainer, model, fn)
        model.teardown(fn)
        if datamodule is not None:
            datamodule.teardown(fn)
        if is_global_zero:
            for logger in loggers:
                logger.finalize("failed" if failed else "success")

    def _collect(self, name: str) -> tuple[list[Callable[..., Any]], list[Callable[..., Any]]]:
        model = self.model
        module_hooks = (
            [getattr(model, name)] if model is not None and overrides(model, name) else []
        )
        callback_hooks = [getattr(c, name) for c in self.callbacks if overrides(c, name)]
        return module_hooks, callback_hooks


class BatchTransfer:
    """Moves a batch to `device` for one stage's module: through its transfer hooks when
    it overrides any of them, then into the precision's dtype."""

    def __init__(self, model: LightningModule, device: torch.device, precision: Precision):
        self.model = model
        self.device = device
        self.precision = precision
        self.uses_hooks = any(
            overrides(model, name)
            for name in (
                "on_before_batch_transfer",
                "transfer_batch_to_device",
                "on_after_batch_transfer",
            )
        )

    def __call__(self, batch: Any, dataloader_idx: int) -> Any:
        if self.uses_hooks:
            model = self.model
            batch = model.on_before_batch_transfer(batch, dataloader_idx)
            batch = model.transfer_batch_to_device(batch, self.device, dataloader_idx)
            batch = model.on_after_batch_transfer(batch, dataloader_idx)
        elif self.device.type != "cpu":
            batch = move_to_device(batch, self.device)
        return self.precision.convert_input(batch)
