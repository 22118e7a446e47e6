"""The operator, running for real under kopf, against what real clusters do: pods taken
away by the cluster (whatever their exit code), crash loops by signal, API refusals, pods
that stay Terminating, scale-ups that cannot be placed, specs from another operator
version, and the time-based decisions."""

from __future__ import annotations

from typing import Any

from tests.integration.conftest import JOBS, Cluster
from tests.integration.test_operator import attempts, job, phase, status_of


def events_with(cluster: Cluster, reason: str) -> list[str]:
    return [e for e in cluster.events() if e.startswith(f"{reason}:")]


def condition(cluster: Cluster, kind: str) -> dict[str, Any] | None:
    return next((c for c in status_of(cluster).get("conditions", []) if c["type"] == kind), None)


# -- item 2: a disrupted node 0 is never a success ------------------------------------------------


async def test_node_zero_that_exits_0_as_its_node_shuts_down_is_preempted(cluster: Cluster) -> None:
    cluster.api.create(JOBS, "default", job())
    await cluster.wait(lambda: phase(cluster) == "Running", what="Running")
    cluster.kubelet.sigterm_exit["demo-node-0"] = 0  # a script that saves on SIGTERM
    cluster.kubelet.shut_down_node("demo-node-0")
    await cluster.wait(lambda: status_of(cluster).get("preemptions") == 1, what="preemption")
    await cluster.wait(
        lambda: phase(cluster) == "Running" and attempts(cluster) == {"2"}, what="attempt 2"
    )
    assert status_of(cluster)["restarts"] == 0 and "completionTime" not in status_of(cluster)
    (preempted,) = events_with(cluster, "Preempted")
    assert "node 0 was disrupted (TerminationByKubelet" in preempted


async def test_node_zero_deleted_by_someone_else_and_exiting_0_is_preempted(
    cluster: Cluster,
) -> None:
    cluster.api.create(JOBS, "default", job())
    await cluster.wait(lambda: phase(cluster) == "Running", what="Running")
    cluster.kubelet.sigterm_exit["demo-node-0"] = 0
    cluster.kubelet.linger = 1.5  # the exit is there to see before the pod goes
    cluster.api.delete("v1/pods", "default", "demo-node-0")  # kubectl delete pod
    await cluster.wait(lambda: status_of(cluster).get("preemptions") == 1, what="preemption")
    await cluster.wait(lambda: attempts(cluster) == {"2"}, timeout=30, what="attempt 2")
    assert phase(cluster) != "Succeeded" and status_of(cluster)["restarts"] == 0


async def test_scheduler_preemption_of_node_zero_that_saves_and_exits_0(cluster: Cluster) -> None:
    cluster.api.create(JOBS, "default", job())
    await cluster.wait(lambda: phase(cluster) == "Running", what="Running")
    cluster.kubelet.sigterm_exit["demo-node-0"] = 0
    cluster.kubelet.linger = 1.5
    cluster.kubelet.preempt("demo-node-0")
    await cluster.wait(lambda: attempts(cluster) == {"2"}, timeout=30, what="attempt 2")
    assert (status_of(cluster)["preemptions"], status_of(cluster)["restarts"]) == (1, 0)
    assert any("PreemptionByScheduler" in e for e in events_with(cluster, "Preempted"))


# -- item 3: a signal without disruption evidence is a failure, with back-off -----------------------


async def test_a_sigabrt_crash_loop_backs_off_and_hits_the_backoff_limit(cluster: Cluster) -> None:
    cluster.api.create(JOBS, "default", job(runPolicy={"backoffLimit": 1}))
    await cluster.wait(lambda: phase(cluster) == "Running", what="Running")
    cluster.kubelet.exit("demo-node-1", 134)  # an NCCL watchdog's SIGABRT
    await cluster.wait(lambda: status_of(cluster).get("restarts") == 1, what="a failure")
    status = status_of(cluster)
    assert status["preemptions"] == 0 and status["phase"] == "Restarting"
    assert status["nextAttemptTime"] > status["attemptStartTime"]  # the back-off
    (failed,) = events_with(cluster, "NodeFailed")
    assert "node 1 was killed by SIGABRT (exit 134); restarting in 1s" in failed
    await cluster.wait(lambda: phase(cluster) == "Running" and attempts(cluster) == {"2"})
    cluster.kubelet.exit("demo-node-0", 139)  # SIGSEGV
    await cluster.wait(lambda: phase(cluster) == "Failed", what="Failed")
    status = status_of(cluster)
    assert (status["restarts"], status["preemptions"]) == (2, 0)
    assert "killed by SIGSEGV (exit 139); backoffLimit=1 exceeded" in status["message"]


async def test_an_eviction_exiting_143_is_a_preemption_and_an_oom_kill_a_failure(
    cluster: Cluster,
) -> None:
    cluster.api.create(JOBS, "default", job(runPolicy={"backoffLimit": 0}))
    await cluster.wait(lambda: phase(cluster) == "Running", what="Running")
    cluster.kubelet.evict("demo-node-1")  # SIGTERM: lightjob's runtime saves, exits 143
    await cluster.wait(lambda: attempts(cluster) == {"2"} and phase(cluster) == "Running")
    assert (status_of(cluster)["preemptions"], status_of(cluster)["restarts"]) == (1, 0)
    cluster.kubelet.oom_kill("demo-node-0")
    await cluster.wait(lambda: phase(cluster) == "Failed", what="Failed")
    assert "node 0 was OOMKilled; backoffLimit=0 exceeded" in status_of(cluster)["message"]
