"""The controller's decisions, table by table, and properties over any observed state."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from lightjob.controller import Plan, observe_job, observe_pod, observe_podgroup, parse, reconcile
from lightjob.controller.build import ATTEMPT_LABEL, JOB_LABEL, RANK_LABEL
from lightjob.controller.progress import duration, headline
from lightjob.runtime.telemetry import Telemetry

NOW = dt.datetime(2026, 11, 27, 12, 0, 0, tzinfo=dt.timezone.utc)
UID = "uid-1234"


def job_body(status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "lightjob.dev/v1alpha1",
        "kind": "LightningJob",
        "metadata": {"name": "demo", "namespace": "team", "uid": UID, "generation": 1},
        "spec": {"image": "train:1", "numNodes": 2, **spec},
        "status": status or {},
    }


def pod(
    rank: int, attempt: int = 1, state: str = "running", exit_code: int | None = None, **extra: Any
) -> dict[str, Any]:
    """A pod as the API would report it; `state` is the trainer container's."""
    container: dict[str, Any] = {"name": "trainer"}
    if state == "running":
        container["state"] = {"running": {"startedAt": "2026-11-27T11:00:00Z"}}
    elif state == "terminated":
        container["state"] = {
            "terminated": {"exitCode": exit_code, "reason": extra.pop("reason", "Error")}
        }
    else:
        container["state"] = {"waiting": {"reason": "ContainerCreating"}}
    phase = {"running": "Running", "waiting": "Pending"}.get(
        state, "Failed" if exit_code else "Succeeded"
    )
    body: dict[str, Any] = {
        "metadata": {
            "name": f"demo-node-{rank}",
            "labels": {JOB_LABEL: "demo", RANK_LABEL: str(rank), ATTEMPT_LABEL: str(attempt)},
            "ownerReferences": [
                {"uid": UID, "controller": True, "kind": "LightningJob", "name": "demo"}
            ],
        },
        "status": {"phase": phase, "containerStatuses": [container], **extra.pop("status", {})},
    }
    if extra.pop("deleting", False):
        body["metadata"]["deletionTimestamp"] = "2026-11-27T12:00:30Z"  # its grace ends
    return body


def plan_for(
    body: dict[str, Any], pods: list[dict[str, Any]], now: dt.datetime = NOW, service: bool = True
) -> Plan:
    job = observe_job(body)
    views = [v for v in (observe_pod(p, UID) for p in pods) if v is not None]
    return reconcile(job, views, service, now)


def running(attempt: int = 1, replicas: int = 2, **extra: Any) -> dict[str, Any]:
    status = {
        "phase": "Running",
        "attempt": attempt,
        "replicas": replicas,
        "startTime": "2026-11-27T11:00:00Z",
        "attemptStartTime": "2026-11-27T11:00:00Z",
    }
    status.update(extra)
    return status


def env_of(manifest: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in manifest["spec"]["containers"][0]["env"]}


# -- creating the gang -----------------------------------------------------------------------


def test_a_new_job_gets_a_headless_service_and_a_gang_of_pods() -> None:
    plan = plan_for(
        job_body(checkpoint={"uri": "s3://b/run", "everyNSteps": 100}), [], service=False
    )
    kinds = [m["kind"] for m in plan.create]
    assert kinds == ["Service", "Pod", "Pod"]
    service, pod0, pod1 = plan.create
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"]
    assert pod0["metadata"]["name"] == "demo-node-0" and pod0["spec"]["hostname"] == "demo-node-0"
    assert pod0["spec"]["subdomain"] == "demo" and pod0["spec"]["restartPolicy"] == "Never"
    assert pod0["metadata"]["ownerReferences"][0]["uid"] == UID
    assert pod1["metadata"]["labels"] == {
        JOB_LABEL: "demo",
        RANK_LABEL: "1",
        ATTEMPT_LABEL: "1",
        "app.kubernetes.io/managed-by": "lightjob",
    }
    env = env_of(pod1)
    assert env["MASTER_ADDR"] == env["PET_MASTER_ADDR"] == "demo-node-0.demo.team.svc"
    assert (env["MASTER_PORT"], env["NODE_RANK"], env["WORLD_SIZE"]) == ("29500", "1", "2")
    assert (env["PET_NNODES"], env["PET_NODE_RANK"], env["PET_NPROC_PER_NODE"]) == ("2", "1", "1")
    assert env["LIGHTJOB_CHECKPOINT_URI"] == "s3://b/run"
    assert env["LIGHTJOB_CHECKPOINT_EVERY_N_STEPS"] == "100"
    assert (env["LIGHTJOB_JOB_NAME"], env["LIGHTJOB_ATTEMPT"]) == ("demo", "1")
    status = plan.status
    assert status is not None and status["phase"] == "Pending" and status["attempt"] == 1
    assert status["selector"] == "lightjob.dev/job-name=demo" and status["replicas"] == 2
    assert [e.reason for e in plan.events] == ["AttemptStarted"]


def test_elastic_env_and_the_users_env_wins() -> None:
    body = job_body(
        numNodes=2,
        minNodes=1,
        maxNodes=4,
        rendezvous={"backend": "c10d", "port": 1234},
        resourcesPerNode={"limits": {"nvidia.com/gpu": 8}},
        env=[{"name": "NCCL_DEBUG", "value": "INFO"}, {"name": "MASTER_PORT", "value": "9"}],
    )
    pods = [m for m in plan_for(body, []).create if m["kind"] == "Pod"]
    env0, env1 = env_of(pods[0]), env_of(pods[1])
    assert env0["PET_NNODES"] == "1:4" and env0["PET_RDZV_BACKEND"] == "c10d"
    assert env0["PET_RDZV_ENDPOINT"] == "demo-node-0.demo.team.svc:1234"
    assert (env0["PET_RDZV_CONF"], env1["PET_RDZV_CONF"]) == ("is_host=1", "is_host=0")
    assert env0["PET_NPROC_PER_NODE"] == "8" and env0["WORLD_SIZE"] == "16"
    assert "PET_NODE_RANK" not in env0
    assert env0["NCCL_DEBUG"] == "INFO" and env0["MASTER_PORT"] == "9"


def test_pod_template_settings_reach_the_pod() -> None:
    body = job_body(
        command=["python", "train.py"],
        envFrom=[{"secretRef": {"name": "a"}}],
        checkpoint={"uri": "s3://b/r", "envFrom": [{"secretRef": {"name": "s3"}}]},
        podTemplate={
            "nodeSelector": {"pool": "gpu"},
            "tolerations": [{"key": "spot", "operator": "Exists"}],
            "priorityClassName": "high",
            "labels": {"team": "x"},
        },
        runPolicy={"terminationGracePeriodSeconds": 300},
    )
    pod0 = next(m for m in plan_for(body, []).create if m["kind"] == "Pod")
    spec, container = pod0["spec"], pod0["spec"]["containers"][0]
    assert container["name"] == "trainer" and container["command"] == ["python", "train.py"]
    assert container["envFrom"] == [{"secretRef": {"name": "a"}}, {"secretRef": {"name": "s3"}}]
    assert spec["nodeSelector"] == {"pool": "gpu"} and spec["priorityClassName"] == "high"
    assert spec["terminationGracePeriodSeconds"] == 300
    assert pod0["metadata"]["labels"]["team"] == "x"


