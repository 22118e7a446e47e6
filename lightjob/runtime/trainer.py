"""The Trainer: Lightning's flags, a loop you can read, and no per-step work it can avoid.

`fit()` reads top to bottom: set up, restore, then epochs of batches (`_fit_loop`, one
batch at a time in `_train_epoch`), validating and checkpointing when the schedule says,
then tear down. The Trainer holds the runtime's parts together and hands each only what
it needs; docs/runtime.md maps them.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch

from lightjob.runtime import checkpoint as ckpt_io
from lightjob.runtime import data, durable, hooks, optim, options, resume, state, telemetry
from lightjob.runtime.callbacks import Callback
from lightjob.runtime.distributed import DDPStrategy, start_processes
from lightjob.runtime.durable import PREEMPTED_EXIT_CODE, Agreement, Durability
from lightjob.runtime.errors import MisconfigurationException
from lightjob.runtime.evaluation import Evaluator, print_results
from lightjob.runtime.hooks import BatchTransfer, Hooks
from lightjob.runtime.loaders import eval_loaders, train_loader
from lightjob.runtime.loggers import Logger
from lightjob.runtime.module import LightningDataModule, LightningModule
from lightjob.runtime.precision import Precision
from lightjob.runtime.properties import TrainerProperties, TrainerState
from lightjob.runtime.results import MetricsSink
from lightjob.runtime.step import Optimization


class Trainer(TrainerProperties):
    """Runs a LightningModule's steps: one process, or one per device with DDP."""

    _to_device: BatchTransfer
    _evaluator: Evaluator

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
        # Every flag above by name (this is the first line: locals() holds only them).
        flags = {k: v for k, v in locals().items() if k not in ("self", "unsupported")}
        opts = options.parse(flags, unsupported)
        self.default_root_dir = opts.default_root_dir
        self._devices = opts.devices
        self.precision = opts.precision
        self.precision_plugin = Precision(opts.precision, opts.devices.accelerator)
        self.strategy = opts.strategy
        self.fast_dev_run: int | bool = opts.fast_dev_run
        self.schedule, self._limits = opts.schedule, opts.limits  # when to stop/validate/log
        self.accumulate_grad_batches = opts.accumulate_grad_batches
        self.gradient_clip_val = opts.gradient_clip_val
        self.gradient_clip_algorithm = opts.gradient_clip_algorithm
        self._inference_mode, self._detect_anomaly = opts.inference_mode, opts.detect_anomaly
        self.callbacks: list[Callback] = opts.callbacks
        self._durable_config, self._enable_metrics = opts.durable, opts.enable_metrics
        self._durable: Durability | None = None
        self._last_checkpoint: ckpt_io.CheckpointRef | None = None
        self._agreement: Agreement | None = None
        self.state = TrainerState()
        self.progress = resume.Progress()
        self.metrics_sink = MetricsSink(self.strategy, self.progress, opts.loggers)
        self.optimization: Optimization | None = None
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
        self._hooks = Hooks(self, None, [])  # each stage gets its own, and an Evaluator
        self._wrapped: torch.nn.Module | None = None
        self._has_validation = False
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
            overfit = bool(self._limits.overfit)
            self.train_dataloader = train_loader(
                model, datamodule, train_dataloaders, self.strategy, overfit=overfit
            )
            self.val_dataloaders = self._eval_loaders(model, datamodule, "val", val_dataloaders)
            self.optimizers, self.lr_scheduler_configs = optim.configure(model)
            self._wrapped = self.strategy.wrap(model)
            self.optimization = self._build_optimization(model)
            self.metrics_sink.telemetry = telemetry.start(
                self._enable_metrics, self.strategy.root_device, self.local_rank
            )
            self._durable = durable.start(
                self._durable_config,
                strategy=self.strategy,
                telemetry=self.metrics_sink.telemetry,
                agreement=self._agreement,
            )
            self._restore(ckpt_path, model)
            self._hooks.call("on_fit_start")
            self._sanity_check(model)
            self._hooks.call("on_train_start")
            self._fit_loop(model)
            if self._durable is not None:
                self._durable.finish(
                    self.progress.global_step, self.progress.epoch, self._dump_checkpoint
                )
            self._hooks.call("on_train_end")
            self._hooks.call("on_fit_end")

    def validate(
        self,
        model: LightningModule | None = None,
        dataloaders: Any = None,
        ckpt_path: str | None = None,
        verbose: bool = True,
        datamodule: LightningDataModule | None = None,
    ) -> list[dict[str, float]]:
        results = self._evaluate_entry("validate", model, dataloaders, ckpt_path, datamodule)
        if verbose and self.is_global_zero:
            print_results("validate", results)
        return results

    def test(
        self,
        model: LightningModule | None = None,
        dataloaders: Any = None,
        ckpt_path: str | None = None,
        verbose: bool = True,
        datamodule: LightningDataModule | None = None,
    ) -> list[dict[str, float]]:
        results = self._evaluate_entry("test", model, dataloaders, ckpt_path, datamodule)
        if verbose and self.is_global_zero:
            print_results("test", results)
        return results

    def predict(
        self,
        model: LightningModule | None = None,
        dataloaders: Any = None,
        datamodule: LightningDataModule | None = None,
        return_predictions: bool | None = None,
        ckpt_path: str | None = None,
    ) -> list[Any] | None:
        predictions = self._evaluate_entry("predict", model, dataloaders, ckpt_path, datamodule)
        return predictions if return_predictions is not False else None

    def _evaluate_entry(
        self,
        fn: str,
        model: LightningModule | None,
        dataloaders: Any,
        ckpt_path: str | None,
        datamodule: LightningDataModule | None,
    ) -> list[Any]:
        """validate, test or predict: one pass over that stage's loaders."""
        if model is None:
            if self.lightning_module is None:
                raise MisconfigurationException(f"Trainer.{fn}() needs a model: pass model=...")
            model = self.lightning_module
        if isinstance(dataloaders, LightningDataModule):
            datamodule, dataloaders = dataloaders, None
        kind = {"validate": "val", "test": "test", "predict": "predict"}[fn]
        with self._stage(fn, model, datamodule):
            loaders = self._eval_loaders(model, datamodule, kind, dataloaders)
            if fn == "validate":
                self.val_dataloaders = loaders
            elif fn == "test":
                self.test_dataloaders = loaders
            self._restore_weights(ckpt_path, model)
            if fn == "predict":
                counts = data.count_batches(loaders, self._limits.predict, "limit_predict_batches")
                self.num_predict_batches = counts
                return self._evaluator.predict(model, loaders, counts)
            limit = self._limits.val if fn == "validate" else self._limits.test
            return self._run_eval(model, fn, loaders, limit, log=True)

    # -- the fit loop -----------------------------------------------------------------------------

    def _fit_loop(self, model: LightningModule) -> None:
        progress, schedule, sink = self.progress, self.schedule, self.metrics_sink
        loader = self.train_dataloader
        self.num_training_batches = data.count_batches(
            [loader], self._limits.train, "limit_train_batches"
        )[0]
        val_every = schedule.val_every_n_batches(self.num_training_batches)
        model.train()
        while not self._fit_done():
            sink.train.reset()
            resume.set_sampler_epoch(loader, progress.epoch)
            sink.log_into(sink.train, on_step=True, on_epoch=False)
            progress.is_last_batch = False
            self._hooks.call("on_train_epoch_start")
            batches, first_idx = resume.epoch_batches(progress, loader, self.world_size)
            if progress.val_pending:  # the checkpoint was taken just before a validation
                self._validate_during_fit(model, end_of_epoch=False)
            validated_last, stopped_early = self._train_epoch(model, batches, first_idx, val_every)
            if schedule.should_validate_at_epoch_end(
                progress, self.num_training_batches, val_every, validated_last, self._has_validation
            ):
                self._validate_during_fit(model, end_of_epoch=True)
            self._end_train_epoch(model, complete=not stopped_early)
            if stopped_early:
                # The epoch is not over: keep its position, so a resumed run finishes it.
                break
            progress.next_epoch()
            self._step_boundary(window_end=True)

    def _train_epoch(
        self, model: LightningModule, batches: Iterator[Any], first_idx: int, val_every: int
    ) -> tuple[bool, bool]:
        """Run an epoch's batches. Returns (whether a validation ran after the last one,
        whether the fit stopped before the epoch's end)."""
        progress, schedule, sink = self.progress, self.schedule, self.metrics_sink
        optimization, to_device = self.optimization, self._to_device
        assert optimization is not None
        validated_last = False
        for batch_idx, batch in enumerate(batches, start=first_idx):
            if batch_idx >= self.num_training_batches:
                break
            if schedule.is_steps_done(progress.global_step):
                return validated_last, True
            batch = to_device(batch, 0)
            sink.train.new_batch(batch)
            sink.log_into(sink.train, on_step=True, on_epoch=False)
            if self._hooks.call("on_train_batch_start", batch, batch_idx) == -1:
                break
            is_last = progress.is_last_batch = batch_idx + 1 >= self.num_training_batches
            window_end = is_last or (batch_idx + 1) % self.accumulate_grad_batches == 0
            outputs = optimization.run(batch, batch_idx, window_end)
            progress.batches_done = batch_idx + 1
            self._batches_seen += 1
            progress.val_pending = not is_last and schedule.should_validate_after_batch(
                progress, batch_idx, val_every, self._has_validation
            )
            self._hooks.call("on_train_batch_end", outputs, batch, batch_idx)
            if schedule.should_log(self._batches_seen, self.should_stop):
                samples = self._batches_seen * self._samples_per_batch()
                sink.write_step(samples, self.estimated_stepping_batches)
            validated_last = progress.val_pending
            if progress.val_pending:
                self._validate_during_fit(model, end_of_epoch=False)
                progress.val_pending = False
            stop = schedule.should_stop_after_batch(progress, self._elapsed(), self.should_stop)
            if not is_last:  # the last batch's boundary comes after the epoch's end
                self._step_boundary(window_end)
            if stop:
                self.should_stop = True
                return validated_last, not is_last
        return validated_last, False

    def _step_boundary(self, window_end: bool) -> None:
        """Between two batches, with everything for the last one done: the one place a
        durable checkpoint is taken, so a resumed run continues exactly from here."""
        durable = self._durable
        if durable is not None and durable.at_step_boundary(
            self.progress.global_step, self.progress.epoch, window_end, self._dump_checkpoint
        ):
            raise SystemExit(PREEMPTED_EXIT_CODE)

    def _end_train_epoch(self, model: LightningModule, complete: bool) -> None:
        """Epoch-end hooks and metrics; epoch-interval schedulers step only when the epoch
        ran to its end, since a stopped epoch continues when the run resumes."""
        sink = self.metrics_sink
        sink.log_into(sink.train, on_step=False, on_epoch=True)
        self._hooks.call("on_train_epoch_end")
        sink.publish_epoch(sink.train)
        if model.automatic_optimization and complete:
            optim.step_schedulers(
                self.lr_scheduler_configs,
                "epoch",
                self.progress.epoch + 1,
                model,
                lambda: sink.callback_metrics,
            )

    def _fit_done(self) -> bool:
        return self.schedule.is_fit_done(
            self.progress, self.num_training_batches, self._elapsed(), self.should_stop
        )

    def _elapsed(self) -> float | None:
        return None if self._started is None else time.monotonic() - self._started

    def _build_optimization(self, model: LightningModule) -> Optimization:
        return Optimization(
            model,
            self._hooks,
            self.precision_plugin,
            self.progress,
            optimizers=self.optimizers,
            schedulers=self.lr_scheduler_configs,
            wrapped=self._wrapped,
            no_sync=functools.partial(self.strategy.no_sync, self._wrapped),
            metrics=lambda: self.metrics_sink.callback_metrics,
            accumulate_grad_batches=self.accumulate_grad_batches,
            gradient_clip=(self.gradient_clip_val, self.gradient_clip_algorithm),
        )

    # -- validation, test, predict ------------------------------------------------------------

    def _validate_during_fit(self, model: LightningModule, end_of_epoch: bool) -> None:
        if end_of_epoch:  # also when max_steps cut the epoch short
            self.progress.is_last_batch = True
        self.state.stage = "validate"
        self._run_eval(model, "validate", self.val_dataloaders, self._limits.val, log=True)
        self.state.stage = "train"
        model.train()

    def _sanity_check(self, model: LightningModule) -> None:
        steps = self._limits.sanity_steps
        if not self._has_validation or steps == 0 or self.progress.global_step > 0:
            self.num_sanity_val_batches = []
            return
        self.state.stage = "sanity_check"
        self._hooks.call("on_sanity_check_start")
        with self.metrics_sink.discarding_callback_metrics():  # not real results
            self._run_eval(
                model, "validate", self.val_dataloaders, None if steps == -1 else steps, log=False
            )
            self._hooks.call("on_sanity_check_end")
        self.state.stage = "train"
        model.train()

    def _run_eval(
        self, model: LightningModule, fn: str, loaders: list[Any], limit: Any, log: bool
    ) -> list[dict[str, float]]:
        flag = "limit_val_batches" if fn == "validate" else "limit_test_batches"
        counts = data.count_batches(loaders, limit, flag)
        if self.state.stage == "sanity_check":
            self.num_sanity_val_batches = counts
        elif fn == "validate":
            self.num_val_batches = counts
        else:
            self.num_test_batches = counts
        return self._evaluator.evaluate(model, fn, loaders, counts, log=log)

    # -- set up and tear down -------------------------------------------------------------------

    @contextmanager
    def _stage(
        self, fn: str, model: LightningModule, datamodule: LightningDataModule | None
    ) -> Iterator[None]:
        """Everything around one entry point: processes, hooks, devices, errors, teardown."""
        self._enter(fn, model, datamodule)
        try:
            yield
        except BaseException as error:
            self._exit(fn, model, error)
            raise
        self._exit(fn, model, None)

    def _enter(
        self, fn: str, model: LightningModule, datamodule: LightningDataModule | None
    ) -> None:
        hooks.check_module(fn, model)
        self.state.fn, self.state.status = fn, "running"
        self.state.stage = {"fit": "train", "validate": "validate"}.get(fn, fn)
        self.should_stop = False
        self._started = time.monotonic()
        start_processes(self.strategy, self._devices)
        self._exits = ExitStack()
        if self._detect_anomaly:
            self._exits.enter_context(torch.autograd.detect_anomaly())
        self.lightning_module, self.datamodule = model, datamodule
        model.trainer = self
        if datamodule is not None:
            datamodule.trainer = self
        extra = model.configure_callbacks() if fn == "fit" else []
        if extra:
            self.callbacks = options.merge_callbacks(
                self.callbacks, extra if isinstance(extra, list) else [extra]
            )
        self._hooks = Hooks(self, model, self.callbacks)
        self.precision_plugin.convert_module(model)
        device = self.strategy.root_device
        model.to(device)
        model._device_cache = device
        self._to_device = BatchTransfer(model, device, self.precision_plugin)
        no_grad = torch.inference_mode if self._inference_mode else torch.no_grad
        self._evaluator = Evaluator(self._hooks, self.metrics_sink, self._to_device, no_grad)
        self._hooks.set_up(fn, datamodule, self.strategy, self.loggers)

    def _exit(self, fn: str, model: LightningModule, error: BaseException | None) -> None:
        self._exits.close()
        if self._durable is not None:
            self._durable.close()
            self._last_checkpoint, self._agreement = self._durable.last, self._durable.agreement
            self._durable = None
        if error is None:
            self.state.status = "finished"
        else:
            self.state.status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
            for callback in self.callbacks:
                callback.on_exception(self, model, error)
            preempted = isinstance(error, SystemExit) and error.code == PREEMPTED_EXIT_CODE
            if preempted:
                self.state.status = "preempted"
            if self.strategy.launcher is not None:
                # The others would wait for this rank; preempted ones are exiting themselves.
                self.strategy.launcher.kill(grace=30.0 if preempted else 2.0)
        self._hooks.tear_down(
            fn, self.datamodule, error is not None, self.loggers, self.is_global_zero
        )
        if self.is_global_zero and error is None and fn == "fit":
            telemetry.write_termination_message(
                self.global_step,
                self.current_epoch,
                lambda: self.callback_metrics,
                self.last_checkpoint,
            )
        self.state.stage = None

    # -- data ----------------------------------------------------------------------------------

    def _eval_loaders(
        self, model: LightningModule, datamodule: Any, kind: str, given: Any
    ) -> list[Any]:
        found = eval_loaders(model, datamodule, kind, given, str(self.state.fn), self.strategy)
        if kind == "val":
            limit = self._limits.val
            self._has_validation = any(
                data.limit_batches(data.num_batches(d), limit, "limit_val_batches") > 0
                for d in found
            )
        return found

    def _samples_per_batch(self) -> int:
        """Samples one training batch covers across all ranks (the last batch may be short,
        but a checkpoint there marks the epoch done)."""
        return (getattr(self.train_dataloader, "batch_size", None) or 1) * self.world_size

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
            ckpt_io.write_checkpoint(checkpoint, os.fspath(filepath))
        self.strategy.barrier("save_checkpoint")

    def _dump_checkpoint(self, weights_only: bool = False) -> dict[str, Any]:
        loops, rng_states = resume.gather_loop_state(
            self.progress,
            self.strategy,
            samples_per_batch=self._samples_per_batch(),
            num_training_batches=self.num_training_batches,
        )
        return state.build_checkpoint(
            self._training_state(), self.progress, loops, rng_states, weights_only
        )

    def _restore(self, ckpt_path: str | None, model: LightningModule) -> None:
        """Bring back weights, optimizers, schedulers, callbacks and the loop position."""
        checkpoint, self.ckpt_path = state.find_for_fit(
            ckpt_path,
            store=self._durable.store if self._durable is not None else None,
            strategy=self.strategy,
            checkpoint_callbacks=self.checkpoint_callbacks,
        )
        if checkpoint is not None:
            self.progress.reset()  # the hooks that restore see a fresh loop, as in Lightning
            state.restore(self._training_state(), checkpoint)
            resume.restore_progress(
                self.progress, checkpoint, world_size=self.world_size, global_rank=self.global_rank
            )

    def _training_state(self) -> state.TrainingState:
        model, datamodule = self.lightning_module, self.datamodule
        assert model is not None
        return state.TrainingState(
            self,
            model,
            datamodule,
            self.callbacks,
            self.optimizers,
            self.lr_scheduler_configs,
            self.precision_plugin,
        )

    def _restore_weights(self, ckpt_path: str | None, model: LightningModule) -> None:
        path = state.resolve_ckpt_path(ckpt_path, self.checkpoint_callbacks)
        state.restore_weights(model, path, self.strategy.root_device)

    # -- what the Trainer reports ----------------------------------------------------------------

    @property
    def num_devices(self) -> int:
        return len(self._devices.ids)

    @property
    def device_ids(self) -> list[int]:
        return list(self._devices.ids)

    @property
    def model(self) -> torch.nn.Module | None:
        return self._wrapped if self._wrapped is not None else self.lightning_module

    # -- what callbacks and the module use (documented in docs/runtime.md) -------------------

    @property
    def enable_validation(self) -> bool:
        """Whether fit validates: a val loader with batches and a validation_step."""
        return self._has_validation

    @property
    def should_update_logs(self) -> bool:
        """Whether the training batch about to run writes its step values to the loggers
        (lightjob's: Lightning keeps this in its logger connector)."""
        return self.schedule.should_log(self._batches_seen + 1, self.should_stop)

    @property
    def last_checkpoint(self) -> ckpt_io.CheckpointRef | None:
        """The newest checkpoint this run made durable in its store."""
        return self._durable.last if self._durable is not None else self._last_checkpoint
