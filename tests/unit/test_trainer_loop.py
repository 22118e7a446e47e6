"""The Trainer's loop and its flags, each shown with real training on tiny models."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import lightjob as L
from lightjob.callbacks import Callback
from lightjob.runtime.errors import MisconfigurationException
from tests.helpers import TinyModel, dataset, loader, quiet, raw_sgd_loop

ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = ROOT / "examples" / "tutorial" / "train.py"


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as stream:
        return list(csv.DictReader(stream))


def test_tutorial_runs_with_only_the_import_changed(tmp_path: Path) -> None:
    """Section 3 of the course: validation loss falls over 5 epochs; and the same file with
    the PyTorch Lightning imports runs under Lightning too."""
    result = subprocess.run(
        [sys.executable, str(TUTORIAL)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    rows = read_csv(tmp_path / "lightning_logs" / "version_0" / "metrics.csv")
    val = [float(r["val_loss"]) for r in rows if r["val_loss"]]
    assert len(val) == 5 and val[-1] < val[0], val

    source = TUTORIAL.read_text()
    lightning = source.replace("import lightjob as pl", "import pytorch_lightning as pl").replace(
        "from lightjob import Trainer", "from pytorch_lightning import Trainer"
    )
    changed = [
        (a, b) for a, b in zip(source.splitlines(), lightning.splitlines(), strict=True) if a != b
    ]
    assert [a.split("#")[0].strip() for a, _ in changed] == [
        "import lightjob as pl",
        "from lightjob import Trainer",
    ]
    (tmp_path / "pl").mkdir()
    (tmp_path / "pl" / "train.py").write_text(lightning)
    result = subprocess.run(
        [sys.executable, "train.py"],
        cwd=tmp_path / "pl",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_weights_equal_a_hand_written_loop(tmp_path: Path) -> None:
    batches = list(loader(n=96, batch_size=8))
    model = TinyModel(lr=0.1)
    L.Trainer(**quiet(tmp_path), max_steps=10).fit(model, batches)
    reference = TinyModel(lr=0.1)
    raw_sgd_loop(reference, batches, lr=0.1, steps=10)
    for ours, theirs in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_accumulation_and_clipping_equal_a_hand_written_loop(tmp_path: Path) -> None:
    batches = list(loader(n=96, batch_size=8))
    model = TinyModel(lr=0.5)
    flags = quiet(tmp_path, max_steps=3, accumulate_grad_batches=4, gradient_clip_val=0.05)
    L.Trainer(**flags).fit(model, batches)
    reference = TinyModel(lr=0.5)
    raw_sgd_loop(reference, batches, lr=0.5, steps=3, accumulate=4, clip=0.05)
    for ours, theirs in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    assert len(model.seen) == 12


def test_clipping_by_value_equals_a_hand_written_loop(tmp_path: Path) -> None:
    batches = list(loader(n=64, batch_size=8))
    model = TinyModel(lr=0.5)
    flags = quiet(tmp_path, max_steps=4, gradient_clip_val=0.01, gradient_clip_algorithm="value")
    L.Trainer(**flags).fit(model, batches)
    reference = TinyModel(lr=0.5)
    raw_sgd_loop(reference, batches, lr=0.5, steps=4, clip_value=0.01)
    unclipped = TinyModel(lr=0.5)
    raw_sgd_loop(unclipped, batches, lr=0.5, steps=4)
    torch.testing.assert_close(model.layer.weight, reference.layer.weight, rtol=0, atol=1e-6)
    assert not torch.allclose(model.layer.weight, unclipped.layer.weight)


def test_deterministic_runs_give_identical_weights(tmp_path: Path) -> None:
    def run() -> list[torch.Tensor]:
        L.seed_everything(7, workers=True)
        model = Dropout()
        trainer = L.Trainer(**quiet(tmp_path), max_epochs=2, deterministic=True)
        trainer.fit(model, loader(shuffle=True))
        return [p.detach().clone() for p in model.parameters()]

    first, second = run(), run()
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    torch.use_deterministic_algorithms(False)


class Dropout(TinyModel):
    """Randomness in the step itself (dropout) on top of a shuffled loader."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(nn.functional.dropout(x, 0.5, training=self.training))


