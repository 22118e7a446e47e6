"""What `configure_optimizers` may return, when learning-rate schedulers step, and the
LightningOptimizer the module's optimizer hooks receive."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from lightjob.runtime.errors import MisconfigurationException

if TYPE_CHECKING:
    from lightjob.runtime.precision import Precision

_SHAPES = (
    "an optimizer, a list of optimizers, a tuple (optimizers, lr_schedulers), or a dict "
    "{'optimizer': ..., 'lr_scheduler': ...} (or a list of such dicts)"
)


@dataclass(slots=True)
class SchedulerConfig:
    scheduler: Any
    optimizer: torch.optim.Optimizer | None
    interval: str = "epoch"  # "epoch" or "step"
    frequency: int = 1
    monitor: str | None = None
    strict: bool = True
    name: str | None = None

    @property
    def reduce_on_plateau(self) -> bool:
        return isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)


def configure(model: Any) -> tuple[list[torch.optim.Optimizer], list[SchedulerConfig]]:
    """Call `model.configure_optimizers()` and check what came back, before any training."""
    returned = model.configure_optimizers()
    optimizers, schedulers = _parse(returned, type(model).__name__)
    if model.automatic_optimization:
        if not optimizers:
            raise MisconfigurationException(
                f"{type(model).__name__}.configure_optimizers() returned {returned!r}; it must "
                f"return {_SHAPES}"
            )
        if len(optimizers) > 1:
            raise MisconfigurationException(
                f"{type(model).__name__}.configure_optimizers() returned {len(optimizers)} "
                "optimizers; automatic optimization steps one. Set self.automatic_optimization "
                "= False in __init__ and step them yourself in training_step"
            )
    return optimizers, schedulers


def _parse(returned: Any, owner: str) -> tuple[list[torch.optim.Optimizer], list[SchedulerConfig]]:
    if returned is None:
        return [], []
    if isinstance(returned, torch.optim.Optimizer):
        return [returned], []
    if isinstance(returned, dict):
        return _parse_dict(returned, owner)
    if isinstance(returned, list | tuple):
        if (
            len(returned) == 2
            and isinstance(returned[0], list | tuple)
            and isinstance(returned[1], list | tuple)
        ):
            optimizers = [_check_optimizer(o, owner) for o in returned[0]]
            default = optimizers[0] if len(optimizers) == 1 else None
            configs = [_scheduler_config(s, default, owner) for s in returned[1]]
            return optimizers, configs
        if all(isinstance(item, dict) for item in returned):
            optimizers, configs = [], []
            for item in returned:
                opts, scheds = _parse_dict(item, owner)
                optimizers += opts
                configs += scheds
            return optimizers, configs
        return [_check_optimizer(o, owner) for o in returned], []
    raise MisconfigurationException(
        f"{owner}.configure_optimizers() returned a {type(returned).__name__}; it must return {_SHAPES}"
    )


def _parse_dict(
    returned: dict[str, Any], owner: str
) -> tuple[list[torch.optim.Optimizer], list[SchedulerConfig]]:
    if "optimizer" not in returned:
        raise MisconfigurationException(
            f"{owner}.configure_optimizers() returned a dict without 'optimizer' "
            f"(keys: {sorted(returned)}); it must return {_SHAPES}"
        )
    optimizer = _check_optimizer(returned["optimizer"], owner)
    scheduler = returned.get("lr_scheduler")
    if scheduler is None:
        return [optimizer], []
    return [optimizer], [_scheduler_config(scheduler, optimizer, owner, returned.get("monitor"))]


def _scheduler_config(
    item: Any, optimizer: torch.optim.Optimizer | None, owner: str, monitor: str | None = None
) -> SchedulerConfig:
    spec = dict(item) if isinstance(item, dict) else {"scheduler": item}
    unknown = set(spec) - {
        "scheduler",
        "interval",
        "frequency",
        "monitor",
        "strict",
        "name",
        "optimizer",
    }
    if unknown:
        raise MisconfigurationException(
            f"{owner}.configure_optimizers(): unknown lr_scheduler key(s) {sorted(unknown)}; "
            "use scheduler, interval, frequency, monitor, strict, name"
        )
    if "scheduler" not in spec:
        raise MisconfigurationException(
            f"{owner}.configure_optimizers(): an lr_scheduler dict needs a 'scheduler' key"
        )
    scheduler = spec["scheduler"]
    if not hasattr(scheduler, "step") or not hasattr(scheduler, "state_dict"):
        raise MisconfigurationException(
            f"{owner}.configure_optimizers(): {type(scheduler).__name__} is not a learning-rate scheduler"
        )
    interval = spec.get("interval", "epoch")
    if interval not in ("epoch", "step"):
        raise MisconfigurationException(
            f"{owner}.configure_optimizers(): lr_scheduler interval={interval!r}; use 'epoch' or 'step'"
        )
    frequency = spec.get("frequency", 1)
    if not isinstance(frequency, int) or frequency < 1:
        raise MisconfigurationException(
            f"{owner}.configure_optimizers(): lr_scheduler frequency={frequency!r} must be an int >= 1"
        )
    config = SchedulerConfig(
        scheduler=scheduler,
        optimizer=getattr(scheduler, "optimizer", None) or optimizer,
        interval=interval,
        frequency=frequency,
        monitor=spec.get("monitor", monitor),
        strict=spec.get("strict", True),
        name=spec.get("name"),
    )
    _check_plateau(config, owner)
    return config


def _check_plateau(config: SchedulerConfig, owner: str) -> None:
    if config.reduce_on_plateau and config.monitor is None:
        raise MisconfigurationException(
            f"{owner}.configure_optimizers(): ReduceLROnPlateau needs a metric to watch: return "
            "{'optimizer': opt, 'lr_scheduler': {'scheduler': sched, 'monitor': 'val_loss'}}"
        )


def _check_optimizer(candidate: Any, owner: str) -> torch.optim.Optimizer:
    if not isinstance(candidate, torch.optim.Optimizer):
        raise MisconfigurationException(
            f"{owner}.configure_optimizers() returned a {type(candidate).__name__} where an "
            f"optimizer was expected; it must return {_SHAPES}"
        )
    return candidate


def step_schedulers(
    configs: list[SchedulerConfig],
    interval: str,
    counter: int,
    model: Any,
    metrics: Callable[[], dict[str, Any]],
) -> None:
    """Step the schedulers of one interval whose frequency divides `counter`."""
    for config in configs:
        if config.interval != interval or counter % config.frequency:
            continue
        value = None
        if config.reduce_on_plateau:
            available = metrics()
            if config.monitor not in available:
                if config.strict:
                    raise MisconfigurationException(
                        f"ReduceLROnPlateau monitors {config.monitor!r}, which was not logged; "
                        f"logged: {', '.join(sorted(available)) or 'none'}"
                    )
                continue
            value = available[config.monitor]
        model.lr_scheduler_step(config.scheduler, value)


class LightningOptimizer:
    """What `self.optimizers()` returns and `optimizer_step` receives: the optimizer, whose
    `step` goes straight to the precision plugin.

    `on_before_step` runs after the closure, before the update (the
    `on_before_optimizer_step` hook and gradient clipping); `on_after_step` counts the step.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        precision: Precision,
        on_before_step: Callable[[], None],
        on_after_step: Callable[[], None],
    ) -> None:
        self._optimizer = optimizer
        self._precision = precision
        self._on_before_step = on_before_step
        self._on_after_step = on_after_step

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self._optimizer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._optimizer, name)

    def step(self, closure: Callable[[], Any] | None = None, **kwargs: Any) -> Any:
        """Every optimizer step goes through here: automatic, or `opt.step()` in manual mode."""
        out = self._precision.optimizer_step(
            self._optimizer,
            closure if closure is not None else _no_closure,
            self._on_before_step,
            **kwargs,
        )
        self._on_after_step()
        return out

    def zero_grad(self, set_to_none: bool = True) -> None:
        self._optimizer.zero_grad(set_to_none=set_to_none)


def _no_closure() -> None:
    return None
