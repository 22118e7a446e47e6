"""MLFlowLogger: runs, params, metrics and checkpoints in an MLflow tracking store, as
Lightning's MLFlowLogger records them; needs the `mlflow` (or `mlflow-skinny`) package."""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import tempfile
import time
import warnings
from argparse import Namespace
from pathlib import Path
from typing import Any, Literal

import yaml

from lightjob.runtime.distributed import rank_zero_only
from lightjob.runtime.loggers.base import (
    Logger,
    checkpoint_settings,
    flatten_params,
    logs_checkpoint_now,
    params_as_dict,
    rank_zero_experiment,
    scalar,
    scan_checkpoints,
    with_prefix,
)

log = logging.getLogger("lightjob")

LOCAL_FILE_URI_PREFIX = "file:"
_RUN_NAME_TAG = "mlflow.runName"
# Read once, as Lightning's default argument is: `mlflow.set_tracking_uri` (which the first
# logger calls) sets this variable, and a second logger must not pick up the first one's store.
_TRACKING_URI_AT_IMPORT = os.getenv("MLFLOW_TRACKING_URI")
_STATUSES = {"success": "FINISHED", "finished": "FINISHED", "failed": "FAILED"}


class MLFlowLogger(Logger):
    """Log to MLflow: one run in experiment `experiment_name` (created when missing).

    `tracking_uri` defaults to $MLFLOW_TRACKING_URI as it was when lightjob.loggers was
    imported, else `file:<save_dir>`. `name` is the
    experiment id and `version` the run id; the run is created on first use of `experiment`
    (an `MlflowClient`), or resumed with `run_id`. Params are flattened (`a/b`) and cut to 250
    characters; metric names lose characters MLflow refuses. `log_model=True` logs the
    ModelCheckpoint's checkpoints as artifacts when the run ends, "all" as they are saved.
    """

    LOGGER_JOIN_CHAR = "-"

    def __init__(
        self,
        experiment_name: str = "lightning_logs",
        run_name: str | None = None,
        tracking_uri: str | None = _TRACKING_URI_AT_IMPORT,
        tags: dict[str, Any] | None = None,
        save_dir: str | None = "./mlruns",
        log_model: Literal[True, False, "all"] = False,
        prefix: str = "",
        artifact_location: str | None = None,
        run_id: str | None = None,
        synchronous: bool | None = None,
    ) -> None:
        if importlib.util.find_spec("mlflow") is None:
            raise ModuleNotFoundError(
                "MLFlowLogger needs the mlflow package: pip install mlflow (or mlflow-skinny)"
            )
        from mlflow.tracking import MlflowClient

        self._tracking_uri = tracking_uri or f"{LOCAL_FILE_URI_PREFIX}{save_dir}"
        self._experiment_name = experiment_name
        self._experiment_id: str | None = None
        self._run_name = run_name
        self._run_id = run_id
        self.tags = tags
        self._log_model = log_model
        self._logged_model_time: dict[str, float] = {}
        self._checkpoint_callback: Any = None
        self._prefix = prefix
        self._artifact_location = artifact_location
        self._log_batch_kwargs = {} if synchronous is None else {"synchronous": synchronous}
        self._initialized = False
        self._mlflow_client = MlflowClient(self._tracking_uri)

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        """The `MlflowClient`; the first use finds or creates the experiment and the run."""
        if self._initialized:
            return self._mlflow_client
        import mlflow

        mlflow.set_tracking_uri(self._tracking_uri)
        client = self._mlflow_client
        if self._run_id is not None:
            self._experiment_id = client.get_run(self._run_id).info.experiment_id
        else:
            if self._experiment_id is None:
                found = client.get_experiment_by_name(self._experiment_name)
                if found is not None and found.lifecycle_stage != "deleted":
                    self._experiment_id = found.experiment_id
                else:
                    log.warning(
                        f"Experiment with name {self._experiment_name} not found. Creating it."
                    )
                    self._experiment_id = client.create_experiment(
                        name=self._experiment_name, artifact_location=self._artifact_location
                    )
            if self._run_name is not None:
                self.tags = self.tags or {}
                if _RUN_NAME_TAG in self.tags:
                    log.warning(
                        f"The tag {_RUN_NAME_TAG} is found in tags. "
                        f"The value will be overridden by {self._run_name}."
                    )
                self.tags[_RUN_NAME_TAG] = self._run_name
            from mlflow.tracking.context.registry import resolve_tags

            run = client.create_run(experiment_id=self._experiment_id, tags=resolve_tags(self.tags))
            self._run_id = run.info.run_id
        self._initialized = True
        return client

    @property
    def run_id(self) -> str | None:
        _ = self.experiment
        return self._run_id

    @property
    def experiment_id(self) -> str | None:
        _ = self.experiment
        return self._experiment_id

    @property
    def name(self) -> str | None:
        """The experiment id (not its name), as in Lightning."""
        return self.experiment_id

    @property
    def version(self) -> str | None:
        """The run id."""
        return self.run_id

    @property
    def save_dir(self) -> str | None:
        """The local folder of a `file:` tracking URI; None for a server."""
        if self._tracking_uri.startswith(LOCAL_FILE_URI_PREFIX):
            return self._tracking_uri[len(LOCAL_FILE_URI_PREFIX) :]
        return None

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace | None) -> None:
        from mlflow.entities import Param

        flat = flatten_params(params_as_dict(params))
        entries = [Param(key=key, value=str(value)[:250]) for key, value in flat.items()]
        for start in range(0, len(entries), 100):  # MLflow takes at most 100 per batch
            self.experiment.log_batch(
                run_id=self.run_id, params=entries[start : start + 100], **self._log_batch_kwargs
            )

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        from mlflow.entities import Metric

        timestamp_ms = int(time.time() * 1000)
        entries = []
        for key, value in with_prefix(metrics, self._prefix, self.LOGGER_JOIN_CHAR).items():
            if isinstance(value, str):
                log.warning(f"Discarding metric with string value {key}={value}.")
                continue
            allowed = re.sub(r"[^a-zA-Z0-9_/. -]+", "", key)
            if allowed != key:
                warnings.warn(
                    "MLFlow only allows '_', '/', '.' and ' ' special characters in metric name."
                    f" Replacing {key} with {allowed}.",
                    RuntimeWarning,
                    stacklevel=2,
                )
            entries.append(
                Metric(key=allowed, value=scalar(value), timestamp=timestamp_ms, step=step or 0)
            )
        self.experiment.log_batch(run_id=self.run_id, metrics=entries, **self._log_batch_kwargs)

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        """End the run: FINISHED for "success", FAILED for "failed", else `status` itself."""
        if not self._initialized:
            return
        if self._checkpoint_callback is not None:
            self._log_checkpoints(self._checkpoint_callback)
        if self.experiment.get_run(self.run_id):
            self.experiment.set_terminated(self.run_id, _STATUSES.get(status, status))

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        if logs_checkpoint_now(self._log_model, checkpoint_callback):
            self._log_checkpoints(checkpoint_callback)
        elif self._log_model is True:
            self._checkpoint_callback = checkpoint_callback

    def _log_checkpoints(self, checkpoint_callback: Any) -> None:
        """Each new checkpoint as artifacts under its file stem: the file, `metadata.yaml`
        (score, file name, the callback's settings) and `aliases.txt`."""
        for mtime, path, score, _ in scan_checkpoints(checkpoint_callback, self._logged_model_time):
            metadata = {
                "score": scalar(score),
                "original_filename": Path(path).name,
                "Checkpoint": checkpoint_settings(checkpoint_callback),
            }
            is_best = path == checkpoint_callback.best_model_path
            aliases = ["latest", "best"] if is_best else ["latest"]
            artifact_path = Path(path).stem
            self.experiment.log_artifact(self._run_id, path, artifact_path)
            with tempfile.TemporaryDirectory() as folder:
                with open(os.path.join(folder, "metadata.yaml"), "w") as out:
                    yaml.dump(metadata, out, default_flow_style=False)
                with open(os.path.join(folder, "aliases.txt"), "w") as out:
                    out.write(str(aliases))
                self.experiment.log_artifacts(self._run_id, folder, artifact_path)
            self._logged_model_time[path] = mtime
