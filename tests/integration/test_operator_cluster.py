"""The operator, running for real under kopf, against what real clusters do: pods taken
away by the cluster (whatever their exit code), crash loops by signal, API refusals, pods
that stay Terminating, scale-ups that cannot be placed, specs from another operator
version, and the time-based decisions."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.integration.conftest import JOBS, Cluster, OperatorRun
from tests.integration.test_operator import attempts, job, phase, status_of


def events_with(cluster: Cluster, reason: str) -> list[str]:
    return [e for e in cluster.events() if e.startswith(f"{reason}:")]


async def one_event(cluster: Cluster, reason: str) -> str:
    """The one event of this reason (events are posted after the status write)."""
    (event,) = await cluster.wait(lambda: events_with(cluster, reason), what=f"a {reason} event")
    return str(event)


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
    preempted = await one_event(cluster, "Preempted")
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
    failed = await one_event(cluster, "NodeFailed")
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
        forced = await one_event(emulated, "ForceDeleted")
        assert "pod demo-node-1 was still terminating" in forced
        assert "gracePeriodSeconds 0" in forced
        assert emulated.pods()["demo-node-1"]["spec"]["nodeName"] != node
    finally:
        await operator.stop()


# -- item 4: the API refusing a pod of the gang ------------------------------------------------------


async def test_a_pod_refused_by_a_quota_is_shown_retried_with_back_off_then_fails(
    cluster: Cluster,
) -> None:
    from tests.admission import exceeded_quota

    cluster.api.admission.append(exceeded_quota({"demo-node-2"}))
    cluster.api.create(JOBS, "default", job(numNodes=3, runPolicy={"pendingDeadlineSeconds": 4}))
    refused = await cluster.wait(lambda: condition(cluster, "PodCreationRefused"), what="refused")
    assert refused["status"] == "True" and refused["reason"] == "Forbidden"
    assert 'pods "demo-node-2" is forbidden: exceeded quota: team-gpus' in refused["message"]
    await cluster.wait(lambda: events_with(cluster, "FailedCreate"), what="FailedCreate")
    assert (
        "the API refused pod demo-node-2 (403 Forbidden)" in events_with(cluster, "FailedCreate")[0]
    )
    assert status_of(cluster)["phase"] == "Pending"
    assert "exceeded quota" in status_of(cluster)["message"]
    await cluster.wait(lambda: phase(cluster) == "Failed", timeout=30, what="Failed")
    status = status_of(cluster)
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "PodCreationRefused"
    assert "gave up after pendingDeadlineSeconds=4" in status["message"]
    assert "exceeded quota: team-gpus" in status["message"]
    # The pods that were created do not hold their nodes for a gang that never forms.
    await cluster.wait(lambda: not cluster.pods(), what="the created pods deleted")
    # Node 2 was tried at 0 s, then 1 s and 3 s later (the back-off doubles), not on every
    # reconcile; nodes 0 and 1 were created once.
    posts = [path for method, path in cluster.api.calls if method == "POST" and "/pods" in path]
    assert 2 + 2 <= len(posts) <= 2 + 4, posts


async def test_a_refusal_that_ends_lets_the_gang_start(cluster: Cluster) -> None:
    from tests.admission import exceeded_quota

    quota = exceeded_quota({"demo-node-1"})
    cluster.api.admission.append(quota)
    cluster.api.create(JOBS, "default", job())
    await cluster.wait(lambda: condition(cluster, "PodCreationRefused"), what="refused")
    cluster.api.admission.remove(quota)  # someone raised the quota
    await cluster.wait(lambda: phase(cluster) == "Running", timeout=30, what="Running")
    cleared = condition(cluster, "PodCreationRefused")
    assert cleared is not None and cleared["status"] == "False"
    assert "refusal" not in status_of(cluster)


async def test_pod_security_restricted_admits_the_example_and_refuses_an_escalation(
    cluster: Cluster,
) -> None:
    from pathlib import Path

    import yaml

    from tests.admission import PSA_LABEL

    cluster.api.update(
        "v1/namespaces", "", "default", None, {"metadata": {"labels": {PSA_LABEL: "restricted"}}}
    )
    root = Path(__file__).resolve().parents[2]
    example = yaml.safe_load((root / "examples/digits/lightningjob.yaml").read_text())
    cluster.api.create(JOBS, "default", example)
    await cluster.wait(
        lambda: (
            (cluster.api.get(JOBS, "default", "digits").get("status") or {}).get("phase")
            == "Running"
        ),
        what="the example job admitted and running",
    )
    cluster.api.create(
        JOBS,
        "default",
        job(
            securityContext={"allowPrivilegeEscalation": True, "runAsNonRoot": True},
            runPolicy={"pendingDeadlineSeconds": 2},
        ),
    )
    refused = await cluster.wait(lambda: condition(cluster, "PodCreationRefused"), what="refused")
    assert (
        'violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false'
        in (refused["message"])
    )
    await cluster.wait(lambda: phase(cluster) == "Failed", timeout=30, what="Failed")
    assert not [p for p in cluster.pods() if p.startswith("demo")]


async def test_a_policy_denial_422_is_shown_with_the_apis_message(cluster: Cluster) -> None:
    from tests.admission import denied_by_policy

    cluster.api.admission.append(
        denied_by_policy({"demo-node-0", "demo-node-1"}, "pods must carry a team label")
    )
    cluster.api.create(JOBS, "default", job())
    refused = await cluster.wait(lambda: condition(cluster, "PodCreationRefused"), what="refused")
    assert refused["reason"] == "Invalid"
    assert "ValidatingAdmissionPolicy 'require-team-label'" in refused["message"]
    assert "denied request: pods must carry a team label" in refused["message"]
    events = await cluster.wait(lambda: events_with(cluster, "FailedCreate"), what="the event")
    event = events[0]
    assert "(422 Invalid)" in event and "retrying in 1s" in event


# -- item 6: a scale-up that cannot be placed ---------------------------------------------------------


async def test_a_scale_up_that_cannot_be_placed_rolls_back_and_the_job_runs_on(
    cluster: Cluster,
) -> None:
    from tests.integration.test_operator import kubectl_scale

    elastic = {"minNodes": 1, "maxNodes": 4, "rendezvous": {"backend": "c10d"}}
    cluster.api.create(JOBS, "default", job(runPolicy={"pendingDeadlineSeconds": 2}, **elastic))
    await cluster.wait(lambda: phase(cluster) == "Running", what="Running")
    await asyncio.sleep(2.5)  # the attempt is older than the pending deadline
    cluster.kubelet.unschedulable["demo-node-2"] = "0/5 nodes are available: 5 Insufficient cpu."
    phases = []
    cluster.api.after_write = lambda method, resource, name: phases.append(phase(cluster))
    await kubectl_scale(cluster, 3)
    await cluster.wait(
        lambda: events_with(cluster, "ScaleUpRolledBack"), timeout=30, what="the rollback"
    )
    await cluster.wait(lambda: "demo-node-2" not in cluster.pods(), what="the new pod deleted")
    status = status_of(cluster)
    assert (status["phase"], status["replicas"], status["rejectedNumNodes"]) == ("Running", 2, 3)
    assert set(phases) == {"Running"}, phases  # never Pending, never Failed
    event = await one_event(cluster, "ScaleUpRolledBack")
    assert "numNodes=3 could not be placed within pendingDeadlineSeconds=2" in event
    assert "Insufficient cpu" in event and "back to 2 nodes" in event
    assert (status["restarts"], status["preemptions"], status["attempt"]) == (0, 0, 1)


# -- item 8: containers that cannot start ------------------------------------------------------------


async def test_an_image_that_cannot_be_pulled_is_shown_and_fails_after_the_deadline(
    cluster: Cluster,
) -> None:
    cluster.kubelet.missing_images.add("ghcr.io/example/typo:1")
    cluster.api.create(
        JOBS,
        "default",
        job(image="ghcr.io/example/typo:1", runPolicy={"pendingDeadlineSeconds": 3}),
    )
    waiting = await cluster.wait(
        lambda: condition(cluster, "ContainerCannotStart"), what="the condition"
    )
    assert waiting["reason"] == "ImagePullBackOff"
    assert 'Back-off pulling image "ghcr.io/example/typo:1"' in waiting["message"]
    await cluster.wait(lambda: events_with(cluster, "ContainerCannotStart"), what="the event")
    await cluster.wait(lambda: phase(cluster) == "Failed", timeout=30, what="Failed")
    status = status_of(cluster)
    assert "gave up after pendingDeadlineSeconds=3" in status["message"]
    assert "cannot start its container: ImagePullBackOff" in status["message"]
    await cluster.wait(lambda: not cluster.pods(), what="pods deleted")


async def test_time_suspended_does_not_count_against_the_active_deadline(
    cluster: Cluster,
) -> None:
    cluster.api.create(JOBS, "default", job(runPolicy={"activeDeadlineSeconds": 4}))
    await cluster.wait(lambda: phase(cluster) == "Running", what="Running")
    suspend = {"spec": {"runPolicy": {"suspend": True}}}
    cluster.api.update(JOBS, "default", "demo", None, suspend)
    await cluster.wait(lambda: phase(cluster) == "Suspended" and not cluster.pods())
    await asyncio.sleep(5)  # longer than the whole deadline
    assert phase(cluster) == "Suspended"
    cluster.api.update(JOBS, "default", "demo", None, {"spec": {"runPolicy": {"suspend": False}}})
    await cluster.wait(lambda: phase(cluster) == "Running", what="resumed and Running")
    await cluster.wait(lambda: phase(cluster) == "Failed", timeout=30, what="the deadline")
    status = status_of(cluster)
    assert status["suspendedSeconds"] >= 5
    assert "activeDeadlineSeconds=4 (not counting" in status["message"]


async def test_resuming_does_not_skip_the_rest_of_the_back_off(emulated: Cluster) -> None:
    operator = OperatorRun(emulated, backoff_base=6.0)
    await operator.start()
    try:
        emulated.api.create(JOBS, "default", job())
        await emulated.wait(lambda: phase(emulated) == "Running", what="Running")
        emulated.kubelet.exit("demo-node-1", 1)
        await emulated.wait(lambda: status_of(emulated).get("restarts") == 1, what="a failure")
        emulated.api.update(
            JOBS, "default", "demo", None, {"spec": {"runPolicy": {"suspend": True}}}
        )
        await emulated.wait(lambda: phase(emulated) == "Suspended", what="Suspended")
        emulated.api.update(
            JOBS, "default", "demo", None, {"spec": {"runPolicy": {"suspend": False}}}
        )
        await emulated.wait(lambda: events_with(emulated, "Resumed"), what="Resumed")
        await asyncio.sleep(2)
        assert status_of(emulated)["attempt"] == 1, "the next attempt skipped the back-off"
        await emulated.wait(
            lambda: status_of(emulated).get("attempt") == 2, timeout=15, what="attempt 2"
        )
    finally:
        await operator.stop()


# -- item 7: specs from another operator version ------------------------------------------------------


def store_spec(cluster: Cluster, **changes: Any) -> None:
    """What a newer (or older) CRD let through: the spec stored as it is."""
    body = cluster.job()
    body["spec"] = {**body["spec"], **changes}
    cluster.api.put(JOBS, "default", body)


async def test_a_spec_from_a_newer_version_is_read_without_its_unknown_fields(
    cluster: Cluster,
) -> None:
    from lightjob.api.validate import read_documents

    cluster.api.create(JOBS, "default", job())
    await cluster.wait(lambda: phase(cluster) == "Running", what="Running")
    store_spec(cluster, futureFeature={"mode": "fast"})
    ignored = await cluster.wait(
        lambda: condition(cluster, "UnknownFieldsIgnored"), what="the condition"
    )
    assert "spec.futureFeature" in ignored["message"]
    assert sorted(cluster.pods()) == ["demo-node-0", "demo-node-1"]
    cluster.kubelet.exit("demo-node-0", 0)
    await cluster.wait(lambda: phase(cluster) == "Succeeded", what="it runs to the end")
    # `lightjob validate` (and the CRD, see test_emulator.py) still reject the field.
    newer = job(futureFeature={"mode": "fast"})
    (doc,) = read_documents("job.yaml", __import__("yaml").safe_dump(newer))
    assert doc.report() == ["job.yaml: document 1 (demo): spec.futureFeature: unknown field"]


async def test_a_spec_breaking_a_newer_rule_never_kills_the_running_job(cluster: Cluster) -> None:
    cluster.api.create(JOBS, "default", job())
    await cluster.wait(lambda: phase(cluster) == "Running", what="Running")
    store_spec(cluster, metrics={"port": 29500})  # the rendezvous port: a rule added later
    invalid = await cluster.wait(lambda: condition(cluster, "InvalidSpec"), what="InvalidSpec")
    assert "spec.metrics.port must differ from spec.rendezvous.port" in invalid["message"]
    await cluster.wait(lambda: events_with(cluster, "InvalidSpec"), what="the warning")
    cluster.kubelet.exit("demo-node-1", 1)  # no decision is made while the spec is unreadable
    await asyncio.sleep(1.5)
    assert phase(cluster) == "Running" and status_of(cluster)["restarts"] == 0
    assert sorted(cluster.pods()) == ["demo-node-0", "demo-node-1"]
    store_spec(cluster, metrics={"port": 9090})  # fixed
    await cluster.wait(lambda: status_of(cluster).get("restarts") == 1, what="acted on again")
    cleared = condition(cluster, "InvalidSpec")
    assert cleared is not None and cleared["status"] == "False"


# -- the API's own unkindness: conflicts, watches that expire, paged lists ---------------------------


async def test_a_decision_made_from_a_job_that_changed_since_is_not_applied(
    cluster: Cluster,
) -> None:
    """The user suspends the job between the operator's read and its write: the status
    write, conditional on what was read, gets 409, and the operator decides again."""
    read, suspended = [], []

    def suspend_after_the_first_read(method: str, path: str) -> None:
        if method == "GET" and path.endswith("/lightningjobs/demo"):
            read.append(path)
        elif read and not suspended:  # the operator's next call: its read is now stale
            suspended.append(path)
            cluster.api.update(
                JOBS, "default", "demo", None, {"spec": {"runPolicy": {"suspend": True}}}
            )

    cluster.api.on_request = suspend_after_the_first_read
    cluster.api.create(JOBS, "default", job())
    await cluster.wait(lambda: phase(cluster) == "Suspended", what="Suspended")
    await asyncio.sleep(1)
    created = [o for _, r, kind, o in cluster.api.history if r == "v1/pods" and kind == "ADDED"]
    assert suspended and not created, "pods were created for a job already suspended"
    conflicts = [
        path
        for (method, path) in cluster.api.calls
        if method == "PATCH" and path.endswith("/demo/status")
    ]
    assert conflicts  # the stale write was tried, refused, and decided again


async def test_the_operator_carries_on_through_expired_watches_and_paged_lists(
    emulated: Cluster,
) -> None:
    emulated.api.watches.bookmark_interval = 0.2
    operator = OperatorRun(emulated, list_chunk_size=2)
    await operator.start()
    try:
        for name in ("a", "b", "c"):
            emulated.api.create(JOBS, "default", job(name, numNodes=1))

        def phase_of(name: str) -> str | None:
            return (emulated.api.get(JOBS, "default", name).get("status") or {}).get("phase")

        await emulated.wait(lambda: all(phase_of(n) == "Running" for n in "abc"), what="3 jobs")
        await emulated.wait(
            lambda: emulated.api.watches.sent["BOOKMARK"], what="a bookmark while idle"
        )
        # The API server compacts its history and drops every watch: kopf comes back with
        # a resourceVersion that is gone (410), lists again (in pages of 2), and goes on.
        emulated.api.watches.close()
        emulated.kubelet.exit("b-node-0", 0)  # happens while nobody watches
        emulated.api.watches.compact()
        await emulated.wait(lambda: phase_of("b") == "Succeeded", timeout=30, what="b done")
        emulated.kubelet.exit("c-node-0", 0)
        await emulated.wait(lambda: phase_of("c") == "Succeeded", timeout=30, what="c done")
        assert emulated.api.watches.sent["410"] >= 1, "the watches resumed from a compacted version"
        pages = [q for q in emulated.api.queries if q.get("limit") == "2"]
        assert any(q.get("continue") for q in pages), "the lists were paged"
    finally:
        await operator.stop()
