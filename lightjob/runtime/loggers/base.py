"""What every logger shares: Lightning's abstract `Logger`, the rank-zero experiment guard, and
the small conversions a logger applies to what it is given."""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from argparse import Namespace
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import asdict, is_dataclass
from functools import wraps
from pathlib import Path
from typing import Any

import fsspec
import torch

from lightjob.runtime.distributed import rank_zero_only


class Logger(ABC):
    """Base class of experiment loggers, as Lightning's: a subclass must give `name`,
    `version`, `log_metrics` and `log_hyperparams`; the rest has defaults."""

    @property
    @abstractmethod
    def name(self) -> str | None:
        """The experiment's name."""

    @property
    @abstractmethod
    def version(self) -> int | str | None:
        """The experiment's version."""

    @property
    def root_dir(self) -> str | None:
        """The folder that holds every version of the experiment; None when nothing is local."""
        return None

    @property
    def log_dir(self) -> str | None:
        """This version's folder; None when nothing is local."""
        return None

    @property
    def save_dir(self) -> str | None:
        """The folder logs are saved under; None when nothing is local."""
        return None

    @property
    def group_separator(self) -> str:
        """What separates a metric's group from its name (`train/loss`)."""
        return "/"

    @abstractmethod
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Record `metrics` at `step`."""

    @abstractmethod
    def log_hyperparams(
        self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any
    ) -> None:
        """Record hyperparameters."""

    def log_graph(self, model: torch.nn.Module, input_array: torch.Tensor | None = None) -> None:  # noqa: B027 (a hook: doing nothing is its default)
        """Record the model's graph, where the logger can."""

    def save(self) -> None:  # noqa: B027 (a hook: doing nothing is its default)
        """Write out what is buffered."""

    def finalize(self, status: str) -> None:
        """The run ended with `status` ("success", "failed", ...)."""
        self.save()

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:  # noqa: B027 (a hook: doing nothing is its default)
        """A ModelCheckpoint has just saved a checkpoint."""


class FolderLogger(Logger):
    """A logger that writes under `<save_dir>/<name>/<version>`: `name` None or "" adds no
    folder; `version` None is one past the highest `version_<n>` there, an int `n` is
    `version_<n>`, a string is the folder's name."""

    def __init__(
        self, save_dir: str | os.PathLike[str], name: str | None, version: int | str | None
    ) -> None:
        self._save_dir = os.fspath(save_dir)
        self._name = name or ""
        self._version = version
        self._fs, _ = fsspec.core.url_to_fs(self._save_dir)

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> int | str:
        if self._version is None:
            self._version = next_version(self._fs, self.root_dir)
        return self._version

    @property
    def save_dir(self) -> str:
        return self._save_dir

    @property
    def root_dir(self) -> str:
        return os.path.join(self.save_dir, self.name)

    @property
    def log_dir(self) -> str:
        version = self.version if isinstance(self.version, str) else f"version_{self.version}"
        return os.path.join(self.root_dir, version)


class DummyExperiment:
    """What `experiment` is on ranks other than 0: every call does nothing."""

    def nop(self, *args: Any, **kwargs: Any) -> None:
        return None

    def __getattr__(self, _: str) -> Callable[..., None]:
        return self.nop

    def __getitem__(self, index: Any) -> DummyExperiment:
        return self

    def __setitem__(self, *args: Any, **kwargs: Any) -> None:
        pass


