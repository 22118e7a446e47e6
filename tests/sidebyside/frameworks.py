"""Run one script under lightjob and under PyTorch Lightning, and compare what a user sees.

Lightning is the oracle for the Trainer's behaviour. A side-by-side test writes its scenario
once, as a function of a `Framework` (the handful of modules a Lightning script imports),
runs it under both, and compares observable results: values, files, order, keys. It never
compares internals.

    def scenario(fw: Framework, root: Path) -> dict[str, float]:
        trainer = fw.Trainer(**quiet(root), max_epochs=2)
        trainer.fit(boring_model(fw)())
        return metrics_of(trainer.callback_metrics)

    ours, theirs = run_both(scenario, tmp_path)
    assert ours == theirs
"""

from __future__ import annotations

import importlib
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

T = TypeVar("T")


@dataclass(frozen=True)
class Framework:
    """What a Lightning script imports: `pl`, `pl.callbacks`, `pl.loggers`."""

    name: str  # "lightjob" or "lightning"
    pl: ModuleType
    callbacks: ModuleType
    loggers: ModuleType

    @property
    def Trainer(self) -> Any:
        return self.pl.Trainer

    @property
    def LightningModule(self) -> Any:
        return self.pl.LightningModule

    @property
    def LightningDataModule(self) -> Any:
        return self.pl.LightningDataModule

    @property
    def Callback(self) -> Any:
        return self.pl.Callback

    def module(self, path: str) -> ModuleType:
        """A module by its path under the package: `fw.module("core.saving")` is
        `lightjob.core.saving` or `pytorch_lightning.core.saving`."""
        return importlib.import_module(f"{self.pl.__name__}.{path}")


def load(name: str) -> Framework:
    package = {"lightjob": "lightjob", "lightning": "pytorch_lightning"}[name]
    pl = importlib.import_module(package)
    return Framework(
        name,
        pl,
        importlib.import_module(f"{package}.callbacks"),
        importlib.import_module(f"{package}.loggers"),
    )


@contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Lightning's start-up chatter (device info, dataloader-worker advice) is not what
    the tests compare; keep it out of the output."""
    loggers = [logging.getLogger(n) for n in ("pytorch_lightning", "lightning.pytorch")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*number of training batches.*")
            warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated.*")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def run(name: str, scenario: Callable[[Framework, Path], T], root: Path) -> T:
    """Run `scenario` under one framework, from the same seed, in its own folder."""
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    with _quiet_lightning():
        return scenario(load(name), root)


def run_both(scenario: Callable[[Framework, Path], T], tmp_path: Path) -> tuple[T, T]:
    """(lightjob's observation, Lightning's observation) of the same scenario."""
    ours = run("lightjob", scenario, tmp_path / "lightjob")
    theirs = run("lightning", scenario, tmp_path / "lightning")
    return ours, theirs


# -- what scenarios are built from ---------------------------------------------------------


class RandomDataset(Dataset[torch.Tensor]):
    def __init__(self, size: int = 32, length: int = 64, seed: int = 0) -> None:
        self.data = torch.randn(length, size, generator=torch.Generator().manual_seed(seed))

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.data[index]


def random_loader(length: int = 64, batch_size: int = 2, seed: int = 0) -> DataLoader[Any]:
    return DataLoader(RandomDataset(32, length, seed), batch_size=batch_size)


def boring_model(fw: Framework) -> type:
    """The usual toy: a Linear(32, 2) trained with SGD, with train/val/test/predict loaders
    of 64 random samples in batches of 2 (32 batches). Subclass it to add what a test needs."""

    class BoringModel(fw.LightningModule):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.layer = nn.Linear(32, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layer(x)

        def loss(self, out: torch.Tensor) -> torch.Tensor:
            return nn.functional.mse_loss(out, torch.ones_like(out))

        def training_step(self, batch: torch.Tensor, batch_idx: int) -> Any:
            return {"loss": self.loss(self(batch))}

        def validation_step(self, batch: torch.Tensor, batch_idx: int) -> Any:
            return {"x": self.loss(self(batch))}

        def test_step(self, batch: torch.Tensor, batch_idx: int) -> Any:
            return {"y": self.loss(self(batch))}

        def predict_step(self, batch: torch.Tensor, batch_idx: int) -> Any:
            return self(batch)

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.layer.parameters(), lr=0.1)

        def train_dataloader(self) -> Any:
            return random_loader(seed=1)

        def val_dataloader(self) -> Any:
            return random_loader(seed=2)

        def test_dataloader(self) -> Any:
            return random_loader(seed=3)

        def predict_dataloader(self) -> Any:
            return random_loader(seed=4)

    return BoringModel


def quiet(root: Path, **overrides: Any) -> dict[str, Any]:
    """Trainer flags that keep a test's output to what it compares: CPU, one device, files
    under `root`, no progress bar, no summary, no logger, no checkpoints."""
    flags: dict[str, Any] = {
        "default_root_dir": str(root),
        "accelerator": "cpu",
        "devices": 1,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        "logger": False,
    }
    flags.update(overrides)
    return flags


def metrics_of(metrics: dict[str, Any]) -> dict[str, float]:
    """A metrics dict as plain floats (rounded to 6 places), for comparing frameworks."""
    return {k: round(float(v), 6) for k, v in sorted(metrics.items())}


def files_under(root: Path) -> list[str]:
    """Every file below `root`, relative and sorted: what a user sees with `find`."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def outcome(action: Callable[[], T]) -> T | str:
    """What `action` returns, or "raises <ExceptionType>": for comparing the errors a user
    sees without comparing their wording."""
    try:
        return action()
    except Exception as err:
        return f"raises {type(err).__name__}"


