"""Training that must resume exactly: shuffled data, dropout, Adam, a step LR schedule.

    python -m tests.integration.resume_script OUT [--devices N] [--uri URI] [--max-epochs E]
        [--max-steps S] [--every-n-steps K] [--sleep SECONDS]

Rank 0 prints "STEP <global step>" after every step, so a test knows when to send SIGTERM.
Every rank appends "<epoch> <sample id>..." lines to OUT/seen.<rank> and, when fit
returns, saves its weights to OUT/final.<rank>.pt.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import lightjob as L


class Indexed(Dataset):  # type: ignore[type-arg]
    def __init__(self, n: int = 240) -> None:
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 8, generator=generator)
        self.y = (self.x.sum(dim=1) > 0).long()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> Any:
        noise = torch.randn(8) * 0.01  # data loading draws from the RNG too
        return self.x[index] + noise, self.y[index], index


class Model(L.LightningModule):
    def __init__(self, out: str, sleep: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2))
        self.out = out
        self.sleep = sleep

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y, index = batch
        with open(os.path.join(self.out, f"seen.{self.global_rank}"), "a") as seen:
            seen.write(f"{self.current_epoch} {' '.join(map(str, index.tolist()))}\n")
        if self.sleep:
            time.sleep(self.sleep)
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.global_rank == 0:
            print(f"STEP {self.global_step}", flush=True)

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=0.01)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.7)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--uri", default=None)
    parser.add_argument("--max-epochs", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--every-n-steps", type=int, default=None)
    parser.add_argument("--sleep", type=float, default=0.0)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    L.seed_everything(1234)
    model = Model(args.out, args.sleep)
    loader = DataLoader(Indexed(), batch_size=4, shuffle=True)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=args.devices,
        strategy="ddp" if args.devices > 1 else "auto",
        max_epochs=args.max_epochs,
        max_steps=args.max_steps,
        deterministic=True,
        default_root_dir=args.out,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        checkpoint_uri=args.uri,
        checkpoint_every_n_steps=args.every_n_steps,
    )
    trainer.fit(model, loader)
    torch.save(model.state_dict(), os.path.join(args.out, f"final.{trainer.global_rank}.pt"))


if __name__ == "__main__":
    main()
