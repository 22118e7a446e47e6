"""The operator at scale: 200 LightningJobs of 4 nodes against the API emulator.

The real operator (kopf, the kubernetes client, the controller) runs in this process
against the emulator from tests/, which runs in a process of its own (as an API server
would), with the kubelet stand-in starting pods as they appear. Reports the
time until every pod exists and every job is Running, reconcile p50/p99 (from the
operator's own histogram), API calls per job, and status writes per reconcile.

    python benchmarks/operator_scale.py [--jobs 200] [--nodes 4]

Targets (issue 6): reconcile p50 under 50 ms; at most one status write per reconcile.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
from prometheus_client import REGISTRY

from tests.integration.conftest import OperatorRun, write_kubeconfig

JOBS_PATH = "lightjob.dev/v1alpha1/namespaces/default/lightningjobs"


def histogram() -> tuple[list[tuple[float, float]], float, float]:
    for metric in REGISTRY.collect():
        if metric.name == "lightjob_reconcile_duration_seconds":
            buckets = [
                (float(s.labels["le"]), s.value)
                for s in metric.samples
                if s.name.endswith("_bucket")
            ]
            total = next(s.value for s in metric.samples if s.name.endswith("_count"))
            seconds = next(s.value for s in metric.samples if s.name.endswith("_sum"))
            return buckets, total, seconds
    raise RuntimeError("no reconcile histogram")


def quantile(buckets: list[tuple[float, float]], total: float, q: float) -> float:
    for bound, count in buckets:
        if count >= q * total:
            return bound
    return float("inf")


async def main(jobs: int, nodes: int) -> None:
    logging.getLogger("kopf").setLevel(logging.ERROR)
    logging.getLogger("lightjob.operator").setLevel(logging.WARNING)
    root = Path(__file__).resolve().parents[1]
    # The API server (emulator + kubelet stand-in) in a process of its own, as in a cluster.
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.emulator"],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().split()[1]
        with tempfile.TemporaryDirectory() as folder:
            kubeconfig = write_kubeconfig(Path(folder) / "kubeconfig", url)
            os.environ["KUBECONFIG"] = kubeconfig
            operator = OperatorRun(type("Cluster", (), {"kubeconfig": kubeconfig})(), interval=30.0)
            await operator.start()
            async with aiohttp.ClientSession(url) as http:
                before = len((await (await http.get("/debug/calls")).json())["calls"])
                started = time.perf_counter()
                for i in range(jobs):
                    response = await http.post(
                        f"/apis/{JOBS_PATH}",
                        json={
                            "apiVersion": "lightjob.dev/v1alpha1",
                            "kind": "LightningJob",
                            "metadata": {"name": f"job-{i:04d}"},
                            "spec": {"image": "train:1", "numNodes": nodes},
                        },
                    )
                    assert response.status == 201, await response.text()
                all_pods = all_running = None
                while all_running is None:
                    await asyncio.sleep(0.2)
                    elapsed = time.perf_counter() - started
                    pods = (await (await http.get("/api/v1/namespaces/default/pods")).json())[
                        "items"
                    ]
                    if all_pods is None and len(pods) >= jobs * nodes:
                        all_pods = elapsed
                    items = (await (await http.get(f"/apis/{JOBS_PATH}")).json())["items"]
                    if (
                        sum((o.get("status") or {}).get("phase") == "Running" for o in items)
                        == jobs
                    ):
                        all_running = elapsed
                    if elapsed > 600:
                        raise TimeoutError("not all jobs Running after 10 minutes")
                calls = (await (await http.get("/debug/calls")).json())["calls"][before:]
            await operator.stop()
    finally:
        server.terminate()
        server.wait()
    # What the benchmark itself asked for (creates and polls) is not the operator's doing.
    calls = [(m, p) for m, p in calls if not (m == "POST" and p.endswith("/lightningjobs"))]
    polls = sum(
        1
        for m, p in calls
        if m == "GET" and p in ("/api/v1/namespaces/default/pods", f"/apis/{JOBS_PATH}")
    )
    buckets, total, seconds = histogram()
    status_writes = sum(
        1
        for method, path in calls
        if method == "PATCH" and path.endswith("/status") and "/lightningjobs/" in path
    )
    print(
        f"\n{jobs} LightningJobs x {nodes} nodes; API emulator and kubelet stand-in in their own process"
    )
    print(
        f"  all {jobs * nodes} pods exist after {all_pods:.1f}s; all jobs Running after {all_running:.1f}s"
    )
    print(
        f"  reconciles: {total:.0f}, mean {seconds / total * 1e3:.1f} ms, "
        f"p50 <= {quantile(buckets, total, 0.5) * 1e3:.0f} ms, p99 <= {quantile(buckets, total, 0.99) * 1e3:.0f} ms"
    )
    print(
        f"  API calls per job by the operator: {(len(calls) - polls) / jobs:.1f} (kopf's watches included)"
    )
    print(
        f"  LightningJob status writes: {status_writes} for {total:.0f} reconciles "
        f"({status_writes / total:.2f} per reconcile; at most 1 by construction)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--nodes", type=int, default=4)
    args = parser.parse_args()
    asyncio.run(main(args.jobs, args.nodes))
