"""A training script the DDP tests start as real processes (python FILE, python -m, torchrun).

    python -m tests.integration.ddp_script OUT_DIR [--devices N] [--num-nodes N]
        [--steps N] [--batch-size B] [--fail-rank R] [--shuffle] [--step-sleep S]
        [--log-every N]

Every rank writes OUT_DIR/rank<global rank>.pt with its final weights and what it saw.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightjob as L
from lightjob.utilities import rank_zero_only


def data(n: int = 256) -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=generator)
    return TensorDataset(x, (x.sum(dim=1) > 0).long())


class Model(L.LightningModule):
    def __init__(self, fail_rank: int = -1, step_sleep: float = 0.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = nn.Linear(8, 2)
        self.fail_rank = fail_rank
        self.step_sleep = step_sleep
        self.seen: list[int] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        if self.global_rank == self.fail_rank and batch_idx == 2:
            raise RuntimeError(f"rank {self.global_rank} fails on purpose")
        self.seen.extend(x[:, 0].tolist())
        time.sleep(self.step_sleep)  # slow enough to watch from outside
        loss = nn.functional.cross_entropy(self.layer(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, _ = batch
        self.log("val_count", float(x.shape[0]), reduce_fx="sum", sync_dist=True)
        self.log("rank_mean", float(self.global_rank), sync_dist=True)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)


@rank_zero_only
def write_marker(path: str) -> None:
    open(path, "w").close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--num-nodes", type=int, default=None)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--fail-rank", type=int, default=-1)
    parser.add_argument("--shuffle", action="store_true")
    parser.add_argument("--step-sleep", type=float, default=0.0)
    parser.add_argument("--log-every", type=int, default=None)
    args = parser.parse_args()

    model = Model(args.fail_rank, args.step_sleep)
    train = DataLoader(data(), batch_size=args.batch_size, shuffle=args.shuffle)
    val = DataLoader(data(n=40), batch_size=8)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=args.devices,
        num_nodes=args.num_nodes,
        strategy="ddp",
        max_steps=args.steps,
        default_root_dir=args.out,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        log_every_n_steps=args.log_every,
    )
    trainer.fit(model, train, val)
    os.makedirs(args.out, exist_ok=True)
    write_marker(os.path.join(args.out, f"rank_zero_only.{trainer.global_rank}"))
    torch.save(
        {
            "state_dict": model.state_dict(),
            "seen": model.seen,
            "world_size": trainer.world_size,
            "node_rank": trainer.node_rank,
            "local_rank": trainer.local_rank,
            "val_count": float(trainer.callback_metrics["val_count"]),
            "rank_mean": float(trainer.callback_metrics["rank_mean"]),
        },
        os.path.join(args.out, f"rank{trainer.global_rank}.pt"),
    )


if __name__ == "__main__":
    main()
