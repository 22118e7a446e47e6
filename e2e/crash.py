"""A training script that fails, for the end-to-end tests: inside fit after a few steps, or
with CRASH=after-fit once fit has returned (reading a metric that was never logged)."""

import os

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightjob as L

AFTER_FIT = os.environ.get("CRASH") == "after-fit"


class Fails(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        if batch_idx == 3 and not AFTER_FIT:
            raise ValueError("boom on purpose")
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


if __name__ == "__main__":
    data = TensorDataset(torch.randn(64, 4))
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, enable_checkpointing=False)
    trainer.fit(Fails(), DataLoader(data, batch_size=8))
    print(f"val_acc: {trainer.callback_metrics['val_acc']}")  # never logged: KeyError
