"""The Trainer: Lightning's flags, a loop you can read, and no per-step work it can avoid.

`fit()` reads top to bottom: set up, restore, then epochs of batches, validating and
checkpointing as configured, then tear down. The batch loop is in `_fit_loop`; one
optimization step is in `_training_step`. Helpers get the few values they need.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from lightjob.runtime import checkpoint as ckpt_io
from lightjob.runtime import data, optim, telemetry
from lightjob.runtime.callbacks import (
    Callback,
    EarlyStopping,
    ModelCheckpoint,
    ModelSummary,
    TQDMProgressBar,
)
from lightjob.runtime.distributed import (
    DDPStrategy,
    SingleDeviceStrategy,
    detect_cluster,
    rank_zero_only,
)
from lightjob.runtime.durable import PREEMPTED_EXIT_CODE, Agreement, Durability, PreemptionSignal
from lightjob.runtime.errors import MisconfigurationException
from lightjob.runtime.loggers import CSVLogger, Logger
from lightjob.runtime.module import LightningDataModule, LightningModule, LightningOptimizer
from lightjob.runtime.precision import Precision, parse_precision
from lightjob.runtime.results import Results, to_float
from lightjob.runtime.seed import capture_rng_states, restore_rng_states, worker_init_fn
from lightjob.runtime.telemetry import Telemetry

log = logging.getLogger("lightjob")

# Written into checkpoints so PyTorch Lightning can load them too (its loader reads this key).
PL_COMPAT_VERSION = "2.5.0"


@dataclass(slots=True)
class _Limits:
    """When loops stop: epochs, steps, time and batches per stage."""

    max_epochs: int
    min_epochs: int
    max_steps: int
    min_steps: int
    max_time: float | None
    train_batches: int | float | None
    val_batches: int | float | None
    test_batches: int | float | None
    predict_batches: int | float | None
    fast_dev_run: int
    overfit_batches: int | float


@dataclass(slots=True)
class _ValSchedule:
    interval: int | float  # a fraction of the epoch, or every N training batches
    every_n_epochs: int | None
    sanity_steps: int


@dataclass(slots=True)
class _Progress:
    """Where the fit loop is; what a checkpoint stores under "loops" for exact resume."""

    epoch: int = 0
    global_step: int = 0
    batches_done: int = 0  # batches finished in the current epoch
    # Where this epoch (re)started: (batch index, samples of the epoch's order done by all
    # ranks). The sample position is what lets a resumed run change its world size.
    resumed_at: tuple[int, int] = (0, 0)
    epoch_start_rng: Any = None
    val_pending: bool = False  # a validation was due after the batch the checkpoint follows
    same_world: bool = True  # False when restored from a checkpoint of another world size

    def global_samples(self, samples_per_batch: int) -> int:
        first_batch, first_samples = self.resumed_at
        return first_samples + (self.batches_done - first_batch) * samples_per_batch


class _State:
    def __init__(self) -> None:
        self.fn: str | None = None  # "fit", "validate", "test", "predict"
        self.stage: str | None = None  # "train", "sanity_check", "validate", "test", "predict"
        self.status = "initializing"


class Trainer:
    """Runs a LightningModule's steps: one process, or one per device with DDP."""

    def __init__(
        self,
        *,
        accelerator: str = "auto",
        strategy: str | DDPStrategy = "auto",
        devices: int | str | list[int] = "auto",
        num_nodes: int | None = None,
        precision: int | str | None = None,
        logger: bool | Logger | Iterable[Logger] | None = None,
        callbacks: Callback | list[Callback] | None = None,
        fast_dev_run: bool | int = False,
        max_epochs: int | None = None,
        min_epochs: int | None = None,
        max_steps: int = -1,
        min_steps: int | None = None,
        max_time: str | dt.timedelta | dict[str, int] | None = None,
        limit_train_batches: int | float | None = None,
        limit_val_batches: int | float | None = None,
        limit_test_batches: int | float | None = None,
        limit_predict_batches: int | float | None = None,
        overfit_batches: int | float = 0.0,
        val_check_interval: int | float | None = None,
        check_val_every_n_epoch: int | None = 1,
        num_sanity_val_steps: int | None = None,
        log_every_n_steps: int | None = None,
        enable_checkpointing: bool | None = None,
        enable_progress_bar: bool | None = None,
        enable_model_summary: bool | None = None,
        accumulate_grad_batches: int = 1,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
        deterministic: bool | str | None = None,
        benchmark: bool | None = None,
        inference_mode: bool = True,
        use_distributed_sampler: bool = True,
        detect_anomaly: bool = False,
        default_root_dir: str | os.PathLike[str] | None = None,
        barebones: bool = False,
        checkpoint_uri: str | None = None,
        checkpoint_every_n_steps: int | None = None,
        checkpoint_every_n_minutes: float | None = None,
        checkpoint_keep: int | None = None,
        background_checkpointing: bool = True,
        enable_metrics: bool = True,
        **unsupported: Any,
    ) -> None:
        for name in ("profiler", "plugins", "sync_batchnorm", "reload_dataloaders_every_n_epochs"):
            if unsupported.get(name) in (None, False, 0):
                unsupported.pop(name, None)
        if unsupported:
            raise MisconfigurationException(
                f"Trainer does not support {', '.join(sorted(unsupported))} (lightjob implements "
                "the flags listed in docs/runtime.md)"
            )
        self.default_root_dir = os.fspath(default_root_dir or os.getcwd())
        self._accelerator, self._device_ids = _parse_devices(accelerator, devices)
        self.precision = parse_precision(precision if precision is not None else "32-true")
        self.precision_plugin = Precision(self.precision, self._accelerator)
        self.strategy = self._build_strategy(strategy, num_nodes)
        self.strategy.use_distributed_sampler = use_distributed_sampler

        dev_run = int(fast_dev_run)
        if dev_run < 0:
            raise MisconfigurationException(f"Trainer(fast_dev_run={fast_dev_run}) must be >= 0")
        self.fast_dev_run: int | bool = fast_dev_run if dev_run else False
        if dev_run:
            max_epochs, max_steps, val_check_interval = 1, dev_run, 1.0
            limit_train_batches = limit_val_batches = dev_run
            limit_test_batches = limit_predict_batches = dev_run
            num_sanity_val_steps, logger, enable_checkpointing = 0, False, False
        if overfit_batches:
            limit_train_batches = limit_val_batches = overfit_batches
        if max_epochs is None:
            max_epochs = 1000 if max_steps == -1 and max_time is None else -1
        self._limits = _Limits(
            max_epochs=max_epochs,
            min_epochs=min_epochs or 0,
            max_steps=max_steps,
            min_steps=min_steps or 0,
            max_time=_parse_max_time(max_time),
            train_batches=limit_train_batches,
            val_batches=limit_val_batches,
            test_batches=limit_test_batches,
            predict_batches=limit_predict_batches,
            fast_dev_run=dev_run,
            overfit_batches=overfit_batches,
        )
        self._val = _ValSchedule(
            interval=1.0 if val_check_interval is None else val_check_interval,
            every_n_epochs=check_val_every_n_epoch,
            sanity_steps=2 if num_sanity_val_steps is None else num_sanity_val_steps,
        )
        if accumulate_grad_batches < 1:
            raise MisconfigurationException(
                f"Trainer(accumulate_grad_batches={accumulate_grad_batches}) must be >= 1"
            )
        if gradient_clip_algorithm not in (None, "norm", "value"):
            raise MisconfigurationException(
                f"Trainer(gradient_clip_algorithm={gradient_clip_algorithm!r}): use 'norm' or 'value'"
            )
        self.accumulate_grad_batches = accumulate_grad_batches
        self.gradient_clip_val = gradient_clip_val
        self.gradient_clip_algorithm = gradient_clip_algorithm or "norm"
        self.log_every_n_steps = 50 if log_every_n_steps is None else log_every_n_steps
        self._inference_mode = inference_mode
        self._detect_anomaly = detect_anomaly
        _set_determinism(deterministic, benchmark)

        self.loggers = self._build_loggers(logger, barebones)
        self.callbacks = self._build_callbacks(
            callbacks,
            checkpointing=not barebones and enable_checkpointing is not False,
            progress_bar=not barebones and enable_progress_bar is not False,
            summary=not barebones and enable_model_summary is not False,
        )
        self._durable_config = _durable_config(
            checkpoint_uri,
            checkpoint_every_n_steps,
            checkpoint_every_n_minutes,
            checkpoint_keep,
            background_checkpointing,
            disabled=bool(dev_run),
        )
        self._durable: Durability | None = None
        # Prometheus metrics on LIGHTJOB_METRICS_PORT + local rank (set by the operator).
        self._enable_metrics = enable_metrics and not dev_run
        self._telemetry: Telemetry | None = None
        self._last_checkpoint: ckpt_io.CheckpointRef | None = None
        self._agreement: Agreement | None = None
        self.state = _State()
        self.progress = _Progress()
        self.should_stop = False
        self.ckpt_path: str | None = None
        self.lightning_module: LightningModule | None = None
        self.datamodule: LightningDataModule | None = None
        self.optimizers: list[torch.optim.Optimizer] = []
        self.lr_scheduler_configs: list[optim.SchedulerConfig] = []
        self.num_training_batches: float = math.inf
        self.num_val_batches: list[float] = []
        self.num_sanity_val_batches: list[float] = []
        self.num_test_batches: list[float] = []
        self.num_predict_batches: list[float] = []
        self.train_dataloader: Any = None
        self.val_dataloaders: Any = None
        self.test_dataloaders: Any = None
        self.predict_dataloaders: Any = None
        self._callback_metrics: dict[str, torch.Tensor] = {}
        self._logged_metrics: dict[str, float] = {}
        self._train_results = Results()
        self._eval_results = Results()
        self._log_target: tuple[Results, bool, bool, str] | None = None
        self._hooks: dict[str, tuple[list[Callable[..., Any]], list[Callable[..., Any]]]] = {}
        self._wrapped: torch.nn.Module | None = None
        self._pl_optimizers: dict[int, LightningOptimizer] = {}
        self._has_validation = False
        self._is_last_validation_of_epoch = False
        self._batches_seen = 0  # training batches run by this Trainer, for the logging cadence
        self._started: float | None = None

    # -- the four entry points ----------------------------------------------------------------

    def fit(
        self,
        model: LightningModule,
        train_dataloaders: Any = None,
        val_dataloaders: Any = None,
        datamodule: LightningDataModule | None = None,
        ckpt_path: str | None = None,
    ) -> None:
        if isinstance(train_dataloaders, LightningDataModule):
            datamodule, train_dataloaders = train_dataloaders, None
        with self._stage("fit", model, datamodule):
            self.train_dataloader = self._loader(model, datamodule, "train", train_dataloaders)
            self.val_dataloaders = self._eval_loaders(model, datamodule, "val", val_dataloaders)
            self.optimizers, self.lr_scheduler_configs = optim.configure(model)
            self._wrapped = self.strategy.wrap(model)
            self._telemetry = self._start_telemetry()
            self._durable = self._start_durability()
            self._restore(ckpt_path, model)
            self._call("on_fit_start")
            self._sanity_check(model)
            self._call("on_train_start")
            self._fit_loop(model)
            if self._durable is not None:
                self._durable.finish(
                    self.progress.global_step, self.progress.epoch, self._dump_checkpoint
                )
            self._call("on_train_end")
            self._call("on_fit_end")

    def validate(
        self,
        model: LightningModule | None = None,
        dataloaders: Any = None,
        ckpt_path: str | None = None,
        verbose: bool = True,
        datamodule: LightningDataModule | None = None,
    ) -> list[dict[str, float]]:
        return self._evaluate_entry(
            "validate", "val", model, dataloaders, ckpt_path, verbose, datamodule
        )

    def test(
        self,
        model: LightningModule | None = None,
        dataloaders: Any = None,
        ckpt_path: str | None = None,
        verbose: bool = True,
        datamodule: LightningDataModule | None = None,
    ) -> list[dict[str, float]]:
        return self._evaluate_entry(
            "test", "test", model, dataloaders, ckpt_path, verbose, datamodule
        )

    def predict(
        self,
        model: LightningModule | None = None,
        dataloaders: Any = None,
        datamodule: LightningDataModule | None = None,
        return_predictions: bool | None = None,
        ckpt_path: str | None = None,
    ) -> list[Any] | None:
        model = self._model_for(model, "predict")
        if isinstance(dataloaders, LightningDataModule):
            datamodule, dataloaders = dataloaders, None
        with self._stage("predict", model, datamodule):
            loaders = self._eval_loaders(model, datamodule, "predict", dataloaders)
            self._restore_weights(ckpt_path, model)
            predictions = self._predict_loop(model, loaders)
        return predictions if return_predictions is not False else None

    # -- the fit loop -----------------------------------------------------------------------------

    def _fit_loop(self, model: LightningModule) -> None:
        progress = self.progress
        loader = self.train_dataloader
        self.num_training_batches = data.limit_batches(
            data.num_batches(loader), self._limits.train_batches, "limit_train_batches"
        )
        val_every = self._val_every_n_batches()
        model.train()
        while not self._fit_done():
            self._train_results.reset()
            self._set_sampler_epoch(loader, progress.epoch)
            self._log_target = (self._train_results, True, False, "")
            self._call("on_train_epoch_start")
            batches, first_idx = self._epoch_batches(loader)
            if progress.val_pending:  # the checkpoint was taken just before a validation
                self._validate_during_fit(model, end_of_epoch=False)
            validated_last = stopped_early = False
            for batch_idx, batch in enumerate(batches, start=first_idx):
                if batch_idx >= self.num_training_batches:
                    break
                if self._steps_done():
                    stopped_early = True
                    break
                batch = self._to_device(model, batch, 0)
                self._train_results.new_batch(batch)
                self._log_target = (self._train_results, True, False, "")
                if self._call("on_train_batch_start", batch, batch_idx) == -1:
                    break
                is_last = batch_idx + 1 >= self.num_training_batches
                window_end = is_last or (batch_idx + 1) % self.accumulate_grad_batches == 0
                outputs = self._training_step(model, batch, batch_idx, window_end)
                progress.batches_done = batch_idx + 1
                self._batches_seen += 1
                progress.val_pending = self._val_due(batch_idx, val_every) and not is_last
                self._call("on_train_batch_end", outputs, batch, batch_idx)
                if self._should_log_this_step(offset=0):
                    self._log_step_metrics()
                    self._report_progress()
                validated_last = progress.val_pending
                if progress.val_pending:
                    self._validate_during_fit(model, end_of_epoch=False)
                    progress.val_pending = False
                stop = self._time_is_up() or (
                    self.should_stop and self._min_reached(progress.epoch)
                )
                if not is_last:  # the last batch's boundary comes after the epoch's end
                    self._step_boundary(window_end)
                if stop:
                    self.should_stop, stopped_early = True, not is_last
                    break
            if self._end_of_epoch_validation(val_every, validated_last):
                self._validate_during_fit(model, end_of_epoch=True)
            self._end_train_epoch(model, complete=not stopped_early)
            if stopped_early:
                # The epoch is not over: keep its position, so a resumed run finishes it.
                break
            progress.epoch += 1
            progress.batches_done, progress.resumed_at = 0, (0, 0)
            progress.epoch_start_rng = None
            self._step_boundary(window_end=True)

    def _step_boundary(self, window_end: bool) -> None:
        """Between two batches, with everything for the last one done: the one place a
        durable checkpoint is taken, so a resumed run continues exactly from here."""
        durable = self._durable
        if durable is not None and durable.at_step_boundary(
            self.progress.global_step, self.progress.epoch, window_end, self._dump_checkpoint
        ):
            raise SystemExit(PREEMPTED_EXIT_CODE)

    def _end_of_epoch_validation(self, val_every: int, validated_last: bool) -> bool:
        """Validate at the end of the epoch: after its last batch, when the interval is a
        fraction or divides the epoch, and also when max_steps cut the epoch short."""
        if not self._has_validation or not self._epoch_validates() or validated_last:
            return False
        done = self.progress.batches_done
        if done >= self.num_training_batches:
            return isinstance(self._val.interval, float) or done % val_every == 0
        return self._steps_done()

    def _end_train_epoch(self, model: LightningModule, complete: bool) -> None:
        """Epoch-end hooks and metrics; epoch-interval schedulers step only when the epoch
        ran to its end, since a stopped epoch continues when the run resumes."""
        self._log_target = (self._train_results, False, True, "")
        self._call("on_train_epoch_end")
        epoch_metrics = self._train_results.epoch_values(self.strategy.reduce)
        self._publish(epoch_metrics, results=self._train_results)
        if model.automatic_optimization and complete:
            optim.step_schedulers(
                self.lr_scheduler_configs,
                "epoch",
                self.progress.epoch + 1,
                model,
                lambda: self.callback_metrics,
            )

    def _training_step(
        self, model: LightningModule, batch: Any, batch_idx: int, window_end: bool
    ) -> Any:
        if not model.automatic_optimization:
            with self.precision_plugin.forward_context():
                out = self._step_fn(model, "training_step")(batch, batch_idx)
            return out
        optimizer = self.optimizers[0]
        accumulate = self.accumulate_grad_batches
        if batch_idx % accumulate == 0:
            self._call("on_before_zero_grad", optimizer)
            model.optimizer_zero_grad(self.progress.epoch, batch_idx, optimizer)
        result: dict[str, Any] = {}

        def closure() -> torch.Tensor | None:
            with self.precision_plugin.forward_context():
                out = self._step_fn(model, "training_step")(batch, batch_idx)
            loss = _loss_of(out)
            result["out"] = out
            if loss is None:
                return None
            scaled = loss / accumulate if accumulate > 1 else loss
            self._call("on_before_backward", scaled)
            model.backward(scaled)
            self._call("on_after_backward")
            return loss

        if not window_end:
            with self.strategy.no_sync(self._wrapped):
                closure()
        else:
            wrapper = self._pl_optimizer(optimizer)
            model.optimizer_step(self.progress.epoch, batch_idx, wrapper, closure)
            if self.lr_scheduler_configs:
                optim.step_schedulers(
                    self.lr_scheduler_configs,
                    "step",
                    self.progress.global_step,
                    model,
                    lambda: self.callback_metrics,
                )
        return _outputs_for_hooks(result.get("out"))

    def _optimizer_step(self, optimizer: torch.optim.Optimizer, closure: Any, **kwargs: Any) -> Any:
        """Every optimizer step goes through here: automatic, or `opt.step()` in manual mode."""
        model = self.lightning_module
        assert model is not None

        def before_step() -> None:
            self._call("on_before_optimizer_step", optimizer)
            if model.automatic_optimization:
                model.configure_gradient_clipping(
                    optimizer, self.gradient_clip_val, self.gradient_clip_algorithm
                )

        out = self.precision_plugin.optimizer_step(
            optimizer, closure if closure is not None else _no_closure, before_step, **kwargs
        )
        self.progress.global_step += 1
        return out

    def _backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        self._call("on_before_backward", loss)
        assert self.lightning_module is not None
        self.lightning_module.backward(loss, *args, **kwargs)
        self._call("on_after_backward")

    # -- validation, test, predict ------------------------------------------------------------

    def _validate_during_fit(self, model: LightningModule, end_of_epoch: bool) -> None:
        self._is_last_validation_of_epoch = end_of_epoch
        self.state.stage = "validate"
        self._run_eval(model, "validate", self.val_dataloaders, self._limits.val_batches, log=True)
        self.state.stage = "train"
        self._is_last_validation_of_epoch = False
        model.train()

    def _sanity_check(self, model: LightningModule) -> None:
        steps = self._val.sanity_steps
        if not self._has_validation or steps == 0 or self.progress.global_step > 0:
            self.num_sanity_val_batches = []
            return
        self.state.stage = "sanity_check"
        self._call("on_sanity_check_start")
        limit = None if steps == -1 else steps
        before = dict(self._callback_metrics)
        self._run_eval(model, "validate", self.val_dataloaders, limit, log=False)
        self._call("on_sanity_check_end")
        self._callback_metrics = before  # sanity values are not real results
        self.state.stage = "train"
        model.train()

    def _evaluate_entry(
        self,
        fn: str,
        kind: str,
        model: LightningModule | None,
        dataloaders: Any,
        ckpt_path: str | None,
        verbose: bool,
        datamodule: LightningDataModule | None,
    ) -> list[dict[str, float]]:
        model = self._model_for(model, fn)
        if isinstance(dataloaders, LightningDataModule):
            datamodule, dataloaders = dataloaders, None
        with self._stage(fn, model, datamodule):
            loaders = self._eval_loaders(model, datamodule, kind, dataloaders)
            if kind == "val":
                self.val_dataloaders = loaders
            else:
                self.test_dataloaders = loaders
            self._restore_weights(ckpt_path, model)
            limit = self._limits.val_batches if kind == "val" else self._limits.test_batches
            results = self._run_eval(model, fn, loaders, limit, log=True)
        if verbose and self.is_global_zero:
            _print_results(fn, results)
        return results

    def _run_eval(
        self, model: LightningModule, fn: str, loaders: list[Any], limit: Any, log: bool
    ) -> list[dict[str, float]]:
        """One pass over the validation or test loaders; returns one dict per loader."""
        step_name = "validation_step" if fn == "validate" else "test_step"
        prefix = "validation" if fn == "validate" else "test"
        counts = [
            data.limit_batches(
                data.num_batches(d), limit, f"limit_{'val' if fn == 'validate' else 'test'}_batches"
            )
            for d in loaders
        ]
        if self.state.stage == "sanity_check":
            self.num_sanity_val_batches = counts
        elif fn == "validate":
            self.num_val_batches = counts
        else:
            self.num_test_batches = counts
        results, was_training = self._eval_results, model.training
        results.reset()
        model.eval()
        self._call(f"on_{prefix}_start")
        self._log_target = (results, False, True, "")
        self._call(f"on_{prefix}_epoch_start")
        step = getattr(model, step_name)
        multi = len(loaders) > 1
        with self._no_grad():
            for dl_idx, loader in enumerate(loaders):
                suffix = f"/dataloader_idx_{dl_idx}" if multi else ""
                for batch_idx, batch in enumerate(loader):
                    if batch_idx >= counts[dl_idx]:
                        break
                    batch = self._to_device(model, batch, dl_idx)
                    results.new_batch(batch)
                    self._log_target = (results, False, True, suffix)
                    extra = (dl_idx,) if multi else ()
                    self._call(f"on_{prefix}_batch_start", batch, batch_idx, *extra)
                    with self.precision_plugin.forward_context():
                        out = step(batch, batch_idx, *extra)
                    self._call(f"on_{prefix}_batch_end", out, batch, batch_idx, *extra)
        self._log_target = (results, False, True, "")
        self._call(f"on_{prefix}_epoch_end")
        metrics = results.epoch_values(self.strategy.reduce)
        self._publish(metrics, results=results, log=log)
        self._call(f"on_{prefix}_end")
        if was_training:
            model.train()
        per_loader: list[dict[str, float]] = [{} for _ in loaders] or [{}]
        for name, value in metrics.items():
            targets = (
                [int(name.rsplit("_", 1)[1])]
                if "/dataloader_idx_" in name
                else range(len(per_loader))
            )
            for i in targets:
                per_loader[i][name] = to_float(value)
        return per_loader

    def _predict_loop(self, model: LightningModule, loaders: list[Any]) -> list[Any]:
        counts = [
            data.limit_batches(
                data.num_batches(d), self._limits.predict_batches, "limit_predict_batches"
            )
            for d in loaders
        ]
        self.num_predict_batches = counts
        model.eval()
        self._call("on_predict_start")
        self._call("on_predict_epoch_start")
        multi = len(loaders) > 1
        everything: list[list[Any]] = []
        with self._no_grad():
            for dl_idx, loader in enumerate(loaders):
                outputs: list[Any] = []
                for batch_idx, batch in enumerate(loader):
                    if batch_idx >= counts[dl_idx]:
                        break
                    batch = self._to_device(model, batch, dl_idx)
                    extra = (dl_idx,) if multi else ()
                    self._call("on_predict_batch_start", batch, batch_idx, *extra)
                    with self.precision_plugin.forward_context():
                        out = model.predict_step(batch, batch_idx, *extra)
                    self._call("on_predict_batch_end", out, batch, batch_idx, *extra)
                    outputs.append(out)
                everything.append(outputs)
        self._call("on_predict_epoch_end")
        self._call("on_predict_end")
        return everything if multi else everything[0]

    # -- set up and tear down -------------------------------------------------------------------

    @contextmanager
    def _stage(
        self, fn: str, model: LightningModule, datamodule: LightningDataModule | None
    ) -> Iterator[None]:
        """Everything around one entry point: processes, hooks, devices, errors, teardown."""
        self._enter(fn, model, datamodule)
        error: BaseException | None = None
        try:
            yield
        except BaseException as err:
            error = err
            raise
        finally:
            self._exit(fn, model, error)

    def _enter(
        self, fn: str, model: LightningModule, datamodule: LightningDataModule | None
    ) -> None:
        if not isinstance(model, LightningModule):
            raise MisconfigurationException(
                f"Trainer.{fn} needs a LightningModule; got {type(model).__name__}"
            )
        if fn == "fit" and not _overrides(model, "training_step"):
            raise MisconfigurationException(
                f"{type(model).__name__} has no training_step(self, batch, batch_idx); "
                "define it to use Trainer.fit"
            )
        self.state.fn, self.state.status = fn, "running"
        self.state.stage = {"fit": "train", "validate": "validate"}.get(fn, fn)
        self.should_stop = False
        self._started = time.monotonic()
        self._setup_processes()
        self._exits = ExitStack()
        if self._detect_anomaly:
            self._exits.enter_context(torch.autograd.detect_anomaly())
        self.lightning_module, self.datamodule = model, datamodule
        model.trainer = self
        if datamodule is not None:
            datamodule.trainer = self
        extra = model.configure_callbacks() if fn == "fit" else []
        if extra:
            self._merge_callbacks(extra if isinstance(extra, list) else [extra])
        self._hooks.clear()
        self.precision_plugin.convert_module(model)
        model.to(self.strategy.root_device)
        model._device_cache = self.strategy.root_device
        if datamodule is not None:
            if self.local_rank == 0:
                datamodule.prepare_data()
            self.strategy.barrier("prepare_data")
            datamodule.setup(stage=fn)
        if self.local_rank == 0:
            model.prepare_data()
        self.strategy.barrier("prepare_data")
        for callback in self.callbacks:
            callback.setup(self, model, fn)
        model.setup(fn)
        if fn == "fit" and self.is_global_zero:
            for logger in self.loggers:
                hparams = {
                    **(datamodule.hparams_initial if datamodule else {}),
                    **model.hparams_initial,
                }
                if hparams and getattr(model, "_log_hyperparams", True):
                    logger.log_hyperparams(hparams)

    def _exit(self, fn: str, model: LightningModule, error: BaseException | None) -> None:
        self._exits.close()
        if self._durable is not None:
            self._durable.close()
            self._last_checkpoint = self._durable.last
            self._durable = None
        if error is not None:
            self.state.status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
            for callback in self.callbacks:
                callback.on_exception(self, model, error)
            preempted = isinstance(error, SystemExit) and error.code == PREEMPTED_EXIT_CODE
            if preempted:
                self.state.status = "preempted"
            if self.strategy.launcher is not None:
                # The others would wait for this rank; preempted ones are exiting themselves.
                self.strategy.launcher.kill(grace=30.0 if preempted else 2.0)
        else:
            self.state.status = "finished"
        for callback in self.callbacks:
            callback.teardown(self, model, fn)
        model.teardown(fn)
        if self.datamodule is not None:
            self.datamodule.teardown(fn)
        if self.is_global_zero:
            for logger in self.loggers:
                logger.finalize("success" if error is None else "failed")
            if error is None and fn == "fit":
                self._write_termination_message()
        self.state.stage = None

    def _write_termination_message(self) -> None:
        """Under the operator, leave the final step and metrics where Kubernetes reads a
        container's termination message (terminationMessagePath), for the job's status."""
        path = os.environ.get("LIGHTJOB_TERMINATION_LOG")
        if path is None:
            default = "/dev/termination-log"
            if "LIGHTJOB_JOB_NAME" not in os.environ or not os.access(default, os.W_OK):
                return
            path = default
        metrics = {k: to_float(v) for k, v in self.callback_metrics.items()}
        message = {"step": self.global_step, "epoch": self.current_epoch, "metrics": metrics}
        last = self.last_checkpoint
        if last is not None:
            message["checkpoint"] = {"uri": last.uri, "step": last.step, "time": last.time}
        try:
            with open(path, "w") as out:
                json.dump(message, out)
        except OSError as err:
            log.warning("lightjob: could not write the termination message to %s: %s", path, err)

    def _start_durability(self) -> Durability | None:
        """The run's checkpoint store, checked writable before any training, and the
        SIGTERM handler; None when no checkpoint_uri is configured."""
        config = self._durable_config
        if config is None:
            return None
        store = ckpt_io.CheckpointStore(config.uri, keep=config.keep)
        problem = None
        if self.is_global_zero:
            try:
                store.check_writable()
            except OSError as err:
                problem = str(err)
        problem = self.strategy.broadcast(problem)
        if problem is not None:
            raise MisconfigurationException(f"Trainer(checkpoint_uri={config.uri!r}): {problem}")
        if self._agreement is None or self._agreement.world_size != self.world_size:
            self._agreement = Agreement(self.world_size)
        launcher = self.strategy.launcher
        preemption = PreemptionSignal(forward=launcher.forward_signal if launcher else None)
        preemption.install()
        return Durability(
            store,
            telemetry=self._telemetry,
            every_n_steps=config.every_n_steps,
            every_n_minutes=config.every_n_minutes,
            background=config.background,
            preemption=preemption,
            agreement=self._agreement,
            is_writer=self.is_global_zero,
            barrier=lambda: self.strategy.barrier("checkpoint"),
        )

    def _start_telemetry(self) -> Telemetry | None:
        if not self._enable_metrics:
            return None
        metrics = Telemetry(self.strategy.root_device)
        return metrics if telemetry.serve(metrics, self.local_rank) is not None else None

    def _report_progress(self) -> None:
        """At the logging cadence only: a few assignments, no device synchronisation."""
        if self._telemetry is not None:
            self._telemetry.progress(
                self.progress.global_step,
                self.progress.epoch,
                self._batches_seen * self._samples_per_batch(),
                self.estimated_stepping_batches,
            )

    @property
    def last_checkpoint(self) -> ckpt_io.CheckpointRef | None:
        """The newest checkpoint this run made durable in its store."""
        return self._durable.last if self._durable is not None else self._last_checkpoint

    def _setup_processes(self) -> None:
        if isinstance(self.strategy, DDPStrategy) and self.strategy.cluster is None:
            cluster = detect_cluster(len(self._device_ids), self._num_nodes, self._num_nodes_set)
            self.strategy.configure(
                cluster, len(self._device_ids), self._accelerator, self._device_ids
            )
        self.strategy.setup_environment()
        rank_zero_only.rank = self.strategy.global_rank  # type: ignore[attr-defined]
        telemetry.context.update(
            rank=self.global_rank, node=self.node_rank, world_size=self.world_size
        )

    def _build_strategy(self, strategy: Any, num_nodes: int | None) -> Any:
        self._num_nodes = num_nodes or 1
        self._num_nodes_set = num_nodes is not None
        devices = len(self._device_ids)
        if isinstance(strategy, DDPStrategy):
            return strategy
        names: dict[str, dict[str, Any]] = {
            "ddp": {},
            "ddp_find_unused_parameters_true": {"find_unused_parameters": True},
        }
        if strategy == "auto":
            multi = devices > 1 or self._num_nodes > 1 or _env_world_size() > devices
            if multi:
                return DDPStrategy()
            device = _device(self._accelerator, self._device_ids[0])
            return SingleDeviceStrategy(device)
        if strategy in names:
            return DDPStrategy(**names[strategy])
        if strategy == "single_device":
            return SingleDeviceStrategy(_device(self._accelerator, self._device_ids[0]))
        raise MisconfigurationException(
            f"Trainer(strategy={strategy!r}) is not supported; use 'auto', 'ddp', "
            "'ddp_find_unused_parameters_true', 'single_device' or a DDPStrategy(...)"
        )

    def _build_loggers(self, logger: Any, barebones: bool) -> list[Logger]:
        if barebones or logger is False:
            return []
        if logger is None or logger is True:
            return [CSVLogger(self.default_root_dir)]
        if isinstance(logger, Logger):
            return [logger]
        return list(logger)

    def _build_callbacks(
        self, callbacks: Any, checkpointing: bool, progress_bar: bool, summary: bool
    ) -> list[Callback]:
        given = [callbacks] if isinstance(callbacks, Callback) else list(callbacks or [])
        if checkpointing and not any(isinstance(c, ModelCheckpoint) for c in given):
            given.append(ModelCheckpoint())
        if not checkpointing and any(isinstance(c, ModelCheckpoint) for c in given):
            if not self.fast_dev_run:
                raise MisconfigurationException(
                    "Trainer(enable_checkpointing=False) conflicts with the ModelCheckpoint in callbacks"
                )
            given = [c for c in given if not isinstance(c, ModelCheckpoint)]
        if progress_bar and not any(isinstance(c, TQDMProgressBar) for c in given):
            given.append(TQDMProgressBar())
        if summary and not any(isinstance(c, ModelSummary) for c in given):
            given.append(ModelSummary())
        return _ordered(given)

    def _merge_callbacks(self, extra: list[Callback]) -> None:
        # A callback from configure_callbacks replaces the Trainer's callback of the same type.
        kinds = {type(c) for c in extra}
        self.callbacks = _ordered([c for c in self.callbacks if type(c) not in kinds] + extra)

    # -- data ----------------------------------------------------------------------------------

    def _loader(self, model: LightningModule, datamodule: Any, kind: str, given: Any) -> Any:
        loader = given
        if loader is None:
            source = (
                datamodule
                if datamodule is not None and _overrides(datamodule, f"{kind}_dataloader")
                else model
            )
            if not _overrides(source, f"{kind}_dataloader"):
                raise MisconfigurationException(
                    f"Trainer.fit needs training data: pass train_dataloaders=..., a datamodule, "
                    f"or define {kind}_dataloader() on the module"
                )
            loader = getattr(source, f"{kind}_dataloader")()
        data.check_iterable(loader, f"the {kind} dataloader")
        if self._limits.overfit_batches:
            loader = data.make_sequential(loader)
        loader = _seed_workers(loader)
        return self.strategy.prepare_loader(loader, train=True)

    def _eval_loaders(
        self, model: LightningModule, datamodule: Any, kind: str, given: Any
    ) -> list[Any]:
        loaders = given
        if loaders is None:
            for source in (datamodule, model):
                if source is not None and _overrides(source, f"{kind}_dataloader"):
                    loaders = getattr(source, f"{kind}_dataloader")()
                    break
        if loaders is None:
            if kind == "val" and self.state.fn == "fit":
                self._has_validation = False
                return []
            raise MisconfigurationException(
                f"Trainer.{self.state.fn} needs {kind} data: pass dataloaders=..., a datamodule, "
                f"or define {kind}_dataloader() on the module"
            )
        if kind == "val" and self.state.fn == "fit" and not _overrides(model, "validation_step"):
            self._has_validation = False
            return []
        step = {"val": "validation_step", "test": "test_step", "predict": "predict_step"}[kind]
        if kind != "predict" and not _overrides(model, step):
            raise MisconfigurationException(
                f"{type(model).__name__} has no {step}(self, batch, batch_idx); define it to "
                f"run Trainer.{self.state.fn}"
            )
        listed = list(loaders) if isinstance(loaders, list | tuple) else [loaders]
        for loader in listed:
            data.check_iterable(loader, f"the {kind} dataloader")
        prepared = [self.strategy.prepare_loader(_seed_workers(d), train=False) for d in listed]
        if kind == "val":
            limit = self._limits.val_batches
            self._has_validation = any(
                data.limit_batches(data.num_batches(d), limit, "limit_val_batches") > 0
                for d in prepared
            )
        return prepared

    def _epoch_batches(self, loader: Any) -> tuple[Iterator[Any], int]:
        """This epoch's batches and the index of the first; after a mid-epoch restore, only
        the batches not yet seen, with every RNG as it was at that point."""
        progress, resume_rng = self.progress, self._resume_rng
        self._resume_rng = None
        if progress.batches_done == 0:
            if resume_rng is not None:
                restore_rng_states(resume_rng)
            progress.epoch_start_rng = capture_rng_states()
            return iter(loader), 0
        # Replay the epoch's start so the sampler draws the same order as before.
        if progress.epoch_start_rng is not None and progress.same_world:
            restore_rng_states(progress.epoch_start_rng)
        restore_rest = (lambda: restore_rng_states(resume_rng)) if resume_rng else (lambda: None)
        samples = progress.resumed_at[1]
        sampler = getattr(loader, "sampler", None)
        if isinstance(sampler, data.ResumableDistributedSampler):
            sampler.set_start(samples)
            first = samples // max(1, (loader.batch_size or 1) * self.world_size)
            progress.batches_done, progress.resumed_at = first, (first, samples)
            iterator = iter(loader)  # draws its worker seed from the epoch's start, as before
            restore_rest()
            return iterator, first
        skip = (
            progress.batches_done
            if progress.same_world
            else samples // (getattr(loader, "batch_size", None) or 1)
        )
        progress.batches_done, progress.resumed_at = skip, (skip, samples)
        if data.can_replace_sampler(loader):
            skipping = data.SkipBatches(loader.batch_sampler, skip, restore_rest)
            return iter(data.rebuild_loader(loader, batch_sampler=skipping)), skip
        # No sampler to skip with (an iterable dataset): read and drop the batches done.
        iterator = iter(loader)
        for _ in range(skip):
            next(iterator, None)
        restore_rest()
        return iterator, skip

    def _set_sampler_epoch(self, loader: Any, epoch: int) -> None:
        for sampler in (
            getattr(loader, "sampler", None),
            getattr(getattr(loader, "batch_sampler", None), "sampler", None),
        ):
            set_epoch = getattr(sampler, "set_epoch", None)
            if set_epoch is not None:
                set_epoch(epoch)

    def _to_device(self, model: LightningModule, batch: Any, dataloader_idx: int) -> Any:
        if self._transfer_hooks is None:
            self._transfer_hooks = any(
                _overrides(model, name)
                for name in (
                    "on_before_batch_transfer",
                    "transfer_batch_to_device",
                    "on_after_batch_transfer",
                )
            )
        if self._transfer_hooks:
            batch = model.on_before_batch_transfer(batch, dataloader_idx)
            batch = model.transfer_batch_to_device(batch, self.strategy.root_device, dataloader_idx)
            batch = model.on_after_batch_transfer(batch, dataloader_idx)
        elif self.strategy.root_device.type != "cpu":
            batch = data.move_to_device(batch, self.strategy.root_device)
        return self.precision_plugin.convert_input(batch)

    _transfer_hooks: bool | None = None

    def _samples_per_batch(self) -> int:
        """Samples one training batch covers across all ranks (the last batch may be short,
        but a checkpoint there marks the epoch done)."""
        return (getattr(self.train_dataloader, "batch_size", None) or 1) * self.world_size

    # -- stopping ------------------------------------------------------------------------------

    def _fit_done(self) -> bool:
        limits, epoch = self._limits, self.progress.epoch
        if self.num_training_batches == 0:
            return True
        if self._steps_done():
            return True
        if limits.max_epochs != -1 and epoch >= limits.max_epochs:
            return True
        if self._time_is_up():
            return True
        return self.should_stop and self._min_reached(epochs_done=epoch)

    def _steps_done(self) -> bool:
        return self._limits.max_steps != -1 and self.progress.global_step >= self._limits.max_steps

    def _min_reached(self, epochs_done: int) -> bool:
        """min_epochs (counting only finished epochs) and min_steps are met."""
        return (
            epochs_done >= self._limits.min_epochs
            and self.progress.global_step >= self._limits.min_steps
        )

    def _time_is_up(self) -> bool:
        limit = self._limits.max_time
        if limit is None or self._started is None:
            return False
        return time.monotonic() - self._started >= limit

    def _val_every_n_batches(self) -> int:
        interval = self._val.interval
        if isinstance(interval, float):
            if not 0.0 < interval <= 1.0:
                raise MisconfigurationException(
                    f"Trainer(val_check_interval={interval}) as a fraction must be in (0, 1]"
                )
            if math.isinf(self.num_training_batches):
                if interval != 1.0:
                    raise MisconfigurationException(
                        "Trainer(val_check_interval) as a fraction needs a training loader with a length; use an int"
                    )
                return sys.maxsize
            return max(1, int(self.num_training_batches * interval))
        if interval > self.num_training_batches:
            raise MisconfigurationException(
                f"Trainer(val_check_interval={interval}) is more than the {int(self.num_training_batches)} "
                "training batches per epoch; lower it"
            )
        return interval

    def _epoch_validates(self) -> bool:
        every = self._val.every_n_epochs
        return every is not None and (self.progress.epoch + 1) % every == 0

    def _val_due(self, batch_idx: int, val_every: int) -> bool:
        return self._has_validation and self._epoch_validates() and (batch_idx + 1) % val_every == 0

    # -- logging ----------------------------------------------------------------------------------

    def _log(
        self,
        name: str,
        value: Any,
        *,
        on_step: bool | None,
        on_epoch: bool | None,
        add_dataloader_idx: bool,
        **options: Any,
    ) -> None:
        if self._log_target is None:
            raise MisconfigurationException(
                f"self.log({name!r}) was called outside of a Trainer hook that can log"
            )
        results, default_step, default_epoch, suffix = self._log_target
        if add_dataloader_idx and suffix:
            name += suffix
        results.log(
            name,
            value,
            on_step=default_step if on_step is None else on_step,
            on_epoch=default_epoch if on_epoch is None else on_epoch,
            **options,
        )

    def _should_log_this_step(self, offset: int = 1) -> bool:
        return (self._batches_seen + offset) % max(
            1, self.log_every_n_steps
        ) == 0 or self.should_stop

    def _log_step_metrics(self) -> None:
        entries = self._train_results.step_values()
        if not entries:
            return
        values: dict[str, float] = {}
        for name, entry in entries.items():
            key = f"{name}_step" if entry.on_epoch else name
            if entry.sync_dist:
                entry.step_value = self.strategy.reduce(torch.as_tensor(entry.step_value), "mean")
            if entry.logger:
                values[key] = to_float(entry.step_value)
        if self._telemetry is not None:
            self._telemetry.scalars(values)
        if values and self.is_global_zero:
            values["epoch"] = float(self.progress.epoch)
            self._logged_metrics.update(values)
            for logger in self.loggers:
                logger.log_metrics(values, step=self.progress.global_step)

    def _publish(
        self, metrics: dict[str, torch.Tensor], *, results: Results, log: bool = True
    ) -> None:
        """Epoch metrics into callback_metrics, and on to the loggers (`name_epoch` when the
        name is also logged per step)."""
        out: dict[str, float] = {}
        for name, value in metrics.items():
            entry = results.entries[name]
            key = f"{name}_epoch" if entry.on_step else name
            self._callback_metrics[name] = value
            self._callback_metrics[key] = value
            if entry.logger:
                out[key] = to_float(value)
        if log and self._telemetry is not None:
            self._telemetry.scalars(out)
        if log and out and self.is_global_zero:
            out["epoch"] = float(self.progress.epoch)
            self._logged_metrics.update(out)
            for logger in self.loggers:
                logger.log_metrics(out, step=self.progress.global_step)
                logger.save()

    @property
    def callback_metrics(self) -> dict[str, torch.Tensor]:
        # Step values are folded in only when someone reads them: no per-step cost.
        for name, entry in self._train_results.step_values().items():
            # A name logged per step and per epoch keeps its epoch value under the plain name.
            key = f"{name}_step" if entry.on_epoch else name
            self._callback_metrics[key] = torch.as_tensor(entry.step_value)
        return self._callback_metrics

    @property
    def logged_metrics(self) -> dict[str, float]:
        return self._logged_metrics

    @property
    def progress_bar_metrics(self) -> dict[str, float]:
        shown: dict[str, float] = {}
        for results in (self._train_results, self._eval_results):
            for name, entry in results.entries.items():
                if entry.prog_bar and name in self.callback_metrics:
                    shown[name] = to_float(self.callback_metrics[name])
        return shown

    # -- hooks -------------------------------------------------------------------------------------

    def _call(self, name: str, *args: Any) -> Any:
        hooks = self._hooks.get(name)
        if hooks is None:
            hooks = self._hooks[name] = self._collect_hooks(name)
        module_hooks, callback_hooks = hooks
        result = None
        for hook in module_hooks:
            result = hook(*args)
        model = self.lightning_module
        for hook in callback_hooks:
            hook(self, model, *args)
        return result

    def _collect_hooks(
        self, name: str
    ) -> tuple[list[Callable[..., Any]], list[Callable[..., Any]]]:
        model = self.lightning_module
        module_hooks = (
            [getattr(model, name)] if model is not None and _overrides(model, name) else []
        )
        callback_hooks = [getattr(c, name) for c in self.callbacks if _overrides(c, name)]
        return module_hooks, callback_hooks

    def _step_fn(self, model: LightningModule, name: str) -> Callable[..., Any]:
        if self._wrapped is not None:
            self._wrapped.module.step_name = name  # type: ignore[union-attr]
            return self._wrapped
        return getattr(model, name)

    def _pl_optimizer(self, optimizer: torch.optim.Optimizer) -> LightningOptimizer:
        wrapper = self._pl_optimizers.get(id(optimizer))
        if wrapper is None:
            wrapper = self._pl_optimizers[id(optimizer)] = LightningOptimizer(optimizer, self)
        return wrapper

    def _no_grad(self) -> Any:
        return torch.inference_mode() if self._inference_mode else torch.no_grad()

    # -- checkpoints -----------------------------------------------------------------------------

    def save_checkpoint(
        self,
        filepath: str | os.PathLike[str],
        weights_only: bool = False,
        storage_options: Any = None,
    ) -> None:
        """Write a checkpoint (rank 0 writes; every rank must call this)."""
        checkpoint = self._dump_checkpoint(weights_only)
        if self.is_global_zero:
            ckpt_io.save(checkpoint, os.fspath(filepath))
        self.strategy.barrier("save_checkpoint")

    def _dump_checkpoint(self, weights_only: bool = False) -> dict[str, Any]:
        model = self.lightning_module
        assert model is not None
        progress = self.progress
        # Every rank's RNG, so each continues its own random stream on resume.
        ranks = self.strategy.all_gather_object(
            {"now": capture_rng_states(), "epoch_start": progress.epoch_start_rng}
        )
        checkpoint: dict[str, Any] = {
            "epoch": progress.epoch,
            "global_step": progress.global_step,
            "pytorch-lightning_version": PL_COMPAT_VERSION,
            "state_dict": model.state_dict(),
            "loops": {
                "fit_loop": {
                    "epoch": progress.epoch,
                    "global_step": progress.global_step,
                    "batches_done": progress.batches_done,
                    "global_samples": progress.global_samples(self._samples_per_batch()),
                    "epoch_done": progress.batches_done >= self.num_training_batches,
                    "val_pending": progress.val_pending,
                    "world_size": self.world_size,
                    "epoch_start_rng": [r["epoch_start"] for r in ranks],
                }
            },
            "rng_states": [r["now"] for r in ranks],
        }
        if model.hparams_initial:
            checkpoint["hparams_name"] = "kwargs"
            checkpoint["hyper_parameters"] = dict(model.hparams_initial)
        if self.datamodule is not None and self.datamodule.hparams_initial:
            checkpoint["datamodule_hyper_parameters"] = dict(self.datamodule.hparams_initial)
        if not weights_only:
            checkpoint["callbacks"] = {c.state_key: c.state_dict() for c in self.callbacks}
            checkpoint["optimizer_states"] = [opt.state_dict() for opt in self.optimizers]
            checkpoint["lr_schedulers"] = [
                c.scheduler.state_dict() for c in self.lr_scheduler_configs
            ]
            if self.precision_plugin.scaler is not None:
                checkpoint["MixedPrecision"] = self.precision_plugin.state_dict()
            if self.datamodule is not None:
                checkpoint[type(self.datamodule).__qualname__] = self.datamodule.state_dict()
            for callback in self.callbacks:
                callback.on_save_checkpoint(self, model, checkpoint)
        model.on_save_checkpoint(checkpoint)
        return checkpoint

    _resume_rng: Any = None

    def _restore(self, ckpt_path: str | None, model: LightningModule) -> None:
        """Bring back weights, optimizers, schedulers, callbacks and the loop position.

        With a checkpoint store, ckpt_path=None or "last" means the store's pointer, on
        any filesystem; rank 0 picks it (falling back past a bad one) and tells the others.
        """
        if self._durable is not None and ckpt_path in (None, "last"):
            found = (
                self._durable.store.load_latest(self.strategy.root_device)
                if self.is_global_zero
                else None
            )
            path = self.strategy.broadcast(found[1] if found else None)
            checkpoint = found[0] if found else None
            if path is not None and checkpoint is None:
                checkpoint = ckpt_io.load(path, map_location=self.strategy.root_device)
            self._durable.store.resumed_from = path
        else:
            path = self._resolve_ckpt_path(ckpt_path)
            checkpoint = (
                None if path is None else ckpt_io.load(path, map_location=self.strategy.root_device)
            )
        self.ckpt_path = path
        if checkpoint is None:
            return
        if self.is_global_zero:
            log.info("lightjob: resuming from %s (step %s)", path, checkpoint.get("global_step"))
        self.progress = _Progress()
        model.on_load_checkpoint(checkpoint)
        model.load_state_dict(checkpoint["state_dict"])
        for callback in self.callbacks:
            callback.on_load_checkpoint(self, model, checkpoint)
            state = checkpoint.get("callbacks", {}).get(callback.state_key)
            if state is not None:
                callback.load_state_dict(state)
        for opt, state in zip(
            self.optimizers, checkpoint.get("optimizer_states", []), strict=False
        ):
            opt.load_state_dict(state)
        for config, state in zip(
            self.lr_scheduler_configs, checkpoint.get("lr_schedulers", []), strict=False
        ):
            config.scheduler.load_state_dict(state)
        self.precision_plugin.load_state_dict(checkpoint.get("MixedPrecision", {}))
        if self.datamodule is not None and type(self.datamodule).__qualname__ in checkpoint:
            self.datamodule.load_state_dict(checkpoint[type(self.datamodule).__qualname__])
        self._restore_progress(checkpoint)

    def _restore_progress(self, checkpoint: dict[str, Any]) -> None:
        loop = checkpoint.get("loops", {}).get("fit_loop")
        progress = self.progress
        progress.global_step = int(checkpoint.get("global_step", 0))
        if loop is None:  # a checkpoint written elsewhere: continue with the next epoch
            progress.epoch = int(checkpoint.get("epoch", 0)) + 1
            return
        progress.epoch = int(loop["epoch"])
        progress.same_world = loop.get("world_size", 1) == self.world_size
        rng_states = checkpoint.get("rng_states") or []
        epoch_starts = loop.get("epoch_start_rng") or []
        if progress.same_world and self.global_rank < len(rng_states):
            self._resume_rng = rng_states[self.global_rank]
            progress.epoch_start_rng = epoch_starts[self.global_rank] if epoch_starts else None
        if loop["epoch_done"]:
            progress.epoch += 1
            return
        progress.batches_done = int(loop["batches_done"])
        progress.resumed_at = (progress.batches_done, int(loop.get("global_samples", 0)))
        progress.val_pending = bool(loop.get("val_pending", False))

    def _resolve_ckpt_path(self, ckpt_path: str | None) -> str | None:
        if ckpt_path in (None, ""):
            return None
        if ckpt_path in ("best", "last"):
            checkpoints = [c for c in self.callbacks if isinstance(c, ModelCheckpoint)]
            attribute = "best_model_path" if ckpt_path == "best" else "last_model_path"
            found = next(
                (getattr(c, attribute) for c in checkpoints if getattr(c, attribute)), None
            )
            if found is None and ckpt_path == "last":
                for callback in checkpoints:
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

    def _restore_weights(self, ckpt_path: str | None, model: LightningModule) -> None:
        path = self._resolve_ckpt_path(ckpt_path)
        if path is not None:
            checkpoint = ckpt_io.load(path, map_location=self.strategy.root_device)
            model.on_load_checkpoint(checkpoint)
            model.load_state_dict(checkpoint["state_dict"])

    def _model_for(self, model: LightningModule | None, fn: str) -> LightningModule:
        if model is None:
            if self.lightning_module is None:
                raise MisconfigurationException(f"Trainer.{fn}() needs a model: pass model=...")
            return self.lightning_module
        return model

    # -- what the Trainer reports ----------------------------------------------------------------

    @property
    def current_epoch(self) -> int:
        return self.progress.epoch

    @property
    def global_step(self) -> int:
        return self.progress.global_step

    @property
    def max_epochs(self) -> int:
        return self._limits.max_epochs

    @property
    def max_steps(self) -> int:
        return self._limits.max_steps

    @property
    def min_epochs(self) -> int:
        return self._limits.min_epochs

    @property
    def world_size(self) -> int:
        return self.strategy.world_size

    @property
    def global_rank(self) -> int:
        return self.strategy.global_rank

    @property
    def local_rank(self) -> int:
        return self.strategy.local_rank

    @property
    def node_rank(self) -> int:
        return self.strategy.node_rank

    @property
    def num_nodes(self) -> int:
        return self.strategy.num_nodes

    @property
    def num_devices(self) -> int:
        return len(self._device_ids)

    @property
    def device_ids(self) -> list[int]:
        return list(self._device_ids)

    @property
    def is_global_zero(self) -> bool:
        return self.strategy.is_global_zero

    @property
    def logger(self) -> Logger | None:
        return self.loggers[0] if self.loggers else None

    @property
    def log_dir(self) -> str | None:
        return self.logger.log_dir if self.logger is not None else self.default_root_dir

    @property
    def checkpoint_callback(self) -> ModelCheckpoint | None:
        return next((c for c in self.callbacks if isinstance(c, ModelCheckpoint)), None)

    @property
    def checkpoint_callbacks(self) -> list[ModelCheckpoint]:
        return [c for c in self.callbacks if isinstance(c, ModelCheckpoint)]

    @property
    def early_stopping_callback(self) -> EarlyStopping | None:
        return next((c for c in self.callbacks if isinstance(c, EarlyStopping)), None)

    @property
    def progress_bar_callback(self) -> TQDMProgressBar | None:
        return next((c for c in self.callbacks if isinstance(c, TQDMProgressBar)), None)

    @property
    def model(self) -> torch.nn.Module | None:
        return self._wrapped if self._wrapped is not None else self.lightning_module

    @property
    def training(self) -> bool:
        return self.state.stage == "train"

    @property
    def training_in_progress(self) -> bool:
        return self.state.fn == "fit" and self.state.stage in ("train", "validate")

    @property
    def sanity_checking(self) -> bool:
        return self.state.stage == "sanity_check"

    @property
    def validating(self) -> bool:
        return self.state.stage == "validate"

    @property
    def testing(self) -> bool:
        return self.state.stage == "test"

    @property
    def predicting(self) -> bool:
        return self.state.stage == "predict"

    @property
    def interrupted(self) -> bool:
        return self.state.status == "interrupted"

    @property
    def estimated_stepping_batches(self) -> float:
        """Optimizer steps the fit will take (inf when only max_time bounds it)."""
        per_epoch = math.ceil(self.num_training_batches / self.accumulate_grad_batches)
        by_epochs = (
            per_epoch * self._limits.max_epochs if self._limits.max_epochs != -1 else math.inf
        )
        by_steps = self._limits.max_steps if self._limits.max_steps != -1 else math.inf
        return min(by_epochs, by_steps)


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


