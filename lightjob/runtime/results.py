"""What `self.log` collects, and where it is published, without a device sync every step.

Step values are kept as (detached) tensors and only turned into floats when they are
written out (every log_every_n_steps). Epoch values accumulate on the device, weighted by
batch size, and are reduced once at the end of the epoch, across ranks when sync_dist.

`Results` holds one stage's values for one epoch. `MetricsSink` owns the Trainer's two
Results (training, evaluation), routes `self.log` to the right one, and publishes: into
`callback_metrics`, `logged_metrics` and `progress_bar_metrics`, to the loggers, and to the
Prometheus telemetry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from lightjob.runtime.errors import MisconfigurationException

if TYPE_CHECKING:
    from lightjob.runtime.loggers import Logger
    from lightjob.runtime.telemetry import Telemetry

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


class MetricsSink:
    """Where `self.log` goes, and what the Trainer shows of it.

    `strategy` reduces across ranks and says which rank writes to the loggers; `progress`
    gives the step and epoch each logged row is written at. The Trainer points `log_into`
    at the Results of the hook about to run.
    """

    def __init__(self, strategy: Any, progress: Any, loggers: list[Logger]) -> None:
        self.strategy = strategy
        self.progress = progress
        self.loggers = loggers
        self.telemetry: Telemetry | None = None  # set while fit serves metrics
        self.train = Results()
        self.eval = Results()
        self.logged_metrics: dict[str, float] = {}
        self._callback_metrics: dict[str, torch.Tensor] = {}
        # (results, default on_step, default on_epoch, dataloader suffix) for `self.log`
        self._target: tuple[Results, bool, bool, str] | None = None

    def log_into(
        self, results: Results, on_step: bool, on_epoch: bool, dataloader_suffix: str = ""
    ) -> None:
        """Send the `self.log` calls that follow to `results`, with these defaults."""
        self._target = (results, on_step, on_epoch, dataloader_suffix)

    def log(
        self,
        name: str,
        value: Any,
        *,
        on_step: bool | None,
        on_epoch: bool | None,
        add_dataloader_idx: bool,
        **options: Any,
    ) -> None:
        """What `LightningModule.log` calls."""
        if self._target is None:
            raise MisconfigurationException(
                f"self.log({name!r}) was called outside of a Trainer hook that can log"
            )
        results, default_step, default_epoch, suffix = self._target
        if add_dataloader_idx and suffix:
            name += suffix
        results.log(
            name,
            value,
            on_step=default_step if on_step is None else on_step,
            on_epoch=default_epoch if on_epoch is None else on_epoch,
            **options,
        )

    def write_step(self, samples: int, max_steps: float) -> None:
        """At the logging cadence: the training step values to the loggers and telemetry,
        and where the fit is (`samples` trained on so far, all ranks) to telemetry.
        A few assignments, no device synchronisation beyond reading the logged values."""
        self._write_step_values()
        if self.telemetry is not None:
            progress = self.progress
            self.telemetry.progress(progress.global_step, progress.epoch, samples, max_steps)

    def _write_step_values(self) -> None:
        entries = self.train.step_values()
        if not entries:
            return
        values: dict[str, float] = {}
        for name, entry in entries.items():
            key = f"{name}_step" if entry.on_epoch else name
            if entry.sync_dist:
                entry.step_value = self.strategy.reduce(torch.as_tensor(entry.step_value), "mean")
            if entry.logger:
                values[key] = to_float(entry.step_value)
        if self.telemetry is not None:
            self.telemetry.scalars(values)
        if values and self.strategy.is_global_zero:
            self._write(values, save=False)

    def publish_epoch(self, results: Results, *, log: bool = True) -> dict[str, torch.Tensor]:
        """Reduce `results` for the epoch; put the values into callback_metrics and, with
        `log`, on to the loggers (as `name_epoch` when the name is also logged per step)."""
        metrics = results.epoch_values(self.strategy.reduce)
        out: dict[str, float] = {}
        for name, value in metrics.items():
            entry = results.entries[name]
            key = f"{name}_epoch" if entry.on_step else name
            self._callback_metrics[name] = value
            self._callback_metrics[key] = value
            if entry.logger:
                out[key] = to_float(value)
        if log and self.telemetry is not None:
            self.telemetry.scalars(out)
        if log and out and self.strategy.is_global_zero:
            self._write(out, save=True)
        return metrics

    def _write(self, values: dict[str, float], *, save: bool) -> None:
        values["epoch"] = float(self.progress.epoch)
        self.logged_metrics.update(values)
        for logger in self.loggers:
            logger.log_metrics(values, step=self.progress.global_step)
            if save:
                logger.save()

    @contextmanager
    def discarding_callback_metrics(self) -> Iterator[None]:
        """callback_metrics as they were before, once the block ends (the sanity check's
        values are not real results)."""
        before = dict(self._callback_metrics)
        yield
        self._callback_metrics = before

    @property
    def callback_metrics(self) -> dict[str, torch.Tensor]:
        # Step values are folded in only when someone reads them: no per-step cost.
        for name, entry in self.train.step_values().items():
            # A name logged per step and per epoch keeps its epoch value under the plain name.
            key = f"{name}_step" if entry.on_epoch else name
            self._callback_metrics[key] = torch.as_tensor(entry.step_value)
        return self._callback_metrics

    @property
    def progress_bar_metrics(self) -> dict[str, float]:
        shown: dict[str, float] = {}
        for results in (self.train, self.eval):
            for name, entry in results.entries.items():
                if entry.prog_bar and name in self.callback_metrics:
                    shown[name] = to_float(self.callback_metrics[name])
        return shown
