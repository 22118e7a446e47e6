"""WandbLogger: a Weights & Biases run, as Lightning's WandbLogger records it; needs the
`wandb` package (WANDB_MODE=offline, or offline=True, works without an account)."""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import warnings
from argparse import Namespace
from pathlib import Path
from typing import Any, Literal

from torch import nn

from lightjob.runtime.distributed import rank_zero_only
from lightjob.runtime.errors import MisconfigurationException
from lightjob.runtime.loggers.base import (
    Logger,
    checkpoint_settings,
    logs_checkpoint_now,
    params_as_dict,
    rank_zero_experiment,
    scalar,
    scan_checkpoints,
    with_prefix,
)

_STEP_KEY = "trainer/global_step"


class WandbLogger(Logger):
    """Log to a W&B run, started on first use of `experiment` (or reusing `wandb.run`).

    `name` is the run's display name, `project` the project (else $WANDB_PROJECT, else
    "lightning_logs"), `version`/`id` a run id to resume, `save_dir`/`dir` where wandb keeps
    its files. Metrics carry `trainer/global_step`, the x-axis W&B plots them against.
    `log_model=True` logs ModelCheckpoint's checkpoints as artifacts when the run succeeds,
    "all" as they are saved (not with `offline=True`). Other keyword arguments go to
    `wandb.init` (`entity`, `group`, `tags`, ...).
    """

    LOGGER_JOIN_CHAR = "-"

    def __init__(
        self,
        name: str | None = None,
        save_dir: str | os.PathLike[str] = ".",
        version: str | None = None,
        offline: bool = False,
        dir: str | os.PathLike[str] | None = None,
        id: str | None = None,
        anonymous: bool | None = None,
        project: str | None = None,
        log_model: Literal["all"] | bool = False,
        experiment: Any = None,
        prefix: str = "",
        checkpoint_name: str | None = None,
        add_file_policy: Literal["mutable", "immutable"] = "mutable",
        **kwargs: Any,
    ) -> None:
        if importlib.util.find_spec("wandb") is None:
            raise ModuleNotFoundError("WandbLogger needs the wandb package: pip install wandb")
        if offline and log_model:
            raise MisconfigurationException(
                f"WandbLogger(offline=True, log_model={log_model!r}): checkpoints cannot be "
                "uploaded offline; set offline=False or log_model=False"
            )
        self._offline = offline
        self._log_model = log_model
        self._prefix = prefix
        self._experiment = experiment
        self._logged_model_time: dict[str, float] = {}
        self._checkpoint_callbacks: dict[int, Any] = {}
        self._checkpoint_name = checkpoint_name
        self.add_file_policy = add_file_policy
        self._wandb_init: dict[str, Any] = {
            "name": name,
            "project": project or os.environ.get("WANDB_PROJECT", "lightning_logs"),
            "dir": _fspath(save_dir) or _fspath(dir),
            "id": version or id,
            "resume": "allow",
            "anonymous": "allow" if anonymous else None,
            **kwargs,
        }
        self._project = self._wandb_init.get("project")
        self._save_dir = self._wandb_init.get("dir")
        self._name = self._wandb_init.get("name")
        self._id = self._wandb_init.get("id")

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self._experiment is not None:  # a run cannot be pickled; its id finds it again
            state["_id"] = getattr(self._experiment, "id", None)
            state["_wandb_init"] = {**self._wandb_init, "id": state["_id"]}
        state["_experiment"] = None
        return state

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        """The wandb Run: `wandb.run` when one is active, else a new one from `wandb.init`."""
        if self._experiment is not None:
            return self._experiment
        import wandb

        if wandb.run is not None:
            warnings.warn(
                "There is a wandb run already in progress and newly created instances of "
                "`WandbLogger` will reuse this run. If this is not desired, call "
                "`wandb.finish()` before instantiating `WandbLogger`.",
                stacklevel=2,
            )
            self._experiment = wandb.run
            return self._experiment
        init = dict(self._wandb_init)
        if self._offline:
            init.setdefault("mode", "offline")
        self._experiment = wandb.init(**init)
        if getattr(self._experiment, "define_metric", None):
            if self._wandb_init.get("sync_tensorboard"):
                self._experiment.define_metric("*", step_metric="global_step")
            else:
                self._experiment.define_metric(_STEP_KEY)
                self._experiment.define_metric("*", step_metric=_STEP_KEY, step_sync=True)
        return self._experiment

    def watch(
        self,
        model: nn.Module,
        log: str | None = "gradients",
        log_freq: int = 100,
        log_graph: bool = True,
    ) -> None:
        self.experiment.watch(model, log=log, log_freq=log_freq, log_graph=log_graph)

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace | None) -> None:
        """Into the run's config. A class is recorded by its name, a callable by what it
        returns when called without arguments (else its name), anything JSON can't hold as
        str."""
        config = {k: _json_value(_called(v)) for k, v in params_as_dict(params).items()}
        self.experiment.config.update(config, allow_val_change=True)

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        metrics = dict(with_prefix(metrics, self._prefix, self.LOGGER_JOIN_CHAR))
        if step is not None and not self._wandb_init.get("sync_tensorboard"):
            self.experiment.log({**metrics, _STEP_KEY: step})
        else:
            self.experiment.log(metrics)

    @rank_zero_only
    def log_table(
        self,
        key: str,
        columns: list[Any] | None = None,
        data: list[list[Any]] | None = None,
        dataframe: Any = None,
        step: int | None = None,
    ) -> None:
        """A wandb.Table from `columns` and `data`, or from a pandas `dataframe`."""
        import wandb

        table = wandb.Table(columns=columns, data=data, dataframe=dataframe)
        self.log_metrics({key: table}, step)

    @rank_zero_only
    def log_text(
        self,
        key: str,
        columns: list[str] | None = None,
        data: list[list[str]] | None = None,
        dataframe: Any = None,
        step: int | None = None,
    ) -> None:
        self.log_table(key, columns, data, dataframe, step)

    @rank_zero_only
    def log_image(
        self, key: str, images: list[Any], step: int | None = None, **kwargs: Any
    ) -> None:
        """Images (tensors, arrays, PIL images or paths); each keyword is a list with one value
        per image (`caption=[...]`, `masks=[...]`)."""
        self._log_media(key, "Image", images, step, kwargs)

    @rank_zero_only
    def log_audio(
        self, key: str, audios: list[Any], step: int | None = None, **kwargs: Any
    ) -> None:
        self._log_media(key, "Audio", audios, step, kwargs)

    @rank_zero_only
    def log_video(
        self, key: str, videos: list[Any], step: int | None = None, **kwargs: Any
    ) -> None:
        self._log_media(key, "Video", videos, step, kwargs)

    def _log_media(
        self, key: str, kind: str, items: list[Any], step: int | None, per_item: dict[str, Any]
    ) -> None:
        if not isinstance(items, list):
            raise TypeError(f'Expected a list as "{kind.lower()}s", found {type(items)}')
        for option, values in per_item.items():
            if len(values) != len(items):
                raise ValueError(
                    f"Expected {len(items)} items but only found {len(values)} for {option}"
                )
        import wandb

        media = getattr(wandb, kind)
        logged = [
            media(item, **{option: values[i] for option, values in per_item.items()})
            for i, item in enumerate(items)
        ]
        self.log_metrics({key: logged}, step)

    @property
    def save_dir(self) -> str | None:
        return self._save_dir

    @property
    def name(self) -> str | None:
        """The project's name (the run's own name is `experiment.name`), as in Lightning."""
        return self._project

    @property
    def version(self) -> str | None:
        """The run's id; the one given to the constructor until the run exists."""
        return self._experiment.id if self._experiment else self._id

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        if logs_checkpoint_now(self._log_model, checkpoint_callback):
            self._log_checkpoints(checkpoint_callback)
        elif self._log_model is True:
            self._checkpoint_callbacks[id(checkpoint_callback)] = checkpoint_callback

    @staticmethod
    @rank_zero_only
    def download_artifact(
        artifact: str,
        save_dir: str | os.PathLike[str] | None = None,
        artifact_type: str | None = None,
        use_artifact: bool | None = True,
    ) -> str:
        """Download `artifact` (through the active run when there is one); return its folder."""
        import wandb

        if wandb.run is not None and use_artifact:
            found = wandb.run.use_artifact(artifact)
        else:
            found = wandb.Api().artifact(artifact, type=artifact_type)
        return str(found.download(root=None if save_dir is None else os.fspath(save_dir)))

    def use_artifact(self, artifact: str, artifact_type: str | None = None) -> Any:
        """Record that this run uses `artifact`; return it."""
        return self.experiment.use_artifact(artifact, type=artifact_type)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """With `log_model=True`, log the checkpoints when the run succeeded (only then)."""
        if status != "success" or self._experiment is None:
            return
        for checkpoint_callback in self._checkpoint_callbacks.values():
            self._log_checkpoints(checkpoint_callback)

    def _log_checkpoints(self, checkpoint_callback: Any) -> None:
        """Each new checkpoint as version of the `model-<run id>` artifact, file `model.ckpt`,
        with aliases "latest" (and "best")."""
        import wandb

        for mtime, path, score, _ in scan_checkpoints(checkpoint_callback, self._logged_model_time):
            metadata = {
                "score": scalar(score),
                "original_filename": Path(path).name,
                type(checkpoint_callback).__name__: checkpoint_settings(checkpoint_callback),
            }
            if not self._checkpoint_name:
                self._checkpoint_name = f"model-{self.experiment.id}"
            artifact = wandb.Artifact(name=self._checkpoint_name, type="model", metadata=metadata)
            artifact.add_file(path, name="model.ckpt", policy=self.add_file_policy)
            is_best = path == checkpoint_callback.best_model_path
            self.experiment.log_artifact(
                artifact, aliases=["latest", "best"] if is_best else ["latest"]
            )
            self._logged_model_time[path] = mtime


def _called(value: Any) -> Any:
    """A class as its name; a callable as what it returns called without arguments, or as its
    name when that fails or returns another callable."""
    if inspect.isclass(value):
        return value.__name__
    if not callable(value):
        return value
    try:
        result = value()
    except Exception:
        return getattr(value, "__name__", None)
    return value.__name__ if callable(result) else result


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str | list | dict):
        return value
    try:
        json.dumps(value)
    except (TypeError, OverflowError):
        return str(value)
    return value


def _fspath(path: str | os.PathLike[str] | None) -> str | None:
    return None if path is None else os.fspath(path)
