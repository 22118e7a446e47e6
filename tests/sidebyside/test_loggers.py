"""The loggers, side by side with Lightning's: the files they write, their folders and
versions, what they do with odd hyperparameters, and the errors a user sees."""

from __future__ import annotations

import enum
import pickle
import threading
import warnings
from argparse import Namespace
from pathlib import Path
from typing import Any

import pytest
import torch

from lightjob.runtime.loggers import default_logger
from tests.sidebyside.frameworks import (
    Framework,
    boring_model,
    contents_under,
    outcome,
    quiet,
    relative,
    run,
    run_both,
)


class Color(enum.Enum):
    RED = 1


def odd_hparams() -> dict[Any, Any]:
    """Hyperparameters a user really passes: nested, a Namespace, a tuple, an Enum, a class,
    a tensor, a non-string key, and one value YAML cannot hold at all (a lock)."""
    return {
        "lr": 0.1,
        "nested": {"depth": 2, "widths": [4, 8]},
        "args": Namespace(seed=7),
        "betas": (0.9, 0.999),
        "color": Color.RED,
        "layer": torch.nn.Linear,
        "lock": threading.Lock(),
        "none": None,
        7: "seven",
    }


def prepare_versions(root: Path) -> None:
    """What a user's log folder holds after some runs: numbered versions, a renamed one,
    other folders, and a file named like a version."""
    for name in ("version_0", "version_1", "version_7_old", "version_x", "other"):
        (root / "exp" / name).mkdir(parents=True)
    (root / "exp" / "version_9").write_text("not a folder")


# -- CSVLogger --------------------------------------------------------------------------------