# -- the life of an attempt --------------------------------------------------------------------


def test_all_nodes_running_makes_the_job_running() -> None:
    plan = plan_for(job_body(running(phase="Pending")), [pod(0), pod(1)])
    assert plan.status is not None and plan.status["phase"] == "Running"
    assert plan.status["nodes"] == "2/2" and plan.status["readyNodes"] == 2
    condition = next(c for c in plan.status["conditions"] if c["type"] == "Running")
    assert condition["status"] == "True" and condition["observedGeneration"] == 1
    assert not plan.create and not plan.delete


@pytest.mark.parametrize(
    ("policy", "deleted"),
    [("Running", ["demo-node-1"]), ("All", ["demo-node-0", "demo-node-1"]), ("None", [])],
)
def test_node_zero_exiting_zero_succeeds_and_cleans_up(policy: str, deleted: list[str]) -> None:
    body = job_body(running(), runPolicy={"cleanPodPolicy": policy})
    plan = plan_for(body, [pod(0, state="terminated", exit_code=0), pod(1)])
    assert plan.status is not None and plan.status["phase"] == "Succeeded"
    assert plan.status["completionTime"] == "2026-11-27T12:00:00Z"
    assert sorted(plan.delete) == deleted


def test_a_failure_restarts_the_gang_with_back_off_then_fails_after_the_limit() -> None:
    body = job_body(running(), runPolicy={"backoffLimit": 1})
    plan = plan_for(body, [pod(0), pod(1, state="terminated", exit_code=1)])
    status = plan.status
    assert status is not None and status["phase"] == "Restarting" and status["restarts"] == 1
    assert status["preemptions"] == 0
    assert status["nextAttemptTime"] == "2026-11-27T12:00:10Z"  # 10 s back-off
    assert sorted(plan.delete) == ["demo-node-0", "demo-node-1"]
    assert (
        plan.events[0].reason == "NodeFailed"
        and "node 1 exited with code 1" in plan.events[0].message
    )

    body["status"] = status
    waiting = plan_for(body, [pod(0, deleting=True)])
    assert not waiting.create and not waiting.delete and waiting.status is None
    too_early = plan_for(body, [], now=NOW + dt.timedelta(seconds=5))
    assert not too_early.create and too_early.requeue_after == pytest.approx(5)
    second = plan_for(body, [], now=NOW + dt.timedelta(seconds=11))
    assert [m["metadata"]["labels"][ATTEMPT_LABEL] for m in second.create] == ["2", "2"]
    assert second.status is not None and second.status["attempt"] == 2

    body["status"] = running(attempt=2, restarts=1)
    final = plan_for(body, [pod(0, 2), pod(1, 2, state="terminated", exit_code=3)])
    assert final.status is not None and final.status["phase"] == "Failed"
    assert "backoffLimit=1 exceeded" in final.status["message"]
    assert final.delete == ["demo-node-0"]  # the failed pod stays, with its logs
    failed = next(c for c in final.status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "BackoffLimitExceeded"


@pytest.mark.parametrize("code", [134, 137, 139, 143])
def test_a_signal_without_disruption_evidence_is_a_failure_with_back_off(code: int) -> None:
    plan = plan_for(job_body(running()), [pod(0), pod(1, state="terminated", exit_code=code)])
    status = plan.status
    assert status is not None and (status["restarts"], status["preemptions"]) == (1, 0)
    assert status["nextAttemptTime"] == "2026-11-27T12:00:10Z"
    assert plan.events[0].reason == "NodeFailed" and plan.events[0].cause == "signal"
    assert f"(exit {code})" in plan.events[0].message


def test_back_off_doubles_per_failure() -> None:
    from lightjob.controller.attempts import backoff_delay

    assert [backoff_delay(n, 10) for n in (1, 2, 3, 4, 10)] == [10, 20, 40, 80, 360]


@pytest.mark.parametrize(
    ("pods", "why"),
    [
        (
            [
                pod(0),
                pod(
                    1,
                    status={
                        "conditions": [
                            {
                                "type": "DisruptionTarget",
                                "status": "True",
                                "reason": "PreemptionByScheduler",
                            }
                        ]
                    },
                ),
            ],
            "PreemptionByScheduler",
        ),
        (
            [pod(0), pod(1, status={"reason": "Evicted", "message": "node memory pressure"})],
            "Evicted",
        ),
        ([pod(0), pod(1, state="terminated", exit_code=143, deleting=True)], "pod was deleted"),
        ([pod(0), pod(1, deleting=True)], "pod was deleted"),
        # Node 0 saved on SIGTERM and exited 0 while its node shut down: not a success.
        (
            [
                pod(
                    0,
                    state="terminated",
                    exit_code=0,
                    status={"reason": "Terminated", "message": "node shutdown"},
                ),
                pod(1),
            ],
            "node 0 was disrupted (Terminated: node shutdown)",
        ),
        ([pod(0)], "disappeared"),
        # The others crash when a peer is preempted: still a preemption, not a failure.
        (
            [pod(0, state="terminated", exit_code=1), pod(1, status={"reason": "Evicted"})],
            "Evicted",
        ),
    ],
)
def test_preemptions_restart_at_once_without_counting_as_failures(
    pods: list[dict[str, Any]], why: str
) -> None:
    plan = plan_for(job_body(running(restarts=2), runPolicy={"backoffLimit": 2}), pods)
    status = plan.status
    assert status is not None and status["phase"] == "Restarting"
    assert (status["preemptions"], status["restarts"]) == (1, 2)
    assert status["nextAttemptTime"] == "2026-11-27T12:00:00Z"  # no back-off
    assert plan.events[0].reason == "Preempted" and why in plan.events[0].message


def test_preemption_limit_and_oom_kills() -> None:
    body = job_body(running(preemptions=1), runPolicy={"preemptionLimit": 1})
    plan = plan_for(body, [pod(0), pod(1, state="terminated", exit_code=143, deleting=True)])
    assert plan.status is not None and plan.status["phase"] == "Failed"
    assert "preemptionLimit=1 exceeded" in plan.status["message"]
    oom = plan_for(
        job_body(running()), [pod(0), pod(1, state="terminated", exit_code=137, reason="OOMKilled")]
    )
    assert (
        oom.status is not None
        and oom.status["restarts"] == 1
        and "OOMKilled" in oom.status["message"]
    )


def test_a_fixed_size_job_restarts_at_its_new_size() -> None:
    body = job_body(running(), numNodes=3)
    plan = plan_for(body, [pod(0), pod(1)])
    assert plan.status is not None and plan.status["phase"] == "Restarting"
    assert (plan.status["resizes"], plan.status["restarts"], plan.status["preemptions"]) == (
        1,
        0,
        0,
    )
    assert sorted(plan.delete) == ["demo-node-0", "demo-node-1"]
    body["status"] = plan.status
    started = plan_for(body, [])
    assert [m["metadata"]["name"] for m in started.create] == [
        "demo-node-0",
        "demo-node-1",
        "demo-node-2",
    ]
    assert env_of(started.create[0])["WORLD_SIZE"] == "3"


def test_an_elastic_job_adds_and_removes_pods_in_place() -> None:
    elastic = {"minNodes": 1, "maxNodes": 4, "rendezvous": {"backend": "c10d"}}
    grow = plan_for(job_body(running(), numNodes=3, **elastic), [pod(0), pod(1)])
    assert [m["metadata"]["name"] for m in grow.create] == ["demo-node-2"] and not grow.delete
    assert grow.status is not None and grow.status["replicas"] == 3 and grow.status["attempt"] == 1
    shrink = plan_for(
        job_body(running(replicas=3), numNodes=1, **elastic), [pod(0), pod(1), pod(2)]
    )
    assert sorted(shrink.delete) == ["demo-node-1", "demo-node-2"] and not shrink.create
    assert shrink.status is not None and shrink.status["phase"] == "Running"


def test_suspend_stops_the_gang_and_resume_starts_a_new_attempt() -> None:
    body = job_body(running(), runPolicy={"suspend": True})
    plan = plan_for(body, [pod(0), pod(1)])
    assert sorted(plan.delete) == ["demo-node-0", "demo-node-1"]
    assert plan.status is not None and plan.status["phase"] == "Suspended"
    body["status"] = plan.status
    settled = plan_for(body, [])
    assert settled.status is not None and settled.status["message"] == "suspended"
    body["status"], body["spec"]["runPolicy"]["suspend"] = settled.status, False
    resumed = plan_for(body, [])
    assert len([m for m in resumed.create if m["kind"] == "Pod"]) == 2
    assert resumed.status is not None and resumed.status["attempt"] == 2
    assert (resumed.status["restarts"], resumed.status["preemptions"]) == (0, 0)
    assert [e.reason for e in resumed.events] == ["Resumed", "AttemptStarted"]


def unschedulable_pod(rank: int, created: str = "", attempt: int = 1) -> dict[str, Any]:
    """A pod the scheduler cannot place; `created`: its creationTimestamp, if any."""
    stuck = pod(
        rank,
        attempt=attempt,
        state="waiting",
        status={
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                }
            ]
        },
    )
    if created:
        stuck["metadata"]["creationTimestamp"] = created
    return stuck


