"""GPU throughput: a hand-written loop, lightjob and PyTorch Lightning, per precision.

Run by benchmarks/gpu_check.sh on a GPU machine (CI never needs one). For each of 32-true,
bf16-mixed and 16-mixed it trains the same MLP (4 x 2048 hidden, batch 512, pinned CPU
batches moved to the GPU each step) three ways, lightjob and Lightning with
strategy="ddp" on one GPU so the NCCL process group is exercised, and prints samples/s and
the ratio to the hand-written loop. Timing runs from a warm-up step to the last, with a
device synchronize at both ends.
"""

from __future__ import annotations

import argparse
import gc
import os
import socket
import statistics
import tempfile
import time
import urllib.request
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

WARMUP = 30
BATCH = 512
WIDTH = 2048
PRECISIONS = ["32-true", "bf16-mixed", "16-mixed"]


def make_data(steps: int) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH * steps, WIDTH, generator=generator)
    y = torch.randint(0, 10, (BATCH * steps,), generator=generator)
    return DataLoader(TensorDataset(x, y), batch_size=BATCH, pin_memory=True)


def mlp() -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(4):
        layers += [nn.Linear(WIDTH, WIDTH), nn.GELU()]
    return nn.Sequential(*layers, nn.Linear(WIDTH, 10))


class Clock:
    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.start = self.end = 0.0

    def tick(self, index: int) -> None:
        if index in (WARMUP, self.steps - 1):
            torch.cuda.synchronize()
            if index == WARMUP:
                self.start = time.perf_counter()
            else:
                self.end = time.perf_counter()

    @property
    def samples_per_second(self) -> float:
        return BATCH * (self.steps - 1 - WARMUP) / (self.end - self.start)


def raw_loop(steps: int, precision: str) -> float:
    device = torch.device("cuda")
    clock, model = Clock(steps), mlp().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "16-mixed")
    for index, (x, y) in enumerate(make_data(steps)):
        clock.tick(index)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        optimizer.zero_grad()
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = nn.functional.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return clock.samples_per_second


def module_class(base: type) -> type:
    class Module(base):  # type: ignore[misc, valid-type]
        def __init__(self, clock: Clock) -> None:
            super().__init__()
            self.net = mlp()
            self.clock = clock

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            self.clock.tick(batch_idx)
            x, y = batch
            loss = nn.functional.cross_entropy(self.net(x), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self) -> Any:
            return torch.optim.AdamW(self.parameters(), lr=1e-4)

    return Module


def framework_fit(package: Any, steps: int, precision: str) -> float:
    clock = Clock(steps)
    model = module_class(package.LightningModule)(clock)
    with tempfile.TemporaryDirectory() as root:
        trainer = package.Trainer(
            accelerator="gpu",
            devices=1,
            strategy="ddp",
            precision=precision,
            max_epochs=1,
            default_root_dir=root,
            enable_checkpointing=False,
        )
        trainer.fit(model, make_data(steps))
        backend = torch.distributed.get_backend() if torch.distributed.is_initialized() else "none"
    print(f"  {package.__name__} {precision}: process group backend {backend}", flush=True)
    return clock.samples_per_second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    assert torch.cuda.is_available(), "this benchmark needs a CUDA GPU"
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    # lightjob runs as under the operator: serving its Prometheus metrics (issue 9).
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        metrics_port = sock.getsockname()[1]
    os.environ.update(LIGHTJOB_METRICS_PORT=str(metrics_port), LIGHTJOB_POD_IP="127.0.0.1")
    import lightjob

    try:
        import pytorch_lightning
    except ImportError:
        pytorch_lightning = None
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    table: list[tuple[str, str, float]] = []
    for precision in PRECISIONS:
        ways: dict[str, Any] = {
            "raw loop": lambda p: raw_loop(args.steps, p),
            "lightjob": lambda p: framework_fit(lightjob, args.steps, p),
        }
        if pytorch_lightning is not None:
            ways["pytorch-lightning"] = lambda p: framework_fit(pytorch_lightning, args.steps, p)
        results: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(args.repeats):
            for name, run in ways.items():
                gc.collect()
                torch.cuda.empty_cache()
                results[name].append(run(precision))
        for name, values in results.items():
            table.append((precision, name, statistics.median(values)))

    print(f"\n{'precision':<12}{'way':<20}{'samples/s':>12}{'vs raw':>9}")
    for precision, name, value in table:
        base = next(v for p, n, v in table if p == precision and n == "raw loop")
        print(f"{precision:<12}{name:<20}{value:>12.0f}{value / base:>8.3f}x")

    # The endpoint lightjob served meanwhile, CUDA memory gauges included.
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        served = [
            line
            for line in r.read().decode().splitlines()
            if line.startswith(("lightjob_cuda_memory", "lightjob_global_step", "lightjob_samples"))
        ]
    print("\nlightjob metrics (served during the lightjob runs):", *served, sep="\n  ")


if __name__ == "__main__":
    main()
