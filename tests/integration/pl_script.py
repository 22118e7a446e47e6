"""A plain PyTorch Lightning script, unchanged from what a user would bring.

Started by the tests with the env lightjob's operator injects (MASTER_ADDR, MASTER_PORT,
NODE_RANK, WORLD_SIZE) to show that such scripts join across nodes.
"""

import os
import sys

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Model(pl.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.layer = nn.Linear(8, 2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


if __name__ == "__main__":
    out = sys.argv[1]
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(128, 8, generator=generator)
    loader = DataLoader(TensorDataset(x, (x.sum(1) > 0).long()), batch_size=8)
    model = Model()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        num_nodes=2,
        strategy="ddp",
        max_steps=4,
        default_root_dir=out,
        enable_checkpointing=False,
        logger=False,
        enable_progress_bar=False,
    )
    trainer.fit(model, loader)
    torch.save(
        {"state_dict": model.state_dict(), "world_size": trainer.world_size},
        os.path.join(out, f"rank{trainer.global_rank}.pt"),
    )