def test_deadlines() -> None:
    late = NOW + dt.timedelta(hours=2)
    plan = plan_for(
        job_body(running(), runPolicy={"activeDeadlineSeconds": 3600}), [pod(0), pod(1)], now=late
    )
    assert plan.status is not None and plan.status["phase"] == "Failed"
    assert sorted(plan.delete) == ["demo-node-0", "demo-node-1"]
    stuck = unschedulable_pod(1)
    body = job_body(running(phase="Pending"), runPolicy={"pendingDeadlineSeconds": 600})
    early = plan_for(body, [pod(0), stuck], now=NOW - dt.timedelta(minutes=55))
    assert early.status is not None and "Insufficient nvidia.com/gpu" in early.status["message"]
    assert [e.reason for e in early.events] == ["Unschedulable"]
    expired = plan_for(body, [pod(0), stuck])
    assert expired.status is not None and expired.status["phase"] == "Failed"
    assert "pendingDeadlineSeconds=600" in expired.status["message"]


def test_ttl_after_finished_deletes_the_job() -> None:
    done = {"phase": "Succeeded", "attempt": 1, "completionTime": "2026-11-27T11:59:00Z"}
    body = job_body(done, runPolicy={"ttlSecondsAfterFinished": 120})
    before = plan_for(body, [])
    assert not before.delete_job and before.requeue_after == pytest.approx(60)
    after = plan_for(body, [], now=NOW + dt.timedelta(seconds=61))
    assert after.delete_job


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"numNodes": -3}, "spec.numNodes"),  # a rule this version has and the CRD did not
        ({"metrics": {"port": 29500}}, "spec.metrics.port must differ"),  # a CEL rule added later
    ],
)
def test_a_spec_this_version_rejects_leaves_a_running_job_alone(
    spec: dict[str, Any], field: str
) -> None:
    body = job_body(running(readyNodes=2, nodes="2/2"), **spec)
    pods = [pod(0), pod(1, state="terminated", exit_code=1)]  # even a failure waits
    plan = plan_for(body, pods)
    assert not plan.create and not plan.delete and not plan.force_delete
    assert plan.status is not None and plan.status["phase"] == "Running"
    assert plan.status["restarts"] == 0
    condition = next(c for c in plan.status["conditions"] if c["type"] == "InvalidSpec")
    assert condition["status"] == "True" and field in condition["message"]
    assert [e.reason for e in plan.events] == ["InvalidSpec"] and field in plan.events[0].message
    body["status"] = plan.status
    assert plan_for(body, pods).is_empty  # said once; nothing else until it is fixed
    body["spec"] = job_body()["spec"]
    fixed = plan_for(body, pods)
    assert fixed.status is not None and fixed.status["restarts"] == 1  # acted on again
    condition = next(c for c in fixed.status["conditions"] if c["type"] == "InvalidSpec")
    assert condition["status"] == "False"


def test_fields_from_a_newer_version_are_ignored_on_read_and_named_once() -> None:
    body = job_body(
        running(readyNodes=2, nodes="2/2"),
        futureFeature={"enabled": True},
        runPolicy={"backoffLimit": 1, "futureRetryMode": "smart"},
    )
    job = observe_job(body)
    assert job.spec is not None and job.spec.run_policy.backoff_limit == 1
    assert job.ignored == ("spec.futureFeature", "spec.runPolicy.futureRetryMode")
    plan = plan_for(body, [pod(0), pod(1)])
    assert plan.status is not None and plan.status["phase"] == "Running"
    assert [e.reason for e in plan.events] == ["UnknownFieldsIgnored"]
    condition = next(c for c in plan.status["conditions"] if c["type"] == "UnknownFieldsIgnored")
    assert "spec.futureFeature, spec.runPolicy.futureRetryMode" in condition["message"]
    body["status"] = plan.status
    assert not plan_for(body, [pod(0), pod(1)]).events


def test_pods_from_an_interrupted_plan_are_adopted_not_duplicated() -> None:
    body = job_body(
        {
            "phase": "Restarting",
            "attempt": 1,
            "replicas": 2,
            "nextAttemptTime": "2026-11-27T11:00:00Z",
        }
    )
    plan = plan_for(body, [pod(0, attempt=2, state="waiting")])
    assert [m["metadata"]["name"] for m in plan.create] == ["demo-node-1"]
    assert plan.status is not None and plan.status["attempt"] == 2 and not plan.delete


