"""Precision, callbacks, loggers, logging, optimizers and evaluation, with real training."""

from __future__ import annotations

import csv
import os
import re
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import lightjob as L
from lightjob.callbacks import (
    Callback,
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
)
from lightjob.loggers import CSVLogger, TensorBoardLogger
from lightjob.runtime.errors import MisconfigurationException
from tests.helpers import TinyModel, dataset, loader, quiet


def rows(path: Path) -> list[dict[str, str]]:
    with open(path) as stream:
        return list(csv.DictReader(stream))


# -- precision ------------------------------------------------------------------------------


def test_precision_64_trains_in_double(tmp_path: Path) -> None:
    model = TinyModel()
    L.Trainer(**quiet(tmp_path, max_steps=2, precision=64)).fit(model, loader())
    assert model.layer.weight.dtype == torch.float64


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed", 16, "bf16-true"])
def test_mixed_and_low_precision_train_on_cpu(tmp_path: Path, precision: Any) -> None:
    seen: list[torch.dtype] = []

    class Records(TinyModel):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = super().forward(x)
            seen.append(out.dtype)
            return out

    model = Records()
    before = model.layer.weight.detach().clone().float()
    trainer = L.Trainer(**quiet(tmp_path, max_steps=3, precision=precision))
    trainer.fit(model, loader())
    expected = {"bf16-mixed": torch.bfloat16, "bf16-true": torch.bfloat16}.get(
        str(precision), torch.float16
    )
    assert seen[0] == expected
    assert not torch.equal(before, model.layer.weight.detach().float())


def test_fp16_overflow_skips_the_step_and_unscales_before_clipping(tmp_path: Path) -> None:
    grad_norms: list[float] = []

    class Overflows(TinyModel):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            loss = super().training_step(batch, batch_idx)
            return loss * 1e30 if batch_idx == 0 else loss  # inf gradients on the first step

        def on_before_optimizer_step(self, optimizer: Any) -> None:
            grads = [p.grad.norm() for p in self.parameters() if p.grad is not None]
            grad_norms.append(float(torch.stack(grads).norm()))

    model = Overflows()
    before = model.layer.weight.detach().clone()
    trainer = L.Trainer(**quiet(tmp_path, max_steps=1, precision="16-mixed"))
    trainer.fit(model, loader())
    assert torch.equal(before, model.layer.weight), "an overflowed step must be skipped"
    scaler = trainer.precision_plugin.scaler
    assert scaler is not None and scaler.get_scale() < 65536.0

    # Without overflow, the hook sees unscaled gradients and clipping applies to them.
    grad_norms.clear()
    model = TinyModel()
    trainer = L.Trainer(
        **quiet(tmp_path, max_steps=1, precision="16-mixed", gradient_clip_val=1e-3)
    )
    trainer.fit(model, loader())

    class Check(TinyModel):
        def on_before_optimizer_step(self, optimizer: Any) -> None:
            grads = [p.grad.norm() for p in self.parameters() if p.grad is not None]
            grad_norms.append(float(torch.stack(grads).norm()))

    L.Trainer(**quiet(tmp_path, max_steps=1, precision="16-mixed")).fit(Check(), loader())
    assert 0.01 < grad_norms[-1] < 10, "gradients seen by hooks must be unscaled"
    reference = TinyModel()
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    x, y = next(iter(loader()))
    with torch.autocast("cpu", dtype=torch.float16):
        loss = nn.functional.cross_entropy(reference(x), y)
    loss.backward()
    nn.utils.clip_grad_norm_(reference.parameters(), 1e-3)
    optimizer.step()
    torch.testing.assert_close(model.layer.weight, reference.layer.weight, rtol=1e-3, atol=1e-5)


def test_detect_anomaly_names_the_operation(tmp_path: Path) -> None:
    class NaNGrad(TinyModel):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, _ = batch
            return torch.sqrt(self(x) - 1e9).sum()  # sqrt of negatives: nan in backward

    with pytest.raises(RuntimeError, match="SqrtBackward0"):
        L.Trainer(**quiet(tmp_path, max_steps=1, detect_anomaly=True)).fit(NaNGrad(), loader())


# -- callbacks --------------------------------------------------------------------------------


class ScriptedMetric(TinyModel):
    """Logs a given sequence as `score`, one value per validation."""

    def __init__(self, values: list[float], lr: float = 0.1, features: int = 8) -> None:
        super().__init__(lr, features)
        self.values = values

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("score", self.values[self.current_epoch])


