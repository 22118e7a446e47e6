"""A scheduler and kubelet stand-in for the emulator: pods get a node, their trainer
container runs, exits, is OOM-killed, evicted or preempted, as the test says.

Deletion goes as on a node: the kubelet sees the deletionTimestamp, sends SIGTERM, the
trainer exits (lightjob's runtime checkpoints and exits 143; a script that saves and
exits 0 is set with `sigterm_exit`), the kubelet reports the final status, and only then
(`linger` seconds later, as a kubelet reclaims the pod's resources first) removes the pod.

The unkind parts of a cluster are here too: a node that shuts down gracefully (its pods
end Failed with reason Terminated and a DisruptionTarget condition, whatever their exit
code), and a node that stops answering (NotReady: its kubelet does nothing any more, so
the taint manager's eviction leaves its pods Terminating until someone force-deletes
them).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from tests.emulator import ApiError, Emulator

PODS = "v1/pods"
NODES = "v1/nodes"
SHUTDOWN_MESSAGE = "Pod was terminated in response to imminent node shutdown."


def _now() -> str:
    return (
        dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    )


class Kubelet:
    def __init__(self, api: Emulator, namespace: str = "default") -> None:
        self.api = api
        self.namespace = namespace
        self.unschedulable: dict[str, str] = {}  # pod name -> the scheduler's message
        self.sigterm_exit: dict[str, int] = {}  # pod name -> its trainer's code on SIGTERM
        self.missing_images: set[str] = set()  # images no registry has: ImagePullBackOff
        self.linger = 0.2  # seconds between a deleted pod's final status and its removal
        self.lost_nodes: set[str] = set()  # NotReady: their kubelets no longer act
        self._removing: set[str] = set()
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
        if spec.get("nodeName") in self.lost_nodes:
            return  # nobody on that node answers any more
        if meta.get("deletionTimestamp"):
            if status.get("phase") not in ("Succeeded", "Failed"):
                self.exit(name, self.sigterm_exit.get(name, 143))  # SIGTERM
            if name not in self._removing:
                self._removing.add(name)
                asyncio.get_running_loop().call_later(self.linger, self._remove, name)
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
            node = f"node-{name}"
            while node in self.lost_nodes:  # the scheduler places nothing on a NotReady node
                node += "-x"
            self._ensure_node(node)
            self.api.update(PODS, self.namespace, name, None, {"spec": {"nodeName": node}})
            image = next(c["image"] for c in spec["containers"] if c["name"] == "trainer")
            if image in self.missing_images:
                self._pull_fails(name, image)
                return
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

    def _pull_fails(self, name: str, image: str) -> None:
        """What the kubelet reports for an image it cannot pull, after the first retry."""
        waiting = {
            "reason": "ImagePullBackOff",
            "message": f'Back-off pulling image "{image}"',
        }
        self._status(
            name,
            {
                "phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "True"}],
                "containerStatuses": [
                    {"name": "trainer", "ready": False, "state": {"waiting": waiting}}
                ],
            },
        )

    def _remove(self, name: str) -> None:
        """The kubelet's last word on a deleted pod: remove it (a zero-grace delete)."""
        self._removing.discard(name)
        pod = self.api.find(PODS, self.namespace, name)
        if pod is None or (pod.get("spec") or {}).get("nodeName") in self.lost_nodes:
            return
        try:
            self.api.delete(PODS, self.namespace, name, grace=0)
        except ApiError as err:
            if err.code != 404:
                raise

    def _status(self, name: str, status: dict[str, Any]) -> None:
        self.api.update(PODS, self.namespace, name, "status", {"status": status})

    def _conditions(self, name: str, *added: dict[str, Any]) -> list[dict[str, Any]]:
        pod = self.api.get(PODS, self.namespace, name)
        kinds = {c["type"] for c in added}
        kept = [
            c for c in (pod.get("status") or {}).get("conditions", []) if c["type"] not in kinds
        ]
        return [*kept, *added]

    def _ensure_node(self, node: str) -> None:
        if self.api.find(NODES, "", node) is None:
            ready = {"type": "Ready", "status": "True", "reason": "KubeletReady"}
            self.api.put(NODES, "", {"metadata": {"name": node}, "status": {"conditions": [ready]}})

    def node_of(self, name: str) -> str:
        return str(self.api.get(PODS, self.namespace, name)["spec"]["nodeName"])

    # -- what tests make happen ------------------------------------------------------------------

    def exit(
        self, name: str, code: int, reason: str | None = None, pod: dict[str, Any] | None = None
    ) -> None:
        """The trainer exits with `code` (`reason`: the container's); `pod`: more pod status."""
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
                **(pod or {}),
            },
        )

    def oom_kill(self, name: str) -> None:
        self.exit(name, 137, reason="OOMKilled")

    def evict(self, name: str) -> None:
        """What the eviction API does: a DisruptionTarget condition, then a graceful delete."""
        self._disrupt(name, "EvictionByEvictionAPI", "Eviction API: evicting")

    def preempt(self, name: str) -> None:
        """The scheduler makes room for a pod of higher priority."""
        self._disrupt(name, "PreemptionByScheduler", "default-scheduler: preempting to make room")

    def _disrupt(self, name: str, reason: str, message: str) -> None:
        target = {
            "type": "DisruptionTarget",
            "status": "True",
            "reason": reason,
            "message": message,
        }
        self._status(name, {"conditions": self._conditions(name, target)})
        self.api.delete(PODS, self.namespace, name)

    def shut_down_node(self, name: str) -> None:
        """Graceful node shutdown of the node running pod `name`: its kubelet marks the pod
        as a disruption target, sends SIGTERM, and leaves it Failed with reason Terminated
        (the pod is not deleted)."""
        target = {
            "type": "DisruptionTarget",
            "status": "True",
            "reason": "TerminationByKubelet",
            "message": SHUTDOWN_MESSAGE,
        }
        self.exit(
            name,
            self.sigterm_exit.get(name, 143),
            pod={
                "phase": "Failed",
                "reason": "Terminated",
                "message": SHUTDOWN_MESSAGE,
                "conditions": self._conditions(name, target),
            },
        )

    def lose_node(self, name: str) -> str:
        """The node running pod `name` stops answering (NotReady), and the taint manager
        evicts its pods when their toleration of node.kubernetes.io/unreachable runs out:
        they stay Terminating, since no kubelet is left to finish their deletion."""
        node = self.node_of(name)
        self.lost_nodes.add(node)
        unknown = {
            "type": "Ready",
            "status": "Unknown",
            "reason": "NodeStatusUnknown",
            "message": "Kubelet stopped posting node status.",
        }
        taint = {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}
        self.api.update(NODES, "", node, "status", {"status": {"conditions": [unknown]}})
        self.api.update(NODES, "", node, None, {"spec": {"taints": [taint]}})
        for pod in self.pods():
            if pod["spec"].get("nodeName") == node:
                ready = {"type": "Ready", "status": "False", "reason": "NodeNotReady"}
                target = {
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": "DeletionByTaintManager",
                    "message": "Taint manager: deleting due to NoExecute taint",
                }
                pod_name = pod["metadata"]["name"]
                self._status(pod_name, {"conditions": self._conditions(pod_name, ready, target)})
                self.api.delete(PODS, self.namespace, pod_name)
        return node