def _no_closure() -> None:
    return None


def _overrides(obj: Any, name: str) -> bool:
    """True when `obj`'s class defines `name` itself rather than inheriting the base no-op."""
    for base in (LightningModule, Callback, LightningDataModule):
        if isinstance(obj, base):
            return getattr(type(obj), name, None) is not getattr(base, name, None)
    return hasattr(obj, name)


def _ordered(callbacks: list[Callback]) -> list[Callback]:
    # Checkpointing runs after everything else at each hook, so it records final decisions.
    return [c for c in callbacks if not isinstance(c, ModelCheckpoint)] + [
        c for c in callbacks if isinstance(c, ModelCheckpoint)
    ]


@dataclass(frozen=True, slots=True)
class _DurableConfig:
    uri: str
    every_n_steps: int | None
    every_n_minutes: float | None
    keep: int
    background: bool


def _durable_config(
    uri: str | None,
    every_n_steps: int | None,
    every_n_minutes: float | None,
    keep: int | None,
    background: bool,
    disabled: bool,
) -> _DurableConfig | None:
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
    return _DurableConfig(uri, steps, minutes, kept, background)


def _parse_devices(accelerator: str, devices: Any) -> tuple[str, list[int]]:
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


def _device(accelerator: str, index: int) -> torch.device:
    if accelerator == "cuda":
        return torch.device("cuda", index)
    return torch.device(accelerator)