def rank_zero_experiment(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Decorate a logger's `experiment`: the real one on global rank 0, a DummyExperiment
    elsewhere, so `self.logger.experiment.add_image(...)` is safe on every rank."""

    @wraps(fn)
    def experiment(self: Any) -> Any:
        if rank_zero_only.rank > 0:  # type: ignore[attr-defined]
            return DummyExperiment()
        return fn(self)

    return experiment


# -- what loggers do to what they are given -------------------------------------------------


def params_as_dict(params: Mapping[str, Any] | Namespace | None) -> dict[str, Any]:
    """Hyperparameters as a dict: a Namespace's attributes, {} for None."""
    if params is None:
        return {}
    if isinstance(params, Namespace):
        return vars(params)
    return params  # type: ignore[return-value]


def flatten_params(
    params: Mapping[Any, Any], separator: str = "/", parent: str = ""
) -> dict[str, Any]:
    """`{'a': {'b': 1}}` -> `{'a/b': 1}`: nested dicts, Namespaces, dataclasses and lists of
    dicts become paths; keys become strings."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        path = f"{parent}{separator}{key}" if parent else str(key)
        if is_dataclass(value) and not isinstance(value, type):
            value = asdict(value)
        elif isinstance(value, Namespace):
            value = vars(value)
        if isinstance(value, MutableMapping):
            flat.update(flatten_params(value, separator, path))
        elif isinstance(value, list) and all(isinstance(item, MutableMapping) for item in value):
            for index, item in enumerate(value):
                flat.update(flatten_params(item, separator, f"{path}/{index}"))
        else:
            flat[path] = value
    return flat


def with_prefix(metrics: Mapping[str, Any], prefix: str, separator: str) -> Mapping[str, Any]:
    """`{'loss': 1}` with prefix "train" -> `{'train-loss': 1}` (separator "-")."""
    if not prefix:
        return metrics
    return {f"{prefix}{separator}{key}": value for key, value in metrics.items()}


def scalar(value: Any) -> Any:
    """A tensor's Python number; anything else as it is."""
    return value.item() if isinstance(value, torch.Tensor) else value


def next_version(fs: Any, root: str) -> int:
    """One past the highest `version_<n>` folder under `root` (0 when there is none). As in
    Lightning, `n` is what follows "version_" up to the next "_": `version_3_old` counts as 3."""
    try:
        entries = fs.listdir(root)
    except OSError:
        return 0
    versions = []
    for entry in entries:
        path = entry["name"]
        name = os.path.basename(path.rstrip("/"))
        number = re.match(r"version_([^_]*)", name)
        if number and number.group(1).isdigit() and fs.isdir(path):
            versions.append(int(number.group(1)))
    return max(versions) + 1 if versions else 0


def scan_checkpoints(
    checkpoint_callback: Any, logged: Mapping[str, float]
) -> list[tuple[float, str, Any, str]]:
    """The checkpoints a ModelCheckpoint holds that were not logged yet (or changed since):
    (modified time, path, score, "latest" | "best" | "best_k"), oldest first."""
    found: dict[str, tuple[Any, str]] = {}
    if getattr(checkpoint_callback, "last_model_path", None) is not None:
        found[checkpoint_callback.last_model_path] = (
            getattr(checkpoint_callback, "current_score", None),
            "latest",
        )
    if getattr(checkpoint_callback, "best_model_path", None) is not None:
        found[checkpoint_callback.best_model_path] = (
            getattr(checkpoint_callback, "best_model_score", None),
            "best",
        )
    for path, score in getattr(checkpoint_callback, "best_k_models", {}).items():
        found[path] = (score, "best_k")
    ready = sorted(
        (Path(path).stat().st_mtime, path, score, tag)
        for path, (score, tag) in found.items()
        if path and Path(path).is_file()
    )
    return [c for c in ready if c[1] not in logged or logged[c[1]] < c[0]]


def checkpoint_settings(checkpoint_callback: Any) -> dict[str, Any]:
    """The ModelCheckpoint's settings as Lightning's loggers record them with a checkpoint
    (`_every_n_train_steps` is the name Lightning's metadata uses)."""
    names = ("monitor", "mode", "save_last", "save_top_k", "save_weights_only")
    settings = {
        n: getattr(checkpoint_callback, n) for n in names if hasattr(checkpoint_callback, n)
    }
    if hasattr(checkpoint_callback, "every_n_train_steps"):
        settings["_every_n_train_steps"] = checkpoint_callback.every_n_train_steps
    return settings


def logs_checkpoint_now(log_model: bool | str, checkpoint_callback: Any) -> bool:
    """`log_model="all"` logs each checkpoint as it is saved; `True` logs them when the run
    ends, unless the callback keeps every checkpoint (`save_top_k=-1`): then as saved too."""
    return log_model == "all" or (log_model is True and checkpoint_callback.save_top_k == -1)
