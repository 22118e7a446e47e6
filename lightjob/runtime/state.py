"""A checkpoint is a plain dict: what goes into one, and how a run is restored from one.

Lightning's keys (epoch, global_step, state_dict, optimizer_states, lr_schedulers,
callbacks, loops, hyper_parameters, MixedPrecision) plus what exact resume needs: the loop
position under loops.fit_loop (see resume.py) and every rank's RNG states. Writing the
dict's bytes is checkpoint.py's job.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from lightjob.runtime import checkpoint as ckpt_io
from lightjob.runtime.errors import MisconfigurationException

if TYPE_CHECKING:
    from lightjob.runtime.callbacks import Callback, ModelCheckpoint
    from lightjob.runtime.module import LightningDataModule, LightningModule
    from lightjob.runtime.optim import SchedulerConfig
    from lightjob.runtime.precision import Precision
    from lightjob.runtime.resume import Progress

log = logging.getLogger("lightjob")

# Written into checkpoints so PyTorch Lightning can load them too (its loader reads this key).
PL_COMPAT_VERSION = "2.5.0"


@dataclass(slots=True)
class TrainingState:
    """Everything a checkpoint saves and restores besides the loop position."""

    trainer: Any  # only handed to the callbacks' checkpoint hooks
    model: LightningModule
    datamodule: LightningDataModule | None
    callbacks: list[Callback]
    optimizers: list[torch.optim.Optimizer]
    schedulers: list[SchedulerConfig]
    precision: Precision  # the GradScaler's state, with fp16


def build_checkpoint(
    parts: TrainingState,
    progress: Progress,
    loops: dict[str, Any],
    rng_states: list[Any],
    weights_only: bool = False,
) -> dict[str, Any]:
    """`loops` and `rng_states`: from resume.gather_loop_state."""
    model, datamodule = parts.model, parts.datamodule
    checkpoint: dict[str, Any] = {
        "epoch": progress.epoch,
        "global_step": progress.global_step,
        "pytorch-lightning_version": PL_COMPAT_VERSION,
        "state_dict": model.state_dict(),
        "loops": loops,
        "rng_states": rng_states,
    }
    if model.hparams_initial:
        checkpoint["hparams_name"] = "kwargs"
        checkpoint["hyper_parameters"] = dict(model.hparams_initial)
    if datamodule is not None and datamodule.hparams_initial:
        checkpoint["datamodule_hyper_parameters"] = dict(datamodule.hparams_initial)
    if not weights_only:
        checkpoint["callbacks"] = {c.state_key: c.state_dict() for c in parts.callbacks}
        checkpoint["optimizer_states"] = [opt.state_dict() for opt in parts.optimizers]
        checkpoint["lr_schedulers"] = [c.scheduler.state_dict() for c in parts.schedulers]
        if parts.precision.scaler is not None:
            checkpoint["MixedPrecision"] = parts.precision.state_dict()
        if datamodule is not None:
            checkpoint[type(datamodule).__qualname__] = datamodule.state_dict()
        for callback in parts.callbacks:
            callback.on_save_checkpoint(parts.trainer, model, checkpoint)
    model.on_save_checkpoint(checkpoint)
    return checkpoint


def restore(parts: TrainingState, checkpoint: dict[str, Any]) -> None:
    """Weights, callbacks, optimizers, schedulers, the gradient scaler and the datamodule."""
    model, datamodule = parts.model, parts.datamodule
    model.on_load_checkpoint(checkpoint)
    model.load_state_dict(checkpoint["state_dict"])
    for callback in parts.callbacks:
        callback.on_load_checkpoint(parts.trainer, model, checkpoint)
        state = checkpoint.get("callbacks", {}).get(callback.state_key)
        if state is not None:
            callback.load_state_dict(state)
    for opt, state in zip(parts.optimizers, checkpoint.get("optimizer_states", []), strict=False):
        opt.load_state_dict(state)
    for config, state in zip(parts.schedulers, checkpoint.get("lr_schedulers", []), strict=False):
        config.scheduler.load_state_dict(state)
    parts.precision.load_state_dict(checkpoint.get("MixedPrecision", {}))
    if datamodule is not None and type(datamodule).__qualname__ in checkpoint:
        datamodule.load_state_dict(checkpoint[type(datamodule).__qualname__])


def find_for_fit(
    ckpt_path: str | None,
    *,
    store: ckpt_io.CheckpointStore | None,
    strategy: Any,
    checkpoint_callbacks: list[ModelCheckpoint],
) -> tuple[dict[str, Any] | None, str | None]:
    """The checkpoint a fit resumes from, and its path; (None, None) for a fresh start.

    With a checkpoint store, ckpt_path=None or "last" means the store's pointer, on any
    filesystem; rank 0 picks it (falling back past a bad one) and tells the others.
    """
    device = strategy.root_device
    if store is not None and ckpt_path in (None, "last"):
        found = store.load_latest(device) if strategy.is_global_zero else None
        path = strategy.broadcast(found[1] if found else None)
        checkpoint = found[0] if found else None
        if path is not None and checkpoint is None:
            checkpoint = ckpt_io.load(path, map_location=device)
        store.resumed_from = path
    else:
        path = resolve_ckpt_path(ckpt_path, checkpoint_callbacks)
        checkpoint = None if path is None else ckpt_io.load(path, map_location=device)
    if checkpoint is not None and strategy.is_global_zero:
        log.info("lightjob: resuming from %s (step %s)", path, checkpoint.get("global_step"))
    return checkpoint, path


def resolve_ckpt_path(
    ckpt_path: str | None, checkpoint_callbacks: list[ModelCheckpoint]
) -> str | None:
    """A path, or what "best" and "last" name: the ModelCheckpoint callbacks' files."""
    if ckpt_path in (None, ""):
        return None
    if ckpt_path in ("best", "last"):
        attribute = "best_model_path" if ckpt_path == "best" else "last_model_path"
        found = next(
            (getattr(c, attribute) for c in checkpoint_callbacks if getattr(c, attribute)), None
        )
        if found is None and ckpt_path == "last":
            for callback in checkpoint_callbacks:
                candidate = os.path.join(str(callback.dirpath), "last.ckpt")
                if os.path.exists(candidate):
                    found = candidate
        if found is None:
            if ckpt_path == "last":
                return None  # nothing saved yet: start fresh
            raise MisconfigurationException(
                'ckpt_path="best" needs a ModelCheckpoint that has saved a checkpoint'
            )
        return found
    return os.fspath(ckpt_path)


def restore_weights(model: LightningModule, path: str | None, map_location: Any) -> None:
    """For validate, test and predict: only the module's weights."""
    if path is not None:
        checkpoint = ckpt_io.load(path, map_location=map_location)
        model.on_load_checkpoint(checkpoint)
        model.load_state_dict(checkpoint["state_dict"])