@pytest.mark.parametrize(
    ("grace_ends", "forced", "requeue"),
    [
        ("2026-11-27T11:58:00Z", True, None),  # two minutes past its grace period
        ("2026-11-27T11:59:00Z", True, None),  # exactly the margin (60 s) past it
        ("2026-11-27T11:59:45Z", False, 45.0),  # not yet: look again when it is due
        ("2026-11-27T12:00:30Z", False, 90.0),  # still in its grace period
    ],
)
def test_a_pod_stuck_terminating_is_force_deleted_after_its_grace_period_and_a_margin(
    grace_ends: str, forced: bool, requeue: float | None
) -> None:
    body = job_body(
        {
            "phase": "Restarting",
            "attempt": 1,
            "replicas": 2,
            "restarts": 1,
            "nextAttemptTime": "2026-11-27T11:00:00Z",
        }
    )
    stuck = pod(1, deleting=True)
    stuck["metadata"]["deletionTimestamp"] = grace_ends
    plan = plan_for(body, [stuck])
    assert plan.force_delete == (["demo-node-1"] if forced else [])
    assert not plan.create and not plan.delete  # the next attempt waits until it is gone
    assert [e.reason for e in plan.events] == (["ForceDeleted"] if forced else [])
    assert plan.requeue_after == requeue


def test_pods_the_job_does_not_own_are_never_touched() -> None:
    stranger = pod(0)
    stranger["metadata"]["ownerReferences"] = [{"uid": "someone-else", "controller": True}]
    assert observe_pod(stranger, UID) is None


# -- properties over any observed state -----------------------------------------------------------

states = st.sampled_from(["running", "waiting", "terminated"])
exit_codes = st.sampled_from([0, 1, 2, 137, 143])
phases = st.sampled_from(["Pending", "Running", "Restarting", "Suspended", "Succeeded", "Failed"])


