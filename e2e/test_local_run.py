"""`lightjob run` end to end: real processes, real DDP over gloo, real checkpoints."""

from __future__ import annotations

import json
import os
import re
import signal
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


def start_training(tmp_path: Path, epochs: int) -> tuple[Path, subprocess.Popen[str]]:
    """`lightjob run` of the digits job in the background, once its first checkpoint (of
    tmp_path/ckpt, every 20 steps) says training is under way."""
    job = digits_job(
        tmp_path, epochs=epochs, checkpoint={"uri": str(tmp_path / "ckpt"), "everyNSteps": 20}
    )
    proc = subprocess.Popen(
        run_command(job, tmp_path),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (tmp_path / "ckpt" / "latest.json").exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    return job, proc


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


@pytest.fixture(scope="module")
def preempted_at_step_30(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The digits job run twice, 30 epochs each: uninterrupted, and with --preempt-at-step 30."""
    root = tmp_path_factory.mktemp("preempted")
    full, cut = root / "full", root / "cut"
    full_job = digits_job(root, epochs=30, checkpoint={"uri": str(full), "everyNSteps": 20})
    first = lightjob_run(full_job, root / "a")
    assert first.returncode == 0, first.stdout[-3000:]
    cut_job = digits_job(root, epochs=30, checkpoint={"uri": str(cut), "everyNSteps": 20})
    second = lightjob_run(cut_job, root / "b", "--preempt-at-step", "30")
    assert second.returncode == 0, second.stdout[-3000:]
    return {"full": full, "cut": cut, "out": second.stdout, "status": status(root / "b")}


def test_a_preemption_at_a_step_lands_in_training_and_resumes_from_its_checkpoint(
    preempted_at_step_30: dict[str, Any],
) -> None:
    out, final, cut = (preempted_at_step_30[k] for k in ("out", "status", "cut"))
    assert (final["preemptions"], final["restarts"], final["attempt"]) == (1, 0, 2)
    assert final["phase"] == "Succeeded" and final["progress"]["metrics"]["val_acc"] > 0.9
    # Preempted once node 0 reported step 30 (it reports every 10 steps), never in start-up;
    # the summary's resume step is the one the runtime says it resumed from.
    preempted = re.search(
        r"^preempted    digits-node-\d at step (\d+) \(--preempt-at-step 30\)$", out, re.M
    )
    assert preempted and int(preempted.group(1)) >= 30, out[-3000:]
    resumed = re.search(r"^resumed      attempt 2 from step (\d+), after a preemption$", out, re.M)
    assert resumed and int(resumed.group(1)) >= int(preempted.group(1)), out[-3000:]
    assert f"resuming from {cut}/step-{int(resumed.group(1)):010d}.ckpt" in out


def test_a_preemption_at_a_step_resumes_to_the_same_weights_as_an_uninterrupted_run(
    preempted_at_step_30: dict[str, Any],
) -> None:
    a = final_weights(str(preempted_at_step_30["full"]))
    b = final_weights(str(preempted_at_step_30["cut"]))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_running_a_finished_job_again_starts_a_new_run_and_resume_continues_it(
    tmp_path: Path, s3: S3
) -> None:
    uri = s3.uri("digits")
    job = digits_job(tmp_path, epochs=2, checkpoint={"uri": uri, "everyNSteps": 20})
    first = lightjob_run(job, tmp_path, env=s3.env)
    assert first.returncode == 0, first.stdout[-3000:]

    second = lightjob_run(job, tmp_path, env=s3.env)
    assert second.returncode == 0, second.stdout[-3000:]
    aside, moved = tmp_path / "runs" / "digits.1", f"{uri}/previous-1"
    assert (
        f"lightjob: the previous run of digits Succeeded (attempt 1): moved it to {aside} and "
        f"its checkpoints to {moved}; starting a new run (--resume continues a finished run "
        "instead)" in second.stdout
    )
    assert "resuming from" not in second.stdout  # trained from the start, all 46 steps
    final = status(tmp_path)
    assert (final["phase"], final["attempt"], final["progress"]["step"]) == ("Succeeded", 1, 46)
    assert final["progress"]["metrics"]["val_acc"] > 0.8
    assert json.loads((aside / "status.json").read_text())["phase"] == "Succeeded"
    fs = fsspec.filesystem("s3")
    fs.invalidate_cache()
    old_pointer = json.loads(fs.cat_file(f"{s3.bucket}/digits/previous-1/latest.json"))
    assert old_pointer["uri"] == f"{moved}/step-0000000046.ckpt"
    assert fs.exists(old_pointer["uri"])  # the run set aside can still be resumed from there

    # --resume continues the finished run: nothing left to train, and the example still
    # measures its accuracy. A preemption flag that never fires says so.
    third = lightjob_run(job, tmp_path, "--resume", "--preempt-at-step", "1000", env=s3.env)
    assert third.returncode == 0, third.stdout[-3000:]
    assert "lightjob: resuming digits, which Succeeded after attempt 1 (--resume)" in third.stdout
    assert "resumed      attempt 2 from step 46, resuming the previous run" in third.stdout
    assert "final validation accuracy: 0." in third.stdout
    assert "--preempt-at-step 1000: no preemption was injected" in third.stdout
    assert status(tmp_path)["attempt"] == 2 and not (tmp_path / "runs" / "digits.2").exists()


def test_fresh_sets_a_suspended_run_aside_instead_of_resuming_it(tmp_path: Path) -> None:
    job, proc = start_training(tmp_path, epochs=10)
    proc.send_signal(signal.SIGINT)  # Ctrl-C: every node checkpoints, the job is suspended
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130 and status(tmp_path)["phase"] == "Suspended", out[-3000:]

    fresh = lightjob_run(job, tmp_path, "--fresh")
    assert fresh.returncode == 0, fresh.stdout[-3000:]
    assert (
        f"lightjob: the previous run of digits was suspended (attempt 1): moved it to "
        f"{tmp_path / 'runs' / 'digits.1'} and its checkpoints to {tmp_path / 'ckpt'}/previous-1; "
        "starting a new run (--fresh)" in fresh.stdout
    )
    assert "resuming from" not in fresh.stdout and "resumed  " not in fresh.stdout
    final = status(tmp_path)
    assert (final["phase"], final["attempt"], final["progress"]["step"]) == ("Succeeded", 1, 230)


def test_a_resize_from_two_to_three_nodes_continues_and_finishes(tmp_path: Path) -> None:
    job, proc = start_training(tmp_path, epochs=40)
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


@pytest.mark.parametrize(
    ("crash", "error", "message"),
    [
        ("in-fit", "ValueError: boom on purpose", r": \[rank\d\]: ValueError: boom on purpose"),
        # fit returned and wrote its final metrics as the termination message, then the
        # script raised: the summary still names the exception, from the pod's log.
        ("after-fit", "KeyError: 'val_acc'", r" after fit finished at step 4"),
    ],
)
def test_a_crashing_script_restarts_up_to_the_backoff_limit_then_fails_naming_its_error(
    tmp_path: Path, crash: str, error: str, message: str
) -> None:
    job = digits_job(
        tmp_path,
        command=["python", "e2e/crash.py"],
        env=[{"name": "CRASH", "value": crash}],
        runPolicy={"backoffLimit": 1},
    )
    result = lightjob_run(job, tmp_path, "--backoff-seconds", "0.5")
    assert result.returncode == 1, result.stdout[-3000:]
    final = status(tmp_path)
    assert final["phase"] == "Failed" and final["restarts"] == 2 and final["attempt"] == 2
    # Every rank raises; whichever node the controller saw fail first is the one named.
    assert re.fullmatch(
        rf"node \d exited with code 1{message}; backoffLimit=1 exceeded",
        final["message"],
    ), final["message"]
    assert re.search(
        rf"\nlast failure \(digits-node-\d\): {re.escape(error)}\nTraceback \(most recent",
        result.stdout,
    ), result.stdout[-3000:]
    assert result.stdout.rstrip().endswith(error)
    assert nothing_left_running(str(tmp_path))


SLEEPS_IN_ITS_FIRST_ATTEMPT = (
    "import os, time; time.sleep(60 if os.environ['LIGHTJOB_ATTEMPT'] == '1' else 0)"
)


@pytest.mark.parametrize(
    ("flag", "preempted", "resumed", "said"),
    [
        (
            ["--preempt-after", "1"],
            "preempted    digits-node-",
            "resumed      attempt 2 from the start (no checkpoint), after a preemption",
            "injecting a preemption into digits-node-",
        ),
        # No lightjob runtime, so no metrics endpoint: the flag never fires, and says why.
        (
            ["--preempt-at-step", "5"],
            None,
            None,
            "--preempt-at-step 5: no preemption was injected; node 0's metrics endpoint "
            "never reported a step",
        ),
    ],
)
def test_a_preemption_flag_either_fires_or_says_why_not(
    tmp_path: Path, flag: list[str], preempted: str | None, resumed: str | None, said: str
) -> None:
    command = ["python", "-c", SLEEPS_IN_ITS_FIRST_ATTEMPT if preempted else "pass"]
    result = lightjob_run(digits_job(tmp_path, command=command), tmp_path, *flag, timeout=60)
    assert result.returncode == 0, result.stdout[-3000:]
    assert said in result.stdout
    final = status(tmp_path)
    assert final["preemptions"] == (1 if preempted else 0)
    for line in (preempted, resumed):
        assert line is None or line in result.stdout, result.stdout[-3000:]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--resume", "--fresh"], "not allowed with argument --resume"),
        (["--preempt-at-step", "5", "--preempt-after", "1"], "not allowed with argument"),
        (["--preempt-at-step", "0"], "--preempt-at-step must be >= 1"),
        (["--kube", "--resume"], "--resume applies to local runs, not --kube"),
        (["--resume"], "--resume: digits has no earlier run to resume"),
    ],
)
def test_bad_flags_are_a_clear_error_and_nothing_runs(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    result = lightjob_run(digits_job(tmp_path), tmp_path, *args, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert expected in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "runs" / "digits" / "logs").exists()


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
