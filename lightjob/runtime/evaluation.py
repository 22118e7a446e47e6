"""The evaluation loops: one pass of validation or test steps, and of predict steps.

The Trainer decides when they run (during fit, in its sanity check, or from validate, test
and predict) and how many batches each loader gives (`counts`); an `Evaluator`, built for
each stage, runs the batches with their hooks under no_grad or inference_mode.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import torch

from lightjob.runtime.results import to_float

if TYPE_CHECKING:
    from lightjob.runtime.hooks import BatchTransfer, Hooks
    from lightjob.runtime.module import LightningModule
    from lightjob.runtime.results import MetricsSink

NoGrad = Callable[[], AbstractContextManager[Any]]


class Evaluator:
    """Runs evaluation passes for one stage: the hooks to call, the sink `self.log` writes
    to, how batches reach the device (and in which precision), and the grad mode."""

    def __init__(
        self, hooks: Hooks, sink: MetricsSink, to_device: BatchTransfer, no_grad: NoGrad
    ) -> None:
        self.hooks = hooks
        self.sink = sink
        self.to_device = to_device
        self.precision = to_device.precision
        self.no_grad = no_grad

    def evaluate(
        self, model: LightningModule, fn: str, loaders: list[Any], counts: list[float], *, log: bool
    ) -> list[dict[str, float]]:
        """One pass over the validation (fn="validate") or test loaders; returns one dict of
        metrics per loader. With `log`, the epoch values also go to the loggers."""
        hooks, sink, to_device = self.hooks, self.sink, self.to_device
        step = model.validation_step if fn == "validate" else model.test_step
        prefix = "validation" if fn == "validate" else "test"
        results, was_training = sink.eval, model.training
        results.reset()
        model.eval()
        hooks.call(f"on_{prefix}_start")
        sink.log_into(results, on_step=False, on_epoch=True)
        hooks.call(f"on_{prefix}_epoch_start")
        multi = len(loaders) > 1
        with self.no_grad():
            for dl_idx, loader in enumerate(loaders):
                suffix = f"/dataloader_idx_{dl_idx}" if multi else ""
                for batch_idx, batch in enumerate(loader):
                    if batch_idx >= counts[dl_idx]:
                        break
                    batch = to_device(batch, dl_idx)
                    results.new_batch(batch)
                    sink.log_into(results, on_step=False, on_epoch=True, dataloader_suffix=suffix)
                    extra = (dl_idx,) if multi else ()
                    hooks.call(f"on_{prefix}_batch_start", batch, batch_idx, *extra)
                    with self.precision.forward_context():
                        out = step(batch, batch_idx, *extra)
                    hooks.call(f"on_{prefix}_batch_end", out, batch, batch_idx, *extra)
        sink.log_into(results, on_step=False, on_epoch=True)
        hooks.call(f"on_{prefix}_epoch_end")
        metrics = sink.publish_epoch(results, log=log)
        hooks.call(f"on_{prefix}_end")
        if was_training:
            model.train()
        return per_loader(metrics, len(loaders))

    def predict(self, model: LightningModule, loaders: list[Any], counts: list[float]) -> list[Any]:
        """predict_step over every loader: a list of outputs (a list per loader when several)."""
        hooks, to_device = self.hooks, self.to_device
        model.eval()
        hooks.call("on_predict_start")
        hooks.call("on_predict_epoch_start")
        multi = len(loaders) > 1
        everything: list[list[Any]] = []
        with self.no_grad():
            for dl_idx, loader in enumerate(loaders):
                outputs: list[Any] = []
                for batch_idx, batch in enumerate(loader):
                    if batch_idx >= counts[dl_idx]:
                        break
                    batch = to_device(batch, dl_idx)
                    extra = (dl_idx,) if multi else ()
                    hooks.call("on_predict_batch_start", batch, batch_idx, *extra)
                    with self.precision.forward_context():
                        out = model.predict_step(batch, batch_idx, *extra)
                    hooks.call("on_predict_batch_end", out, batch, batch_idx, *extra)
                    outputs.append(out)
                everything.append(outputs)
        hooks.call("on_predict_epoch_end")
        hooks.call("on_predict_end")
        return everything if multi else everything[0]


def per_loader(metrics: dict[str, torch.Tensor], num_loaders: int) -> list[dict[str, float]]:
    """Split metrics by their `/dataloader_idx_N` suffix; unsuffixed ones go to every loader."""
    split: list[dict[str, float]] = [{} for _ in range(num_loaders)] or [{}]
    for name, value in metrics.items():
        targets = [int(name.rsplit("_", 1)[1])] if "/dataloader_idx_" in name else range(len(split))
        for i in targets:
            split[i][name] = to_float(value)
    return split


def print_results(fn: str, results: list[dict[str, float]]) -> None:
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
