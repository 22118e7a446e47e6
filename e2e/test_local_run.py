"""`lightjob run` end to end: real processes, real DDP over gloo, real checkpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import fsspec
import pytest
import torch
import yaml

from tests.conftest import S3

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "examples" / "digits" / "lightningjob.yaml"


def digits_job(tmp_path: Path, epochs: int = 20, **spec: Any) -> Path:
    job = yaml.safe_load(DIGITS.read_text())
    job["spec"]["env"] = [{"name": "EPOCHS", "value": str(epochs)}]
    for key, value in spec.items():
        job["spec"][key] = value
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def run_command(job: Path, tmp_path: Path, *args: str) -> list[str]:
    """`lightjob run JOB` with its runs folder under tmp_path."""
    runs = str(tmp_path / "runs")
    return [sys.executable, "-m", "lightjob.cli", "run", str(job), "--runs-dir", runs, *args]


def lightjob_run(
    job: Path, tmp_path: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        run_command(job, tmp_path, *args),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def status(tmp_path: Path, name: str = "digits") -> dict[str, Any]:
    return json.loads((tmp_path / "runs" / name / "status.json").read_text())


def nothing_left_running(marker: str) -> bool:
    listing = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return not [line for line in listing.splitlines() if marker in line and "ps -eo" not in line]


def final_weights(uri: str) -> dict[str, torch.Tensor]:
    fs, path = fsspec.core.url_to_fs(uri)
    fs.invalidate_cache()
    pointer = json.loads(fs.cat_file(f"{path}/latest.json"))
    with fs.open(fsspec.core.url_to_fs(pointer["uri"])[1], "rb") as stream:
        return torch.load(stream, weights_only=True)["state_dict"]


def test_digits_on_two_nodes_trains_to_the_accuracy_bar_with_s3_checkpoints(
    tmp_path: Path, s3: S3
) -> None:
    uri = s3.uri("digits")
    job = digits_job(tmp_path, checkpoint={"uri": uri, "everyNSteps": 100})
    result = lightjob_run(job, tmp_path, env=s3.env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    final = status(tmp_path)
    assert final["phase"] == "Succeeded" and final["attempt"] == 1
    assert final["progress"]["metrics"]["val_acc"] > 0.9
    assert "phase        Succeeded" in result.stdout and "val_acc=" in result.stdout
    fs = fsspec.filesystem("s3")
    fs.invalidate_cache()
    pointer = json.loads(fs.cat_file(f"{s3.bucket}/digits/latest.json"))
    assert pointer["step"] == final["progress"]["step"] and pointer["uri"].startswith("s3://")
    assert f"checkpoint   {pointer['uri']}" in result.stdout
    # 2 nodes: each saw half of the 1437 training samples, 23 batches of 32 an epoch.
    assert final["progress"]["step"] == 20 * 23


def test_a_preemption_resumes_to_the_same_weights_as_an_uninterrupted_run(tmp_path: Path) -> None:
    full, cut = tmp_path / "full", tmp_path / "cut"
    full_job = digits_job(full.parent, epochs=30, checkpoint={"uri": str(full), "everyNSteps": 20})
    first = lightjob_run(full_job, tmp_path / "a")
    assert first.returncode == 0, first.stdout[-3000:]
    cut_job = digits_job(full.parent, epochs=30, checkpoint={"uri": str(cut), "everyNSteps": 20})
    second = lightjob_run(cut_job, tmp_path / "b", "--preempt-after", "3")
    assert second.returncode == 0, second.stdout[-3000:]
    final = status(tmp_path / "b")
    assert (final["preemptions"], final["restarts"], final["attempt"]) == (1, 0, 2)
    assert "injecting a preemption" in second.stdout
    a, b = final_weights(str(full)), final_weights(str(cut))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_resize_from_two_to_three_nodes_continues_and_finishes(tmp_path: Path) -> None:
    job = digits_job(
        tmp_path, epochs=40, checkpoint={"uri": str(tmp_path / "ckpt"), "everyNSteps": 20}
    )
    proc = subprocess.Popen(
        run_command(job, tmp_path),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (tmp_path / "ckpt" / "latest.json").exists():  # training is under way
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    edited = yaml.safe_load(job.read_text())
    edited["spec"]["numNodes"] = 3
    job.write_text(yaml.safe_dump(edited))  # what `kubectl apply` of an edited file does
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out[-3000:]
    final = status(tmp_path)
    assert final["phase"] == "Succeeded" and final["resizes"] == 1 and final["replicas"] == 3
    assert (final["restarts"], final["preemptions"]) == (0, 0)
    assert "Resized: resizing from 2 to 3 nodes" in out
    assert final["progress"]["metrics"]["val_acc"] > 0.9


def test_a_crashing_script_restarts_up_to_the_backoff_limit_then_fails(tmp_path: Path) -> None:
    job = digits_job(tmp_path, command=["python", "e2e/crash.py"], runPolicy={"backoffLimit": 1})
    result = lightjob_run(job, tmp_path, "--backoff-seconds", "0.5")
    assert result.returncode == 1
    final = status(tmp_path)
    assert final["phase"] == "Failed" and final["restarts"] == 2 and final["attempt"] == 2
    assert "ValueError: boom on purpose" in final["message"]
    assert "last failure (digits-node-" in result.stdout
    assert "Traceback (most recent call last)" in result.stdout
    assert nothing_left_running(str(tmp_path))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"numNodes": -1}, "spec.numNodes"),
        (
            {"command": ["no-such-trainer", "train.py"]},
            'spec.command[0]: executable file not found: "no-such-trainer"',
        ),
        (
            {"checkpoint": {"uri": "s3://no-such-bucket-lightjob/run"}},
            "spec.checkpoint.uri: s3://no-such-bucket-lightjob/run is not writable",
        ),
    ],
)
def test_bad_input_is_a_clear_error_and_nothing_runs(
    tmp_path: Path, s3: S3, change: dict[str, Any], expected: str
) -> None:
    job = digits_job(tmp_path, **change)
    result = lightjob_run(job, tmp_path, env=s3.env, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert expected in result.stdout and "Traceback" not in result.stdout + result.stderr
    assert nothing_left_running(str(tmp_path))


def test_a_plain_pytorch_lightning_script_runs_as_a_two_node_job(tmp_path: Path) -> None:
    job = ROOT / "examples" / "lightning" / "lightningjob.yaml"
    result = lightjob_run(job, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "PyTorch Lightning trained on 2 processes" in result.stdout
    assert status(tmp_path, "lightning-digits")["phase"] == "Succeeded"
