"""The operator, running for real under kopf, against the API emulator and the kubelet
stand-in: every scenario checks pods, status, conditions and events."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import JOBS, Cluster, OperatorRun


def job(name: str = "demo", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "lightjob.dev/v1alpha1",
        "kind": "LightningJob",
        "metadata": {"name": name},
        "spec": {"image": "ghcr.io/example/train:1", "numNodes": 2, **spec},
    }


def phase(cluster: Cluster) -> str | None:
    return (cluster.job().get("status") or {}).get("phase")


def env_of(pod: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}


async def test_create_leads_to_service_pods_env_and_running(cluster: Cluster) -> None:
    cluster.api.create(JOBS, "default", job(checkpoint={"uri": "s3://bucket/demo"}))
    await cluster.wait(lambda: phase(cluster) == "Running", what="Running")
    service = cluster.api.get("v1/services", "default", "demo")
    assert service["spec"]["clusterIP"] == "None"
    pods = cluster.pods()
    assert sorted(pods) == ["demo-node-0", "demo-node-1"]
    env = env_of(pods["demo-node-1"])
    assert env["MASTER_ADDR"] == "demo-node-0.demo.default.svc" and env["NODE_RANK"] == "1"
    assert env["WORLD_SIZE"] == "2" and env["LIGHTJOB_CHECKPOINT_URI"] == "s3://bucket/demo"
    owner = pods["demo-node-0"]["metadata"]["ownerReferences"][0]
    assert owner["uid"] == cluster.job()["metadata"]["uid"]
    status = cluster.job()["status"]
    assert status["nodes"] == "2/2" and status["attempt"] == 1 and status["observedGeneration"] == 1
    running = next(c for c in status["conditions"] if c["type"] == "Running")
    assert running["status"] == "True"
    await cluster.wait(lambda: any("AttemptStarted" in e for e in cluster.events()), what="events")


async def test_node_zero_succeeding_succeeds_and_cleans_up(cluster: Cluster) -> None:
    cluster.api.create(JOBS, "default", job())
    await cluster.wait(lambda: phase(cluster) == "Running")
    cluster.kubelet.exit("demo-node-0", 0)
    await cluster.wait(lambda: phase(cluster) == "Succeeded", what="Succeeded")
    # cleanPodPolicy Running: node 1 still ran, so it is stopped; node 0 stays, with its logs.
    await cluster.wait(lambda: sorted(cluster.pods()) == ["demo-node-0"], what="cleanup")
    status = cluster.job()["status"]
    assert status["completionTime"] and (status["restarts"], status["preemptions"]) == (0, 0)
    await cluster.wait(lambda: any(e.startswith("Succeeded") for e in cluster.events()))


def status_of(cluster: Cluster) -> dict[str, Any]:
    return cluster.job().get("status") or {}


def attempts(cluster: Cluster) -> set[str]:
    return {p["metadata"]["labels"]["lightjob.dev/attempt"] for p in cluster.pods().values()}


async def test_a_failure_restarts_the_gang_with_back_off_then_fails(cluster: Cluster) -> None:
    cluster.api.create(JOBS, "default", job(runPolicy={"backoffLimit": 1}))
    await cluster.wait(lambda: phase(cluster) == "Running")
    cluster.kubelet.exit("demo-node-1", 1)
    await cluster.wait(lambda: status_of(cluster).get("restarts") == 1, what="restart")
    assert status_of(cluster)["preemptions"] == 0
    await cluster.wait(
        lambda: phase(cluster) == "Running" and attempts(cluster) == {"2"}, what="attempt 2"
    )
    await cluster.wait(
        lambda: any(
            "NodeFailed" in e and "node 1 exited with code 1" in e for e in cluster.events()
        )
    )
    cluster.kubelet.exit("demo-node-0", 3)
    await cluster.wait(lambda: phase(cluster) == "Failed", what="Failed")
    status = status_of(cluster)
    assert status["restarts"] == 2 and "backoffLimit=1 exceeded" in status["message"]
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["status"] == "True" and failed["reason"] == "BackoffLimitExceeded"
    await cluster.wait(lambda: sorted(cluster.pods()) == ["demo-node-0"])  # its logs are kept


async def test_a_preemption_restarts_without_consuming_the_backoff_limit(cluster: Cluster) -> None:
    cluster.api.create(JOBS, "default", job(runPolicy={"backoffLimit": 0}))
    await cluster.wait(lambda: phase(cluster) == "Running")
    cluster.kubelet.evict("demo-node-1")
    await cluster.wait(lambda: status_of(cluster).get("preemptions") == 1, what="preemption")
    await cluster.wait(
        lambda: phase(cluster) == "Running" and attempts(cluster) == {"2"}, what="attempt 2"
    )
    assert status_of(cluster)["restarts"] == 0
    await cluster.wait(
        # Seen as the eviction's DisruptionTarget, the SIGTERM exit (143) or the pod's deletion,
        # whichever the operator observes first: a preemption in every case.
        lambda: any(
            e.startswith("Preempted: attempt 1:") and "node 1" in e for e in cluster.events()
        )
    )


def custom_api(cluster: Cluster) -> Any:
    import kubernetes

    client = kubernetes.config.new_client_from_config(config_file=cluster.kubeconfig)
    return kubernetes.client.CustomObjectsApi(client)


async def kubectl_scale(cluster: Cluster, replicas: int) -> dict[str, Any]:
    """What `kubectl scale lj/demo --replicas=N` sends: a patch of the scale subresource."""
    return await asyncio.to_thread(
        custom_api(cluster).patch_namespaced_custom_object_scale,
        "lightjob.dev",
        "v1alpha1",
        "default",
        "lightningjobs",
        "demo",
        {"spec": {"replicas": replicas}},
    )


async def test_kubectl_scale_resizes_the_job(cluster: Cluster) -> None:
    cluster.api.create(JOBS, "default", job())
    await cluster.wait(lambda: phase(cluster) == "Running")
    scale = await kubectl_scale(cluster, 3)
    assert scale["spec"]["replicas"] == 3
    await cluster.wait(
        lambda: (
            sorted(cluster.pods()) == ["demo-node-0", "demo-node-1", "demo-node-2"]
            and phase(cluster) == "Running"
        ),
        what="3 nodes",
    )
    status = status_of(cluster)
    assert (status["resizes"], status["restarts"], status["preemptions"], status["nodes"]) == (
        1,
        0,
        0,
        "3/3",
    )
    assert env_of(cluster.pods()["demo-node-2"])["WORLD_SIZE"] == "3"
    assert cluster.job()["metadata"]["generation"] == 2 and status["observedGeneration"] == 2
    read = await asyncio.to_thread(
        custom_api(cluster).get_namespaced_custom_object_scale,
        "lightjob.dev",
        "v1alpha1",
        "default",
        "lightningjobs",
        "demo",
    )
    assert (
        read["status"]["replicas"] == 3
        and read["status"]["selector"] == "lightjob.dev/job-name=demo"
    )


async def test_suspend_removes_the_pods_and_resume_recreates_them(cluster: Cluster) -> None:
    cluster.api.create(JOBS, "default", job())
    await cluster.wait(lambda: phase(cluster) == "Running")
    cluster.api.update(JOBS, "default", "demo", None, {"spec": {"runPolicy": {"suspend": True}}})
    await cluster.wait(
        lambda: phase(cluster) == "Suspended" and not cluster.pods(), what="suspended"
    )
    suspended = next(c for c in status_of(cluster)["conditions"] if c["type"] == "Suspended")
    assert suspended["status"] == "True"
    cluster.api.update(JOBS, "default", "demo", None, {"spec": {"runPolicy": {"suspend": False}}})
    await cluster.wait(
        lambda: phase(cluster) == "Running" and attempts(cluster) == {"2"}, what="resumed"
    )
    assert (status_of(cluster)["restarts"], status_of(cluster)["preemptions"]) == (0, 0)
    await cluster.wait(lambda: any(e.startswith("Resumed") for e in cluster.events()))


async def test_the_deadlines_and_the_ttl_take_effect(cluster: Cluster) -> None:
    cluster.api.create(JOBS, "default", job("late", runPolicy={"activeDeadlineSeconds": 2}))
    cluster.kubelet.unschedulable["stuck-node-1"] = (
        "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    )
    cluster.api.create(JOBS, "default", job("stuck", runPolicy={"pendingDeadlineSeconds": 2}))
    cluster.api.create(
        JOBS, "default", job("short", numNodes=1, runPolicy={"ttlSecondsAfterFinished": 1})
    )

    def phase_of(name: str) -> str | None:
        return (cluster.api.get(JOBS, "default", name).get("status") or {}).get("phase")

    await cluster.wait(lambda: phase_of("late") == "Failed", timeout=30, what="active deadline")
    assert (
        "activeDeadlineSeconds=2" in cluster.api.get(JOBS, "default", "late")["status"]["message"]
    )
    await cluster.wait(lambda: phase_of("stuck") == "Failed", timeout=30, what="pending deadline")
    message = cluster.api.get(JOBS, "default", "stuck")["status"]["message"]
    assert "pendingDeadlineSeconds=2" in message and "Insufficient nvidia.com/gpu" in message
    assert any(
        "Unschedulable" in e and "Insufficient nvidia.com/gpu" in e for e in cluster.events()
    )
    await cluster.wait(lambda: phase_of("short") == "Running")
    cluster.kubelet.exit("short-node-0", 0)
    await cluster.wait(
        lambda: cluster.api.find(JOBS, "default", "short") is None, timeout=30, what="TTL"
    )
    await cluster.wait(
        lambda: "short-node-0" not in cluster.pods(), what="pods collected with their owner"
    )


async def test_a_bad_stored_spec_waits_with_the_field_named(cluster: Cluster) -> None:
    # Created before a schema change, so the API server never validated it.
    cluster.api.put(JOBS, "default", {**job("broken"), "spec": {"image": "x", "numNodes": 0}})
    cluster.api.create(JOBS, "default", job())

    def broken() -> dict[str, Any]:
        return cluster.api.get(JOBS, "default", "broken").get("status") or {}

    await cluster.wait(lambda: broken().get("conditions"), what="the InvalidSpec condition")
    (condition,) = broken()["conditions"]
    assert condition["type"] == "InvalidSpec" and "spec.numNodes" in condition["message"]
    await cluster.wait(lambda: phase(cluster) == "Running", what="other jobs go on")
    assert not [p for p in cluster.pods() if p.startswith("broken")]
    assert broken()["phase"] == "Pending"  # nothing was decided for it
    fixed = {**job("broken"), "spec": {"image": "x", "numNodes": 1}}
    cluster.api.put(JOBS, "default", {**cluster.api.get(JOBS, "default", "broken"), **fixed})
    await cluster.wait(lambda: broken().get("phase") == "Running", what="fixed, it starts")


async def test_api_errors_are_retried(cluster: Cluster) -> None:
    cluster.api.faults += [["POST", "/pods", 500, 2], ["PATCH", "/status", 429, 1]]
    cluster.api.create(JOBS, "default", job())
    await cluster.wait(lambda: phase(cluster) == "Running", what="Running despite errors")
    assert [f[3] for f in cluster.api.faults] == [0, 0]
    assert sorted(cluster.pods()) == ["demo-node-0", "demo-node-1"]


async def test_an_operator_killed_mid_plan_creates_no_duplicates(emulated: Cluster) -> None:
    first = OperatorRun(emulated)
    await first.start()
    dead = ["POST", "/pods", 422, 10_000]  # a dead operator's calls never reach the API

    def die_after_the_second_pod(method: str, resource: str, name: str | None) -> None:
        if method == "POST" and resource == "v1/pods" and len(emulated.pods()) == 2:
            emulated.api.after_write = None
            emulated.api.faults.append(dead)
            asyncio.get_running_loop().create_task(first.stop(hard=True))

    emulated.api.after_write = die_after_the_second_pod
    emulated.api.create(JOBS, "default", job(numNodes=4))
    await emulated.wait(lambda: first.done, what="operator killed")
    await asyncio.sleep(0.5)  # let its last handler thread give up
    assert sorted(emulated.pods()) == ["demo-node-0", "demo-node-1"]  # half of the plan
    emulated.api.faults.remove(dead)
    second = OperatorRun(emulated)
    await second.start()
    try:
        await emulated.wait(lambda: phase(emulated) == "Running", what="Running after restart")
        assert sorted(emulated.pods()) == [f"demo-node-{r}" for r in range(4)]
        added = [
            o["metadata"]["name"]
            for _, r, kind, o in emulated.api.history
            if r == "v1/pods" and kind == "ADDED"
        ]
        assert sorted(added) == [f"demo-node-{r}" for r in range(4)]  # each pod created once
        assert status_of(emulated)["attempt"] == 1 and status_of(emulated)["restarts"] == 0
    finally:
        await second.stop()


async def test_leader_election_through_kopf_peering(emulated: Cluster) -> None:
    emulated.api.create(
        "kopf.dev/v1/kopfpeerings",
        "default",
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "lightjob"}},
    )
    operator = OperatorRun(emulated, peering="lightjob")
    await operator.start()
    try:
        emulated.api.create(JOBS, "default", job())
        await emulated.wait(
            lambda: phase(emulated) == "Running", timeout=30, what="Running under peering"
        )
        peering = emulated.api.get("kopf.dev/v1/kopfpeerings", "default", "lightjob")
        assert peering.get("status"), "the operator announces itself in the peering object"
    finally:
        await operator.stop()


async def test_metrics_are_served(emulated: Cluster) -> None:
    import urllib.request

    from lightjob.runtime.distributed import find_free_port

    port = find_free_port()
    operator = OperatorRun(emulated, metrics_port=port)
    await operator.start()
    try:
        emulated.api.create(JOBS, "default", job())
        await emulated.wait(lambda: phase(emulated) == "Running")
        emulated.kubelet.exit("demo-node-1", 2)
        await emulated.wait(lambda: status_of(emulated).get("restarts") == 1)
        body = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
        )
    finally:
        await operator.stop()
    assert 'lightjob_restarts_total{reason="exit_code"}' in body
    assert "lightjob_reconcile_duration_seconds_count" in body
    assert "lightjob_pods_created_total" in body and 'lightjob_jobs{phase="' in body


async def test_lightjob_run_kube_applies_and_follows_to_the_end(
    cluster: Cluster, tmp_path: Any
) -> None:
    import io

    import yaml

    from lightjob.local.follow import follow

    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job()))
    out = io.StringIO()
    following = asyncio.create_task(asyncio.to_thread(follow, str(path), None, out, 0.2))
    await cluster.wait(lambda: phase(cluster) == "Running", what="Running")
    # What the operator writes once it has read node 0's metrics (kept by later reconciles).
    progress = {"step": 240, "maxSteps": 690, "loss": 0.41239, "eta": "38s"}
    checkpoint = {"uri": "s3://b/demo/step-200.ckpt", "step": 200}
    cluster.api.update(
        JOBS,
        "default",
        "demo",
        "status",
        {"status": {"progress": progress, "lastCheckpoint": checkpoint}},
    )
    line = "lightjob: demo: step 240/690, loss 0.4124, ETA 38s, checkpoint at step 200"
    await cluster.wait(lambda: line in out.getvalue(), what="the progress line")
    cluster.kubelet.exit("demo-node-0", 0)
    code = await asyncio.wait_for(following, timeout=30)
    assert code == 0, out.getvalue()
    text = out.getvalue()
    assert text.count(line) == 1  # printed when it changes, not on every poll
    assert "lightjob: created default/demo" in text and "lightjob: demo Succeeded" in text
    assert "AttemptStarted: attempt 1 started on 2 nodes" in text


async def test_every_api_call_is_in_the_declared_rbac_and_every_rule_is_used(
    emulated: Cluster,
) -> None:
    from lightjob.operator import rbac

    emulated.api.create(
        "kopf.dev/v1/kopfpeerings",
        "default",
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "lightjob"}},
    )
    emulated.api.calls.clear()
    emulated.api.queries.clear()
    operator = OperatorRun(emulated, peering="lightjob")
    await operator.start()
    try:
        emulated.api.create(JOBS, "default", job(runPolicy={"ttlSecondsAfterFinished": 1}))
        await emulated.wait(lambda: phase(emulated) == "Running", timeout=30)
        emulated.kubelet.exit("demo-node-0", 0)
        await emulated.wait(
            lambda: emulated.api.find(JOBS, "default", "demo") is None, timeout=30, what="TTL"
        )
    finally:
        await operator.stop()
    granted = rbac.rules(cluster_wide=False, peering=True)
    used = set()
    for (method, path), query in zip(emulated.api.calls, emulated.api.queries, strict=True):
        permission = rbac.call_to_permission(method, path, query)
        if permission is None:
            continue
        assert rbac.allows(granted, *permission), f"{method} {path} needs {permission}, not granted"
        used.add(permission)
    unused = [
        (g, res, v)
        for rule in granted
        for g in rule["apiGroups"]
        for res in rule["resources"]
        for v in rule["verbs"]
        if (g, res, v) not in used
    ]
    assert not unused, f"rules granted but never used: {unused}"


async def test_a_gpu_gang_gets_shm_gpus_a_toleration_and_a_podgroup_that_follows_scale(
    cluster: Cluster,
) -> None:
    from lightjob.operator import rbac

    podgroups = "scheduling.x-k8s.io/v1alpha1/podgroups"
    cluster.api.calls.clear()
    cluster.api.queries.clear()
    cluster.api.create(
        JOBS,
        "default",
        job(
            resourcesPerNode={"limits": {"nvidia.com/gpu": 8, "memory": "64Gi"}},
            scheduling={"gang": True, "scheduleTimeoutSeconds": 600},
        ),
    )
    await cluster.wait(lambda: phase(cluster) == "Running", what="Running")
    group = cluster.api.get(podgroups, "default", "demo")
    assert group["spec"] == {"minMember": 2, "scheduleTimeoutSeconds": 600}
    assert group["metadata"]["ownerReferences"][0]["name"] == "demo"
    for pod in cluster.pods().values():
        env = env_of(pod)
        assert (env["PET_NPROC_PER_NODE"], env["WORLD_SIZE"]) == ("8", "16")
        spec = pod["spec"]
        assert {"name": "lightjob-shm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}} in (
            spec["volumes"]
        )
        assert {"name": "lightjob-shm", "mountPath": "/dev/shm"} in spec["containers"][0][
            "volumeMounts"
        ]
        assert spec["tolerations"] == [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
        assert pod["metadata"]["labels"]["scheduling.x-k8s.io/pod-group"] == "demo"
        assert spec["schedulerName"] == "scheduler-plugins-scheduler"

    await kubectl_scale(cluster, 3)
    await cluster.wait(
        lambda: cluster.api.get(podgroups, "default", "demo")["spec"]["minMember"] == 3,
        what="minMember 3",
    )
    await cluster.wait(lambda: len(cluster.pods()) == 3 and phase(cluster) == "Running")
    assert env_of(cluster.pods()["demo-node-2"])["WORLD_SIZE"] == "24"

    # Only the provider's PodGroup rules were needed, and all of them were used.
    granted = rbac.rules(cluster_wide=False, peering=False, gang="coscheduling")
    used = set()
    for (method, path), query in zip(cluster.api.calls, cluster.api.queries, strict=True):
        permission = rbac.call_to_permission(method, path, query)
        if permission is not None and "podgroups" in path:
            assert rbac.allows(granted, *permission), permission
            used.add(permission)
    assert used == {("scheduling.x-k8s.io", "podgroups", v) for v in ("get", "create", "patch")}

    cluster.api.delete(JOBS, "default", "demo")
    await cluster.wait(
        lambda: cluster.api.find(podgroups, "default", "demo") is None, what="PodGroup GC"
    )


async def test_a_volcano_gang_that_cannot_be_placed_says_why_and_hits_its_deadline(
    cluster: Cluster,
) -> None:
    podgroups = "scheduling.volcano.sh/v1beta1/podgroups"
    for name in ("demo-node-0", "demo-node-1"):
        cluster.kubelet.unschedulable[name] = "0/4 nodes are available: pod group is not ready"
    cluster.api.create(
        JOBS,
        "default",
        job(
            scheduling={"gang": True, "schedulerName": "volcano", "queue": "research"},
            runPolicy={"pendingDeadlineSeconds": 2},
        ),
    )
    await cluster.wait(lambda: cluster.api.find(podgroups, "default", "demo"), what="PodGroup")
    group = cluster.api.get(podgroups, "default", "demo")
    assert group["spec"] == {"minMember": 2, "queue": "research"}
    pod = await cluster.wait(lambda: cluster.pods().get("demo-node-0"), what="pods")
    assert pod["metadata"]["annotations"]["scheduling.k8s.io/group-name"] == "demo"
    assert pod["spec"]["schedulerName"] == "volcano"
    await cluster.wait(lambda: phase(cluster) == "Failed", timeout=30, what="Failed")
    status = status_of(cluster)
    assert "pendingDeadlineSeconds=2" in status["message"]
    assert "pod group is not ready" in status["message"]
    assert any(e.startswith("Unschedulable:") for e in cluster.events())


def test_an_endpoint_that_does_not_answer_is_read_less_and_less_often() -> None:
    import http.server
    import threading
    import time

    from lightjob.controller import Settings, observe_job, observe_pod
    from lightjob.operator.handlers import Reconciler

    hits = []

    class Broken(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(time.monotonic())
            self.send_error(503)

        def log_message(self, *args: Any) -> None: ...

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Broken)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        body = {**job(), "metadata": {"name": "demo", "namespace": "default", "uid": "u1"}}
        body["status"] = {"phase": "Running", "attempt": 1, "replicas": 2}
        pod = {
            "metadata": {
                "name": "demo-node-0",
                "labels": {"lightjob.dev/node-rank": "0", "lightjob.dev/attempt": "1"},
                "ownerReferences": [{"uid": "u1", "controller": True}],
            },
            "spec": {
                "containers": [
                    {
                        "name": "trainer",
                        "ports": [{"name": "metrics", "containerPort": server.server_port}],
                    }
                ]
            },
            "status": {
                "podIP": "127.0.0.1",
                "containerStatuses": [{"name": "trainer", "state": {"running": {}}}],
            },
        }
        reconciler = Reconciler(client=None, settings=Settings(), progress_interval=0.05)  # type: ignore[arg-type]
        view, node0 = observe_job(body), observe_pod(pod, "u1")
        assert node0 is not None
        deadline = time.monotonic() + 1.6
        while time.monotonic() < deadline:
            assert reconciler._sample("default/demo", view, [node0]) is None
            time.sleep(0.01)
        # Without back-off, 1.6 s at one read per 0.05 s would be 32 reads; doubling gives
        # reads at about 0, 0.1, 0.3, 0.7 and 1.5 s.
        assert 3 <= len(hits) <= 6, len(hits)
        gaps = [b - a for a, b in itertools.pairwise(hits)]
        assert gaps == sorted(gaps)
    finally:
        server.shutdown()


def test_progress_is_read_from_the_pod_directly_even_behind_a_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import http.server
    import threading

    from lightjob.operator.handlers import read_progress

    class Node0(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'lightjob_global_step 7\nlightjob_logged_metric{name="loss"} 0.5\n')

        def log_message(self, *args: Any) -> None: ...

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Node0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        # An operator pod with a corporate proxy in its env still reaches pod IPs directly.
        for name in ("HTTP_PROXY", "http_proxy"):
            monkeypatch.setenv(name, "http://127.0.0.1:1")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        sample = read_progress(f"http://127.0.0.1:{server.server_port}/metrics")
        assert sample is not None and sample.step == 7 and sample.metrics == {"loss": 0.5}
    finally:
        server.shutdown()
        server.server_close()
    # Gone: not an error, just no progress this time.
    assert read_progress(f"http://127.0.0.1:{server.server_port}/metrics") is None


def test_the_operator_command_logs_one_json_object_per_decision(tmp_path: Path) -> None:
    """`lightjob operator --log-format json` as the chart runs it, against the emulator in a
    process of its own: each line is JSON, a decision carries job, attempt and reason."""
    import json
    import os
    import queue
    import subprocess
    import sys
    import threading
    import time

    import kubernetes

    from lightjob.runtime.distributed import find_free_port
    from tests.integration.conftest import write_kubeconfig

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.emulator"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    operator = None
    try:
        assert server.stdout is not None
        url = server.stdout.readline().split()[1]
        env["KUBECONFIG"] = write_kubeconfig(tmp_path / "kubeconfig", url)
        command = ["operator", "-n", "default", "--log-format", "json", "--interval", "1"]
        operator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lightjob.cli",
                *command,
                "--metrics-port",
                str(find_free_port()),
            ],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(
            target=lambda: [lines.put(line) for line in operator.stdout],
            daemon=True,  # type: ignore[union-attr]
        ).start()
        client = kubernetes.config.new_client_from_config(config_file=env["KUBECONFIG"])
        kubernetes.client.CustomObjectsApi(client).create_namespaced_custom_object(
            "lightjob.dev", "v1alpha1", "default", "lightningjobs", job()
        )
        seen: list[str] = []
        decisions: list[dict[str, Any]] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
            d["reason"] == "AllNodesRunning" for d in decisions
        ):
            try:
                line = lines.get(timeout=1).strip()
            except queue.Empty:
                continue
            seen.append(line)
            record = json.loads(line)  # every line, kopf's own included
            if "decision" in record:
                decisions.append(record["decision"])
        assert decisions, "\n".join(seen[-20:])
        first = decisions[0]
        assert (first["job"], first["attempt"], first["reason"]) == (
            "default/demo",
            1,
            "AttemptStarted",
        )
        assert first["created"] == 3 and "AttemptStarted" in first["events"]
        assert any(d["reason"] == "AllNodesRunning" for d in decisions), decisions
    finally:
        for process in (operator, server):
            if process is not None:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
