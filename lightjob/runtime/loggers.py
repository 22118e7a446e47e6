"""Experiment loggers. The Trainer calls them on global rank 0 only, every log_every_n_steps."""

from __future__ import annotations

import csv
import io
import os
import re
from typing import Any

import fsspec
import yaml


class Logger:
    """Base class: a place metrics and hyperparameters go."""

    @property
    def name(self) -> str:
        return "default"

    @property
    def version(self) -> int | str:
        return 0

    @property
    def save_dir(self) -> str | None:
        return None

    @property
    def root_dir(self) -> str | None:
        return os.path.join(self.save_dir, self.name) if self.save_dir else None

    @property
    def log_dir(self) -> str | None:
        root = self.root_dir
        if root is None:
            return None
        version = self.version if isinstance(self.version, str) else f"version_{self.version}"
        return os.path.join(root, version)

    @property
    def experiment(self) -> Any:
        return None

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None: ...

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None: ...

    def save(self) -> None: ...

    def finalize(self, status: str) -> None:
        self.save()


def _next_version(root: str) -> int:
    fs, path = fsspec.core.url_to_fs(root)
    if not fs.isdir(path):
        return 0
    versions = []
    for entry in fs.ls(path, detail=False):
        match = re.fullmatch(r"version_(\d+)", os.path.basename(entry.rstrip("/")))
        if match:
            versions.append(int(match.group(1)))
    return max(versions) + 1 if versions else 0


def _write_hparams(log_dir: str, params: Any) -> None:
    values = (
        vars(params) if hasattr(params, "__dict__") and not isinstance(params, dict) else params
    )
    plain = {
        k: v if isinstance(v, int | float | str | bool | type(None)) else repr(v)
        for k, v in dict(values).items()
    }
    fs, path = fsspec.core.url_to_fs(log_dir)
    fs.makedirs(path, exist_ok=True)
    with fs.open(os.path.join(path, "hparams.yaml"), "w") as out:
        yaml.safe_dump(plain, out)


class _FileLogger(Logger):
    """A logger writing under `<save_dir>/<name>/version_<n>`: the next free version unless
    one is given."""

    def __init__(
        self,
        save_dir: str | os.PathLike[str],
        name: str | None,
        version: int | str | None,
        prefix: str,
    ) -> None:
        self._save_dir = os.fspath(save_dir)
        self._name = name or ""
        self._version = version
        self._prefix = prefix

    @property
    def name(self) -> str:
        return self._name

    @property
    def save_dir(self) -> str:
        return self._save_dir

    @property
    def version(self) -> int | str:
        if self._version is None:
            self._version = _next_version(os.path.join(self._save_dir, self._name))
        return self._version


class CSVLogger(_FileLogger):
    """Metrics to `<save_dir>/<name>/version_<n>/metrics.csv`; needs no extra package.

    Rows are buffered and written every `flush_logs_every_n_steps` logging calls; a new
    metric name rewrites the file with the wider header.
    """

    def __init__(
        self,
        save_dir: str = ".",
        name: str = "lightning_logs",
        version: int | str | None = None,
        prefix: str = "",
        flush_logs_every_n_steps: int = 100,
    ) -> None:
        super().__init__(save_dir, name, version, prefix)
        self._flush_every = flush_logs_every_n_steps
        self._rows: list[dict[str, Any]] = []
        self._header: list[str] = []
        self._written = 0  # rows already on disk

    @property
    def metrics_file_path(self) -> str:
        return os.path.join(str(self.log_dir), "metrics.csv")

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        _write_hparams(str(self.log_dir), params)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        row: dict[str, Any] = {f"{self._prefix}{k}": v for k, v in metrics.items()}
        row["step"] = step
        self._rows.append(row)
        if len(self._rows) % self._flush_every == 0:
            self.save()

    def save(self) -> None:
        keys = list(self._header)
        for row in self._rows:
            keys.extend(k for k in row if k not in keys)
        fs, path = fsspec.core.url_to_fs(self.metrics_file_path)
        fs.makedirs(os.path.dirname(path), exist_ok=True)
        if keys != self._header or self._written == 0:
            rows, mode = self._rows, "w"  # rewrite everything under the new header
        else:
            rows, mode = self._rows[self._written :], "a"
        if not rows:
            return
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=keys, lineterminator="\n")
        if mode == "w":
            writer.writeheader()
        writer.writerows(rows)
        with fs.open(path, mode) as out:
            out.write(buffer.getvalue())
        self._header = keys
        self._written = len(self._rows)


class TensorBoardLogger(_FileLogger):
    """Metrics as TensorBoard event files; needs the `tensorboard` package."""

    def __init__(
        self,
        save_dir: str = ".",
        name: str = "lightning_logs",
        version: int | str | None = None,
        prefix: str = "",
        **kwargs: Any,
    ) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise ModuleNotFoundError(
                "TensorBoardLogger needs the tensorboard package: pip install tensorboard "
                "(or use the default CSVLogger)"
            ) from err
        self._writer_class = SummaryWriter
        super().__init__(save_dir, name, version, prefix)
        self._kwargs = kwargs
        self._writer: Any = None

    @property
    def experiment(self) -> Any:
        if self._writer is None:
            self._writer = self._writer_class(log_dir=str(self.log_dir), **self._kwargs)
        return self._writer

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        _write_hparams(str(self.log_dir), params)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        for key, value in metrics.items():
            self.experiment.add_scalar(f"{self._prefix}{key}", value, step)

    def save(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def finalize(self, status: str) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None
