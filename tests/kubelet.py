"""A scheduler and kubelet stand-in for the emulator: pods get a node, their trainer
container runs, exits, is OOM-killed or evicted, as the test says; graceful deletions
end the way lightjob's runtime ends on SIGTERM (a checkpoint, then exit 143)."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from tests.emulator import ApiError, Emulator

PODS = "v1/pods"


def _now() -> str:
    return (
        dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    )


class Kubelet:
    def __init__(self, api: Emulator, namespace: str = "default") -> None:
        self.api = api
        self.namespace = namespace
        self.unschedulable: dict[str, str] = {}  # pod name -> the scheduler's message
        self._stopped = asyncio.Event()

    def pods(self) -> list[dict[str, Any]]:
        return list(self.api.list(PODS, self.namespace)["items"])

    async def run(self) -> None:
        """React to pod changes as the emulator publishes them (and look at every pod now
        and then, for changes made while a step was in progress)."""
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self.api.watchers[PODS].append(queue)
        try:
            for pod in self.pods():
                self._safely(pod)
            while not self._stopped.is_set():
                try:
                    _, kind, pod = await asyncio.wait_for(queue.get(), timeout=0.5)
                except asyncio.TimeoutError:
                    for pod in self.pods():
                        self._safely(pod)
                    continue
                current = self.api.find(PODS, self.namespace, pod["metadata"]["name"])
                if kind != "DELETED" and current is not None:
                    self._safely(current)
        finally:
            self.api.watchers[PODS].remove(queue)

    def _safely(self, pod: dict[str, Any]) -> None:
        try:
            self._step(pod)
        except ApiError as err:
            if err.code not in (404, 409):  # the pod went away or changed under us: fine
                raise

    def stop(self) -> None:
        self._stopped.set()

    def _step(self, pod: dict[str, Any]) -> None:
        meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
        name = meta["name"]
        if meta.get("deletionTimestamp"):
            if status.get("phase") not in ("Succeeded", "Failed"):
                self.exit(name, 143, reason="Error")  # SIGTERM: checkpoint, then exit 143
            self.api.delete(PODS, self.namespace, name, grace=0)
            return
        if spec.get("nodeName") is None:
            if name in self.unschedulable:
                self._status(
                    name,
                    {
                        "phase": "Pending",
                        "conditions": [
                            {
                                "type": "PodScheduled",
                                "status": "False",
                                "reason": "Unschedulable",
                                "message": self.unschedulable[name],
                            }
                        ],
                    },
                )
                return
            self.api.update(
                PODS, self.namespace, name, None, {"spec": {"nodeName": f"node-{name}"}}
            )
            self._status(
                name,
                {
                    "phase": "Running",
                    "conditions": [{"type": "PodScheduled", "status": "True"}],
                    "containerStatuses": [
                        {
                            "name": "trainer",
                            "ready": True,
                            "state": {"running": {"startedAt": _now()}},
                        }
                    ],
                },
            )

    def _status(self, name: str, status: dict[str, Any]) -> None:
        self.api.update(PODS, self.namespace, name, "status", {"status": status})

    # -- what tests make happen ------------------------------------------------------------------

    def exit(self, name: str, code: int, reason: str | None = None) -> None:
        terminated = {
            "exitCode": code,
            "reason": reason or ("Completed" if code == 0 else "Error"),
            "finishedAt": _now(),
        }
        self._status(
            name,
            {
                "phase": "Succeeded" if code == 0 else "Failed",
                "containerStatuses": [
                    {"name": "trainer", "ready": False, "state": {"terminated": terminated}}
                ],
            },
        )

    def oom_kill(self, name: str) -> None:
        self.exit(name, 137, reason="OOMKilled")

    def evict(self, name: str) -> None:
        """What the eviction API does: a DisruptionTarget condition, then a graceful delete."""
        pod = self.api.get(PODS, self.namespace, name)
        conditions = [
            *(pod.get("status") or {}).get("conditions", []),
            {
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "EvictionByEvictionAPI",
                "message": "Eviction API: evicting",
            },
        ]
        self.api.update(
            PODS, self.namespace, name, "status", {"status": {"conditions": conditions}}
        )
        self.api.delete(PODS, self.namespace, name)
