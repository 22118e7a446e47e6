"""What the loggers do where a package is missing (Lightning's side-by-side tests run where all
are installed), and what importing them costs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lightjob.loggers import CometLogger, CSVLogger, MLFlowLogger, TensorBoardLogger, WandbLogger
from lightjob.runtime.loggers import default_logger


def test_without_tensorboard_the_default_logger_is_csv_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if it were not installed
    with pytest.warns(UserWarning, match="pip install tensorboard"):
        logger = default_logger(tmp_path)
    assert isinstance(logger, CSVLogger)
    assert logger.log_dir == str(tmp_path / "lightning_logs" / "version_0")
    with pytest.raises(ModuleNotFoundError, match="pip install tensorboard"):
        TensorBoardLogger(tmp_path)


@pytest.mark.parametrize(
    ("package", "build", "advice"),
    [
        ("mlflow", lambda path: MLFlowLogger(save_dir=str(path)), "pip install mlflow"),
        ("wandb", lambda path: WandbLogger(save_dir=str(path), offline=True), "pip install wandb"),
    ],
)
def test_a_tracker_logger_without_its_package_names_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, package: str, build: object, advice: str
) -> None:
    monkeypatch.setitem(sys.modules, package, None)
    with pytest.raises(ModuleNotFoundError, match=advice):
        build(tmp_path)  # type: ignore[operator]


def test_comet_logger_refuses_and_names_the_loggers_that_exist() -> None:
    with pytest.raises(ImportError, match=r"lightjob does not provide CometLogger.*MLFlowLogger"):
        CometLogger(api_key="x")


def test_the_saving_module_loads_without_torch() -> None:
    """`lightjob.core.saving` is where Lightning users import hparams helpers from; like
    `import lightjob`, it must not pay for torch."""
    code = (
        "import sys, lightjob.core.saving as saving; "
        "assert 'torch' not in sys.modules, 'torch was imported'; "
        "print(saving.save_hparams_to_yaml.__name__)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "save_hparams_to_yaml"