@pytest.mark.parametrize(
    ("values", "mode", "patience", "min_delta", "stopped_after"),
    [
        ([5, 4, 3, 3.5, 3.4, 3.3, 1, 1, 1, 1], "min", 3, 0.0, 6),  # best 3 at epoch 2
        ([5, 4, 3, 2.95, 2.9, 2.85, 1, 1, 1, 1], "min", 2, 0.1, 5),  # tiny gains don't count
        ([1, 2, 3, 2, 2, 2, 2, 2, 2, 2], "max", 2, 0.0, 5),
    ],
)
def test_early_stopping_stops_at_the_right_epoch(
    tmp_path: Path,
    values: list[float],
    mode: str,
    patience: int,
    min_delta: float,
    stopped_after: int,
) -> None:
    early = EarlyStopping(monitor="score", mode=mode, patience=patience, min_delta=min_delta)
    trainer = L.Trainer(**quiet(tmp_path, max_epochs=10, callbacks=[early]))
    trainer.fit(ScriptedMetric(values), loader(n=16), loader(n=8))
    assert trainer.current_epoch == stopped_after
    assert early.stopped_epoch == stopped_after - 1


def test_early_stopping_respects_min_epochs(tmp_path: Path) -> None:
    early = EarlyStopping(monitor="score", patience=1)
    trainer = L.Trainer(**quiet(tmp_path, max_epochs=10, min_epochs=6, callbacks=[early]))
    trainer.fit(ScriptedMetric([1.0] * 10), loader(n=16), loader(n=8))
    assert trainer.current_epoch == 6


def test_a_monitor_that_was_never_logged_fails_before_training_and_lists_the_keys(
    tmp_path: Path,
) -> None:
    for callback in (EarlyStopping(monitor="val_los"), ModelCheckpoint(monitor="val_los")):
        model = TinyModel()
        flags = quiet(tmp_path, max_epochs=2, num_sanity_val_steps=2, callbacks=[callback])
        trainer = L.Trainer(**{**flags, "enable_checkpointing": True})
        with pytest.raises(
            MisconfigurationException, match=r"monitor='val_los'.*logged so far: val_loss"
        ):
            trainer.fit(model, loader(), loader())
        assert model.seen == [], "no training step may run"


def test_model_checkpoint_keeps_the_top_k_and_last(tmp_path: Path) -> None:
    values = [5.0, 3.0, 4.0, 1.0, 2.0]
    checkpoint = ModelCheckpoint(
        dirpath=tmp_path / "ckpt",
        monitor="score",
        save_top_k=2,
        save_last=True,
        filename="{epoch}-{score:.1f}",
    )
    trainer = L.Trainer(
        **quiet(tmp_path, max_epochs=5, callbacks=[checkpoint], enable_checkpointing=True)
    )
    trainer.fit(ScriptedMetric(values), loader(n=16), loader(n=8))
    assert sorted(os.listdir(tmp_path / "ckpt")) == [
        "epoch=3-score=1.0.ckpt",
        "epoch=4-score=2.0.ckpt",
        "last.ckpt",
    ]
    assert checkpoint.best_model_path.endswith("epoch=3-score=1.0.ckpt")
    assert float(checkpoint.best_model_score) == 1.0  # type: ignore[arg-type]
    last = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 4 and last["global_step"] == 10
    restored = ScriptedMetric.load_from_checkpoint(checkpoint.last_model_path)
    assert restored.values == values  # a subclass's __init__ arguments are hyperparameters too
    trained = trainer.lightning_module
    assert trained is not None
    assert torch.equal(restored.layer.weight, trained.layer.weight)


def test_model_checkpoint_every_n_train_steps(tmp_path: Path) -> None:
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_top_k=-1)
    trainer = L.Trainer(
        **quiet(tmp_path, max_steps=10, callbacks=[checkpoint], enable_checkpointing=True)
    )
    trainer.fit(TinyModel(), loader())
    steps = sorted(int(re.search(r"step=(\d+)", f).group(1)) for f in os.listdir(tmp_path / "ckpt"))  # type: ignore[union-attr]
    assert steps == [3, 6, 9]


