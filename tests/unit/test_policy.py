"""The failure policy, row by row: the table in docs/operator.md is the code's table, and
each row is checked with the pods a cluster produces for it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lightjob.controller import observe_pod
from lightjob.controller.observe import PodView
from lightjob.controller.policy import RULES, judge, rule_for
from tests.unit.test_controller import UID, pod

DOCS = Path(__file__).resolve().parents[2] / "docs" / "operator.md"


def docs_table() -> list[tuple[int, str, str, str]]:
    """(row, what the pod shows, counts as, reason label) from docs/operator.md."""
    text = DOCS.read_text()
    section = text[text.index("## How a pod's end counts") :]
    rows = []
    for line in section.splitlines()[1:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0].isdigit():
            rows.append((int(cells[0]), cells[1], cells[2], cells[3].strip("`")))
        elif rows and not line.strip():
            break
    return rows


def test_the_docs_table_is_the_codes_table() -> None:
    rows = docs_table()
    assert [r[0] for r in rows] == list(range(1, len(RULES) + 1))
    for (_, shows, counts, label), rule in zip(rows, RULES, strict=True):
        assert shows == rule.shows
        assert counts == {"none": "nothing yet"}.get(rule.verdict, rule.verdict)
        assert label == (rule.cause or "-")


def condition(kind: str, reason: str, message: str = "") -> dict[str, Any]:
    return {"conditions": [{"type": kind, "status": "True", "reason": reason, "message": message}]}


SHUTDOWN = {
    "reason": "Terminated",
    "message": "Pod was terminated in response to imminent node shutdown.",
    **condition("DisruptionTarget", "TerminationByKubelet", "Pod was terminated in response"),
}

# Row of the table -> pods a cluster produces that fall in that row.
EXAMPLES: dict[int, list[dict[str, Any]]] = {
    1: [
        # Node 0 saved on SIGTERM and exited 0, but the scheduler preempted it.
        pod(
            0,
            state="terminated",
            exit_code=0,
            status=condition("DisruptionTarget", "PreemptionByScheduler"),
        ),
        pod(1, status=condition("DisruptionTarget", "EvictionByEvictionAPI")),
        pod(0, state="terminated", exit_code=0, status=SHUTDOWN),  # graceful node shutdown
        pod(
            1,
            state="terminated",
            exit_code=143,
            status={"reason": "Evicted", "message": "memory pressure"},
        ),
        pod(
            1, state="terminated", exit_code=137, reason="OOMKilled", status={"reason": "Preempted"}
        ),
        pod(1, status=condition("DisruptionTarget", "DeletionByTaintManager")),
    ],
    2: [
        pod(0, state="terminated", exit_code=0, deleting=True),  # `kubectl delete pod`, saved
        pod(1, state="terminated", exit_code=143, deleting=True),
        pod(1, state="terminated", exit_code=137, deleting=True),  # killed after its grace
        pod(1, deleting=True),
    ],
    3: [pod(0, state="terminated", exit_code=0)],
    4: [pod(1, state="terminated", exit_code=0), pod(3, state="terminated", exit_code=0)],
    5: [pod(1, state="terminated", exit_code=137, reason="OOMKilled")],
    6: [
        pod(1, state="terminated", exit_code=134),  # SIGABRT: an NCCL watchdog
        pod(0, state="terminated", exit_code=139),  # SIGSEGV
        pod(1, state="terminated", exit_code=137),  # SIGKILL, no OOM, no deletion
        pod(1, state="terminated", exit_code=143),  # SIGTERM that no deletion explains
    ],
    7: [pod(1, state="terminated", exit_code=1), pod(0, state="terminated", exit_code=127)],
    8: [
        {
            **pod(1, state="waiting"),
            "status": {"phase": "Failed", "reason": "UnexpectedAdmissionError", "message": "x"},
        }
    ],
    9: [pod(0), pod(1, state="waiting")],
}


def view(body: dict[str, Any]) -> PodView:
    seen = observe_pod(body, UID)
    assert seen is not None
    return seen


@pytest.mark.parametrize(
    ("row", "body"),
    [(row, body) for row, bodies in EXAMPLES.items() for body in bodies],
    ids=[f"row{row}-{i}" for row, bodies in EXAMPLES.items() for i in range(len(bodies))],
)
def test_each_row_of_the_table(row: int, body: dict[str, Any]) -> None:
    rows = {r[0]: r for r in docs_table()}
    rule = rule_for(view(body))
    assert RULES.index(rule) + 1 == row
    assert {"none": "nothing yet"}.get(rule.verdict, rule.verdict) == rows[row][2]


def test_every_row_has_examples() -> None:
    assert sorted(EXAMPLES) == list(range(1, len(RULES) + 1))


@pytest.mark.parametrize(
    ("pods", "phase", "kind", "says"),
    [
        # A disrupted node 0 that exited 0 is never a success.
        (
            [pod(0, state="terminated", exit_code=0, status=SHUTDOWN), pod(1)],
            "Running",
            "preempted",
            "node 0 was disrupted (TerminationByKubelet: Pod was terminated",
        ),
        # lightjob's ranks agree on SIGTERM: the undisrupted node 0 exits 143 too.
        (
            [pod(0, state="terminated", exit_code=143), pod(1, deleting=True)],
            "Running",
            "preempted",
            "node 1's pod was deleted",
        ),
        # The others crash when a peer is preempted: still a preemption.
        (
            [pod(0, state="terminated", exit_code=1), pod(1, status={"reason": "Evicted"})],
            "Running",
            "preempted",
            "node 1 was disrupted (Evicted)",
        ),
        ([pod(0)], "Running", "preempted", "the pod of node 1 disappeared"),
        ([pod(0)], "Pending", "pending", ""),  # never created yet: not taken away
        (
            [pod(0, state="terminated", exit_code=0), pod(1, state="terminated", exit_code=1)],
            "Running",
            "succeeded",
            "node 0's trainer exited 0",
        ),
        (
            [pod(0), pod(1, state="terminated", exit_code=134)],
            "Running",
            "failed",
            "node 1 was killed by SIGABRT (exit 134)",
        ),
        ([pod(0), pod(1, state="terminated", exit_code=0)], "Running", "running", ""),
    ],
)
def test_the_gang_judged_from_its_pods(
    pods: list[dict[str, Any]], phase: str, kind: str, says: str
) -> None:
    expected = {0, 1} if phase == "Running" else set()
    outcome = judge([view(p) for p in pods], phase, expected)
    assert (outcome.kind, outcome.message[: len(says)]) == (kind, says)