def relative(path: str | Path | None, root: Path) -> str | None:
    """`path` as a user sees it under `root` (the frameworks run in different folders)."""
    return None if path is None else os.path.relpath(path, root)


def contents_under(root: Path) -> dict[str, Any]:
    """Every file below `root`, relative, with its content: text as text, TensorBoard event
    files (whose names carry a time, host and pid) as `events.out.tfevents.*` -> what
    `tensorboard_events` reads from them, anything else as its size in bytes."""
    found: dict[str, Any] = {}
    for name in files_under(root):
        path = root / name
        if "events.out.tfevents." in path.name:
            key = str(Path(name).parent / "events.out.tfevents.*")
            found.setdefault(key, []).append(tensorboard_events(path))
        elif path.suffix in (".csv", ".yaml", ".txt", ".log", ".json"):
            found[name] = path.read_bytes().decode()
        else:
            found[name] = path.stat().st_size
    return found


def tensorboard_events(path: Path) -> dict[str, Any]:
    """What TensorBoard shows from one event file: scalars as (tag, step, value), the HPARAMS
    tab's records (what each holds, less its wall-clock time), and whether a graph was
    recorded."""
    from google.protobuf.json_format import MessageToDict
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    scalars, hparams, graph = [], [], False
    for event in EventFileLoader(str(path)).Load():
        graph = graph or bool(event.graph_def)
        for value in event.summary.value:
            plugin = value.metadata.plugin_data
            if plugin.plugin_name == "scalars":
                number = value.tensor.float_val or value.tensor.double_val
                scalars.append((value.tag, event.step, round(float(number[0]), 6)))
            elif plugin.plugin_name == "hparams":
                record = MessageToDict(HParamsPluginData.FromString(plugin.content))
                for part in record.values():
                    if isinstance(part, dict):
                        part.pop("startTimeSecs", None)
                        part.pop("endTimeSecs", None)
                hparams.append((value.tag, event.step, record))
    return {"scalars": scalars, "hparams": hparams, "graph": graph}


def weights_of(module: nn.Module) -> dict[str, list[float]]:
    return {k: v.detach().flatten().tolist() for k, v in module.state_dict().items()}


# -- hook order -----------------------------------------------------------------------------

# Lightning's public Callback hooks; a LightningModule has most of them too (not the
# sanity-check ones).
SHARED_HOOKS = (
    "on_fit_start",
    "on_fit_end",
    "on_sanity_check_start",
    "on_sanity_check_end",
    "on_train_start",
    "on_train_end",
    "on_train_epoch_start",
    "on_train_epoch_end",
    "on_train_batch_start",
    "on_train_batch_end",
    "on_validation_start",
    "on_validation_end",
    "on_validation_epoch_start",
    "on_validation_epoch_end",
    "on_validation_batch_start",
    "on_validation_batch_end",
    "on_test_start",
    "on_test_end",
    "on_test_epoch_start",
    "on_test_epoch_end",
    "on_test_batch_start",
    "on_test_batch_end",
    "on_predict_start",
    "on_predict_end",
    "on_predict_epoch_start",
    "on_predict_epoch_end",
    "on_predict_batch_start",
    "on_predict_batch_end",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_zero_grad",
    "on_save_checkpoint",
    "on_load_checkpoint",
)


def recording(fw: Framework, base: type, calls: list[str]) -> tuple[type, Any]:
    """(a subclass of `base`, a callback) that append "module.<hook>" and "callback.<hook>"
    to `calls` each time the framework calls one of SHARED_HOOKS, then run the original."""

    def recorder(owner: str, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def hook(self: Any, *args: Any, **kwargs: Any) -> Any:
            calls.append(f"{owner}.{name}")
            return original(self, *args, **kwargs)

        return hook

    module_hooks = {
        n: recorder("module", n, getattr(base, n)) for n in SHARED_HOOKS if hasattr(base, n)
    }
    callback_hooks = {n: recorder("callback", n, getattr(fw.Callback, n)) for n in SHARED_HOOKS}
    module_class = type(f"Recording{base.__name__}", (base,), module_hooks)
    callback_class = type("RecordingCallback", (fw.Callback,), callback_hooks)
    return module_class, callback_class()
