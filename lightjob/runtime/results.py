"""What `self.log` collects, reduced without a device sync on every step.

Step values are kept as (detached) tensors and only turned into floats when they are
written out (every log_every_n_steps). Epoch values accumulate on the device, weighted by
batch size, and are reduced once at the end of the epoch, across ranks when sync_dist.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from lightjob.runtime.errors import MisconfigurationException

_REDUCE_FX = ("mean", "sum", "max", "min")
Reducer = Callable[[torch.Tensor, str], torch.Tensor]  # (value, "sum"|"max"|"min") -> reduced


@dataclass(slots=True)
class _Entry:
    on_step: bool
    on_epoch: bool
    prog_bar: bool
    logger: bool
    reduce_fx: str
    sync_dist: bool
    step_value: Any = None  # last value logged on this step
    total: Any = None  # running sum (mean, sum) or extreme (max, min)
    weight: float = 0.0  # sum of batch sizes, for the mean
    metric: Any = None  # a torchmetrics.Metric logged as an object


class Results:
    """The metrics of one stage (train, validate, test) for one epoch."""

    def __init__(self) -> None:
        self.entries: dict[str, _Entry] = {}
        self.batch: Any = None  # the current batch, to infer the size of a mean lazily
        self._batch_size: int | None = None

    def new_batch(self, batch: Any) -> None:
        self.batch = batch
        self._batch_size = None

    def log(
        self,
        name: str,
        value: Any,
        *,
        on_step: bool,
        on_epoch: bool,
        prog_bar: bool,
        logger: bool,
        reduce_fx: str,
        sync_dist: bool,
        batch_size: int | None,
    ) -> None:
        entry = self.entries.get(name)
        if entry is None:
            if reduce_fx not in _REDUCE_FX:
                raise MisconfigurationException(
                    f"self.log({name!r}, reduce_fx={reduce_fx!r}): use one of {_REDUCE_FX}"
                )
            entry = _Entry(on_step, on_epoch, prog_bar, logger, reduce_fx, sync_dist)
            self.entries[name] = entry
        if _is_metric_object(value):
            entry.metric = value
            entry.step_value = getattr(value, "_forward_cache", None)
            return
        value = _as_scalar(name, value)
        entry.step_value = value
        if not on_epoch:
            return
        if reduce_fx == "mean":
            size = batch_size if batch_size is not None else self._current_batch_size()
            value = value * size
            entry.weight += size
        if entry.total is None:
            entry.total = value
        elif reduce_fx in ("mean", "sum"):
            entry.total = entry.total + value
        else:
            pick = torch.maximum if reduce_fx == "max" else torch.minimum
            entry.total = pick(_tensor(entry.total), _tensor(value))

    def _current_batch_size(self) -> int:
        if self._batch_size is None:
            from lightjob.runtime.data import infer_batch_size

            self._batch_size = infer_batch_size(self.batch)
        return self._batch_size

    def step_values(self) -> dict[str, _Entry]:
        return {k: e for k, e in self.entries.items() if e.on_step and e.step_value is not None}

    def epoch_values(self, reduce: Reducer | None) -> dict[str, torch.Tensor]:
        """Reduce the epoch accumulators; `reduce` does the cross-rank part (sync_dist)."""
        out: dict[str, torch.Tensor] = {}
        for name, entry in self.entries.items():
            if not entry.on_epoch:
                continue
            if entry.metric is not None:
                out[name] = _tensor(entry.metric.compute()).detach()
                entry.metric.reset()
                continue
            if entry.total is None:
                continue
            total, weight = _tensor(entry.total).double(), torch.tensor(entry.weight)
            if entry.sync_dist and reduce is not None:
                op = "sum" if entry.reduce_fx in ("mean", "sum") else entry.reduce_fx
                total = reduce(total, op)
                weight = reduce(weight.to(total.device, torch.float64), "sum").cpu()
            value = total / weight.to(total.device) if entry.reduce_fx == "mean" else total
            out[name] = value.float()
        return out

    def reset(self) -> None:
        self.entries.clear()


def _is_metric_object(value: Any) -> bool:
    return hasattr(value, "compute") and hasattr(value, "reset") and hasattr(value, "update")


def _as_scalar(name: str, value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise MisconfigurationException(
                f"self.log({name!r}, ...) needs a scalar; got a tensor of shape {tuple(value.shape)}"
            )
        return value.detach()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MisconfigurationException(
            f"self.log({name!r}, ...) needs a number or a one-element tensor; "
            f"got {type(value).__name__}"
        )
    return float(value)


def _tensor(value: Any) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else torch.tensor(value)


def to_float(value: Any) -> float:
    """The one place a logged value is read back (a device sync for CUDA tensors)."""
    return float(value.item()) if isinstance(value, torch.Tensor) else float(value)
