"""Leader election, with the operator Deployment exactly as the chart renders it (its args and
env) run as processes against the API emulator: one replica leads and reconciles, the other
stands by and calls nothing but the Lease; a leader killed with SIGKILL is replaced within a
minute, one stopped with SIGTERM hands over at once."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightjob.operator import rbac
from lightjob.operator.election import LeaseConfig, LeaseElector, released
from lightjob.operator.kube import api_client
from lightjob.runtime.distributed import find_free_port
from tests.emulator import LEASES, RESOURCES, Emulator
from tests.integration.conftest import JOBS, Cluster, write_kubeconfig
from tests.integration.test_chart import ROOT, render

RELEASE_NAMESPACE = "lightjob-system"  # where render() installs the release


def job(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "lightjob.dev/v1alpha1",
        "kind": "LightningJob",
        "metadata": {"name": name},
        "spec": {"image": "ghcr.io/example/train:1", "numNodes": 2},
    }


@dataclass
class Replica:
    """One pod of the chart's operator Deployment, as a process on this machine."""

    pod: str
    process: subprocess.Popen[str]
    liveness: str | None  # the URL the kubelet's liveness probe GETs
    output: list[str]

    @property
    def caller(self) -> str:
        return f"Bearer {self.pod}"  # its kubeconfig's token is its pod name

    def calls(self, api: Emulator) -> list[tuple[str, str]]:
        return [
            call for call, who in zip(api.calls, api.callers, strict=True) if who == self.caller
        ]

    def acted(self, api: Emulator) -> bool:
        """Wrote anything but the election's own objects."""
        return any(
            method != "GET" and "/leases/" not in path and "kopfpeerings" not in path
            for method, path in self.calls(api)
        )

    def log(self) -> str:
        return "".join(self.output[-40:])


