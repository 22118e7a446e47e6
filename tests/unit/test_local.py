"""Local mode's decisions about a job's previous run, and what a failed pod's log says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightjob.local.previous import PreviousRunError, settle, should_resume
from lightjob.local.summary import exception_in, failure_of


@pytest.mark.parametrize(
    ("phase", "choice", "resume"),
    [
        ("Succeeded", None, False),
        ("Failed", None, False),
        ("Suspended", None, True),
        ("Running", None, True),  # lightjob run was killed: interrupted
        ("Restarting", None, True),
        (None, None, True),  # checkpoints without a record: the runtime resumes them anyway
        ("Succeeded", "resume", True),
        ("Failed", "resume", True),
        ("Suspended", "fresh", False),
        ("Running", "fresh", False),
    ],
)
def test_only_a_suspended_or_interrupted_run_resumes_unless_a_flag_says_otherwise(
    phase: str | None, choice: str | None, resume: bool
) -> None:
    assert should_resume(phase, choice) is resume


def finished_run(run_dir: Path, checkpoints: Path, phase: str = "Succeeded") -> None:
    """What a finished `lightjob run` leaves: status, logs, two checkpoints and a pointer."""
    (run_dir / "logs").mkdir(parents=True)
    (run_dir / "logs" / "node-0.attempt-1.log").write_text("trained\n")
    (run_dir / "status.json").write_text(json.dumps({"phase": phase, "attempt": 2}))
    checkpoints.mkdir(parents=True, exist_ok=True)
    for step in (50, 69):
        (checkpoints / f"step-{step:010d}.ckpt").write_bytes(b"weights %d" % step)
    pointer = {"uri": f"{checkpoints}/step-0000000069.ckpt", "step": 69}
    (checkpoints / "latest.json").write_text(json.dumps(pointer))


def test_a_finished_run_is_moved_aside_with_its_checkpoints_and_stays_resumable(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "runs" / "digits"
    checkpoints = run_dir / "checkpoints"
    finished_run(run_dir, checkpoints)

    decision = settle(run_dir, str(checkpoints), None)

    aside = tmp_path / "runs" / "digits.1"
    assert decision.status is None and not run_dir.exists()
    assert decision.message == (
        f"the previous run of digits Succeeded (attempt 2): moved it to {aside}; "
        "starting a new run (--resume continues a finished run instead)"
    )
    assert (aside / "logs" / "node-0.attempt-1.log").read_text() == "trained\n"
    pointer = json.loads((aside / "checkpoints" / "latest.json").read_text())
    assert Path(pointer["uri"]).read_bytes() == b"weights 69"  # names the moved object

    finished_run(run_dir, checkpoints, phase="Failed")  # and again: the next number
    assert "moved it to" in settle(run_dir, str(checkpoints), None).message
    assert json.loads((tmp_path / "runs" / "digits.2" / "status.json").read_text()) == {
        "phase": "Failed",
        "attempt": 2,
    }


def test_checkpoints_outside_the_run_folder_go_to_a_previous_folder_the_runtime_ignores(
    tmp_path: Path,
) -> None:
    run_dir, checkpoints = tmp_path / "runs" / "digits", tmp_path / "bucket" / "digits"
    finished_run(run_dir, checkpoints)
    (checkpoints / "notes.txt").write_text("the user's own")

    decision = settle(run_dir, str(checkpoints), "fresh")

    moved = checkpoints / "previous-1"
    assert decision.message.endswith(
        f"moved it to {tmp_path / 'runs' / 'digits.1'} and its checkpoints to {moved}; "
        "starting a new run (--fresh)"
    )
    # Nothing the runtime would resume from is left at the top; the rest is untouched.
    assert sorted(p.name for p in checkpoints.iterdir()) == ["notes.txt", "previous-1"]
    assert sorted(p.name for p in moved.iterdir()) == [
        "latest.json",
        "step-0000000050.ckpt",
        "step-0000000069.ckpt",
    ]
    assert json.loads((moved / "latest.json").read_text())["uri"] == (
        f"{moved}/step-0000000069.ckpt"
    )


def test_a_suspended_run_resumes_with_its_counters_and_a_failed_one_only_on_request(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "runs" / "digits"
    finished_run(run_dir, run_dir / "checkpoints", phase="Suspended")
    decision = settle(run_dir, str(run_dir / "checkpoints"), None)
    assert decision.message == "resuming digits (suspended after attempt 2)"
    assert decision.status == {"phase": "Suspended", "attempt": 2, "readyNodes": 0}

    status = {"phase": "Failed", "attempt": 3, "restarts": 3, "completionTime": "T"}
    (run_dir / "status.json").write_text(json.dumps(status))
    decision = settle(run_dir, str(run_dir / "checkpoints"), "resume")
    assert decision.message == (
        "resuming digits, which Failed after attempt 3 (--resume); its 3 failures no longer count"
    )
    assert decision.status == {"phase": "Suspended", "attempt": 3, "restarts": 0, "readyNodes": 0}
    assert run_dir.exists()


def test_resume_with_nothing_to_resume_is_an_error_naming_the_flag(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "digits"
    with pytest.raises(PreviousRunError, match="--resume: digits has no earlier run to resume"):
        settle(run_dir, str(run_dir / "checkpoints"), "resume")
    assert settle(run_dir, str(run_dir / "checkpoints"), None).message == ""  # a first run


RANKED_LOG = """\
Epoch 0: 100%|##########| 23/23 [00:00<00:00]\rEpoch 0: 100%|##########| 23/23
lightjob: checkpoint /runs/d/step-0000000690.ckpt (0.1 MB) durable in 0.01s
[rank0]: Traceback (most recent call last):
[rank0]:   File "train.py", line 82, in <module>
[rank0]:     main()
[rank0]:   File "train.py", line 77, in main
[rank0]:     accuracy = float(trainer.callback_metrics["val_acc"])
[rank0]:                      ~~~~~~~~~~~~~~~~~~~~~~~~^^^^^^^^^^^
[rank0]: KeyError: 'val_acc'
"""

CHAINED_LOG = """\
Traceback (most recent call last):
  File "a.py", line 1, in <module>
OSError: disk full

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "a.py", line 3, in <module>
RuntimeError: could not save: the disk is full
    (and a second line of message)
"""


@pytest.mark.parametrize(
    ("log", "expected"),
    [
        (RANKED_LOG, "KeyError: 'val_acc'"),
        (CHAINED_LOG, "RuntimeError: could not save: the disk is full"),
        ("Killed\n", None),
        ("Traceback (most recent call last):\n  File 'x.py'\n", None),  # cut off: no error line
    ],
)
def test_the_exception_a_log_ends_with(log: str, expected: str | None) -> None:
    found = exception_in(log)
    assert (found[0] if found else None) == expected
    if found:
        assert found[1][0] == "Traceback (most recent call last):"


def test_a_failure_after_fit_is_named_by_the_log_not_the_final_metrics(tmp_path: Path) -> None:
    log = tmp_path / "node-0.log"
    log.write_text(RANKED_LOG)
    metrics = json.dumps({"step": 690, "epoch": 30, "metrics": {}})
    failure = failure_of("digits-node-0", log, metrics)
    assert failure.headline == "KeyError: 'val_acc'"
    assert failure.detail.endswith("KeyError: 'val_acc'") and "step" not in failure.detail

    log.write_text("CUDA error: an illegal memory access\n")  # no traceback: the message
    failure = failure_of("digits-node-0", log, "node exited: CUDA error: illegal access")
    assert failure.headline == "node exited: CUDA error: illegal access"