class StageCounter(Callback):
    def __init__(self) -> None:
        self.batches: dict[str, int] = {"train": 0, "val": 0, "test": 0, "predict": 0}
        self.sanity = 0

    def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any) -> None:
        self.batches["train"] += 1

    def on_validation_batch_end(self, trainer: Any, pl_module: Any, *args: Any) -> None:
        if trainer.sanity_checking:
            self.sanity += 1
        else:
            self.batches["val"] += 1

    def on_test_batch_end(self, trainer: Any, pl_module: Any, *args: Any) -> None:
        self.batches["test"] += 1

    def on_predict_batch_end(self, trainer: Any, pl_module: Any, *args: Any) -> None:
        self.batches["predict"] += 1


@pytest.mark.parametrize("runs", [True, 3])
def test_fast_dev_run_runs_n_batches_per_stage_and_writes_nothing(
    tmp_path: Path, runs: Any
) -> None:
    counter = StageCounter()
    trainer = L.Trainer(
        default_root_dir=str(tmp_path), fast_dev_run=runs, callbacks=[counter], max_epochs=10
    )
    model = TinyModel()
    trainer.fit(model, loader(), loader())
    trainer.test(model, loader())
    trainer.predict(model, DataLoader(dataset().tensors[0], batch_size=8))
    n = int(runs)
    assert counter.batches == {"train": n, "val": n, "test": n, "predict": n}
    assert counter.sanity == 0
    assert trainer.global_step == n
    assert list(tmp_path.iterdir()) == []  # no logs, no checkpoints


def test_overfit_batches_reuses_the_same_batches(tmp_path: Path) -> None:
    model = TinyModel()
    shuffled = loader(n=64, batch_size=8, shuffle=True)
    L.Trainer(**quiet(tmp_path), max_epochs=3, overfit_batches=2).fit(model, shuffled)
    assert len(model.seen) == 6
    epochs = [model.seen[i : i + 2] for i in range(0, 6, 2)]
    for epoch in epochs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(epoch, epochs[0], strict=True))
    first_two = [x for x, _ in list(loader(n=64, batch_size=8))[:2]]
    assert all(torch.equal(a, b) for a, b in zip(epochs[0], first_two, strict=True))


@pytest.mark.parametrize(
    ("flags", "train_batches", "val_batches"),
    [
        ({"limit_train_batches": 3, "limit_val_batches": 2}, 3, 2),
        ({"limit_train_batches": 0.25, "limit_val_batches": 0.5}, 2, 4),
        ({"limit_val_batches": 0}, 8, 0),
    ],
)
def test_limit_batches(
    tmp_path: Path, flags: dict[str, Any], train_batches: int, val_batches: int
) -> None:
    counter = StageCounter()
    trainer = L.Trainer(**quiet(tmp_path, max_epochs=1, callbacks=[counter], **flags))
    trainer.fit(TinyModel(), loader(), loader())
    assert counter.batches["train"] == train_batches
    assert counter.batches["val"] == val_batches


def test_max_steps_stops_mid_epoch_and_validates_the_final_weights(tmp_path: Path) -> None:
    counter = StageCounter()
    trainer = L.Trainer(**quiet(tmp_path, max_steps=5, callbacks=[counter]))
    trainer.fit(TinyModel(), loader(), loader())
    assert trainer.global_step == 5 and counter.batches["train"] == 5
    assert counter.batches["val"] == 8  # one validation, after step 5
    assert "val_loss" in trainer.callback_metrics


def test_max_epochs_and_current_epoch(tmp_path: Path) -> None:
    trainer = L.Trainer(**quiet(tmp_path, max_epochs=3))
    trainer.fit(TinyModel(), loader())
    assert trainer.current_epoch == 3 and trainer.global_step == 24


def test_max_time_stops_training(tmp_path: Path) -> None:
    class Slow(TinyModel):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            import time

            time.sleep(0.05)
            return super().training_step(batch, batch_idx)

    trainer = L.Trainer(**quiet(tmp_path, max_time={"seconds": 1}, max_epochs=100))
    trainer.fit(Slow(), loader())
    assert 5 <= trainer.global_step < 40