def test_load_from_checkpoint_restores_hyperparameters_and_weights(tmp_path: Path) -> None:
    model = TinyModel(lr=0.05)
    trainer = L.Trainer(**quiet(tmp_path, max_steps=4))
    trainer.fit(model, loader())
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    restored = TinyModel.load_from_checkpoint(str(path))
    assert restored.hparams.lr == 0.05 and restored.hparams == {"lr": 0.05, "features": 8}
    assert torch.equal(restored.layer.weight, model.layer.weight)
    overridden = TinyModel.load_from_checkpoint(str(path), lr=0.5)
    assert overridden.hparams.lr == 0.5


def test_learning_rate_monitor_logs_each_scheduler_step(tmp_path: Path) -> None:
    class Scheduled(TinyModel):
        def configure_optimizers(self) -> Any:
            optimizer = torch.optim.SGD(self.parameters(), lr=1.0)
            scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
            }

    monitor = LearningRateMonitor(logging_interval="step")
    logger = CSVLogger(tmp_path)
    trainer = L.Trainer(
        **quiet(tmp_path, max_steps=4, log_every_n_steps=1, logger=logger, callbacks=[monitor])
    )
    trainer.fit(Scheduled(), loader())
    assert monitor.lrs["lr-SGD"] == [1.0, 0.5, 0.25, 0.125]
    logged = [
        float(r["lr-SGD"])
        for r in rows(Path(logger.experiment.metrics_file_path))
        if r.get("lr-SGD")
    ]
    assert logged == [1.0, 0.5, 0.25, 0.125]
    with pytest.raises(MisconfigurationException, match="LearningRateMonitor needs a logger"):
        L.Trainer(**quiet(tmp_path, max_steps=1, callbacks=[LearningRateMonitor()])).fit(
            Scheduled(), loader()
        )


def test_progress_bar_shows_epoch_steps_and_prog_bar_metrics(tmp_path: Path, capsys: Any) -> None:
    class Shows(TinyModel):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            loss = super().training_step(batch, batch_idx)
            self.log("shown", 0.125, prog_bar=True)
            return loss

    trainer = L.Trainer(**quiet(tmp_path, max_epochs=1, enable_progress_bar=True))
    trainer.fit(Shows(), loader())
    err = capsys.readouterr().err
    assert "Epoch 0" in err and "8/8" in err and "shown=0.125" in err and "it/s" in err


def test_model_summary_counts_parameters(tmp_path: Path, capsys: Any) -> None:
    L.Trainer(**quiet(tmp_path, max_steps=1, enable_model_summary=True)).fit(TinyModel(), loader())
    out = capsys.readouterr().out
    assert re.search(r"layer\s+\|\s+Linear\s+\|\s+18", out)
    assert "18      Trainable params" in out and "18      Total params" in out


def test_callback_state_is_saved_and_restored(tmp_path: Path) -> None:
    class Counts(Callback):
        def __init__(self) -> None:
            self.batches = 0

        def on_train_batch_end(self, *args: Any) -> None:
            self.batches += 1

        def state_dict(self) -> dict[str, Any]:
            return {"batches": self.batches}

        def load_state_dict(self, state_dict: dict[str, Any]) -> None:
            self.batches = state_dict["batches"]

    first = Counts()
    trainer = L.Trainer(**quiet(tmp_path, max_epochs=1, callbacks=[first]))
    trainer.fit(TinyModel(), loader())
    trainer.save_checkpoint(tmp_path / "a.ckpt")
    second = Counts()
    resumed = L.Trainer(**quiet(tmp_path, max_epochs=2, callbacks=[second]))
    resumed.fit(TinyModel(), loader(), ckpt_path=str(tmp_path / "a.ckpt"))
    assert second.batches == 16 and resumed.global_step == 16


# -- loggers and self.log ----------------------------------------------------------------------


def test_csv_logger_writes_steps_on_cadence_and_epoch_means(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path, name="runs")

    class Logs(TinyModel):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            super().training_step(batch, batch_idx)
            value = torch.tensor(float(batch_idx), requires_grad=True)
            self.log("both", float(batch_idx), on_step=True, on_epoch=True)
            return value * 0 + nn.functional.cross_entropy(self(batch[0]), batch[1])

    trainer = L.Trainer(**quiet(tmp_path, max_epochs=1, logger=logger, log_every_n_steps=3))
    trainer.fit(Logs(), loader())
    written = rows(tmp_path / "runs" / "version_0" / "metrics.csv")
    steps = [int(r["step"]) for r in written if r.get("both_step")]
    assert steps == [3, 6]  # every 3rd batch
    epoch = [float(r["both_epoch"]) for r in written if r.get("both_epoch")]
    assert epoch == [3.5]  # mean of 0..7
    assert trainer.callback_metrics["both"] == 3.5
    assert {"both_step", "both_epoch"} <= set(trainer.logged_metrics)