@st.composite
def worlds(draw: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    elastic = draw(st.booleans())
    lower = draw(st.integers(1, 3))
    upper = draw(st.integers(lower, 5))
    spec: dict[str, Any] = {
        "numNodes": draw(st.integers(lower, upper)),
        "runPolicy": {
            "backoffLimit": draw(st.integers(0, 3)),
            "suspend": draw(st.booleans()),
            "cleanPodPolicy": draw(st.sampled_from(["All", "Running", "None"])),
        },
    }
    if elastic:
        spec.update(minNodes=lower, maxNodes=upper, rendezvous={"backend": "c10d"})
    else:
        spec["maxNodes"] = upper
    attempt = draw(st.integers(0, 3))
    status = {
        "phase": draw(phases),
        "attempt": attempt,
        "replicas": draw(st.integers(0, upper)),
        "restarts": draw(st.integers(0, 3)),
        "preemptions": draw(st.integers(0, 3)),
        "nextAttemptTime": "2026-11-27T11:59:30Z",
        "startTime": "2026-11-27T11:00:00Z",
    }
    pods = []
    for rank in draw(st.sets(st.integers(0, upper + 1), max_size=upper + 2)):
        code = draw(exit_codes)
        pods.append(
            pod(
                rank,
                attempt=draw(st.integers(max(0, attempt - 1), attempt + 1)),
                state=draw(states),
                exit_code=code,
                deleting=draw(st.booleans()),
            )
        )
    return job_body(status, **spec), pods


def apply(
    plan: Plan, body: dict[str, Any], pods: list[dict[str, Any]]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """What the API would hold after the operator applied the plan."""
    body, pods = copy.deepcopy(body), copy.deepcopy(pods)
    for victim in pods:
        if victim["metadata"]["name"] in plan.delete:
            victim["metadata"]["deletionTimestamp"] = "2026-11-27T12:00:00Z"
    for manifest in plan.create:
        if manifest["kind"] == "Pod":
            manifest = copy.deepcopy(manifest)
            manifest["status"] = {"phase": "Pending"}
            pods.append(manifest)
    if plan.status is not None:
        body["status"] = plan.status
    return body, pods


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds())
def test_any_observed_state_gives_a_safe_idempotent_plan(
    world: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    body, pods = world
    plan = plan_for(body, pods)
    names = {p["metadata"]["name"] for p in pods}
    live = {p["metadata"]["name"] for p in pods if "deletionTimestamp" not in p["metadata"]}
    created = [m["metadata"]["name"] for m in plan.create if m["kind"] == "Pod"]
    # Only its own pods are deleted, each once, and never one already going away.
    assert set(plan.delete) <= live and len(plan.delete) == len(set(plan.delete))
    # Never two pods of one name, never more than maxNodes pods.
    assert not set(created) & names and len(created) == len(set(created))
    upper = body["spec"].get("maxNodes", body["spec"]["numNodes"])
    assert len((live - set(plan.delete)) | set(created)) <= max(upper, len(live - set(plan.delete)))
    assert len(created) <= upper

    after_body, after_pods = apply(plan, body, pods)
    again = plan_for(after_body, after_pods)
    assert not again.create and not again.delete and again.status is None, (plan, again)


def test_quantities_become_strings_and_termination_messages_reach_status() -> None:
    body = job_body(resourcesPerNode={"limits": {"cpu": 1, "memory": "2Gi", "nvidia.com/gpu": 2}})
    pod0 = next(m for m in plan_for(body, []).create if m["kind"] == "Pod")
    container = pod0["spec"]["containers"][0]
    assert container["resources"] == {
        "limits": {"cpu": "1", "memory": "2Gi", "nvidia.com/gpu": "2"}
    }
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"

    crashed = pod(1, state="terminated", exit_code=1)
    crashed["status"]["containerStatuses"][0]["state"]["terminated"]["message"] = (
        'Traceback (most recent call last):\n  File "train.py"\nValueError: boom\n'
    )
    plan = plan_for(job_body(running()), [pod(0), crashed])
    assert (
        plan.status is not None
        and plan.status["message"] == "node 1 exited with code 1: ValueError: boom"
    )

    done = pod(0, state="terminated", exit_code=0)
    checkpoint = {"uri": "s3://b/run/step-690.ckpt", "step": 690, "time": "2026-11-27T11:59:00Z"}
    done["status"]["containerStatuses"][0]["state"]["terminated"]["message"] = json.dumps(
        {"step": 690, "epoch": 30, "metrics": {"val_acc": 0.975}, "checkpoint": checkpoint}
    )
    plan = plan_for(job_body(running()), [done, pod(1)])
    assert plan.status is not None and plan.status["phase"] == "Succeeded"
    assert plan.status["progress"] == {
        "epoch": 30,
        "step": 690,
        "maxSteps": 690,
        "loss": 0.975,
        "metrics": {"val_acc": 0.975},
        "lastSeenTime": "2026-11-27T12:00:00Z",
    }
    assert plan.status["lastCheckpoint"] == checkpoint


def test_a_script_that_fails_after_fit_is_not_reported_as_its_final_metrics() -> None:
    # fit returned and wrote its final metrics; then the script raised. Kubernetes keeps the
    # file's JSON as the message (no log tail), which says nothing of the error.
    failed = pod(0, state="terminated", exit_code=1)
    failed["status"]["containerStatuses"][0]["state"]["terminated"]["message"] = json.dumps(
        {"step": 690, "epoch": 30, "metrics": {}}
    )
    plan = plan_for(job_body(running(), runPolicy={"backoffLimit": 0}), [failed, pod(1)])
    assert plan.status is not None and plan.status["phase"] == "Failed"
    assert plan.status["message"] == (
        "node 0 exited with code 1 after fit finished at step 690; backoffLimit=0 exceeded"
    )
    assert "progress" not in plan.status  # a failed job's final metrics are not its result


def metrics_text(step: int, loss: float, checkpoint_step: int | None = None) -> str:
    """What the runtime serves (its real collector), at `step`."""
    telemetry = Telemetry()
    telemetry.progress(step - 10, 0, (step - 10) * 64, max_steps=1000)
    telemetry._last = (telemetry._last[0] - 2.0, *telemetry._last[1:])  # 10 steps in 2 s
    telemetry.progress(step, 1, step * 64, max_steps=1000)
    telemetry.scalars({"train_loss": torch.tensor(loss), "val_acc": 0.5, "lr-SGD": 0.1})
    if checkpoint_step is not None:
        telemetry.checkpoint_saved(
            f"s3://b/run/step-{checkpoint_step}.ckpt", checkpoint_step, 9, 1.0
        )
    registry = CollectorRegistry()
    registry.register(telemetry)
    return generate_latest(registry).decode()


def with_endpoint(body: dict[str, Any], ip: str = "10.0.0.5") -> dict[str, Any]:
    body["spec"] = {
        "containers": [{"name": "trainer", "ports": [{"name": "metrics", "containerPort": 9090}]}]
    }
    body["status"]["podIP"] = ip
    return body


def test_node_zero_metrics_become_progress_and_the_last_checkpoint() -> None:
    node0 = observe_pod(with_endpoint(pod(0)), UID)
    assert node0 is not None and node0.metrics_url == "http://10.0.0.5:9090/metrics"
    assert observe_pod(pod(0), UID).metrics_url == ""  # type: ignore[union-attr]
    ipv6 = observe_pod(with_endpoint(pod(0), ip="fd00::5"), UID)
    assert ipv6 is not None and ipv6.metrics_url == "http://[fd00::5]:9090/metrics"

    sample = parse(metrics_text(step=200, loss=0.4321, checkpoint_step=150))
    assert (sample.step, sample.epoch, sample.max_steps) == (200, 1, 1000)
    assert sample.steps_per_second == pytest.approx(5.0, rel=0.05)
    body = job_body(running(readyNodes=2, nodes="2/2"))
    views = [v for v in (observe_pod(p, UID) for p in (pod(0), pod(1))) if v]
    plan = reconcile(observe_job(body), views, True, NOW, sample=sample)
    assert plan.status is not None and not plan.create and not plan.delete
    progress = plan.status["progress"]
    assert progress["step"] == 200 and progress["maxSteps"] == 1000
    assert progress["loss"] == 0.4321 and progress["metrics"]["val_acc"] == 0.5
    assert progress["eta"] == "2m"  # 800 steps at 5 steps/s
    assert progress["samplesPerSecond"] == pytest.approx(320, rel=0.05)
    assert progress["lastSeenTime"] == "2026-11-27T12:00:00Z"
    assert plan.status["lastCheckpoint"]["uri"] == "s3://b/run/step-150.ckpt"
    assert plan.status["lastCheckpoint"]["step"] == 150

    # The same numbers again: nothing to write. No numbers (unreachable): nothing either.
    later = NOW + dt.timedelta(seconds=30)
    body["status"] = plan.status
    assert reconcile(observe_job(body), views, True, later, sample=sample).status is None
    assert reconcile(observe_job(body), views, True, later, sample=None).status is None
    # A stalled step keeps lastSeenTime, so status says when training last moved.
    stalled = dataclasses.replace(sample, samples_per_second=100.0)
    status = reconcile(observe_job(body), views, True, later, sample=stalled).status
    assert status is not None and status["progress"]["lastSeenTime"] == "2026-11-27T12:00:00Z"
    # The job may choose which metrics reach status; the Loss column shows the first.
    picky = job_body(running(), metrics={"statusMetrics": ["val_acc", "missing"]})
    status = reconcile(observe_job(picky), views, True, NOW, sample=sample).status
    assert status is not None
    assert status["progress"]["metrics"] == {"val_acc": 0.5} and status["progress"]["loss"] == 0.5
    # Progress is read only while the gang runs.
    pending = job_body({**running(), "phase": "Pending"})
    status = reconcile(observe_job(pending), views[:1], True, NOW, sample=sample).status
    assert status is None or "progress" not in status


def test_the_loss_column_prefers_a_loss_and_etas_read_like_ages() -> None:
    assert headline({"acc": 0.9, "val_loss": 0.3}) == 0.3  # loss-like names come first
    assert headline({"train_loss": 0.2, "loss": 0.1}) == 0.2
    assert headline({"acc": 0.9}) == 0.9
    assert headline({}) is None
    assert [duration(s) for s in (5, 125, 3 * 3600 + 20 * 60, 2 * 86400 + 4 * 3600)] == [
        "5s",
        "2m",
        "3h20m",
        "2d4h",
    ]
    text = 'lightjob_logged_metric{name="a\\"b"} 1.0\nlightjob_global_step NaN\n# HELP x\n'
    sample = parse(text)
    assert sample.metrics == {'a"b': 1.0} and sample.step is None


def test_pods_serve_metrics_on_the_spec_port_unless_disabled() -> None:
    pod0 = next(m for m in plan_for(job_body(), []).create if m["kind"] == "Pod")
    container = pod0["spec"]["containers"][0]
    assert {"name": "metrics", "containerPort": 9090} in container["ports"]
    assert env_of(pod0)["LIGHTJOB_METRICS_PORT"] == "9090"
    off = job_body(metrics={"enabled": False})
    pod0 = next(m for m in plan_for(off, []).create if m["kind"] == "Pod")
    assert "LIGHTJOB_METRICS_PORT" not in env_of(pod0)
    assert [p["name"] for p in pod0["spec"]["containers"][0]["ports"]] == ["rendezvous"]


def pod_of(body: dict[str, Any], rank: int = 0) -> dict[str, Any]:
    return next(
        m
        for m in plan_for(body, []).create
        if m["kind"] == "Pod" and m["metadata"]["name"] == f"demo-node-{rank}"
    )


SHM = {"name": "lightjob-shm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}}


def test_every_pod_gets_a_memory_backed_dev_shm_unless_the_user_mounts_one() -> None:
    spec = pod_of(job_body())["spec"]
    assert spec["volumes"] == [SHM]
    assert spec["containers"][0]["volumeMounts"] == [
        {"name": "lightjob-shm", "mountPath": "/dev/shm"}
    ]
    sized = pod_of(job_body(sharedMemorySize="32Gi"))["spec"]
    assert sized["volumes"][0]["emptyDir"]["sizeLimit"] == "32Gi"
    users = pod_of(
        job_body(
            volumes=[{"name": "mine", "emptyDir": {"medium": "Memory"}}],
            volumeMounts=[{"name": "mine", "mountPath": "/dev/shm/"}],
        )
    )["spec"]
    assert users["volumes"] == [{"name": "mine", "emptyDir": {"medium": "Memory"}}]
    assert users["containers"][0]["volumeMounts"] == [{"name": "mine", "mountPath": "/dev/shm/"}]


@pytest.mark.parametrize(
    ("limits", "devices", "processes", "tolerated"),
    [
        ({"nvidia.com/gpu": 8}, "auto", "8", True),
        ({"nvidia.com/gpu": "4"}, "auto", "4", True),
        ({"nvidia.com/gpu": 8}, 2, "2", True),
        ({"cpu": 4}, "auto", "1", False),
        ({}, 3, "3", False),
    ],
)
def test_gpus_set_the_processes_per_node_and_the_gpu_toleration(
    limits: dict[str, Any], devices: Any, processes: str, tolerated: bool
) -> None:
    body = job_body(numNodes=2, devicesPerNode=devices, resourcesPerNode={"limits": limits})
    pod0 = pod_of(body)
    env = env_of(pod0)
    assert env["PET_NPROC_PER_NODE"] == processes
    assert env["WORLD_SIZE"] == str(2 * int(processes))
    expected = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod0["spec"].get("tolerations") == (expected if tolerated else None)
    # The user's tolerations replace the default one entirely.
    spot = [{"key": "spot", "operator": "Exists"}]
    body = job_body(resourcesPerNode={"limits": limits}, podTemplate={"tolerations": spot})
    assert pod_of(body)["spec"]["tolerations"] == spot


def test_placement_merges_with_the_users_affinity_and_never_replaces_it() -> None:
    ours = {"labelSelector": {"matchLabels": {JOB_LABEL: "demo"}}, "topologyKey": "HOST"}
    host = {**ours, "topologyKey": "kubernetes.io/hostname"}
    assert pod_of(job_body())["spec"]["affinity"] == {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "podAffinityTerm": host}
            ]
        }
    }
    assert "affinity" not in pod_of(job_body(placement={"preferDistinctHosts": False}))["spec"]
    node_affinity = {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}]
        }
    }
    theirs = {"weight": 5, "podAffinityTerm": {"topologyKey": "zone", "labelSelector": {}}}
    user = {
        "nodeAffinity": node_affinity,
        "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [theirs]},
    }
    body = job_body(
        podTemplate={"affinity": copy.deepcopy(user)},
        placement={"exclusiveTopology": "kubernetes.io/hostname", "colocateTopology": "rack"},
    )
    affinity = pod_of(body)["spec"]["affinity"]
    assert affinity["nodeAffinity"] == node_affinity
    anti = affinity["podAntiAffinity"]
    assert anti["preferredDuringSchedulingIgnoredDuringExecution"] == [theirs]
    assert anti["requiredDuringSchedulingIgnoredDuringExecution"] == [host]
    assert affinity["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] == [
        {**ours, "topologyKey": "rack"}
    ]


