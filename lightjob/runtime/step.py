"""One training batch: the closure, backward and the optimizer step, with their hooks.

The path of a batch to the weights (automatic optimization):

    Trainer._fit_loop
      Optimization.run                      zero_grad at a window's start
        LightningModule.optimizer_step      the user's hook
          LightningOptimizer.step
            Precision.optimizer_step        runs the closure, then on_before_optimizer_step
              torch optimizer.step()        and clipping, then the update

The closure runs `training_step`, `on_before_backward`, `backward` and `on_after_backward`.
Inside an accumulation window only the closure runs, under DDP's no_sync. With manual
optimization `training_step` calls `self.optimizers()` (LightningOptimizers from here) and
`self.manual_backward` (`Optimization.backward`) itself.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import torch

from lightjob.runtime import optim
from lightjob.runtime.errors import MisconfigurationException
from lightjob.runtime.optim import LightningOptimizer, SchedulerConfig

if TYPE_CHECKING:
    from lightjob.runtime.hooks import Hooks
    from lightjob.runtime.module import LightningModule
    from lightjob.runtime.precision import Precision


class Optimization:
    """What one training batch does to the weights, for one fit.

    `progress` is the Trainer's (each optimizer step adds one to its global_step);
    `wrapped` is the DDP-wrapped module (None on one device), and `no_sync` the context in
    which an accumulating batch's backward skips DDP's gradient all-reduce; `metrics`
    reads callback_metrics for ReduceLROnPlateau.
    """

    def __init__(
        self,
        model: LightningModule,
        hooks: Hooks,
        precision: Precision,
        progress: Any,
        *,
        optimizers: list[torch.optim.Optimizer],
        schedulers: list[SchedulerConfig],
        wrapped: torch.nn.Module | None,
        no_sync: Callable[[], AbstractContextManager[Any]],
        metrics: Callable[[], dict[str, Any]],
        accumulate_grad_batches: int,
        gradient_clip: tuple[float | None, str],
    ) -> None:
        self.model = model
        self.hooks = hooks
        self.precision = precision
        self.progress = progress
        self.optimizers = optimizers
        self.schedulers = schedulers
        self.wrapped = wrapped
        self.no_sync = no_sync
        self.metrics = metrics
        self.accumulate = accumulate_grad_batches
        self.clip_val, self.clip_algorithm = gradient_clip  # (value, "norm" or "value")
        self._lightning_optimizers: dict[int, LightningOptimizer] = {}
        # Under DDP, training_step runs through the wrapper's forward, so DDP sees it.
        self._training_step: Callable[..., Any] = (
            wrapped if wrapped is not None else model.training_step
        )

    def run(self, batch: Any, batch_idx: int, window_end: bool) -> Any:
        """Train on one batch; returns the step's output as the batch-end hooks see it.
        `window_end`: this batch closes an accumulation window, so the optimizer steps."""
        model = self.model
        if not model.automatic_optimization:
            with self.precision.forward_context():
                return self._training_step(batch, batch_idx)
        optimizer = self.optimizers[0]
        if batch_idx % self.accumulate == 0:
            self.hooks.call("on_before_zero_grad", optimizer)
            model.optimizer_zero_grad(self.progress.epoch, batch_idx, optimizer)
        result: dict[str, Any] = {}

        def closure() -> torch.Tensor | None:
            with self.precision.forward_context():
                out = self._training_step(batch, batch_idx)
            loss = _loss_of(out)
            result["out"] = out
            if loss is None:
                return None
            self.backward(loss / self.accumulate if self.accumulate > 1 else loss)
            return loss

        if not window_end:
            with self.no_sync():
                closure()
        else:
            wrapper = self.lightning_optimizer(optimizer)
            model.optimizer_step(self.progress.epoch, batch_idx, wrapper, closure)
            if self.schedulers:
                optim.step_schedulers(
                    self.schedulers, "step", self.progress.global_step, model, self.metrics
                )
        return _outputs_for_hooks(result.get("out"))

    def backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """Backward with its hooks: what `manual_backward` and the closure call."""
        self.hooks.call("on_before_backward", loss)
        self.model.backward(loss, *args, **kwargs)
        self.hooks.call("on_after_backward")

    def lightning_optimizer(self, optimizer: torch.optim.Optimizer) -> LightningOptimizer:
        wrapper = self._lightning_optimizers.get(id(optimizer))
        if wrapper is None:
            wrapper = LightningOptimizer(
                optimizer,
                self.precision,
                functools.partial(self._before_step, optimizer),
                self._after_step,
            )
            self._lightning_optimizers[id(optimizer)] = wrapper
        return wrapper

    def _before_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.hooks.call("on_before_optimizer_step", optimizer)
        if self.model.automatic_optimization:
            self.model.configure_gradient_clipping(optimizer, self.clip_val, self.clip_algorithm)

    def _after_step(self) -> None:
        self.progress.global_step += 1


def _loss_of(out: Any) -> torch.Tensor | None:
    if out is None or isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        if "loss" not in out:
            raise MisconfigurationException(
                "training_step returned a dict without a 'loss' key; return the loss tensor "
                "or {'loss': loss, ...}"
            )
        return out["loss"]
    raise MisconfigurationException(
        f"training_step must return a loss tensor, a dict with 'loss', or None; got {type(out).__name__}"
    )


def _outputs_for_hooks(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return {"loss": out.detach()}
    if isinstance(out, dict) and isinstance(out.get("loss"), torch.Tensor):
        return {**out, "loss": out["loss"].detach()}
    return out
