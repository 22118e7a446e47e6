"""lightjob.local as the kubelet of an API server: the LightningJob pods it finds there run
as local processes, and their status goes back to the API. The end-to-end tests use it with
the operator and the API emulator, so a job applied to the API trains for real."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import kubernetes

from lightjob.controller.build import JOB_LABEL
from lightjob.local.pods import LocalPods

TIMEOUT = (5.0, 30.0)


class ApiKubelet:
    def __init__(
        self,
        api_client: kubernetes.client.ApiClient,
        namespace: str,
        root: Path,
        cwd: Path | None = None,
    ) -> None:
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.namespace = namespace
        self.pods = LocalPods(root, cwd)
        self._pushed: dict[str, Any] = {}
        self._stop = threading.Event()

    def run(self, interval: float = 0.1) -> None:
        try:
            while not self._stop.wait(interval):
                self.sync()
        finally:
            self.pods.stop_all(timeout=10)

    def stop(self) -> None:
        self._stop.set()

    def sync(self) -> None:
        listed = self.core.list_namespaced_pod(
            self.namespace,
            label_selector=JOB_LABEL,
            _preload_content=False,
            _request_timeout=TIMEOUT,
        )
        items = {p["metadata"]["name"]: p for p in json.loads(listed.data)["items"]}  # type: ignore[attr-defined]
        for name, pod in items.items():
            phase = (pod.get("status") or {}).get("phase")
            if pod["metadata"].get("deletionTimestamp"):
                self.pods.delete(name)  # SIGTERM: the runtime checkpoints and exits
            elif name not in self.pods.pods and phase not in ("Succeeded", "Failed"):
                self.pods.create(pod)
                self.core.patch_namespaced_pod(
                    name,
                    self.namespace,
                    {"spec": {"nodeName": "local"}},
                    _preload_content=False,
                    _request_timeout=TIMEOUT,
                )
        self.pods.poll()
        for name in list(self.pods.pods):
            if name not in items:  # deleted from the API without us: stop it now
                self.pods.delete(name)
        for name, pod in items.items():
            if pod["metadata"].get("deletionTimestamp") and name not in self.pods.pods:
                self._push_final(name)
                self._finish_deletion(name)
        for observed in self.pods.observed():
            name = observed["metadata"]["name"]
            if name in items and self._pushed.get(name) != observed["status"]:
                self._push(name, observed["status"])

    def _push(self, name: str, status: dict[str, Any]) -> None:
        try:
            self.core.patch_namespaced_pod_status(
                name,
                self.namespace,
                {"status": status},
                _preload_content=False,
                _request_timeout=TIMEOUT,
            )
            self._pushed[name] = status
        except kubernetes.client.exceptions.ApiException as err:
            if err.status != 404:
                raise

    def _push_final(self, name: str) -> None:
        """The last state of a pod stopped by deletion (exit code, message) before it goes."""
        last = self.pods.finished.pop(name, None)
        if last is not None:
            self._push(name, last)

    def _finish_deletion(self, name: str) -> None:
        try:
            self.core.delete_namespaced_pod(
                name,
                self.namespace,
                grace_period_seconds=0,
                _preload_content=False,
                _request_timeout=TIMEOUT,
            )
        except kubernetes.client.exceptions.ApiException as err:
            if err.status != 404:
                raise
        self._pushed.pop(name, None)