def test_nccl_knobs_pass_as_env_and_host_network_keeps_the_rendezvous_name() -> None:
    body = job_body(
        nccl={"debug": "INFO", "socketIfname": "eth0", "ibDisable": True, "hostNetwork": True},
        env=[{"name": "NCCL_DEBUG", "value": "TRACE"}, {"name": "NCCL_ALGO", "value": "Ring"}],
    )
    pod0 = pod_of(body)
    env = env_of(pod0)
    assert env["NCCL_DEBUG"] == "TRACE"  # the user's env wins
    assert (env["NCCL_SOCKET_IFNAME"], env["NCCL_IB_DISABLE"], env["NCCL_ALGO"]) == (
        "eth0",
        "1",
        "Ring",
    )
    assert "NCCL_IB_HCA" not in env
    spec = pod0["spec"]
    assert spec["hostNetwork"] is True and spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    # Node 0 keeps its Service name (resolvable with that DNS policy), in both modes.
    assert (
        env["MASTER_ADDR"]
        == "demo-node-0.demo.team.svc"
        == env_of(pod_of(job_body()))["MASTER_ADDR"]
    )
    assert (spec["hostname"], spec["subdomain"]) == ("demo-node-0", "demo")
    assert "hostNetwork" not in pod_of(job_body())["spec"]


def podgroup_in(plan: Plan) -> dict[str, Any]:
    return next(m for m in plan.create + plan.update if m["kind"] == "PodGroup")