def test_epoch_mean_is_weighted_by_batch_size(tmp_path: Path) -> None:
    class Sized(TinyModel):
        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self.log("size", float(batch[0].shape[0]))

    trainer = L.Trainer(**quiet(tmp_path, max_epochs=1))
    trainer.fit(Sized(), loader(), loader(n=20, batch_size=8))  # batches of 8, 8, 4
    assert float(trainer.callback_metrics["size"]) == pytest.approx((8 * 8 + 8 * 8 + 4 * 4) / 20)


def test_reduce_fx_and_non_scalar_error(tmp_path: Path) -> None:
    class Reduces(TinyModel):
        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self.log("biggest", float(batch_idx), reduce_fx="max")
            self.log("total", 1.0, reduce_fx="sum")

    trainer = L.Trainer(**quiet(tmp_path, max_epochs=1))
    trainer.fit(Reduces(), loader(), loader(n=32))
    assert float(trainer.callback_metrics["biggest"]) == 3.0
    assert float(trainer.callback_metrics["total"]) == 4.0

    class Vector(TinyModel):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            self.log("vector", torch.ones(3))
            return super().training_step(batch, batch_idx)

    with pytest.raises(
        MisconfigurationException, match=r"needs a scalar; got a tensor of shape \(3,\)"
    ):
        L.Trainer(**quiet(tmp_path, max_steps=1)).fit(Vector(), loader())


def test_tensorboard_logger_writes_events(tmp_path: Path) -> None:
    logger = TensorBoardLogger(tmp_path)
    L.Trainer(**quiet(tmp_path, max_epochs=1, logger=logger, log_every_n_steps=2)).fit(
        TinyModel(), loader()
    )
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logger.log_dir))
    events.Reload()
    assert [e.step for e in events.Scalars("train_loss")] == [2, 4, 6, 8]


# -- optimizers and schedulers ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("returned", "lrs"),
    [
        (lambda o, s: {"optimizer": o, "lr_scheduler": s}, [1.0, 0.5, 0.25]),  # epoch interval
        (lambda o, s: ([o], [s]), [1.0, 0.5, 0.25]),
        # every 4 steps, and an epoch is 4 batches: the same schedule, stepped per batch
        (
            lambda o, s: {
                "optimizer": o,
                "lr_scheduler": {"scheduler": s, "interval": "step", "frequency": 4},
            },
            [1.0, 0.5, 0.25],
        ),
    ],
)
def test_configure_optimizers_shapes(tmp_path: Path, returned: Any, lrs: list[float]) -> None:
    seen: list[float] = []

    class Shapes(TinyModel):
        def configure_optimizers(self) -> Any:
            optimizer = torch.optim.SGD(self.parameters(), lr=1.0)
            return returned(optimizer, torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.5))

        def on_train_epoch_start(self) -> None:
            seen.append(self.trainer.optimizers[0].param_groups[0]["lr"])

    L.Trainer(**quiet(tmp_path, max_epochs=3)).fit(Shapes(), loader(n=32))  # 4 batches an epoch
    assert seen == lrs


def test_reduce_on_plateau_watches_its_monitor(tmp_path: Path) -> None:
    class Plateau(ScriptedMetric):
        def configure_optimizers(self) -> Any:
            optimizer = torch.optim.SGD(self.parameters(), lr=1.0)
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, patience=0, factor=0.1
            )
            return {"optimizer": optimizer, "lr_scheduler": scheduler, "monitor": "score"}

    model = Plateau([1.0, 1.0, 1.0, 0.5])
    L.Trainer(**quiet(tmp_path, max_epochs=4)).fit(model, loader(n=16), loader(n=8))
    assert model.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.01)

    class NoMonitor(TinyModel):
        def configure_optimizers(self) -> Any:
            optimizer = torch.optim.SGD(self.parameters(), lr=1.0)
            return {
                "optimizer": optimizer,
                "lr_scheduler": torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer),
            }

    with pytest.raises(MisconfigurationException, match="ReduceLROnPlateau needs a metric"):
        L.Trainer(**quiet(tmp_path, max_epochs=1)).fit(NoMonitor(), loader())


