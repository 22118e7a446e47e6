"""The operator, running for real under kopf, against what real clusters do: pods taken
away by the cluster (whatever their exit code), crash loops by signal, API refusals, pods
that stay Terminating, scale-ups that cannot be placed, specs from another operator
version, and the time-based decisions."""

from __future__ import annotations

from typing import Any

from tests.integration.conftest import JOBS, Cluster, OperatorRun
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


# -- item 8: time-based decisions come when the controller asks, not on a fixed timer ---------------


async def test_back_off_deadlines_and_ttl_come_on_time_without_the_periodic_timer(
    emulated: Cluster,
) -> None:
    operator = OperatorRun(emulated, interval=3600)  # the safety-net timer never fires here
    await operator.start()
    try:
        emulated.api.create(JOBS, "default", job(runPolicy={"ttlSecondsAfterFinished": 1}))
        emulated.api.create(JOBS, "default", job("late", runPolicy={"activeDeadlineSeconds": 3}))
        await emulated.wait(lambda: phase(emulated) == "Running", what="Running")
        emulated.kubelet.exit("demo-node-1", 1)
        # Once the old pods are gone nothing else happens: only the back-off's end (1 s)
        # can start attempt 2.
        await emulated.wait(
            lambda: status_of(emulated).get("attempt") == 2 and phase(emulated) == "Running",
            what="attempt 2 after the back-off",
        )
        emulated.kubelet.exit("demo-node-0", 0)
        await emulated.wait(
            lambda: emulated.api.find(JOBS, "default", "demo") is None, what="the TTL"
        )
        late = await emulated.wait(
            lambda: (
                (emulated.api.get(JOBS, "default", "late").get("status") or {}).get("phase")
                == "Failed"
            ),
            what="the active deadline",
        )
        assert late
    finally:
        await operator.stop()


# -- item 5: a pod stuck Terminating on a NotReady node ---------------------------------------------


async def test_a_pod_stuck_terminating_on_a_lost_node_is_force_deleted(emulated: Cluster) -> None:
    operator = OperatorRun(emulated, force_delete_after=1.0)
    await operator.start()
    try:
        emulated.api.create(JOBS, "default", job(runPolicy={"terminationGracePeriodSeconds": 1}))
        await emulated.wait(lambda: phase(emulated) == "Running", what="Running")
        node = emulated.kubelet.lose_node("demo-node-1")
        assert emulated.api.get("v1/nodes", "", node)["status"]["conditions"][0]["status"] == (
            "Unknown"
        )
        await emulated.wait(lambda: status_of(emulated).get("preemptions") == 1, what="preempted")
        # The taint manager's deletion never completes: no kubelet answers on that node.
        stuck = emulated.pods()["demo-node-1"]
        assert stuck["metadata"]["deletionTimestamp"]
        await emulated.wait(
            lambda: status_of(emulated).get("attempt") == 2 and phase(emulated) == "Running",
            timeout=30,
            what="attempt 2 once the stuck pod is force-deleted",
        )
        (forced,) = events_with(emulated, "ForceDeleted")
        assert "pod demo-node-1 was still terminating" in forced
        assert "gracePeriodSeconds 0" in forced
        assert emulated.pods()["demo-node-1"]["spec"]["nodeName"] != node
    finally:
        await operator.stop()