def test_coscheduling_podgroup_is_created_first_and_follows_num_nodes() -> None:
    body = job_body(numNodes=2, scheduling={"gang": True, "scheduleTimeoutSeconds": 300})
    plan = plan_for(body, [], service=False)
    kinds = [m["kind"] for m in plan.create]
    assert kinds == ["Service", "PodGroup", "Pod", "Pod"]  # the group exists before its pods
    group = podgroup_in(plan)
    assert group["apiVersion"] == "scheduling.x-k8s.io/v1alpha1"
    assert group["spec"] == {"minMember": 2, "scheduleTimeoutSeconds": 300}
    # Deleted with the job: the garbage collector follows the owner reference.
    assert group["metadata"]["ownerReferences"][0] == {
        "apiVersion": "lightjob.dev/v1alpha1",
        "kind": "LightningJob",
        "name": "demo",
        "uid": UID,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    pod0 = next(m for m in plan.create if m["kind"] == "Pod")
    assert pod0["metadata"]["labels"]["scheduling.x-k8s.io/pod-group"] == "demo"
    assert pod0["spec"]["schedulerName"] == "scheduler-plugins-scheduler"

    observed = observe_podgroup(group)
    job = observe_job(
        job_body(running(), numNodes=2, scheduling={"gang": True, "scheduleTimeoutSeconds": 300})
    )
    views = [v for v in (observe_pod(p, UID) for p in (pod(0), pod(1))) if v]
    steady = reconcile(job, views, True, NOW, podgroup=observed)
    assert not steady.create and not steady.update  # nothing to do when it matches
    resized = observe_job(
        job_body(running(), numNodes=3, scheduling={"gang": True, "scheduleTimeoutSeconds": 300})
    )
    plan = reconcile(resized, views, True, NOW, podgroup=observed)
    assert podgroup_in(plan)["spec"]["minMember"] == 3 and plan.update


def test_volcano_podgroup_and_its_unschedulable_reason_reach_status() -> None:
    scheduling = {
        "gang": True,
        "schedulerName": "volcano",
        "queue": "q1",
        "priorityClassName": "hi",
    }
    plan = plan_for(job_body(scheduling=scheduling), [])
    group = podgroup_in(plan)
    assert group["apiVersion"] == "scheduling.volcano.sh/v1beta1"
    assert group["spec"] == {"minMember": 2, "queue": "q1", "priorityClassName": "hi"}
    pod0 = next(m for m in plan.create if m["kind"] == "Pod")
    assert pod0["metadata"]["annotations"]["scheduling.k8s.io/group-name"] == "demo"
    assert "scheduling.x-k8s.io/pod-group" not in pod0["metadata"]["labels"]
    assert (pod0["spec"]["schedulerName"], pod0["spec"]["priorityClassName"]) == ("volcano", "hi")

    waiting = {
        **group,
        "status": {
            "phase": "Pending",
            "conditions": [
                {"type": "Unschedulable", "status": "True", "message": "3/4 nodes lack GPUs"}
            ],
        },
    }
    body = job_body(
        {**running(), "phase": "Pending"},
        scheduling=scheduling,
        runPolicy={"pendingDeadlineSeconds": 7200},  # the attempt started at 11:00
    )
    views = [
        v
        for v in (observe_pod(p, UID) for p in (pod(0, state="waiting"), pod(1, state="waiting")))
        if v
    ]
    plan = reconcile(observe_job(body), views, True, NOW, podgroup=observe_podgroup(waiting))
    assert plan.status is not None
    assert plan.status["message"] == "the gang of 2 nodes cannot be scheduled: 3/4 nodes lack GPUs"
    assert [e.reason for e in plan.events] == ["Unschedulable"]
    late = NOW + dt.timedelta(hours=1, seconds=1)
    plan = reconcile(observe_job(body), views, True, late, podgroup=observe_podgroup(waiting))
    assert plan.status is not None and plan.status["phase"] == "Failed"
    assert "pendingDeadlineSeconds=7200" in plan.status["message"]


# -- a gang that cannot start -----------------------------------------------------------------


def refusal(**extra: Any) -> dict[str, Any]:
    value = {
        "kind": "Pod",
        "name": "demo-node-1",
        "code": 403,
        "reason": "Forbidden",
        "message": 'pods "demo-node-1" is forbidden: exceeded quota: gpus',
        "since": "2026-11-27T11:58:00Z",
        "retries": 2,
        "retryTime": "2026-11-27T12:00:20Z",
    }
    value.update(extra)
    return value


def test_a_refused_pod_is_recorded_with_the_apis_message_and_retried_with_back_off() -> None:
    from lightjob.controller import Refused, Settings, record_refusal

    body = job_body(running(phase="Pending"))
    refused = Refused("Pod", "demo-node-1", 403, "Forbidden", 'pods "demo-node-1" is forbidden')
    first = record_refusal(observe_job(body), refused, NOW, Settings())
    assert first.status is not None and first.requeue_after == 10
    assert first.status["refusal"]["retryTime"] == "2026-11-27T12:00:10Z"
    assert first.status["message"].startswith("the API refused pod demo-node-1 (403 Forbidden)")
    condition = next(c for c in first.status["conditions"] if c["type"] == "PodCreationRefused")
    assert (condition["status"], condition["reason"]) == ("True", "Forbidden")
    assert [e.reason for e in first.events] == ["FailedCreate"]
    assert "retrying in 10s" in first.events[0].message
    body["status"] = first.status
    later = NOW + dt.timedelta(seconds=10)
    second = record_refusal(observe_job(body), refused, later, Settings())
    assert second.status is not None and second.status["refusal"]["retries"] == 2
    assert second.status["refusal"]["since"] == "2026-11-27T12:00:00Z"  # the first refusal's
    assert second.requeue_after == 20


@pytest.mark.parametrize(
    ("now", "deadline", "created", "phase", "requeue"),
    [
        (NOW, None, [], "Pending", 20.0),  # waiting out the back-off: nothing created
        (NOW + dt.timedelta(seconds=20), None, ["demo-node-1"], "Pending", None),  # retry
        (NOW + dt.timedelta(minutes=3), None, [], "Failed", None),  # 300 s since 11:58
        (NOW, 60, [], "Failed", None),  # pendingDeadlineSeconds=60 since 11:58
    ],
)
def test_refused_pods_wait_for_the_retry_and_give_up_at_the_pending_deadline(
    now: dt.datetime, deadline: int | None, created: list[str], phase: str, requeue: float | None
) -> None:
    policy = {"pendingDeadlineSeconds": deadline} if deadline else {}
    body = job_body(running(phase="Pending", refusal=refusal()), runPolicy=policy)
    plan = plan_for(body, [pod(0)], now=now)
    assert [m["metadata"]["name"] for m in plan.create] == created
    assert plan.status is not None and plan.status["phase"] == phase
    if phase == "Failed":
        failed = next(c for c in plan.status["conditions"] if c["type"] == "Failed")
        assert failed["reason"] == "PodCreationRefused"
        limit = f"pendingDeadlineSeconds={deadline}" if deadline else "300s (the default"
        assert f"gave up after {limit}" in plan.status["message"]
        assert "exceeded quota: gpus" in plan.status["message"]
        assert plan.delete == ["demo-node-0"]  # the pods created do not hold their nodes
        assert "refusal" not in plan.status
    elif requeue is not None:
        assert plan.requeue_after == requeue


def test_a_refusal_ends_when_the_pod_exists() -> None:
    refused = {"type": "PodCreationRefused", "status": "True", "reason": "Forbidden"}
    body = job_body(running(phase="Pending", refusal=refusal(), conditions=[refused]))
    plan = plan_for(body, [pod(0), pod(1)])
    assert plan.status is not None and "refusal" not in plan.status
    assert plan.status["phase"] == "Running"
    condition = next(c for c in plan.status["conditions"] if c["type"] == "PodCreationRefused")
    assert condition["status"] == "False" and condition["reason"] == "Created"


ELASTIC = {"minNodes": 1, "maxNodes": 4, "rendezvous": {"backend": "c10d"}}


def test_pending_time_is_measured_per_pod_so_a_late_scale_up_is_judged_on_its_own_time() -> None:
    # Four hours into the run, node 2 was added 30 s ago and cannot be placed yet.
    status = running(replicas=3, resizedFrom=2, startTime="2026-11-27T08:00:00Z")
    status["attemptStartTime"] = "2026-11-27T08:00:00Z"
    body = job_body(status, numNodes=3, runPolicy={"pendingDeadlineSeconds": 60}, **ELASTIC)
    stuck = unschedulable_pod(2, "2026-11-27T11:59:30Z")
    plan = plan_for(body, [pod(0), pod(1), stuck])
    assert plan.status is not None and plan.status["phase"] == "Running"  # training goes on
    assert "node 2 cannot be scheduled" in plan.status["message"]
    assert not plan.delete and plan.requeue_after == 30
    assert [e.reason for e in plan.events] == ["Unschedulable"]


def test_an_elastic_scale_up_that_cannot_be_placed_rolls_back() -> None:
    status = running(replicas=3, resizedFrom=2)
    body = job_body(status, numNodes=3, runPolicy={"pendingDeadlineSeconds": 60}, **ELASTIC)
    stuck = unschedulable_pod(2, "2026-11-27T11:58:00Z")
    plan = plan_for(body, [pod(0), pod(1), stuck])
    assert plan.delete == ["demo-node-2"]
    assert plan.status is not None and plan.status["phase"] == "Running"
    assert (plan.status["replicas"], plan.status["rejectedNumNodes"]) == (2, 3)
    assert "resizedFrom" not in plan.status
    (event,) = plan.events
    assert event.reason == "ScaleUpRolledBack" and "back to 2 nodes" in event.message
    # It stays at 2 until numNodes changes; a new numNodes is tried afresh.
    body["status"] = plan.status
    assert not plan_for(body, [pod(0), pod(1)]).create
    body["spec"]["numNodes"] = 4
    grow = plan_for(body, [pod(0), pod(1)])
    assert [m["metadata"]["name"] for m in grow.create] == ["demo-node-2", "demo-node-3"]
    assert grow.status is not None and grow.status["resizedFrom"] == 2


def test_a_fixed_size_scale_up_that_cannot_be_placed_restarts_at_the_old_size() -> None:
    status = running(attempt=2, replicas=3, resizedFrom=2, phase="Pending", resizes=1)
    body = job_body(status, numNodes=3, runPolicy={"pendingDeadlineSeconds": 60})
    pods = [pod(0, 2), pod(1, 2), unschedulable_pod(2, "2026-11-27T11:58:00Z", attempt=2)]
    plan = plan_for(body, pods)
    assert plan.status is not None and plan.status["phase"] == "Restarting"
    assert (plan.status["replicas"], plan.status["rejectedNumNodes"]) == (2, 3)
    assert (plan.status["resizes"], plan.status["restarts"]) == (2, 0)
    assert sorted(plan.delete) == ["demo-node-0", "demo-node-1", "demo-node-2"]
    body["status"] = plan.status
    started = plan_for(body, [])
    assert [m["metadata"]["name"] for m in started.create] == ["demo-node-0", "demo-node-1"]
    assert env_of(started.create[0])["WORLD_SIZE"] == "2"
    assert started.status is not None and started.status["nodes"] == "0/2"


@pytest.mark.parametrize(
    ("reason", "minutes", "phase"),
    [
        ("ImagePullBackOff", 4, "Pending"),
        ("ErrImagePull", 6, "Failed"),
        ("ContainerCreating", 60, "Pending"),
    ],
)
def test_containers_that_cannot_start_surface_and_fail_after_the_pending_deadline(
    reason: str, minutes: int, phase: str
) -> None:
    waiting = pod(1, state="waiting")
    waiting["status"]["containerStatuses"][0]["state"] = {
        "waiting": {"reason": reason, "message": 'Back-off pulling image "train:1"'}
    }
    waiting["metadata"]["creationTimestamp"] = "2026-11-27T12:00:00Z"
    body = job_body(running(phase="Pending"))
    plan = plan_for(body, [pod(0), waiting], now=NOW + dt.timedelta(minutes=minutes))
    assert plan.status is not None and plan.status["phase"] == phase
    conditions = {c["type"]: c for c in plan.status["conditions"]}
    if reason == "ContainerCreating":  # an ordinary start: nothing to say
        assert "ContainerCannotStart" not in conditions
        return
    assert conditions["ContainerCannotStart"]["reason"] == reason
    assert f"node 1 cannot start its container: {reason}: Back-off" in plan.status["message"]
    if phase == "Failed":
        assert conditions["Failed"]["reason"] == "PendingDeadlineExceeded"
        assert sorted(plan.delete) == ["demo-node-0", "demo-node-1"]
    else:
        assert [e.reason for e in plan.events] == ["ContainerCannotStart"]
        assert plan.requeue_after == 60  # at 12:05, 300 s after the pod's creation


# -- suspended time and the back-off across a suspension --------------------------------------------


@pytest.mark.parametrize(
    ("suspended", "now_minutes", "phase"),
    [
        # Started 11:00, deadline one hour. Suspended 11:30-11:50: 20 minutes do not count.
        (1200, 5, "Running"),  # 12:05 is 45 minutes of running
        (1200, 20, "Failed"),  # 12:20 is 60
        (0, 5, "Failed"),
    ],
)
def test_active_deadline_does_not_count_time_suspended(
    suspended: int, now_minutes: int, phase: str
) -> None:
    body = job_body(
        running(suspendedSeconds=suspended, readyNodes=2), runPolicy={"activeDeadlineSeconds": 3600}
    )
    plan = plan_for(body, [pod(0), pod(1)], now=NOW + dt.timedelta(minutes=now_minutes))
    assert (plan.status or body["status"])["phase"] == phase
    if phase == "Running":
        assert plan.requeue_after == (20 - now_minutes) * 60


def test_a_suspended_job_never_hits_its_deadline_and_resuming_counts_the_suspension() -> None:
    body = job_body(running(), runPolicy={"activeDeadlineSeconds": 3600, "suspend": True})
    suspending = plan_for(body, [pod(0), pod(1)], now=NOW - dt.timedelta(minutes=30))
    assert (
        suspending.status is not None and suspending.status["suspendTime"] == "2026-11-27T11:30:00Z"
    )
    body["status"] = suspending.status
    later = NOW + dt.timedelta(hours=5)
    waiting = plan_for(body, [], now=later)
    assert (waiting.status or body["status"])[
        "phase"
    ] == "Suspended" and waiting.requeue_after is None
    body["spec"]["runPolicy"]["suspend"] = False
    resumed = plan_for(body, [], now=later)
    status = resumed.status
    assert status is not None and status["phase"] == "Pending" and status["attempt"] == 2
    assert status["suspendedSeconds"] == 5 * 3600 + 30 * 60 and "suspendTime" not in status
    assert resumed.requeue_after == 30 * 60  # half an hour of running left


def test_resuming_keeps_what_was_left_of_the_back_off() -> None:
    restarting = {
        **running(restarts=2),
        "phase": "Restarting",
        "nextAttemptTime": "2026-11-27T12:00:40Z",  # 40 s of back-off left at 12:00
    }
    body = job_body(restarting, runPolicy={"suspend": True})
    suspended = plan_for(body, [])
    assert suspended.status is not None
    body["status"], body["spec"]["runPolicy"]["suspend"] = suspended.status, False
    later = NOW + dt.timedelta(minutes=10)
    resumed = plan_for(body, [], now=later)
    assert resumed.status is not None and not resumed.create
    assert resumed.status["nextAttemptTime"] == "2026-11-27T12:10:40Z"
    assert resumed.requeue_after == 40
    assert "after the 40s left of its back-off" in resumed.events[0].message
    started = plan_for({**body, "status": resumed.status}, [], now=later + dt.timedelta(seconds=40))
    assert len(started.create) == 2
