"""The failure policy: what each pod's end means, and how the attempt stands.

`RULES` is the table in docs/operator.md ("How a pod's end counts"), row by row, in
order: the first rule that matches a pod gives its verdict. Disruption evidence comes
first, so a pod the cluster took away is a preemption whatever its exit code (a trainer
that saved on SIGTERM exits 0 or 143), and node 0 counts as a success only when nothing
disrupted it. Without such evidence any non-zero exit is a failure, signals included: a
SIGABRT from an NCCL watchdog (134) or a SIGSEGV (139) restarts with back-off, within
backoffLimit, instead of at once and forever.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lightjob.controller.observe import PodView

PREEMPTION, SUCCESS, FAILURE, NO_VERDICT = "preemption", "success", "failure", "none"


@dataclass(frozen=True, slots=True)
class Rule:
    shows: str  # what the pod shows, as the docs' table says it
    verdict: str  # PREEMPTION, SUCCESS, FAILURE or NO_VERDICT
    cause: str  # the metrics' reason label
    matches: Callable[[PodView], bool]
    says: Callable[[PodView], str]  # the message for events and status


def _signal(pod: PodView) -> str:
    names = {6: "SIGABRT", 9: "SIGKILL", 11: "SIGSEGV", 15: "SIGTERM"}
    number = (pod.exit_code or 0) - 128
    return names.get(number, f"signal {number}")


RULES: tuple[Rule, ...] = (
    Rule(
        "a `DisruptionTarget` condition, or the pod's reason is Evicted, Preempted, "
        "Preempting, Shutdown, NodeShutdown, Terminated or NodeLost; any exit code",
        PREEMPTION,
        "disruption",
        lambda p: p.disrupted is not None,
        lambda p: f"node {p.rank} was disrupted ({p.disrupted})",
    ),
    Rule(
        "the pod is being deleted while its attempt runs (the controller had not ended it); "
        "any exit code",
        PREEMPTION,
        "deleted",
        lambda p: p.deleting,
        lambda p: f"node {p.rank}'s pod was deleted{_exit(p)}",
    ),
    Rule(
        "node 0's trainer exits 0",
        SUCCESS,
        "",
        lambda p: p.rank == 0 and p.exit_code == 0,
        lambda p: "node 0's trainer exited 0",
    ),
    Rule(
        "another node's trainer exits 0",
        NO_VERDICT,
        "",
        lambda p: p.exit_code == 0,
        lambda p: f"node {p.rank}'s trainer exited 0; waiting for node 0",
    ),
    Rule(
        "OOMKilled (exit 137)",
        FAILURE,
        "oom_killed",
        lambda p: p.reason == "OOMKilled",
        lambda p: f"node {p.rank} was OOMKilled",
    ),
    Rule(
        "exit 128+N, killed by a signal: 134 (SIGABRT, e.g. an NCCL watchdog), 137 (SIGKILL), "
        "139 (SIGSEGV), 143 (SIGTERM)",
        FAILURE,
        "signal",
        lambda p: p.exit_code is not None and p.exit_code >= 128,
        lambda p: (
            f"node {p.rank} was killed by {_signal(p)} (exit {p.exit_code}){last_line(p.message)}"
        ),
    ),
    Rule(
        "exit 1..127",
        FAILURE,
        "exit_code",
        lambda p: p.exit_code is not None and p.exit_code != 0,
        lambda p: f"node {p.rank} exited with code {p.exit_code}{last_line(p.message)}",
    ),
    Rule(
        "pod phase Failed without an exit code (the kubelet rejected it)",
        FAILURE,
        "pod_failed",
        lambda p: p.phase == "Failed",
        lambda p: f"node {p.rank}'s pod failed",
    ),
    Rule(
        "running, or still starting",
        NO_VERDICT,
        "",
        lambda p: True,
        lambda p: "",
    ),
)


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: str  # "succeeded", "failed", "preempted", "running", "pending"
    message: str = ""
    cause: str = ""  # for metrics and events


def rule_for(pod: PodView) -> Rule:
    """The first row of the table that the pod matches."""
    return next(rule for rule in RULES if rule.matches(pod))


def judge(members: list[PodView], phase: str, expected: set[int]) -> Outcome:
    """How the attempt stands, from its gang's pods. `expected` are the ranks whose pods
    must exist (those of a gang that ran); one that is missing was taken away.

    A preemption anywhere wins: the other ranks of a preempted gang often crash, or save
    and exit, as their peer goes away. Then node 0's success; then any failure."""
    judged = [(pod, rule_for(pod)) for pod in sorted(members, key=lambda p: p.rank)]
    for pod, rule in judged:
        if rule.verdict == PREEMPTION:
            return Outcome("preempted", rule.says(pod), rule.cause)
    gone = sorted(expected - {p.rank for p in members})
    if gone:
        return Outcome("preempted", f"the pod of node {gone[0]} disappeared", "disappeared")
    for pod, rule in judged:
        if rule.verdict == SUCCESS:
            return Outcome("succeeded", rule.says(pod))
    for pod, rule in judged:
        if rule.verdict == FAILURE:
            return Outcome("failed", rule.says(pod), rule.cause)
    return Outcome("running" if phase == "Running" else "pending")


def _exit(pod: PodView) -> str:
    return f" (its trainer exited {pod.exit_code})" if pod.exit_code is not None else ""


def last_line(message: str) -> str:
    """The last line of a termination message (a traceback's error), for status.

    The runtime's final metrics (JSON) are no error: it writes them when fit returns, so a
    script that fails after fit leaves them, and Kubernetes then reads no log tail. Say
    that fit had finished rather than paste the JSON; the error itself is in the pod's log.
    """
    final = final_metrics(message)
    if final is not None:
        return f" after fit finished at step {final['step']}"
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return f": {lines[-1][:200]}" if lines else ""


def final_metrics(message: str) -> dict[str, Any] | None:
    """The runtime's final step and metrics, when a termination message holds them."""
    if not message.startswith("{"):
        return None
    try:
        final = json.loads(message)
    except ValueError:
        return None
    return final if isinstance(final, dict) and isinstance(final.get("step"), int) else None
