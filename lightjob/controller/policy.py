"""The failure policy: how an attempt stands, from its pods.

(The table of exit codes and disruption evidence is in docs/operator.md.)
"""

from __future__ import annotations

from dataclasses import dataclass

from lightjob.controller.observe import PodView


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: str  # "succeeded", "failed", "preempted", "running", "pending"
    message: str = ""
    cause: str = ""  # for metrics and events


def last_line(message: str) -> str:
    """The last line of a termination message (a traceback's error), for status."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return f": {lines[-1][:200]}" if lines else ""


def judge(members: list[PodView], replicas: int, phase: str, added: list[int]) -> Outcome:
    """How the attempt stands. A preemption wins over a failure seen at the same time: the
    other ranks of a preempted gang often crash as their peer vanishes."""
    node0 = next((p for p in members if p.rank == 0), None)
    if node0 is not None and node0.exit_code == 0:
        return Outcome("succeeded")
    for pod in members:
        if pod.disrupted:
            return Outcome(
                "preempted", f"node {pod.rank} was disrupted ({pod.disrupted})", "disruption"
            )
    for pod in members:
        if pod.reason == "OOMKilled":
            return Outcome("failed", f"node {pod.rank} was OOMKilled", "oom_killed")
    for pod in members:
        if pod.exit_code is not None and pod.exit_code >= 128:
            return Outcome(
                "preempted",
                f"node {pod.rank} was stopped by signal {pod.exit_code - 128}",
                "signal",
            )
        if pod.deleting:
            return Outcome("preempted", f"node {pod.rank}'s pod was deleted", "deleted")
    if phase == "Running":
        gone = sorted(set(range(replicas)) - {p.rank for p in members} - set(added))
        if gone:
            return Outcome("preempted", f"the pod of node {gone[0]} disappeared", "disappeared")
    for pod in members:
        if pod.exit_code is not None and pod.exit_code != 0:
            return Outcome(
                "failed",
                f"node {pod.rank} exited with code {pod.exit_code}{last_line(pod.message)}",
                "exit_code",
            )
        if pod.phase == "Failed":
            return Outcome("failed", f"node {pod.rank}'s pod failed", "pod_failed")
    return Outcome("running" if phase == "Running" else "pending")
