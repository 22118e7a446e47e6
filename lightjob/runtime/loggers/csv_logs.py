"""CSVLogger: metrics in `metrics.csv`, hyperparameters in `hparams.yaml`, both under
`<save_dir>/<name>/version_<n>`, as Lightning writes them; needs no extra package."""

from __future__ import annotations

import csv
import os
import warnings
from argparse import Namespace
from typing import Any

import fsspec

from lightjob.core.saving import save_hparams_to_yaml
from lightjob.runtime.distributed import rank_zero_only
from lightjob.runtime.loggers.base import (
    FolderLogger,
    params_as_dict,
    rank_zero_experiment,
    scalar,
    with_prefix,
)


class ExperimentWriter:
    """What `CSVLogger.experiment` is: rows buffered in `metrics` until `save()` writes them
    to `metrics_file_path`; `log_hparams` writes `hparams.yaml` at once.

    The CSV header is every metric name seen so far, sorted; a new name rewrites the file
    under the wider header. Rows end in "\\r\\n" (the csv module's default), as Lightning's.
    """

    NAME_METRICS_FILE = "metrics.csv"
    NAME_HPARAMS_FILE = "hparams.yaml"

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir
        self.metrics_file_path = os.path.join(log_dir, self.NAME_METRICS_FILE)
        self.metrics: list[dict[str, Any]] = []
        self.metrics_keys: list[str] = []
        self.hparams: dict[str, Any] = {}
        self._fs, _ = fsspec.core.url_to_fs(log_dir)
        if self._fs.exists(log_dir) and self._fs.listdir(log_dir):
            warnings.warn(
                f"Experiment logs directory {log_dir} exists and is not empty. Previous log "
                "files in this directory will be deleted when the new ones are saved!",
                stacklevel=2,
            )
            if self._fs.isfile(self.metrics_file_path):
                self._fs.rm_file(self.metrics_file_path)
        self._fs.makedirs(log_dir, exist_ok=True)

    def log_hparams(self, params: dict[str, Any]) -> None:
        self.hparams.update(params)
        save_hparams_to_yaml(os.path.join(self.log_dir, self.NAME_HPARAMS_FILE), self.hparams)

    def log_metrics(self, metrics_dict: dict[str, Any], step: int | None = None) -> None:
        if step is None:
            step = len(self.metrics)
        row = {key: scalar(value) for key, value in metrics_dict.items()}
        row["step"] = step
        self.metrics.append(row)

    def save(self) -> None:
        if not self.metrics:
            return
        seen = set(self.metrics_keys)
        new_keys = {key for row in self.metrics for key in row} - seen
        self.metrics_keys = sorted(seen | new_keys)
        exists = self._fs.isfile(self.metrics_file_path)
        if new_keys and exists:
            self._rewrite(self.metrics_keys)
        with self._fs.open(self.metrics_file_path, "a" if exists else "w", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=self.metrics_keys)
            if not exists:
                writer.writeheader()
            writer.writerows(self.metrics)
        self.metrics = []

    def _rewrite(self, header: list[str]) -> None:
        with self._fs.open(self.metrics_file_path, "r", newline="") as source:
            rows = list(csv.DictReader(source))
        with self._fs.open(self.metrics_file_path, "w", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=header)
            writer.writeheader()
            writer.writerows(rows)


class CSVLogger(FolderLogger):
    """Log to `<save_dir>/<name>/<version>/`: `metrics.csv` and `hparams.yaml`.

    `name` None or "" puts the versions straight under `save_dir`. `version` None takes the
    next free `version_<n>`; an int `n` means `version_<n>`, a string is the folder's name.
    Metric names get `prefix` and "-" in front. Rows are written when `step + 1` is a multiple
    of `flush_logs_every_n_steps`, on `save()` and on `finalize()`.
    """

    LOGGER_JOIN_CHAR = "-"

    def __init__(
        self,
        save_dir: str | os.PathLike[str],
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        prefix: str = "",
        flush_logs_every_n_steps: int = 100,
    ) -> None:
        super().__init__(save_dir, name, version)
        self._prefix = prefix
        self._flush_logs_every_n_steps = flush_logs_every_n_steps
        self._experiment: ExperimentWriter | None = None

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        """The ExperimentWriter; creating it creates the version folder."""
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = ExperimentWriter(self.log_dir)
        return self._experiment

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace | None = None) -> None:
        self.experiment.log_hparams(params_as_dict(params))

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        metrics = dict(with_prefix(metrics, self._prefix, self.LOGGER_JOIN_CHAR))
        if step is None:
            step = len(self.experiment.metrics)
        self.experiment.log_metrics(metrics, step)
        if (step + 1) % self._flush_logs_every_n_steps == 0:
            self.save()

    @rank_zero_only
    def save(self) -> None:
        self.experiment.save()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._experiment is not None:  # nothing was logged: leave no empty folder behind
            self.save()
