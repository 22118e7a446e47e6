"""The Trainer's flags: checked once, when the Trainer is built, and grouped by who uses them.

`parse` turns the keyword arguments of `Trainer(...)` into `Options`: the devices and the
strategy, the loop's `Schedule`, the batch limits of each stage, the durable-checkpoint
settings, and the loggers and callbacks. Every bad value raises MisconfigurationException
naming the flag to fix, before anything runs.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from lightjob.runtime.callbacks import Callback, ModelCheckpoint, ModelSummary, TQDMProgressBar
from lightjob.runtime.distributed import DDPStrategy, SingleDeviceStrategy
from lightjob.runtime.errors import MisconfigurationException
from lightjob.runtime.loggers import CSVLogger, Logger
from lightjob.runtime.precision import parse_precision
from lightjob.runtime.schedule import Schedule

# Lightning flags lightjob accepts only at their "off" value.
_OFF_ONLY = ("profiler", "plugins", "sync_batchnorm", "reload_dataloaders_every_n_epochs")


@dataclass(slots=True)
class BatchLimits:
    """How many batches each stage runs: an int is a count, a float a fraction."""

    train: int | float | None = None
    val: int | float | None = None
    test: int | float | None = None
    predict: int | float | None = None
    overfit: int | float = 0.0
    sanity_steps: int = 2  # -1: the whole validation set


@dataclass(frozen=True, slots=True)
class DurableConfig:
    uri: str
    every_n_steps: int | None
    every_n_minutes: float | None
    keep: int
    background: bool


@dataclass(frozen=True, slots=True)
class Devices:
    accelerator: str  # "cpu", "cuda" or "mps"
    ids: list[int]  # one process per id
    num_nodes: int
    num_nodes_set: bool  # num_nodes was given, not defaulted


@dataclass(slots=True)
class Options:
    default_root_dir: str
    devices: Devices
    precision: str
    strategy: Any  # SingleDeviceStrategy or DDPStrategy
    fast_dev_run: int | bool
    schedule: Schedule
    limits: BatchLimits
    accumulate_grad_batches: int
    gradient_clip_val: float | None
    gradient_clip_algorithm: str
    inference_mode: bool
    detect_anomaly: bool
    loggers: list[Logger]
    callbacks: list[Callback]
    durable: DurableConfig | None
    enable_metrics: bool


def parse(flags: dict[str, Any], unsupported: dict[str, Any]) -> Options:
    """`flags`: the Trainer's keyword arguments by name; `unsupported`: any others."""
    unsupported = {
        k: v for k, v in unsupported.items() if not (k in _OFF_ONLY and v in (None, False, 0))
    }
    if unsupported:
        raise MisconfigurationException(
            f"Trainer does not support {', '.join(sorted(unsupported))} (lightjob implements "
            "the flags listed in docs/runtime.md)"
        )
    f = dict(flags)
    root = os.fspath(f["default_root_dir"] or os.getcwd())
    accelerator, device_ids = parse_devices(f["accelerator"], f["devices"])
    precision = parse_precision(f["precision"] if f["precision"] is not None else "32-true")
    num_nodes = f["num_nodes"]
    strategy = build_strategy(f["strategy"], accelerator, device_ids, num_nodes or 1)
    strategy.use_distributed_sampler = f["use_distributed_sampler"]
    dev_run = int(f["fast_dev_run"])
    if dev_run < 0:
        raise MisconfigurationException(f"Trainer(fast_dev_run={f['fast_dev_run']}) must be >= 0")
    if dev_run:
        f.update(max_epochs=1, max_steps=dev_run, val_check_interval=1.0)
        f.update(limit_train_batches=dev_run, limit_val_batches=dev_run)
        f.update(limit_test_batches=dev_run, limit_predict_batches=dev_run)
        f.update(num_sanity_val_steps=0, logger=False, enable_checkpointing=False)
    if f["overfit_batches"]:
        f.update(limit_train_batches=f["overfit_batches"], limit_val_batches=f["overfit_batches"])
    max_epochs = f["max_epochs"]
    if max_epochs is None:
        max_epochs = 1000 if f["max_steps"] == -1 and f["max_time"] is None else -1
    schedule = Schedule(
        max_epochs=max_epochs,
        min_epochs=f["min_epochs"] or 0,
        max_steps=f["max_steps"],
        min_steps=f["min_steps"] or 0,
        max_time=parse_max_time(f["max_time"]),
        val_check_interval=1.0 if f["val_check_interval"] is None else f["val_check_interval"],
        check_val_every_n_epoch=f["check_val_every_n_epoch"],
        log_every_n_steps=50 if f["log_every_n_steps"] is None else f["log_every_n_steps"],
    )
    limits = BatchLimits(
        train=f["limit_train_batches"],
        val=f["limit_val_batches"],
        test=f["limit_test_batches"],
        predict=f["limit_predict_batches"],
        overfit=f["overfit_batches"],
        sanity_steps=2 if f["num_sanity_val_steps"] is None else f["num_sanity_val_steps"],
    )
    if f["accumulate_grad_batches"] < 1:
        raise MisconfigurationException(
            f"Trainer(accumulate_grad_batches={f['accumulate_grad_batches']}) must be >= 1"
        )
    if f["gradient_clip_algorithm"] not in (None, "norm", "value"):
        raise MisconfigurationException(
            f"Trainer(gradient_clip_algorithm={f['gradient_clip_algorithm']!r}): use 'norm' or 'value'"
        )
    set_determinism(f["deterministic"], f["benchmark"])
    fast_dev_run = f["fast_dev_run"] if dev_run else False
    barebones = f["barebones"]
    return Options(
        default_root_dir=root,
        devices=Devices(accelerator, device_ids, num_nodes or 1, num_nodes is not None),
        precision=precision,
        strategy=strategy,
        fast_dev_run=fast_dev_run,
        schedule=schedule,
        limits=limits,
        accumulate_grad_batches=f["accumulate_grad_batches"],
        gradient_clip_val=f["gradient_clip_val"],
        gradient_clip_algorithm=f["gradient_clip_algorithm"] or "norm",
        inference_mode=f["inference_mode"],
        detect_anomaly=f["detect_anomaly"],
        loggers=build_loggers(f["logger"], barebones, root),
        callbacks=build_callbacks(
            f["callbacks"],
            checkpointing=not barebones and f["enable_checkpointing"] is not False,
            progress_bar=not barebones and f["enable_progress_bar"] is not False,
            summary=not barebones and f["enable_model_summary"] is not False,
            fast_dev_run=bool(dev_run),
        ),
        durable=durable_config(
            f["checkpoint_uri"],
            f["checkpoint_every_n_steps"],
            f["checkpoint_every_n_minutes"],
            f["checkpoint_keep"],
            f["background_checkpointing"],
            disabled=bool(dev_run),
        ),
        # Prometheus metrics on LIGHTJOB_METRICS_PORT + local rank (set by the operator).
        enable_metrics=f["enable_metrics"] and not dev_run,
    )


