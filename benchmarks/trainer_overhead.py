"""Per-step time of the same MLP fit three ways, side by side in one run.

784-128-10 MLP, batch 64, synthetic data, CPU, one thread. Each way runs the same data
through the same model and optimizer; the step time is measured inside training_step from
a warm-up step to the last, so Trainer set-up is excluded and everything per step (data
loading, hooks, logging, progress bar) is included. Defaults everywhere: lightjob and
Lightning log `train_loss` every step with their default logger and progress bar.

    python benchmarks/trainer_overhead.py [--steps 3000] [--repeats 3]

Prints each way's median per-step time and the ratios to the hand-written loop, plus
import times. Targets (issue 3): lightjob <= 1.10x the raw loop, also with metrics
served and scraped (issue 9); `import lightjob;
lightjob.Trainer` <= 0.3 s over `import torch`.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

WARMUP = 100


def make_data(steps: int) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64 * steps, 784, generator=generator)
    y = torch.randint(0, 10, (64 * steps,), generator=generator)
    return DataLoader(TensorDataset(x, y), batch_size=64)


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))


class Clock:
    """Timestamps at the warm-up step and at the last step."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.start = self.end = 0.0

    def tick(self, index: int) -> None:
        if index == WARMUP:
            self.start = time.perf_counter()
        elif index == self.steps - 1:
            self.end = time.perf_counter()

    @property
    def per_step(self) -> float:
        return (self.end - self.start) / (self.steps - 1 - WARMUP)


def raw_loop(steps: int) -> float:
    clock, model, data = Clock(steps), mlp(), make_data(steps)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for index, (x, y) in enumerate(data):
        clock.tick(index)
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
    return clock.per_step


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
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    return Module


def lightjob_fit(steps: int) -> float:
    import lightjob

    clock = Clock(steps)
    model = module_class(lightjob.LightningModule)(clock)
    with tempfile.TemporaryDirectory() as root:
        trainer = lightjob.Trainer(max_epochs=1, default_root_dir=root, accelerator="cpu")
        trainer.fit(model, make_data(steps))
    return clock.per_step


METRICS_ENV = {"LIGHTJOB_POD_IP": "127.0.0.1"}


def lightjob_metrics_fit(steps: int) -> float:
    """lightjob with its Prometheus endpoint on (as under the operator), scraped every
    second meanwhile: far more often than Prometheus or the operator would."""
    import socket
    import threading
    import urllib.request

    if "LIGHTJOB_METRICS_PORT" not in METRICS_ENV:  # one server per process: one port
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            METRICS_ENV.update(LIGHTJOB_METRICS_PORT=str(sock.getsockname()[1]))
    port = METRICS_ENV["LIGHTJOB_METRICS_PORT"]
    os.environ.update(METRICS_ENV)
    done = threading.Event()
    scrapes = []

    def scrape() -> None:
        while not done.wait(1.0):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
                    scrapes.append(b"lightjob_global_step" in r.read())
            except OSError:
                pass  # the server starts with the first fit

    scraper = threading.Thread(target=scrape, daemon=True)
    scraper.start()
    try:
        return lightjob_fit(steps)
    finally:
        done.set()
        scraper.join()
        os.environ.pop("LIGHTJOB_METRICS_PORT")
        assert any(scrapes), "the metrics endpoint never answered"


def lightning_fit(steps: int) -> float | None:
    try:
        import pytorch_lightning as pl
    except ImportError:
        return None
    clock = Clock(steps)
    model = module_class(pl.LightningModule)(clock)
    with tempfile.TemporaryDirectory() as root:
        trainer = pl.Trainer(max_epochs=1, default_root_dir=root, accelerator="cpu", devices=1)
        trainer.fit(model, make_data(steps))
    return clock.per_step


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def import_seconds(code: str, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("PYTHONWARNINGS", "ignore")

    ways: dict[str, Any] = {
        "raw loop": raw_loop,
        "lightjob": lightjob_fit,
        "lightjob + metrics": lightjob_metrics_fit,
        "pytorch-lightning": lightning_fit,
    }
    results: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.repeats):  # interleaved, so drift hits every way alike
        for name, run in ways.items():
            gc.collect()  # leave no garbage from one way to be collected during the next
            per_step = run(args.steps)
            if per_step is not None:
                results[name].append(per_step)

    print(f"\nmachine: {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, 1 thread")
    print(f"{args.steps} steps x {args.repeats} repeats, median per-step time\n")
    base = statistics.median(results["raw loop"])
    print(f"{'way':<20}{'us/step':>10}{'vs raw':>10}")
    for name, values in results.items():
        if not values:
            print(f"{name:<20}{'(not installed)':>20}")
            continue
        median = statistics.median(values)
        print(f"{name:<20}{median * 1e6:>10.1f}{median / base:>9.3f}x")

    torch_import = import_seconds("import torch")
    ours = import_seconds("import lightjob; lightjob.Trainer")
    print(
        f"\nimport torch: {torch_import:.2f}s; import lightjob + Trainer: {ours:.2f}s "
        f"(+{ours - torch_import:.2f}s)"
    )
    try:
        import pytorch_lightning  # noqa: F401

        theirs = import_seconds("import pytorch_lightning")
        print(f"import pytorch_lightning: {theirs:.2f}s (+{theirs - torch_import:.2f}s)")
    except ImportError:
        pass


if __name__ == "__main__":
    main()