class ChartDeployment:
    """The operator Deployment as `helm template` renders it, and what the release installs."""

    def __init__(self, cluster: Cluster, tmp_path: Path, *sets: str) -> None:
        docs = render(*sets)
        self.cluster, self.tmp_path = cluster, tmp_path
        self.deployment = next(d for d in docs if d["kind"] == "Deployment")
        self.container = self.deployment["spec"]["template"]["spec"]["containers"][0]
        self.replicas: list[Replica] = []
        install(cluster.api, docs)

    def flag(self, name: str) -> str:
        return next(a.split("=", 1)[1] for a in self.container["args"] if a.startswith(name + "="))

    def start(self) -> Replica:
        """A pod of the Deployment: the container's args and env, with the downward API
        filled in, and fresh ports (pods have an address each; processes here share one)."""
        pod = f"{self.deployment['metadata']['name']}-7c9d5b8f4-r{len(self.replicas)}"
        ports = {p["containerPort"]: find_free_port() for p in self.container.get("ports", [])}
        args = [_with_ports(a, ports) for a in self.container["args"]]
        kubeconfig = write_kubeconfig(self.tmp_path / f"{pod}.yaml", self.cluster.url, token=pod)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        env["KUBECONFIG"] = kubeconfig
        for var in self.container.get("env", []):
            env[var["name"]] = _env_value(var, pod)
        process = subprocess.Popen(
            [sys.executable, "-m", "lightjob.cli", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        output: list[str] = []
        threading.Thread(target=_collect, args=(process, output), daemon=True).start()
        replica = Replica(pod, process, self._liveness_url(ports), output)
        self.replicas.append(replica)
        return replica

    def _liveness_url(self, ports: dict[int, int]) -> str | None:
        probe = self.container.get("livenessProbe")
        if probe is None:
            return None
        named = {p["name"]: p["containerPort"] for p in self.container["ports"]}
        port = probe["httpGet"]["port"]
        return f"http://127.0.0.1:{ports[named.get(port, port)]}{probe['httpGet']['path']}"

    async def stop_all(self) -> None:
        """SIGTERM, as the kubelet stops a pod; SIGKILL after its grace period. The emulator
        lives in this event loop, so the wait must not block it."""
        for replica in self.replicas:
            if replica.process.poll() is None:
                replica.process.terminate()
        errors = []
        for replica in self.replicas:
            try:
                await exited(replica, timeout=30)
            except AssertionError as err:
                errors.append(err)
        if errors:
            raise errors[0]


def install(api: Emulator, docs: list[dict[str, Any]]) -> None:
    """Create what `helm install` would, of the kinds the emulator serves. (RBAC objects are
    not enforced here; the calls made are checked against lightjob/operator/rbac.py.)"""
    served = {
        (f"{g}/{v}" if g else v, info["kind"]): (f"{g}/{v}/{p}" if g else f"{v}/{p}", info)
        for (g, v, p), info in RESOURCES.items()
    }
    api.put("v1/namespaces", "", {"metadata": {"name": RELEASE_NAMESPACE}})
    for doc in docs:
        found = served.get((doc["apiVersion"], doc["kind"]))
        if found is not None:
            resource, info = found
            namespace = doc["metadata"].get("namespace", RELEASE_NAMESPACE)
            api.create(resource, namespace if info["namespaced"] else "", doc)


async def exited(replica: Replica, timeout: float) -> int:
    """The replica's exit code, killing it if it is still running after `timeout`."""
    deadline = time.monotonic() + timeout
    while replica.process.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    if replica.process.poll() is None:
        replica.process.kill()
        replica.process.wait()
        raise AssertionError(f"{replica.pod} did not stop within {timeout} s: {replica.log()}")
    return replica.process.returncode


def _with_ports(arg: str, ports: dict[int, int]) -> str:
    for old, new in ports.items():
        arg = re.sub(rf"(?<=[=:]){old}\b", str(new), arg)
    return arg


def _env_value(var: dict[str, Any], pod: str) -> str:
    if "value" in var:
        return str(var["value"])
    path = var["valueFrom"]["fieldRef"]["fieldPath"]  # the downward API, as the kubelet fills it
    return {"metadata.name": pod, "metadata.namespace": RELEASE_NAMESPACE}[path]


def _collect(process: subprocess.Popen[str], output: list[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        output.append(line)


def phase(cluster: Cluster, name: str) -> str | None:
    return ((cluster.api.find(JOBS, "default", name) or {}).get("status") or {}).get("phase")


def lease(cluster: Cluster, chart: ChartDeployment) -> dict[str, Any]:
    name = chart.flag("--leader-elect-resource-name")
    return cluster.api.get(LEASES, RELEASE_NAMESPACE, name)["spec"]


def probe(url: str | None) -> int:
    assert url is not None, "the chart gives the operator no liveness probe"
    with urllib.request.urlopen(url, timeout=5) as response:
        return int(response.status)


async def rolled_out(cluster: Cluster, replicas: list[Replica]) -> None:
    """Both replicas up and talking to the API, and a few seconds more: jobs come later."""
    await cluster.wait(
        lambda: all(r.calls(cluster.api) for r in replicas), timeout=30, what="replicas up"
    )
    await asyncio.sleep(3)


async def running(cluster: Cluster, job_name: str, replicas: list[Replica]) -> None:
    """Wait (up to a minute) for the job to be Running; on failure, say what the replicas
    logged."""
    try:
        await cluster.wait(lambda: phase(cluster, job_name) == "Running", timeout=60)
    except AssertionError as err:
        logs = "\n".join(f"--- {r.pod}:\n{r.log()}" for r in replicas)
        raise AssertionError(f"{job_name} is not Running: {err}\n{logs}") from None


def leaders(cluster: Cluster, replicas: list[Replica]) -> list[Replica]:
    return [r for r in replicas if r.acted(cluster.api)]


async def test_two_replicas_as_the_chart_runs_them_elect_one_and_fail_over_when_it_is_killed(
    emulated: Cluster, tmp_path: Path
) -> None:
    chart = ChartDeployment(emulated, tmp_path)
    assert chart.deployment["spec"]["replicas"] == 2
    replicas = [chart.start(), chart.start()]
    try:
        await rolled_out(emulated, replicas)
        emulated.api.create(JOBS, "default", job("first"))
        await running(emulated, "first", replicas)
        # Longer than a lease: the leader keeps renewing it and the standby keeps out.
        await asyncio.sleep(float(chart.flag("--leader-elect-lease-duration")) + 3)
        (leader,) = leaders(emulated, replicas)
        (standby,) = [r for r in replicas if r is not leader]
        assert lease(emulated, chart)["holderIdentity"].startswith(leader.pod)
        leases = f"/apis/coordination.k8s.io/v1/namespaces/{RELEASE_NAMESPACE}/leases"
        assert all(path.startswith(leases) for _, path in standby.calls(emulated.api)), (
            "the standby calls nothing but the Lease"
        )
        assert probe(leader.liveness) == 200 and probe(standby.liveness) == 200

        leader.process.kill()  # SIGKILL: no clean-up, the Lease still names it
        killed = time.monotonic()
        await exited(leader, timeout=5)
        emulated.api.create(JOBS, "default", job("second"))
        await running(emulated, "second", replicas)
        failover = time.monotonic() - killed
        print(f"failover after SIGKILL: {failover:.1f} s")
        assert failover < 60
        assert lease(emulated, chart)["holderIdentity"].startswith(standby.pod)
        assert lease(emulated, chart)["leaseTransitions"] == 1
        second = [
            path
            for method, path in standby.calls(emulated.api)
            if method == "POST" and path.endswith("/pods")
        ]
        assert len(second) == 2, "the new leader created the second job's pods"
        assert probe(standby.liveness) == 200  # kopf's endpoint now, on the same port
        assert_calls_are_granted(emulated, replicas)
    finally:
        await chart.stop_all()


async def test_a_leader_stopped_with_sigterm_hands_over_at_once(
    emulated: Cluster, tmp_path: Path
) -> None:
    """A rolling update or a drain: the leader stops kopf, releases the Lease and exits 0;
    the standby takes over at its next look, well inside a lease duration."""
    chart = ChartDeployment(emulated, tmp_path)
    replicas = [chart.start(), chart.start()]
    try:
        await rolled_out(emulated, replicas)
        holder = await emulated.wait(lambda: lease(emulated, chart)["holderIdentity"])
        (leader,) = [r for r in replicas if holder.startswith(r.pod)]
        (standby,) = [r for r in replicas if r is not leader]
        emulated.api.create(JOBS, "default", job("first"))
        await running(emulated, "first", replicas)

        leader.process.terminate()
        stopped = time.monotonic()
        assert await exited(leader, timeout=30) == 0, leader.log()
        await emulated.wait(
            lambda: lease(emulated, chart)["holderIdentity"].startswith(standby.pod),
            timeout=30,
            what="the standby holding the Lease",
        )
        handover = time.monotonic() - stopped
        print(f"handover after SIGTERM: {handover:.1f} s")
        assert handover < float(chart.flag("--leader-elect-lease-duration"))
        assert "released the Lease" in leader.log()
        emulated.api.create(JOBS, "default", job("second"))
        await running(emulated, "second", replicas)
        assert standby.acted(emulated.api)
    finally:
        await chart.stop_all()


async def test_a_leader_that_cannot_renew_its_lease_exits_before_it_expires(
    emulated: Cluster, tmp_path: Path
) -> None:
    """The API refuses the renewals (a partition, an overloaded API server): the leader must
    stop acting before a standby may take over, so it exits within the renew deadline."""
    chart = ChartDeployment(
        emulated,
        tmp_path,
        "replicaCount=1",
        "leaderElection.leaseDuration=3",
        "leaderElection.renewDeadline=2",
        "leaderElection.retryPeriod=1",
    )
    leader = chart.start()
    try:
        await emulated.wait(lambda: lease(emulated, chart)["holderIdentity"], timeout=30)
        emulated.api.faults.append(["PUT", "/leases/", 503, 1_000_000])
        refused = time.monotonic()
        assert await exited(leader, timeout=10) == 1
        lasted = time.monotonic() - refused
        print(f"exit after the renewals were refused: {lasted:.1f} s")
        # The last renewal was at most a retry period (1 s) before the refusals began.
        assert 1 < lasted < 4, f"exited {lasted:.1f} s after the renewals were refused"
        assert "lost the Lease" in leader.log()
    finally:
        await chart.stop_all()


async def test_of_replicas_racing_for_a_free_lease_exactly_one_takes_it(emulated: Cluster) -> None:
    """The API server's optimistic concurrency decides, not timing: each replica's update
    names the resourceVersion it read, and all but the first get 409 Conflict."""
    wall = dt.datetime.now(dt.timezone.utc)
    for race in range(10):
        name = f"race-{race}"
        free = released({"holderIdentity": "gone_0", "leaseTransitions": 0}, wall)
        emulated.api.create(LEASES, "default", {"metadata": {"name": name}, "spec": free})
        electors = [
            LeaseElector(api_client(emulated.kubeconfig), LeaseConfig(name, "default", f"r{i}_0"))
            for i in range(3)
        ]
        start = threading.Barrier(len(electors))

        won = await asyncio.gather(*(asyncio.to_thread(_race, e, start) for e in electors))
        assert sum(won) == 1, f"race {race}: {won}"
        spec = emulated.api.get(LEASES, "default", name)["spec"]
        assert spec["holderIdentity"] == electors[won.index(True)].config.identity
        assert spec["leaseTransitions"] == 1


def _race(elector: LeaseElector, start: threading.Barrier) -> bool:
    start.wait()
    return elector.try_acquire_or_renew(time.monotonic() + 5)


def assert_calls_are_granted(cluster: Cluster, replicas: list[Replica]) -> None:
    """Every call either replica made is granted by the chart's rules (as declared in
    rbac.py), the Lease only in the release's namespace, and each Lease verb is used."""
    granted = rbac.rules(cluster_wide=True, peering=False) + rbac.LEADER_ELECTION
    used = set()
    for (method, path), query, who in zip(
        cluster.api.calls, cluster.api.queries, cluster.api.callers, strict=True
    ):
        if who not in {r.caller for r in replicas}:
            continue
        permission = rbac.call_to_permission(method, path, query)
        if permission is None:
            continue
        assert rbac.allows(granted, *permission), f"{method} {path} needs {permission}"
        if permission[1] == "leases":
            assert f"/namespaces/{RELEASE_NAMESPACE}/" in path, path
            used.add(permission[2])
    assert used == {"get", "create", "update"}