# -- devices and strategy -------------------------------------------------------------------------


def parse_devices(accelerator: str, devices: Any) -> tuple[str, list[int]]:
    if accelerator not in ("auto", "cpu", "gpu", "cuda", "mps"):
        raise MisconfigurationException(
            f"Trainer(accelerator={accelerator!r}) is not supported; use 'auto', 'cpu', 'gpu' or 'cuda'"
        )
    if accelerator == "auto":
        accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    if accelerator == "gpu":
        accelerator = "cuda"
    if accelerator == "cuda" and not torch.cuda.is_available():
        raise MisconfigurationException(
            "Trainer(accelerator='gpu') but no CUDA GPU is available (torch.cuda.is_available() "
            "is False); use accelerator='cpu' or 'auto'"
        )
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise MisconfigurationException("Trainer(accelerator='mps') but MPS is not available")
    available = torch.cuda.device_count() if accelerator == "cuda" else None
    if devices == "auto":
        return accelerator, list(range(available)) if available else [0]
    if isinstance(devices, str):
        try:
            devices = (
                [int(d) for d in devices.split(",") if d.strip()]
                if "," in devices
                else int(devices)
            )
        except ValueError:
            raise MisconfigurationException(
                f"Trainer(devices={devices!r}) must be an int, a list, or 'auto'"
            ) from None
    if isinstance(devices, int) and not isinstance(devices, bool):
        if devices == -1 and available:
            return accelerator, list(range(available))
        if devices < 1:
            raise MisconfigurationException(
                f"Trainer(devices={devices}) must be >= 1 (or -1 for all GPUs)"
            )
        if available is not None and devices > available:
            raise MisconfigurationException(
                f"Trainer(devices={devices}) but only {available} GPU(s) are visible"
            )
        return accelerator, list(range(devices))
    if isinstance(devices, list | tuple) and devices and all(isinstance(d, int) for d in devices):
        if accelerator == "cpu":
            return accelerator, list(range(len(devices)))
        if available is not None and max(devices) >= available:
            raise MisconfigurationException(
                f"Trainer(devices={list(devices)}) names a GPU beyond the {available} visible"
            )
        return accelerator, list(devices)
    raise MisconfigurationException(
        f"Trainer(devices={devices!r}) must be an int, a list of ints, or 'auto'"
    )


def build_strategy(strategy: Any, accelerator: str, device_ids: list[int], num_nodes: int) -> Any:
    if isinstance(strategy, DDPStrategy):
        return strategy
    names: dict[str, dict[str, Any]] = {
        "ddp": {},
        "ddp_find_unused_parameters_true": {"find_unused_parameters": True},
    }
    if strategy == "auto":
        devices = len(device_ids)
        if devices > 1 or num_nodes > 1 or _env_world_size() > devices:
            return DDPStrategy()
        return SingleDeviceStrategy(_device(accelerator, device_ids[0]))
    if strategy in names:
        return DDPStrategy(**names[strategy])
    if strategy == "single_device":
        return SingleDeviceStrategy(_device(accelerator, device_ids[0]))
    raise MisconfigurationException(
        f"Trainer(strategy={strategy!r}) is not supported; use 'auto', 'ddp', "
        "'ddp_find_unused_parameters_true', 'single_device' or a DDPStrategy(...)"
    )


