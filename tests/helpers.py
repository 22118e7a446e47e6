"""Small builders shared by the tests: data, a tiny LightningModule, quiet Trainer flags."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightjob as L


def dataset(n: int = 64, features: int = 8, seed: int = 0) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=generator)
    y = (x.sum(dim=1) > 0).long()
    return TensorDataset(x, y)


def loader(n: int = 64, batch_size: int = 8, shuffle: bool = False, seed: int = 0) -> DataLoader:
    return DataLoader(dataset(n, seed=seed), batch_size=batch_size, shuffle=shuffle)


class TinyModel(L.LightningModule):
    """A linear classifier that logs train_loss and val_loss."""

    def __init__(self, lr: float = 0.1, features: int = 8) -> None:
        super().__init__()
        self.save_hyperparameters()
        torch.manual_seed(0)
        self.layer = nn.Linear(features, 2)
        self.seen: list[torch.Tensor] = []  # the inputs of every training batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        self.seen.append(x.detach().clone())
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        accuracy = (self(x).argmax(dim=1) == y).float().mean()
        self.log("test_acc", accuracy)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def quiet(tmp_path: Any, **overrides: Any) -> dict[str, Any]:
    """Trainer flags for tests: files under tmp_path, no bar, no summary, no checkpoints."""
    flags: dict[str, Any] = {
        "default_root_dir": str(tmp_path),
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        "logger": False,
        "num_sanity_val_steps": 0,
    }
    flags.update(overrides)
    return flags


def raw_sgd_loop(
    model: nn.Module,
    batches: list[Any],
    lr: float,
    steps: int,
    accumulate: int = 1,
    clip: float | None = None,
    clip_value: float | None = None,
) -> None:
    """The hand-written loop the Trainer must match."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    done = 0
    for i, (x, y) in enumerate(batches):
        if done == steps:
            break
        if i % accumulate == 0:
            optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        (loss / accumulate if accumulate > 1 else loss).backward()
        if (i + 1) % accumulate == 0:
            if clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            if clip_value is not None:
                nn.utils.clip_grad_value_(model.parameters(), clip_value)
            optimizer.step()
            done += 1