def _env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1")) if "MASTER_ADDR" in os.environ else 1


def _parse_max_time(value: Any) -> float | None:
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


def _set_determinism(deterministic: bool | str | None, benchmark: bool | None) -> None:
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=deterministic == "warn")
        torch.backends.cudnn.benchmark = False
    elif benchmark is not None:
        torch.backends.cudnn.benchmark = benchmark


def _seed_workers(loader: Any) -> Any:
    """With seed_everything(workers=True), give loaders without a worker_init_fn one."""
    if (
        os.environ.get("PL_SEED_WORKERS") == "1"
        and getattr(loader, "num_workers", 0) > 0
        and loader.worker_init_fn is None
        and data.can_replace_sampler(loader)
    ):
        return data.rebuild_loader(loader, sampler=loader.sampler, worker_init_fn=worker_init_fn)
    return loader


def _print_results(fn: str, results: list[dict[str, float]]) -> None:
    keys = sorted({k for r in results for k in r})
    if not keys:
        return
    title = "Validate metric" if fn == "validate" else "Test metric"
    width = max(len(title), *(len(k) for k in keys)) + 2
    lines = ["─" * (width + 24), f"{title:<{width}}DataLoader 0", "─" * (width + 24)]
    for key in keys:
        values = "  ".join(f"{r[key]:.6g}" for r in results if key in r)
        lines.append(f"{key:<{width}}{values}")
    lines.append("─" * (width + 24))
    print("\n".join(lines))
