"""The whole path with no cluster: the API emulator, the real operator (kopf), and
lightjob.local as the kubelet that runs the pods the operator creates as real training
processes. Apply the digits job, train on 2 nodes, preempt one, resume, succeed."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import fsspec
import kmock
import kubernetes
import pytest
import torch
import yaml

from lightjob.local.kubelet import ApiKubelet
from tests.conftest import S3
from tests.emulator import Emulator
from tests.integration.conftest import JOBS, Cluster, OperatorRun, write_kubeconfig

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 80  # 23 steps each: long enough to watch the resumed attempt's progress


@pytest.fixture
async def cluster_with_local_kubelet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Cluster]:
    api = Emulator()
    async with api, kmock.Server(api) as server:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", str(server.url).rstrip("/"))
        monkeypatch.setenv("KUBECONFIG", kubeconfig)
        client = kubernetes.config.new_client_from_config(config_file=kubeconfig)
        kubelet = ApiKubelet(client, "default", tmp_path / "node", cwd=ROOT)
        thread = threading.Thread(target=kubelet.run, name="local-kubelet", daemon=True)
        thread.start()
        cluster = Cluster(api, kubelet=None, url=str(server.url), kubeconfig=kubeconfig)  # type: ignore[arg-type]
        operator = OperatorRun(cluster, backoff_base=1.0, progress_interval=0.5)
        await operator.start()
        try:
            yield cluster
        finally:
            await operator.stop()
            kubelet.stop()
            await asyncio.to_thread(thread.join, 30)


async def test_apply_train_preempt_resume_succeed(
    cluster_with_local_kubelet: Cluster, s3: S3
) -> None:
    cluster = cluster_with_local_kubelet
    job = yaml.safe_load((ROOT / "examples" / "digits" / "lightningjob.yaml").read_text())
    job["spec"]["env"] = [{"name": "EPOCHS", "value": str(EPOCHS)}]
    job["spec"]["checkpoint"] = {"uri": s3.uri("e2e"), "everyNSteps": 200, "keep": 5}
    client = kubernetes.config.new_client_from_config(config_file=cluster.kubeconfig)
    custom = kubernetes.client.CustomObjectsApi(client)
    await asyncio.to_thread(
        custom.create_namespaced_custom_object,  # kubectl apply -f
        "lightjob.dev",
        "v1alpha1",
        "default",
        "lightningjobs",
        job,
    )

    def status() -> dict:
        return cluster.api.get(JOBS, "default", "digits").get("status") or {}

    def checkpointed() -> bool:
        fs = fsspec.filesystem("s3")
        fs.invalidate_cache()
        return bool(fs.exists(f"{s3.bucket}/e2e/latest.json"))

    def pointer() -> dict:
        fs = fsspec.filesystem("s3")
        fs.invalidate_cache()
        return json.loads(fs.cat_file(f"{s3.bucket}/e2e/latest.json"))

    await cluster.wait(lambda: status().get("phase") == "Running", timeout=60, what="Running")
    await cluster.wait(checkpointed, timeout=90, what="a first checkpoint")
    pod = cluster.api.get("v1/pods", "default", "digits-node-1")  # evicted, as by the eviction API
    conditions = [
        *(pod.get("status") or {}).get("conditions", []),
        {
            "type": "DisruptionTarget",
            "status": "True",
            "reason": "PreemptionByScheduler",
            "message": "spot reclaimed",
        },
    ]
    cluster.api.update(
        "v1/pods", "default", "digits-node-1", "status", {"status": {"conditions": conditions}}
    )
    cluster.api.delete("v1/pods", "default", "digits-node-1")

    # The resumed attempt: progress comes from node 0's metrics endpoint, read by the
    # operator while it trains.
    await cluster.wait(
        lambda: status().get("attempt") == 2 and status().get("phase") == "Running",
        timeout=60,
        what="the second attempt running",
    )
    first = await cluster.wait(
        lambda: (status().get("progress") or {}).get("step"), timeout=60, what="progress"
    )
    await cluster.wait(
        lambda: (status().get("progress") or {}).get("step", 0) > first,
        timeout=60,
        what="the step to advance",
    )
    progress = status()["progress"]
    assert progress["maxSteps"] == EPOCHS * 23 and progress["loss"] > 0 and progress["eta"]
    assert "train_loss" in progress["metrics"] and progress["samplesPerSecond"] > 0
    assert status()["phase"] == "Running"
    # lastCheckpoint names the object the runtime made durable in S3.
    await cluster.wait(
        lambda: (status().get("lastCheckpoint") or {}).get("uri") == pointer()["uri"],
        timeout=60,
        what="status.lastCheckpoint to match latest.json",
    )
    last = status()["lastCheckpoint"]
    with fsspec.open(last["uri"], "rb") as stored:
        assert torch.load(stored, weights_only=False)["global_step"] == last["step"]

    await cluster.wait(lambda: status().get("phase") == "Succeeded", timeout=180, what="Succeeded")
    final = status()
    assert (final["preemptions"], final["restarts"], final["attempt"]) == (1, 0, 2)
    assert (
        final["progress"]["step"] == EPOCHS * 23 and final["progress"]["metrics"]["val_acc"] > 0.9
    )

    def reasons() -> set[str]:
        return {e.get("reason") for e in cluster.api.list("v1/events", "default")["items"]}

    await cluster.wait(
        lambda: {"Preempted", "Succeeded"} <= reasons(), what="events"
    )  # posted async
    fs = fsspec.filesystem("s3")
    fs.invalidate_cache()
    assert json.loads(fs.cat_file(f"{s3.bucket}/e2e/latest.json"))["step"] == EPOCHS * 23
