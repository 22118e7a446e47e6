"""A plain PyTorch Lightning script, run as a LightningJob unchanged.

lightjob's operator (and `lightjob run`) give every node MASTER_ADDR, MASTER_PORT,
NODE_RANK and WORLD_SIZE, which Lightning's own environment reads; the script only has to
say how many nodes, which the operator also provides (PET_NNODES).
"""

import os

import pytorch_lightning as pl
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Digits(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=3e-3)


if __name__ == "__main__":
    digits = load_digits()
    data = TensorDataset(
        torch.tensor(digits.data, dtype=torch.float32) / 16.0, torch.tensor(digits.target)
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        num_nodes=int(os.environ.get("PET_NNODES", 1)),
        strategy="ddp",
        max_epochs=int(os.environ.get("EPOCHS", 2)),
        enable_checkpointing=False,
        logger=False,
        enable_progress_bar=False,
    )
    trainer.fit(Digits(), DataLoader(data, batch_size=64, shuffle=True))
    if trainer.is_global_zero:
        print(f"PyTorch Lightning trained on {trainer.world_size} processes", flush=True)
