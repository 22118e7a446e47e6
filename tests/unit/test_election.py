"""The Lease decisions of leader election (operator/election.py), case by case, and the
`lightjob operator` flags that configure it."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from lightjob.cli import main
from lightjob.operator.election import LeaseConfig, claim, released

WALL = dt.datetime(2026, 12, 1, 12, 0, 0, tzinfo=dt.timezone.utc)  # microsecond 0 on purpose
STAMP = "2026-12-01T12:00:00.000000Z"  # the API server's MicroTime: six digits, even zeros
EARLIER = "2026-12-01T11:00:00.000000Z"
ME = LeaseConfig(name="lightjob", namespace="ops", identity="pod-a_1234")


def held(holder: str, transitions: int = 3, **extra: Any) -> dict[str, Any]:
    return {
        "holderIdentity": holder,
        "leaseDurationSeconds": 15,
        "acquireTime": EARLIER,
        "renewTime": EARLIER,
        "leaseTransitions": transitions,
        **extra,
    }


@pytest.mark.parametrize(
    ("case", "spec", "seen_ago", "expected"),
    [
        (
            "no Lease yet: the first holder",
            None,
            0.0,
            {"holderIdentity": ME.identity, "acquireTime": STAMP, "leaseTransitions": 0},
        ),
        ("another holder, renewed 14 s ago: wait", held("pod-b_99"), 14.0, None),
        (
            "another holder, not renewed for a lease duration: take over",
            held("pod-b_99"),
            15.0,
            {"holderIdentity": ME.identity, "acquireTime": STAMP, "leaseTransitions": 4},
        ),
        (
            "the holder's own longer duration is honoured",
            held("pod-b_99", leaseDurationSeconds=60),
            30.0,
            None,
        ),
        (
            "mine: renew, keeping when it was acquired",
            held(ME.identity),
            1.0,
            {"holderIdentity": ME.identity, "acquireTime": EARLIER, "leaseTransitions": 3},
        ),
        (
            "released by a leader that stopped: take it at once",
            held(""),
            0.0,
            {"holderIdentity": ME.identity, "acquireTime": STAMP, "leaseTransitions": 4},
        ),
        (
            "the same pod name, another process (a restarted container): not mine",
            held("pod-a_5678"),
            2.0,
            None,
        ),
    ],
)
def test_claim(
    case: str, spec: dict[str, Any] | None, seen_ago: float, expected: dict[str, Any] | None
) -> None:
    now = 1000.0  # monotonic seconds
    wanted = claim(spec, now - seen_ago, now, WALL, ME)
    if expected is None:
        assert wanted is None, case
        return
    assert wanted is not None, case
    assert expected.items() <= wanted.items(), case
    assert wanted["renewTime"] == STAMP and wanted["leaseDurationSeconds"] == 15, case


def test_expiry_is_measured_on_this_process_clock_not_the_holders_renew_time() -> None:
    """A holder whose clock runs an hour behind (renewTime long past) still holds the Lease
    while it keeps renewing; one whose clock runs ahead cannot hold it past its duration."""
    behind = held("pod-b_99", renewTime="2026-12-01T11:00:00.000000Z")
    assert claim(behind, seen_at=999.0, now=1000.0, wall=WALL, config=ME) is None
    ahead = held("pod-b_99", renewTime="2026-12-01T13:00:00.000000Z")
    assert claim(ahead, seen_at=980.0, now=1000.0, wall=WALL, config=ME) is not None


def test_a_released_lease_has_no_holder_and_keeps_its_history() -> None:
    spec = released(held(ME.identity), WALL)
    assert spec["holderIdentity"] == "" and spec["leaseDurationSeconds"] == 1
    assert spec["leaseTransitions"] == 3 and spec["renewTime"] == STAMP


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--leader-elect-lease-duration", "30"],
            "--leader-elect-lease-duration needs --leader-elect",
        ),
        (
            ["--leader-elect", "--leader-elect-renew-deadline", "20"],
            "--leader-elect-retry-period < --leader-elect-renew-deadline < "
            "--leader-elect-lease-duration (got 2.0 < 20.0 < 15.0)",
        ),
        (["--leader-elect", "--leader-elect-retry-period", "0"], "must be positive"),
        (["--leader-elect", "--peering", "lightjob"], "not allowed with argument --leader-elect"),
        (["--liveness", "0.0.0.0:8081"], "--liveness must look like http://0.0.0.0:8081/healthz"),
    ],
)
def test_bad_operator_flags_are_refused_naming_them(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["operator", *argv])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