def _device(accelerator: str, index: int) -> torch.device:
    if accelerator == "cuda":
        return torch.device("cuda", index)
    return torch.device(accelerator)


def _env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1")) if "MASTER_ADDR" in os.environ else 1


# -- loggers and callbacks ------------------------------------------------------------------------


def build_loggers(logger: Any, barebones: bool, default_root_dir: str) -> list[Logger]:
    if barebones or logger is False:
        return []
    if logger is None or logger is True:
        return [CSVLogger(default_root_dir)]
    if isinstance(logger, Logger):
        return [logger]
    return list(logger)


def build_callbacks(
    callbacks: Any, *, checkpointing: bool, progress_bar: bool, summary: bool, fast_dev_run: bool
) -> list[Callback]:
    given = [callbacks] if isinstance(callbacks, Callback) else list(callbacks or [])
    if checkpointing and not any(isinstance(c, ModelCheckpoint) for c in given):
        given.append(ModelCheckpoint())
    if not checkpointing and any(isinstance(c, ModelCheckpoint) for c in given):
        if not fast_dev_run:
            raise MisconfigurationException(
                "Trainer(enable_checkpointing=False) conflicts with the ModelCheckpoint in callbacks"
            )
        given = [c for c in given if not isinstance(c, ModelCheckpoint)]
    if progress_bar and not any(isinstance(c, TQDMProgressBar) for c in given):
        given.append(TQDMProgressBar())
    if summary and not any(isinstance(c, ModelSummary) for c in given):
        given.append(ModelSummary())
    return ordered(given)


def merge_callbacks(callbacks: list[Callback], extra: list[Callback]) -> list[Callback]:
    """A callback from configure_callbacks replaces the Trainer's callback of the same type."""
    kinds = {type(c) for c in extra}
    return ordered([c for c in callbacks if type(c) not in kinds] + extra)


def ordered(callbacks: list[Callback]) -> list[Callback]:
    # Checkpointing runs after everything else at each hook, so it records final decisions.
    return [c for c in callbacks if not isinstance(c, ModelCheckpoint)] + [
        c for c in callbacks if isinstance(c, ModelCheckpoint)
    ]


# -- the rest -------------------------------------------------------------------------------------


def durable_config(
    uri: str | None,
    every_n_steps: int | None,
    every_n_minutes: float | None,
    keep: int | None,
    background: bool,
    disabled: bool,
) -> DurableConfig | None:
    """Trainer arguments win; the LIGHTJOB_CHECKPOINT_* env the operator sets fills in."""
    uri = uri or os.environ.get("LIGHTJOB_CHECKPOINT_URI") or None
    if uri is None or disabled:
        return None

    def from_env(value: Any, name: str, kind: Callable[[str], Any]) -> Any:
        if value is not None:
            return value
        raw = os.environ.get(name)
        if raw in (None, ""):
            return None
        try:
            return kind(raw)
        except ValueError:
            raise MisconfigurationException(f"{name}={raw!r} must be a number") from None

    steps = from_env(every_n_steps, "LIGHTJOB_CHECKPOINT_EVERY_N_STEPS", int)
    minutes = from_env(every_n_minutes, "LIGHTJOB_CHECKPOINT_EVERY_N_MINUTES", float)
    kept = from_env(keep, "LIGHTJOB_CHECKPOINT_KEEP", int) or 3
    for flag, value in (
        ("checkpoint_every_n_steps", steps),
        ("checkpoint_every_n_minutes", minutes),
        ("checkpoint_keep", kept),
    ):
        if value is not None and value <= 0:
            raise MisconfigurationException(f"Trainer({flag}={value}) must be > 0")
    return DurableConfig(uri, steps, minutes, kept, background)


def parse_max_time(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, dict):
        return dt.timedelta(**value).total_seconds()
    if isinstance(value, str):
        parts = value.split(":")
        if len(parts) == 4 and all(p.isdigit() for p in parts):
            days, hours, minutes, seconds = map(int, parts)
            return dt.timedelta(
                days=days, hours=hours, minutes=minutes, seconds=seconds
            ).total_seconds()
    raise MisconfigurationException(
        f"Trainer(max_time={value!r}) must be 'DD:HH:MM:SS', a timedelta, or a dict like {{'hours': 1}}"
    )


def set_determinism(deterministic: bool | str | None, benchmark: bool | None) -> None:
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=deterministic == "warn")
        torch.backends.cudnn.benchmark = False
    elif benchmark is not None:
        torch.backends.cudnn.benchmark = benchmark
