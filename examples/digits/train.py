"""Handwritten digits (scikit-learn's bundled 8x8 set: real data, no download) with lightjob.

Runs anywhere the same way: `python examples/digits/train.py` on a laptop, as the pods of a
LightningJob (`lightjob run examples/digits/lightningjob.yaml`, or on a cluster), under
torchrun, and with PyTorch Lightning itself by switching the import below. The number of
nodes, the checkpoint location and resuming all come from the environment the operator sets.
"""

from __future__ import annotations

import os

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightjob as L  # or: import lightning.pytorch as L


def datasets(seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0  # pixel values are 0..16
    y = torch.tensor(digits.target)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    cut = int(0.8 * len(x))
    train, val = order[:cut], order[cut:]
    return TensorDataset(x[train], y[train]), TensorDataset(x[val], y[val])


class DigitsClassifier(L.LightningModule):
    def __init__(self, hidden: int = 128, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Linear(64, hidden), nn.ReLU(), nn.Dropout(0.1), nn.Linear(hidden, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", nn.functional.cross_entropy(logits, y), sync_dist=True)
        self.log(
            "val_acc", (logits.argmax(dim=1) == y).float().mean(), prog_bar=True, sync_dist=True
        )

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def main() -> None:
    L.seed_everything(int(os.environ.get("SEED", 0)))
    train, val = datasets()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=int(os.environ.get("DEVICES", 1)),
        max_epochs=int(os.environ.get("EPOCHS", 30)),
        deterministic=True,
        log_every_n_steps=10,
        enable_checkpointing=False,  # durable checkpoints go to LIGHTJOB_CHECKPOINT_URI
    )
    model = DigitsClassifier()
    val_loader = DataLoader(val, batch_size=128)
    trainer.fit(
        model,
        DataLoader(train, batch_size=int(os.environ.get("BATCH_SIZE", 32)), shuffle=True),
        val_loader,
    )
    # Measured here rather than read from what fit logged: a run resumed from its final
    # checkpoint trains no further and logs nothing, but its weights are still there.
    (results,) = trainer.validate(model, val_loader, verbose=False)
    if trainer.is_global_zero:
        print(f"final validation accuracy: {results['val_acc']:.3f}", flush=True)


if __name__ == "__main__":
    main()