@pytest.mark.parametrize(
    ("flags", "validations"),
    [
        ({"val_check_interval": 0.25}, 4 * 2),  # 4 per epoch, 2 epochs
        ({"val_check_interval": 3}, 2 * 2),  # after batches 3 and 6 of 8
        ({"check_val_every_n_epoch": 2}, 1),
        ({"val_check_interval": 1.0}, 2),
    ],
)
def test_validation_schedule(tmp_path: Path, flags: dict[str, Any], validations: int) -> None:
    runs: list[int] = []

    class Counter(Callback):
        def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
            runs.append(trainer.global_step)

    trainer = L.Trainer(**quiet(tmp_path, max_epochs=2, callbacks=[Counter()], **flags))
    trainer.fit(TinyModel(), loader(), loader(n=16))
    assert len(runs) == validations, runs


@pytest.mark.parametrize(("steps", "expected"), [(2, 2), (0, 0), (-1, 8)])
def test_sanity_check_runs_before_training(tmp_path: Path, steps: int, expected: int) -> None:
    counter = StageCounter()
    model = TinyModel()
    flags = quiet(tmp_path, max_steps=1, num_sanity_val_steps=steps, callbacks=[counter])
    L.Trainer(**flags).fit(model, loader(), loader())
    assert counter.sanity == expected


def test_hooks_run_in_the_documented_order(tmp_path: Path) -> None:
    calls: list[str] = []
    names = [
        "setup",
        "on_fit_start",
        "on_sanity_check_start",
        "on_sanity_check_end",
        "on_train_start",
        "on_train_epoch_start",
        "on_train_batch_start",
        "on_before_zero_grad",
        "on_before_backward",
        "on_after_backward",
        "on_before_optimizer_step",
        "on_train_batch_end",
        "on_validation_start",
        "on_validation_epoch_start",
        "on_validation_batch_start",
        "on_validation_batch_end",
        "on_validation_epoch_end",
        "on_validation_end",
        "on_train_epoch_end",
        "on_train_end",
        "on_fit_end",
        "teardown",
    ]

    def recorder(name: str) -> Any:
        return lambda *args, **kwargs: calls.append(name)

    class Recording(Callback):
        pass

    for name in names:
        setattr(Recording, name, recorder(name))
    L.Trainer(**quiet(tmp_path, max_epochs=1, num_sanity_val_steps=1, callbacks=[Recording()])).fit(
        TinyModel(), loader(n=8), loader(n=8)
    )
    assert calls == [
        "setup",
        "on_fit_start",
        "on_sanity_check_start",
        "on_validation_start",
        "on_validation_epoch_start",
        "on_validation_batch_start",
        "on_validation_batch_end",
        "on_validation_epoch_end",
        "on_validation_end",
        "on_sanity_check_end",
        "on_train_start",
        "on_train_epoch_start",
        "on_train_batch_start",
        "on_before_zero_grad",
        "on_before_backward",
        "on_after_backward",
        "on_before_optimizer_step",
        "on_train_batch_end",
        "on_validation_start",
        "on_validation_epoch_start",
        "on_validation_batch_start",
        "on_validation_batch_end",
        "on_validation_epoch_end",
        "on_validation_end",
        "on_train_epoch_end",
        "on_train_end",
        "on_fit_end",
        "teardown",
    ]


def test_module_hook_runs_before_callbacks_so_they_see_its_metrics(tmp_path: Path) -> None:
    """Lightning #16567: EarlyStopping could not see a metric the module logged in the same hook."""

    class LogsAtEpochEnd(TinyModel):
        def validation_step(self, batch: Any, batch_idx: int) -> None:
            pass

        def on_validation_epoch_end(self) -> None:
            self.log("late_metric", float(self.current_epoch))

    early = L.callbacks.EarlyStopping(monitor="late_metric", mode="min", patience=1)
    trainer = L.Trainer(**quiet(tmp_path, max_epochs=5, callbacks=[early]))
    trainer.fit(LogsAtEpochEnd(), loader(), loader())
    assert trainer.current_epoch == 2  # no improvement after epoch 0, stop after epoch 1


