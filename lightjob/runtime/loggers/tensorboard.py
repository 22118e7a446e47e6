"""TensorBoardLogger: event files under `<save_dir>/<name>/version_<n>[/<sub_dir>]`, and
`hparams.yaml` beside them, as Lightning writes them; needs the `tensorboard` package."""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from argparse import Namespace
from typing import Any

import torch

from lightjob.core.saving import save_hparams_to_yaml
from lightjob.runtime.distributed import rank_zero_only
from lightjob.runtime.loggers.base import (
    FolderLogger,
    flatten_params,
    params_as_dict,
    rank_zero_experiment,
    scalar,
    with_prefix,
)


def is_tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


class TensorBoardLogger(FolderLogger):
    """Log to TensorBoard event files in `log_dir`.

    `name`, `version` and `prefix` work as in CSVLogger. `sub_dir` adds one more folder level
    under the version. `log_hyperparams` also records `hp_metric` = -1 (unless
    `default_hp_metric=False` or metrics are given), so TensorBoard's HPARAMS tab shows the
    run. `hparams.yaml` is written once, on the first `save()` (and on a successful
    `finalize`). `log_graph=True` lets `log_graph()` trace the model. Other keyword arguments
    go to torch's `SummaryWriter` (`flush_secs`, `max_queue`, ...).
    """

    LOGGER_JOIN_CHAR = "-"
    NAME_HPARAMS_FILE = "hparams.yaml"

    def __init__(
        self,
        save_dir: str | os.PathLike[str],
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        log_graph: bool = False,
        default_hp_metric: bool = True,
        prefix: str = "",
        sub_dir: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> None:
        if not is_tensorboard_available():
            raise ModuleNotFoundError(
                "TensorBoardLogger needs the tensorboard package: pip install tensorboard "
                "(or log with CSVLogger, which needs nothing)"
            )
        super().__init__(save_dir, name, version)
        self._log_graph = log_graph
        self._default_hp_metric = default_hp_metric
        self._prefix = prefix
        self._sub_dir = None if sub_dir is None else os.fspath(sub_dir)
        self._kwargs = kwargs
        self._experiment: Any = None
        self.hparams: dict[str, Any] = {}

    @property
    def sub_dir(self) -> str | None:
        return self._sub_dir

    @property
    def log_dir(self) -> str:
        """`root_dir/version_<n>[/sub_dir]`, with `~` and `$VARS` expanded."""
        log_dir = super().log_dir
        if self.sub_dir is not None:
            log_dir = os.path.join(log_dir, self.sub_dir)
        return os.path.expanduser(os.path.expandvars(log_dir))

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        """torch's `SummaryWriter` for `log_dir`, created on first use."""
        if self._experiment is None:
            from torch.utils.tensorboard import SummaryWriter

            if self.root_dir:
                self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = SummaryWriter(log_dir=self.log_dir, **self._kwargs)
        return self._experiment

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        for key, value in with_prefix(metrics, self._prefix, self.LOGGER_JOIN_CHAR).items():
            value = scalar(value)
            if isinstance(value, dict):
                self.experiment.add_scalars(key, value, step)
                continue
            try:
                self.experiment.add_scalar(key, value, step)
            except Exception as err:
                raise ValueError(
                    f"TensorBoardLogger cannot log {key}={value!r}: log a number, a one-element "
                    "tensor or a dict of them"
                ) from err

    @rank_zero_only
    def log_hyperparams(
        self,
        params: dict[str, Any] | Namespace | None,
        metrics: dict[str, Any] | Any | None = None,
        step: int | None = None,
    ) -> None:
        """Keep `params` for hparams.yaml and record them, with `metrics`, for TensorBoard's
        HPARAMS tab. Nested values are flattened (`a/b`); values TensorBoard cannot show
        become strings."""
        params = params_as_dict(params)
        self.hparams.update(params)
        shown = _tensorboard_values(flatten_params(params))
        if metrics is None:
            metrics = {"hp_metric": -1} if self._default_hp_metric else None
        elif not isinstance(metrics, dict):
            metrics = {"hp_metric": metrics}
        if not metrics:
            return
        self.log_metrics(metrics, step)
        from torch.utils.tensorboard.summary import hparams

        writer = self.experiment._get_file_writer()
        for summary in hparams(shown, metrics):  # the experiment, its start, its end
            writer.add_summary(summary, step)

    @rank_zero_only
    def log_graph(self, model: torch.nn.Module, input_array: Any = None) -> None:
        if not self._log_graph:
            return
        if input_array is None:
            input_array = getattr(model, "example_input_array", None)
        if input_array is None:
            warnings.warn(
                "Could not log computational graph to TensorBoard: The `model.example_input_array`"
                " attribute is not set or `input_array` was not given.",
                stacklevel=2,
            )
            return
        if not isinstance(input_array, torch.Tensor | tuple):
            warnings.warn(
                "Could not log computational graph to TensorBoard: The `input_array` or "
                f"`model.example_input_array` has type {type(input_array)} which can't be traced"
                " by TensorBoard. Make the input array a tuple representing the positional"
                " arguments to the model's `forward()` implementation.",
                stacklevel=2,
            )
            return
        self.experiment.add_graph(model, _as_a_batch(model, input_array))

    @rank_zero_only
    def save(self) -> None:
        self.experiment.flush()
        hparams_file = os.path.join(self.log_dir, self.NAME_HPARAMS_FILE)
        if self._fs.isdir(self.log_dir) and not self._fs.isfile(hparams_file):
            save_hparams_to_yaml(hparams_file, self.hparams)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._experiment is not None:
            self._experiment.flush()
            self._experiment.close()
        if status == "success":
            self.save()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_experiment"] = None  # a SummaryWriter holds threads and open files
        return state


def _tensorboard_values(params: dict[str, Any]) -> dict[str, Any]:
    """What TensorBoard's hparams can show: numbers, strings, bools and tensors as they are
    (numpy scalars as Python numbers), everything else, and arrays of 2+ dimensions, as str."""
    numpy = sys.modules.get("numpy")  # a numpy value can only exist once numpy is imported
    shown = {}
    for key, value in params.items():
        if numpy is not None and isinstance(value, numpy.bool_ | numpy.integer | numpy.floating):
            value = value.item()
        if type(value) not in (bool, int, float, str, torch.Tensor):
            value = str(value)
        if getattr(value, "ndim", 0) > 1:
            value = str(value)
        shown[key] = value
    return shown


def _as_a_batch(model: Any, batch: Any) -> Any:
    """The input as `forward` sees it in training: through the module's batch hooks."""
    if not hasattr(model, "transfer_batch_to_device"):
        return batch
    device = next(model.parameters(), torch.empty(0)).device
    batch = model.on_before_batch_transfer(batch, 0)
    batch = model.transfer_batch_to_device(batch, device, 0)
    return model.on_after_batch_transfer(batch, 0)