def test_manual_optimization_with_two_optimizers(tmp_path: Path) -> None:
    class TwoNets(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = False
            self.a = nn.Linear(8, 2)
            self.b = nn.Linear(8, 2)

        def training_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            opt_a, opt_b = self.optimizers()
            for net, opt in ((self.a, opt_a), (self.b, opt_b)):
                opt.zero_grad()
                self.manual_backward(nn.functional.cross_entropy(net(x), y))
                opt.step()

        def configure_optimizers(self) -> Any:
            return [
                torch.optim.SGD(self.a.parameters(), lr=0.1),
                torch.optim.SGD(self.b.parameters(), lr=0.1),
            ]

    model = TwoNets()
    a, b = model.a.weight.detach().clone(), model.b.weight.detach().clone()
    trainer = L.Trainer(**quiet(tmp_path, max_epochs=1))
    trainer.fit(model, loader())
    assert trainer.global_step == 16  # each optimizer step counts, as in Lightning
    assert not torch.equal(a, model.a.weight) and not torch.equal(b, model.b.weight)


def test_optimizer_step_override_for_warmup(tmp_path: Path) -> None:
    class Warmup(TinyModel):
        def optimizer_step(
            self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None
        ) -> None:
            for group in optimizer.param_groups:
                group["lr"] = 0.1 * min(1.0, (self.trainer.global_step + 1) / 4)
            optimizer.step(closure=optimizer_closure)

    model = Warmup()
    L.Trainer(**quiet(tmp_path, max_steps=6)).fit(model, loader())
    assert model.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1)
    assert len(model.seen) == 6


# -- evaluation, data modules, hyperparameters -----------------------------------------------------


def test_validate_test_predict_return_what_lightning_returns(tmp_path: Path) -> None:
    model = TinyModel()
    trainer = L.Trainer(**quiet(tmp_path, max_epochs=3))
    trainer.fit(model, loader(), loader())
    validated = trainer.validate(model, loader(), verbose=False)
    tested = trainer.test(model, loader(), verbose=False)
    assert list(validated[0]) == ["val_loss"] and list(tested[0]) == ["test_acc"]
    assert 0.0 <= tested[0]["test_acc"] <= 1.0
    predictions = trainer.predict(model, DataLoader(dataset().tensors[0], batch_size=16))
    assert predictions is not None and len(predictions) == 4 and predictions[0].shape == (16, 2)
    torch.testing.assert_close(predictions[0], model(dataset().tensors[0][:16]))


def test_fit_hands_its_progress_and_logged_values_to_the_served_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("LIGHTJOB_METRICS_PORT", str(port))
    monkeypatch.setenv("LIGHTJOB_POD_IP", "127.0.0.1")
    trainer = L.Trainer(**quiet(tmp_path, max_steps=6, log_every_n_steps=3))
    trainer.fit(TinyModel(), loader(n=64, batch_size=8))
    served = trainer.metrics_sink.telemetry
    assert served is not None
    gauges = {family.name: family for family in served.collect()}
    assert gauges["lightjob_global_step"].samples[0].value == 6
    logged = {s.labels["name"]: s.value for s in gauges["lightjob_logged_metric"].samples}
    assert "train_loss" in logged


class TransferRecorder(TinyModel):
    def __init__(self) -> None:
        super().__init__()
        self.transferred = 0

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        self.transferred += 1
        return batch


def test_each_stage_uses_its_own_modules_transfer_hooks(tmp_path: Path) -> None:
    """A Trainer that fitted a module without transfer hooks then tests one with them: the
    second module's hooks run (the Trainer used to keep the first module's answer)."""
    trainer = L.Trainer(**quiet(tmp_path, max_steps=2))
    trainer.fit(TinyModel(), loader(n=32, batch_size=8))
    recorder = TransferRecorder()
    trainer.test(recorder, loader(n=32, batch_size=8), verbose=False)
    assert recorder.transferred == 4