def test_csv_logger_writes_the_same_metrics_and_hparams_files(tmp_path: Path) -> None:
    def scenario(fw: Framework, root: Path) -> dict[str, Any]:
        logger = fw.loggers.CSVLogger(root, name="exp", prefix="train", flush_logs_every_n_steps=2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logger.log_hyperparams(odd_hparams())
        logger.log_metrics({"loss": torch.tensor(0.5), "acc": 1}, step=0)
        written_before_flush = contents_under(root)
        logger.log_metrics({"loss": 0.25}, step=1)  # step + 1 == 2: written now
        logger.log_metrics({"loss": 0.125, "lr": torch.tensor(3)})  # step None: buffered rows
        logger.log_metrics({"lr": 2.0})
        logger.log_hyperparams(Namespace(late=True))  # merged with the first ones
        logger.finalize("success")
        return {
            "before_flush": written_before_flush,
            "after": contents_under(root),
            "buffered": logger.experiment.metrics,
        }

    ours, theirs = run_both(scenario, tmp_path)
    assert "exp/version_0/metrics.csv" in theirs["after"]
    assert ours == theirs


def test_csv_logger_rewrites_the_header_when_columns_change(tmp_path: Path) -> None:
    def scenario(fw: Framework, root: Path) -> list[str]:
        logger = fw.loggers.CSVLogger(root, flush_logs_every_n_steps=1)
        seen = []
        for metrics in ({"b": 1, "a": 2}, {"a": 3, "c": 4}, {"a": 5}, {"d": 6, "b": 7}):
            logger.log_metrics(metrics)
            seen.append(Path(logger.experiment.metrics_file_path).read_bytes().decode())
        return seen

    ours, theirs = run_both(scenario, tmp_path)
    assert theirs[-1].splitlines()[0] == "a,b,c,d,step"
    assert ours == theirs


@pytest.mark.parametrize("name", [None, "", "exp"])
@pytest.mark.parametrize("version", [None, 3, "run-a"])
def test_csv_logger_folders_and_versions(tmp_path: Path, name: str | None, version: Any) -> None:
    def scenario(fw: Framework, root: Path) -> dict[str, Any]:
        prepare_versions(root)
        logger = fw.loggers.CSVLogger(root, name=name, version=version)
        seen = {
            "name": logger.name,
            "version": logger.version,
            "save_dir": relative(logger.save_dir, root),
            "root_dir": relative(logger.root_dir, root),
            "log_dir": relative(logger.log_dir, root),
            "files_before_use": contents_under(root),
        }
        logger.log_hyperparams()
        return {**seen, "files": contents_under(root)}

    ours, theirs = run_both(scenario, tmp_path)
    assert ours == theirs


def test_csv_logger_overwrites_a_reused_version(tmp_path: Path) -> None:
    def scenario(fw: Framework, root: Path) -> dict[str, Any]:
        first = fw.loggers.CSVLogger(root, version=0)
        first.log_metrics({"old": 1.0}, step=0)
        first.finalize("success")
        second = fw.loggers.CSVLogger(root, version=0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            second.log_metrics({"new": 2.0}, step=0)
        second.finalize("success")
        return {"warned": len(caught), "files": contents_under(root)}

    ours, theirs = run_both(scenario, tmp_path)
    assert theirs["warned"] == 1
    assert ours == theirs


def test_csv_experiment_writer_api(tmp_path: Path) -> None:
    def scenario(fw: Framework, root: Path) -> dict[str, Any]:
        logger = fw.loggers.CSVLogger(str(root / "logs"), name="")
        writer = logger.experiment
        writer.log_metrics({"x": torch.tensor(1.5)})
        seen = {
            "class": type(writer).__name__,
            "log_dir": relative(writer.log_dir, root),
            "metrics_file_path": relative(writer.metrics_file_path, root),
            "names": (writer.NAME_METRICS_FILE, writer.NAME_HPARAMS_FILE),
            "buffered": list(writer.metrics),
        }
        writer.save()
        writer.log_hparams({"a": 1})
        return {**seen, "after_save": writer.metrics, "hparams": writer.hparams}

    ours, theirs = run_both(scenario, tmp_path)
    assert ours == theirs


# -- TensorBoardLogger ------------------------------------------------------------------------


@pytest.mark.parametrize("name", [None, "", "exp"])
@pytest.mark.parametrize("version", [None, 3, "run-a"])
@pytest.mark.parametrize("sub_dir", [None, "train"])
def test_tensorboard_logger_folders_and_versions(
    tmp_path: Path, name: str | None, version: Any, sub_dir: str | None
) -> None:
    def scenario(fw: Framework, root: Path) -> dict[str, Any]:
        prepare_versions(root)
        logger = fw.loggers.TensorBoardLogger(root, name=name, version=version, sub_dir=sub_dir)
        return {
            "name": logger.name,
            "version": logger.version,
            "sub_dir": logger.sub_dir,
            "save_dir": relative(logger.save_dir, root),
            "root_dir": relative(logger.root_dir, root),
            "log_dir": relative(logger.log_dir, root),
            "files_before_use": contents_under(root),
        }

    ours, theirs = run_both(scenario, tmp_path)
    assert ours == theirs


def test_tensorboard_log_dir_expands_variables(tmp_path: Path, monkeypatch: Any) -> None:
    def scenario(fw: Framework, root: Path) -> str | None:
        monkeypatch.setenv("RUNS", str(root))
        logger = fw.loggers.TensorBoardLogger("$RUNS/tb", version=1, sub_dir="eval")
        return relative(logger.log_dir, root)

    ours, theirs = run_both(scenario, tmp_path)
    assert theirs == "tb/lightning_logs/version_1/eval"
    assert ours == theirs


def test_tensorboard_logger_records_the_same_events_and_hparams(tmp_path: Path) -> None:
    def scenario(fw: Framework, root: Path) -> dict[str, Any]:
        logger = fw.loggers.TensorBoardLogger(root, prefix="fit")
        hparams = odd_hparams()
        del hparams["lock"]  # its str (in the HPARAMS tab) holds an address
        logger.log_hyperparams(hparams)
        logger.log_metrics({"loss": torch.tensor(0.5), "pair": {"a": 1.0, "b": 2.0}}, step=3)
        # What the event files hold is only certain once flushed; hparams.yaml is not there yet.
        before_save = sorted(name for name in contents_under(root) if "events" not in name)
        logger.save()
        # A 2-d tensor is shown as its str; hparams.yaml exists already and is not rewritten
        # (it would hold the tensor's storage key, which differs between runs).
        logger.log_hyperparams({"late": 1, "grid": torch.zeros(2, 2)}, {"val_loss": 0.25}, step=4)
        logger.save()
        logger.finalize("success")
        return {"before_save": before_save, "after": contents_under(root)}

    ours, theirs = run_both(scenario, tmp_path)
    assert "lightning_logs/version_0/hparams.yaml" in theirs["after"]
    assert ours == theirs


def test_tensorboard_finalize_without_logging(tmp_path: Path) -> None:
    """A logger that logged nothing: a failed run leaves no files, a successful one an empty
    event file and `hparams.yaml` holding `{}`."""

    def scenario(fw: Framework, root: Path) -> dict[str, Any]:
        for status in ("success", "failed"):
            fw.loggers.TensorBoardLogger(root / status).finalize(status)
        return contents_under(root)

    ours, theirs = run_both(scenario, tmp_path)
    assert theirs["success/lightning_logs/version_0/hparams.yaml"] == "{}\n"
    assert ours == theirs


def test_tensorboard_hp_metric_values(tmp_path: Path) -> None:
    def scenario(fw: Framework, root: Path) -> dict[str, Any]:
        plain = fw.loggers.TensorBoardLogger(root, version="plain", default_hp_metric=False)
        plain.log_hyperparams({"a": 1})  # no metrics and no default: only kept for the yaml
        number = fw.loggers.TensorBoardLogger(root, version="number")
        number.log_hyperparams({"a": 1}, 0.75)  # a bare value is the hp_metric
        bad = fw.loggers.TensorBoardLogger(root, version="bad")
        error = outcome(lambda: bad.log_metrics({"text": "not a number"}))
        for logger in (plain, number, bad):
            logger.finalize("success")
        return {"error": error, "files": contents_under(root)}

    ours, theirs = run_both(scenario, tmp_path)
    assert ours == theirs


def test_tensorboard_log_graph(tmp_path: Path) -> None:
    def scenario(fw: Framework, root: Path) -> dict[str, Any]:
        model = boring_model(fw)()
        fw.Trainer(**quiet(root), max_steps=1, limit_val_batches=0).fit(model)
        off = fw.loggers.TensorBoardLogger(root, version="off")
        on = fw.loggers.TensorBoardLogger(root, version="on", log_graph=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            off.log_graph(model, torch.zeros(1, 32))  # log_graph=False: nothing
            on.log_graph(model)  # no example_input_array: a warning
            model.example_input_array = {"x": 1}
            on.log_graph(model)  # not a tensor or tuple: a warning
            model.example_input_array = torch.zeros(1, 32)
            on.log_graph(model)
        warned = [str(w.message) for w in caught if "computational graph" in str(w.message)]
        for logger in (off, on):
            logger.finalize("success")
        return {"warnings": len(warned), "files": contents_under(root / "lightning_logs")}

    ours, theirs = run_both(scenario, tmp_path)
    assert theirs["warnings"] == 2
    assert theirs["files"]["on/events.out.tfevents.*"][0]["graph"]
    assert ours == theirs


# -- what both file loggers share ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["CSVLogger", "TensorBoardLogger"])
def test_a_logger_pickles_after_use(tmp_path: Path, kind: str) -> None:
    def scenario(fw: Framework, root: Path) -> dict[str, Any]:
        logger = getattr(fw.loggers, kind)(root)
        _ = logger.experiment
        logger.log_metrics({"a": 1.0}, step=0)
        logger.save()
        copy = pickle.loads(pickle.dumps(logger))
        copy.log_metrics({"b": 2.0}, step=1)
        copy.finalize("success")
        return {
            "name": copy.name,
            "version": copy.version,
            "save_dir": relative(copy.save_dir, root),
            "files": contents_under(root),
        }

    ours, theirs = run_both(scenario, tmp_path)
    assert ours == theirs


@pytest.mark.parametrize("kind", ["CSVLogger", "TensorBoardLogger"])
def test_only_global_rank_zero_writes(tmp_path: Path, kind: str) -> None:
    def scenario(fw: Framework, root: Path) -> dict[str, Any]:
        rank_zero_only = fw.module("utilities").rank_zero_only
        rank = rank_zero_only.rank
        rank_zero_only.rank = 1
        try:
            logger = getattr(fw.loggers, kind)(root)
            experiment = logger.experiment
            seen = {
                "dummy": isinstance(experiment, fw.module("loggers.logger").DummyExperiment),
                "any_call": experiment.add_image("x", 1, whatever=2),
                "indexable": experiment[0].anything() is None,
                "log_metrics": logger.log_metrics({"a": 1.0}, step=0),
                "log_hyperparams": logger.log_hyperparams({"a": 1}),
            }
            logger.save()
            logger.finalize("success")
        finally:
            rank_zero_only.rank = rank
        return {**seen, "files": contents_under(root)}

    ours, theirs = run_both(scenario, tmp_path)
    assert theirs["files"] == {} and theirs["dummy"]
    assert ours == theirs


def test_a_fit_writes_the_same_files_names_columns_and_hparams(tmp_path: Path) -> None:
    """What a user finds after `fit` with both file loggers. The rows' values are the
    Trainer's (when it logs and what), not the loggers': this compares the rest."""

    def scenario(fw: Framework, root: Path) -> dict[str, Any]:
        class Model(boring_model(fw)):  # type: ignore[misc]
            def __init__(self, hidden: int = 4, optimizer: str = "sgd") -> None:
                super().__init__()
                self.save_hyperparameters()

            def training_step(self, batch: torch.Tensor, batch_idx: int) -> Any:
                loss = self.loss(self(batch))
                self.log("train_loss", loss)
                return loss

            def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
                self.log("val_loss", self.loss(self(batch)))

        loggers = [
            fw.loggers.CSVLogger(root / "logs"),
            fw.loggers.TensorBoardLogger(root / "logs", default_hp_metric=False),
        ]
        trainer = fw.Trainer(
            **quiet(root, logger=loggers, enable_checkpointing=True),
            max_epochs=2,
            limit_train_batches=4,
            limit_val_batches=2,
            log_every_n_steps=2,
        )
        trainer.fit(Model())
        files = contents_under(root / "logs")
        header = files["lightning_logs/version_0/metrics.csv"].splitlines()[0]
        return {
            "files": sorted(files),
            "hparams": files["lightning_logs/version_0/hparams.yaml"],
            "csv_header": header,
            "tensorboard_tags": sorted(
                {
                    tag
                    for tag, _, _ in files["lightning_logs/version_1/events.out.tfevents.*"][0][
                        "scalars"
                    ]
                }
            ),
        }

    ours, theirs = run_both(scenario, tmp_path)
    assert theirs["csv_header"] == "epoch,step,train_loss,val_loss"
    assert ours == theirs


@pytest.mark.parametrize(
    "slurm",
    [{}, {"SLURM_JOB_ID": "4242"}, {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "interactive"}],
)
def test_the_default_logger_is_lightnings_default(
    tmp_path: Path, monkeypatch: Any, slurm: dict[str, str]
) -> None:
    """`default_logger` (what the Trainer's `logger=True` is to build) against the logger
    Lightning's own `Trainer(logger=True)` builds: TensorBoard, here where tensorboard is
    installed, versioned by the SLURM job id inside a SLURM batch job."""
    for name in ("SLURM_JOB_ID", "SLURM_JOB_NAME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in slurm.items():
        monkeypatch.setenv(name, value)

    def seen(logger: Any, root: Path) -> dict[str, Any]:
        return {
            "class": type(logger).__name__,
            "name": logger.name,
            "version": logger.version,
            "log_dir": relative(logger.log_dir, root),
        }

    theirs = run(
        "lightning",
        lambda fw, root: seen(fw.Trainer(**quiet(root, logger=True)).logger, root),
        tmp_path / "lightning",
    )
    ours = run("lightjob", lambda fw, root: seen(default_logger(root), root), tmp_path / "lightjob")
    assert theirs["class"] == "TensorBoardLogger"
    assert ours == theirs


# -- the Logger base class --------------------------------------------------------------------


def test_a_custom_logger_subclass(tmp_path: Path) -> None:
    def scenario(fw: Framework, root: Path) -> dict[str, Any]:
        Logger = fw.loggers.Logger

        class Incomplete(Logger):  # type: ignore[misc,valid-type]
            def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
                pass

        class Minimal(Logger):  # type: ignore[misc,valid-type]
            saved = 0

            @property
            def name(self) -> str:
                return "mine"

            @property
            def version(self) -> int:
                return 0

            def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
                pass

            def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
                pass

            def save(self) -> None:
                self.saved += 1

        minimal = Minimal()
        minimal.finalize("success")
        return {
            "incomplete": outcome(lambda: Incomplete()),
            "abstract_base": outcome(lambda: Logger()),
            "defaults": (
                minimal.save_dir,
                minimal.root_dir,
                minimal.log_dir,
                minimal.group_separator,
                minimal.log_graph(torch.nn.Linear(1, 1)),
                minimal.after_save_checkpoint(None),
            ),
            "finalize_saves": minimal.saved,
        }

    ours, theirs = run_both(scenario, tmp_path)
    assert theirs["incomplete"] == "raises TypeError"
    assert ours == theirs


def test_rank_zero_experiment_decorates_a_custom_experiment(tmp_path: Path) -> None:
    def scenario(fw: Framework, root: Path) -> list[Any]:
        rank_zero_experiment = fw.module("loggers.logger").rank_zero_experiment
        rank_zero_only = fw.module("utilities").rank_zero_only

        class Tracker:
            @property
            @rank_zero_experiment
            def experiment(self) -> str:
                return "the real client"

        seen = [Tracker().experiment]
        rank, rank_zero_only.rank = rank_zero_only.rank, 2
        try:
            seen.append(
                isinstance(Tracker().experiment, fw.module("loggers.logger").DummyExperiment)
            )
            seen.append(repr(Tracker().experiment.log("x")))
        finally:
            rank_zero_only.rank = rank
        return seen

    ours, theirs = run_both(scenario, tmp_path)
    assert theirs == ["the real client", True, "None"]
    assert ours == theirs


def test_comet_and_lit_loggers_import_and_refuse_with_an_import_error(tmp_path: Path) -> None:
    def scenario(fw: Framework, root: Path) -> list[bool]:
        refused = []
        for name in ("CometLogger", "LitLogger"):
            try:
                getattr(fw.loggers, name)()
            except ImportError:
                refused.append(True)
        return refused

    ours, theirs = run_both(scenario, tmp_path)
    assert theirs == [True, True]  # neither comet-ml nor litlogger is installed here
    assert ours == theirs


# -- hparams.yaml ------------------------------------------------------------------------------


def test_save_and_load_hparams_yaml(tmp_path: Path) -> None:
    def scenario(fw: Framework, root: Path) -> dict[str, Any]:
        saving = fw.module("core.saving")
        path = root / "hparams.yaml"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            saving.save_hparams_to_yaml(path, odd_hparams())
            saving.save_hparams_to_yaml(root / "ns.yaml", Namespace(lr=0.1, name="x"))
            missing = saving.load_hparams_from_yaml(root / "absent.yaml")
        messages = sorted(str(w.message) for w in caught)
        return {
            "written": path.read_text(),
            "namespace": (root / "ns.yaml").read_text(),
            "loaded": outcome(lambda: saving.load_hparams_from_yaml(path)),
            "loaded_namespace": saving.load_hparams_from_yaml(str(root / "ns.yaml")),
            "missing": missing,
            "warnings": [(w.category.__name__) for w in caught],
            "skipped_lock": any("'lock'" in m for m in messages),
            "no_folder": outcome(
                lambda: saving.save_hparams_to_yaml(root / "absent" / "h.yaml", {"a": 1})
            ),
        }

    ours, theirs = run_both(scenario, tmp_path)
    assert theirs["skipped_lock"] and theirs["missing"] == {}
    assert ours == theirs


def test_hparams_yaml_round_trips_what_yaml_loads_back(tmp_path: Path) -> None:
    def scenario(fw: Framework, root: Path) -> Any:
        saving = fw.module("core.saving")
        hparams = {"lr": 1e-3, "betas": (0.9, 0.99), "layers": [1, 2], "cfg": {"a": None}}
        saving.save_hparams_to_yaml(root / "h.yaml", hparams)
        return saving.load_hparams_from_yaml(root / "h.yaml")

    ours, theirs = run_both(scenario, tmp_path)
    assert theirs["betas"] == (0.9, 0.99)
    assert ours == theirs


# -- MLflow and W&B ----------------------------------------------------------------------------


def fit_with_a_checkpoint(fw: Framework, root: Path) -> Any:
    """A short fit whose ModelCheckpoint saved one checkpoint: what `log_model` logs."""
    checkpoint = fw.callbacks.ModelCheckpoint(dirpath=root / "checkpoints")
    trainer = fw.Trainer(
        **quiet(root, enable_checkpointing=True, callbacks=[checkpoint]),
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=0,
    )
    trainer.fit(boring_model(fw)())
    return checkpoint


def test_mlflow_logger_records_the_same_run(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 wants opting in to files

    def scenario(fw: Framework, root: Path) -> dict[str, Any]:
        logger = fw.loggers.MLFlowLogger(
            experiment_name="exp",
            run_name="first",
            tags={"team": "vision"},
            # Explicit: Lightning reads $MLFLOW_TRACKING_URI when it is imported, and the run
            # under lightjob sets it (mlflow.set_tracking_uri does).
            tracking_uri=f"file:{root / 'mlruns'}",
            prefix="fit",
            log_model=True,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the renamed metric's RuntimeWarning
            logger.log_hyperparams(
                {"lr": 0.1, "nested": {"depth": 2}, "args": Namespace(seed=7), "long": "x" * 300}
            )
            logger.log_metrics({"loss": 0.5, "bad key!": 1.0, "text": "dropped"}, step=3)
            logger.log_metrics({"loss": 0.25})
        logger.after_save_checkpoint(fit_with_a_checkpoint(fw, root))
        logger.finalize("success")

        client = logger.experiment
        run = client.get_run(logger.run_id)
        artifacts = {}
        for entry in client.list_artifacts(run.info.run_id):
            for item in client.list_artifacts(run.info.run_id, entry.path):
                local = client.download_artifacts(run.info.run_id, item.path, str(root / "got"))
                text = item.path.endswith((".yaml", ".txt"))
                artifacts[item.path] = Path(local).read_text() if text else "a file"
        return {
            "name_is_the_experiment_id": logger.name == run.info.experiment_id,
            "version_is_the_run_id": logger.version == run.info.run_id,
            "save_dir": relative(logger.save_dir, root),
            "experiment": client.get_experiment(run.info.experiment_id).name,
            "status": run.info.status,
            "run_name": run.info.run_name,
            "params": run.data.params,
            "metrics": {
                key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
                for key in run.data.metrics
            },
            "tags": {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.source")},
            "artifacts": artifacts,
        }

    ours, theirs = run_both(scenario, tmp_path)
    assert theirs["status"] == "FINISHED" and theirs["params"]["nested/depth"] == "2"
    assert "epoch=0-step=2/metadata.yaml" in theirs["artifacts"]
    assert ours == theirs


def width() -> int:
    return 4


def test_wandb_logger_records_the_same_run(tmp_path: Path, monkeypatch: Any) -> None:
    import wandb

    for name, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}.items():
        monkeypatch.setenv(name, value)
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "home" / name))  # nothing in the real home

    def scenario(fw: Framework, root: Path) -> dict[str, Any]:
        logger = fw.loggers.WandbLogger(
            name="first", project="proj", save_dir=str(root), prefix="fit", offline=True
        )
        before_use = {"name": logger.name, "version": logger.version, "files": files(root)}
        logger.log_hyperparams(
            {"lr": 0.1, "layer": torch.nn.Linear, "width": width, "args": Namespace(seed=7)}
        )
        logger.log_metrics({"loss": 0.5}, step=3)
        logger.log_metrics({"loss": 0.25, "acc": 1.0}, step=4)
        run = logger.experiment
        seen = {
            "before_use": before_use,
            "version_is_the_run_id": logger.version == run.id,
            "save_dir": relative(logger.save_dir, root),
            "run": (run.name, run.project),
            "config": {k: v for k, v in run.config.as_dict().items() if not k.startswith("_")},
            "summary": {k: v for k, v in dict(run.summary).items() if k not in WALL_CLOCK},
        }
        logger.finalize("success")
        run.finish()
        seen["offline_run_saved"] = len(list(root.glob("wandb/offline-run-*/run-*.wandb")))
        seen["log_model_offline"] = outcome(
            lambda: fw.loggers.WandbLogger(offline=True, log_model=True)
        )
        return seen

    def files(root: Path) -> list[str]:
        return sorted(str(p.relative_to(root)) for p in root.rglob("*"))

    try:
        ours, theirs = run_both(scenario, tmp_path)
    finally:
        wandb.teardown()  # stops wandb's service process
    assert theirs["summary"] == {
        "fit-loss": 0.25,
        "fit-acc": 1.0,
        "trainer/global_step": 4,
        "_step": 1,
    }
    assert theirs["offline_run_saved"] == 1
    assert ours == theirs


WALL_CLOCK = ("_runtime", "_timestamp")