def test_on_train_batch_start_returning_minus_one_ends_the_epoch(tmp_path: Path) -> None:
    class StopsEarly(TinyModel):
        def on_train_batch_start(self, batch: Any, batch_idx: int) -> Any:
            return -1 if batch_idx == 3 else None

    model = StopsEarly()
    L.Trainer(**quiet(tmp_path, max_epochs=2)).fit(model, loader())
    assert len(model.seen) == 6


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda: L.Trainer(precision="fp8"), "precision='fp8') is not supported"),
        (lambda: L.Trainer(accelerator="tpu"), "accelerator='tpu') is not supported"),
        (lambda: L.Trainer(devices=0), "devices=0) must be >= 1"),
        (lambda: L.Trainer(accumulate_grad_batches=0), "accumulate_grad_batches=0"),
        (lambda: L.Trainer(gradient_clip_algorithm="l3"), "gradient_clip_algorithm='l3'"),
        (lambda: L.Trainer(max_time="soon"), "max_time='soon'"),
        (lambda: L.Trainer(strategy="fsdp"), "strategy='fsdp') is not supported"),
        (lambda: L.Trainer(num_nodes=2), "num_nodes=2) needs each node started with MASTER_ADDR"),
        (lambda: L.Trainer(auto_lr_find=True), "does not support auto_lr_find"),
    ],
)
def test_bad_trainer_flags_are_named(make: Any, fragment: str) -> None:
    with pytest.raises(MisconfigurationException) as info:
        trainer = make()
        trainer.fit(TinyModel(), loader())
    assert fragment in str(info.value)


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the message on a machine without CUDA"
)
def test_gpu_without_cuda_is_a_clear_error() -> None:
    with pytest.raises(MisconfigurationException, match="no CUDA GPU is available"):
        L.Trainer(accelerator="gpu")


def test_misuse_is_reported_before_any_training(tmp_path: Path) -> None:
    class NoStep(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(8, 2)

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    class NoOptimizer(TinyModel):
        def configure_optimizers(self) -> Any:
            return None

    class TwoOptimizers(TinyModel):
        def configure_optimizers(self) -> Any:
            return [torch.optim.SGD(self.parameters(), lr=0.1), torch.optim.Adam(self.parameters())]

    class BadReturn(TinyModel):
        def configure_optimizers(self) -> Any:
            return "adam"

    trainer = L.Trainer(**quiet(tmp_path, max_epochs=1))
    with pytest.raises(MisconfigurationException, match="has no training_step"):
        trainer.fit(NoStep(), loader())
    for model, fragment in [
        (NoOptimizer(), "configure_optimizers\\(\\) returned None"),
        (TwoOptimizers(), "automatic_optimization = False"),
        (BadReturn(), "returned a str"),
    ]:
        with pytest.raises(MisconfigurationException, match=fragment):
            trainer.fit(model, loader())
        assert model.seen == []
    with pytest.raises(MisconfigurationException, match="must be an iterable of batches"):
        trainer.fit(TinyModel(), 42)
    with pytest.raises(MisconfigurationException, match="needs training data"):
        trainer.fit(TinyModel())


def test_iterable_without_length(tmp_path: Path) -> None:
    class Stream:
        def __iter__(self) -> Any:
            yield from loader(n=40, batch_size=8)

    model = TinyModel()
    trainer = L.Trainer(**quiet(tmp_path, max_epochs=2))
    trainer.fit(model, Stream())
    assert len(model.seen) == 10 and trainer.current_epoch == 2


def test_default_root_dir_gets_logs_and_checkpoints(tmp_path: Path) -> None:
    trainer = L.Trainer(default_root_dir=str(tmp_path), max_epochs=2, enable_progress_bar=False)
    trainer.fit(TinyModel(), loader(), loader())
    run_dir = tmp_path / "lightning_logs" / "version_0"
    assert (run_dir / "metrics.csv").exists()
    assert (run_dir / "hparams.yaml").read_text().strip().splitlines() == ["features: 8", "lr: 0.1"]
    assert sorted(os.listdir(run_dir / "checkpoints")) == ["epoch=1-step=16.ckpt"]
    assert trainer.checkpoint_callback is not None
    assert trainer.checkpoint_callback.best_model_path.endswith("epoch=1-step=16.ckpt")


def test_dataloaders_defined_on_the_module(tmp_path: Path) -> None:
    class WithData(TinyModel):
        def train_dataloader(self) -> DataLoader:
            return loader()

        def val_dataloader(self) -> DataLoader:
            return loader(n=16)

    trainer = L.Trainer(**quiet(tmp_path, max_epochs=1))
    trainer.fit(WithData())
    assert trainer.global_step == 8 and "val_loss" in trainer.callback_metrics
    assert trainer.num_val_batches == [2.0]