def test_several_validation_loaders_get_suffixed_metrics(tmp_path: Path) -> None:
    class Multi(TinyModel):
        def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
            self.log("val_loss", float(dataloader_idx))

    trainer = L.Trainer(**quiet(tmp_path, max_epochs=1))
    trainer.fit(Multi(), loader(), [loader(n=8), loader(n=8)])
    results = trainer.validate(trainer.lightning_module, [loader(n=8), loader(n=8)], verbose=False)
    assert results == [{"val_loss/dataloader_idx_0": 0.0}, {"val_loss/dataloader_idx_1": 1.0}]


def test_datamodule_lifecycle(tmp_path: Path) -> None:
    calls: list[str] = []

    class Data(L.LightningDataModule):
        def __init__(self, batch_size: int = 8) -> None:
            super().__init__()
            self.save_hyperparameters()

        def prepare_data(self) -> None:
            calls.append("prepare_data")

        def setup(self, stage: str) -> None:
            calls.append(f"setup:{stage}")
            self.data = dataset()

        def train_dataloader(self) -> DataLoader:
            return DataLoader(self.data, batch_size=self.hparams.batch_size)

        def val_dataloader(self) -> DataLoader:
            return DataLoader(self.data, batch_size=16)

        def test_dataloader(self) -> DataLoader:
            return DataLoader(self.data, batch_size=16)

        def teardown(self, stage: str) -> None:
            calls.append(f"teardown:{stage}")

    datamodule = Data()
    trainer = L.Trainer(**quiet(tmp_path, max_epochs=1))
    trainer.fit(TinyModel(), datamodule=datamodule)
    trainer.test(datamodule=datamodule, verbose=False)
    assert calls == [
        "prepare_data",
        "setup:fit",
        "teardown:fit",
        "prepare_data",
        "setup:test",
        "teardown:test",
    ]
    assert trainer.global_step == 8 and datamodule.trainer is trainer


def test_save_hyperparameters_variants() -> None:
    class Explicit(L.LightningModule):
        def __init__(self, lr: float, depth: int = 3, **extra: Any) -> None:
            super().__init__()
            self.save_hyperparameters("lr", "depth")

    class Ignoring(L.LightningModule):
        def __init__(self, lr: float, backbone: nn.Module, **extra: Any) -> None:
            super().__init__()
            self.save_hyperparameters(ignore=["backbone"])

    assert Explicit(0.1).hparams == {"lr": 0.1, "depth": 3}
    assert Ignoring(0.1, nn.Linear(1, 1), tag="x").hparams == {"lr": 0.1, "tag": "x"}
    with pytest.raises(MisconfigurationException, match="not an argument of __init__"):

        class Wrong(L.LightningModule):
            def __init__(self, lr: float) -> None:
                super().__init__()
                self.save_hyperparameters("learning_rate")

        Wrong(0.1)


def test_module_properties_outside_and_inside_a_trainer(tmp_path: Path) -> None:
    model = TinyModel()
    assert model.current_epoch == 0 and model.global_step == 0 and model.device.type == "cpu"
    model.log("ignored", 1.0)  # outside a Trainer: a no-op, as in Lightning
    with pytest.raises(RuntimeError, match="not attached to a Trainer"):
        _ = model.trainer
    trainer = L.Trainer(**quiet(tmp_path, max_steps=3))
    trainer.fit(model, loader())
    assert model.trainer is trainer and model.global_step == 3
    assert trainer.world_size == 1 and trainer.is_global_zero and trainer.global_rank == 0


def test_training_step_returning_a_dict_or_none(tmp_path: Path) -> None:
    outputs: list[Any] = []

    class DictOrNone(TinyModel):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            loss = super().training_step(batch, batch_idx)
            return None if batch_idx % 2 else {"loss": loss, "extra": batch_idx}

        def on_train_batch_end(self, out: Any, batch: Any, batch_idx: int) -> None:
            outputs.append(out)

    model = DictOrNone()
    before = model.layer.weight.detach().clone()
    L.Trainer(**quiet(tmp_path, max_epochs=1)).fit(model, loader())
    assert outputs[0]["extra"] == 0 and not outputs[0]["loss"].requires_grad
    assert outputs[1] is None
    assert not torch.equal(before, model.layer.weight)

    class NoLossKey(TinyModel):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            return {"value": super().training_step(batch, batch_idx)}

    with pytest.raises(MisconfigurationException, match="without a 'loss' key"):
        L.Trainer(**quiet(tmp_path, max_steps=1)).fit(NoLossKey(), loader())
