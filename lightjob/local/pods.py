"""Pods as local processes: what a kubelet does, on one machine.

Each pod gets its own loopback address (127.a.b.<rank+1>, a /24 of this run's own), and
`<pod>.<job>.<ns>.svc` in its env resolves to it, so ranks really meet across addresses.
The container's command, args, env and workingDir pass through; the pod's output goes to
a log file; deletion is SIGTERM to the main process, then SIGKILL to its whole process
group after the grace period; the termination message follows the pod's
terminationMessagePolicy (FallbackToLogsOnError: the log's tail when the file is empty).
`observed()` reports each pod as the API would.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SERVICE_NAME = re.compile(
    r"\b([a-z0-9-]+)-node-(\d+)\.([a-z0-9-]+)\.([a-z0-9-]+)\.svc(?:\.cluster\.local)?\b"
)
LOG_TAIL_LINES, LOG_TAIL_BYTES = 80, 2048  # what Kubernetes keeps of a log as a message


class PodStartError(Exception):
    """A pod's container cannot be run locally; the message says which field to fix."""


@dataclass
class LocalPod:
    manifest: dict[str, Any]
    address: str
    log_path: Path
    message_path: Path
    process: subprocess.Popen[bytes] | None = None
    started_at: str = ""
    exit_code: int | None = None
    start_error: str = ""
    deleting_since: float | None = None
    disruption: str | None = None
    conditions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.manifest["metadata"]["name"])

    @property
    def grace(self) -> float:
        return float(self.manifest["spec"].get("terminationGracePeriodSeconds", 30))


def _now() -> str:
    return (
        dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    )


class LocalPods:
    def __init__(self, root: Path, cwd: Path | None = None) -> None:
        self.root = root
        self.cwd = cwd or Path.cwd()
        self.pods: dict[str, LocalPod] = {}
        self.finished: dict[str, dict[str, Any]] = {}  # last status of pods gone after deletion
        self.subnet = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}"
        (root / "logs").mkdir(parents=True, exist_ok=True)

    def address(self, rank: int) -> str:
        return f"{self.subnet}.{rank + 1}"

    # -- what the controller asks for --------------------------------------------------------

    def create(self, manifest: dict[str, Any]) -> None:
        name = manifest["metadata"]["name"]
        if name in self.pods:
            return  # exists (409): plans are idempotent
        labels = manifest["metadata"].get("labels") or {}
        rank = int(labels.get("lightjob.dev/node-rank", 0))
        attempt = labels.get("lightjob.dev/attempt", "0")
        pod = LocalPod(
            manifest=manifest,
            address=self.address(rank),
            log_path=self.root / "logs" / f"{name}.attempt-{attempt}.log",
            message_path=self.root / "logs" / f"{name}.attempt-{attempt}.termination",
        )
        self.pods[name] = pod
        try:
            command, env, cwd = self._command(pod)
        except PodStartError as err:
            pod.start_error, pod.exit_code = str(err), 127
            pod.log_path.write_text(f"{err}\n")
            return
        pod.message_path.unlink(missing_ok=True)
        with open(pod.log_path, "wb") as log:
            pod.process = subprocess.Popen(
                command,
                env=env,
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        pod.started_at = _now()

    def delete(self, name: str) -> None:
        """Graceful deletion: SIGTERM to the main process, as the kubelet sends to PID 1."""
        pod = self.pods.get(name)
        if pod is None or pod.deleting_since is not None:
            return
        pod.deleting_since = time.monotonic()
        if pod.process is not None and pod.process.poll() is None:
            pod.process.send_signal(signal.SIGTERM)

    def disrupt(self, name: str, reason: str, message: str) -> None:
        """What a preemption looks like: a DisruptionTarget condition, then a deletion."""
        pod = self.pods.get(name)
        if pod is None:
            return
        pod.disruption = message
        pod.conditions.append(
            {
                "type": "DisruptionTarget",
                "status": "True",
                "reason": reason,
                "message": message,
                "lastTransitionTime": _now(),
            }
        )
        self.delete(name)

    def poll(self) -> None:
        """Reap exits, enforce grace periods, and let deleted pods go once stopped."""
        for name, pod in list(self.pods.items()):
            if pod.process is not None and pod.exit_code is None:
                code = pod.process.poll()
                if code is not None:
                    pod.exit_code = code if code >= 0 else 128 - code
                    _kill_group(pod.process)  # what the container left behind goes with it
            if pod.deleting_since is not None:
                overdue = time.monotonic() - pod.deleting_since > pod.grace
                if pod.exit_code is None and overdue and pod.process is not None:
                    _kill_group(pod.process)
                if pod.exit_code is not None:
                    self.finished[name] = self._observe(pod)["status"]
                    del self.pods[name]

    def stop_all(self, timeout: float | None = None) -> None:
        """Stop every pod (SIGTERM, then SIGKILL after the grace period): nothing is left."""
        for name in list(self.pods):
            self.delete(name)
        deadline = time.monotonic() + (
            timeout
            if timeout is not None
            else max((p.grace for p in self.pods.values()), default=0)
        )
        while self.pods and time.monotonic() < deadline:
            self.poll()
            time.sleep(0.05)
        for pod in self.pods.values():
            if pod.process is not None:
                _kill_group(pod.process)
                pod.process.wait()
        self.pods.clear()

    # -- what a kubelet reports ------------------------------------------------------------------

    def observed(self) -> list[dict[str, Any]]:
        return [self._observe(pod) for pod in self.pods.values()]

    def _observe(self, pod: LocalPod) -> dict[str, Any]:
        meta = {k: v for k, v in pod.manifest["metadata"].items()}
        if pod.deleting_since is not None:
            meta["deletionTimestamp"] = _now()
        if pod.exit_code is None:
            state: dict[str, Any] = {"running": {"startedAt": pod.started_at}}
            phase = "Running"
        else:
            state = {
                "terminated": {
                    "exitCode": pod.exit_code,
                    "reason": "Completed"
                    if pod.exit_code == 0
                    else ("StartError" if pod.start_error else "Error"),
                    "message": self.message(pod),
                }
            }
            phase = "Succeeded" if pod.exit_code == 0 else "Failed"
        status = {
            "phase": phase,
            "podIP": pod.address,
            "conditions": list(pod.conditions),
            "containerStatuses": [{"name": "trainer", "ready": phase == "Running", "state": state}],
        }
        return {"metadata": meta, "spec": pod.manifest["spec"], "status": status}

    def message(self, pod: LocalPod) -> str:
        if pod.start_error:
            return pod.start_error
        if pod.message_path.exists() and pod.message_path.stat().st_size:
            return pod.message_path.read_text(errors="replace")[:4096]
        if pod.exit_code not in (None, 0) and pod.log_path.exists():
            tail = pod.log_path.read_bytes()[-LOG_TAIL_BYTES:].decode(errors="replace")
            return "\n".join(tail.replace("\r", "\n").splitlines()[-LOG_TAIL_LINES:])
        return ""

    # -- running a container's command ------------------------------------------------------------

    def _command(self, pod: LocalPod) -> tuple[list[str], dict[str, str], Path]:
        container = pod.manifest["spec"]["containers"][0]
        command = list(container.get("command") or []) + list(container.get("args") or [])
        if not command:
            raise PodStartError(
                "spec.command: lightjob run needs a command (it runs no images locally)"
            )
        if command[0] in ("python", "python3"):
            command[0] = sys.executable  # this environment's Python, with lightjob installed
        elif shutil.which(command[0]) is None and not Path(command[0]).exists():
            raise PodStartError(f'spec.command[0]: executable file not found: "{command[0]}"')
        env = dict(os.environ)
        for item in container.get("env") or []:
            if "value" in item:
                env[item["name"]] = self._resolve(str(item["value"]))
            elif "valueFrom" in item:
                raise PodStartError(
                    f"spec.env[{item['name']}].valueFrom: lightjob run cannot resolve it locally; "
                    "set the variable in your shell instead"
                )
        env["LIGHTJOB_TERMINATION_LOG"] = str(pod.message_path)  # terminationMessagePath
        env["LIGHTJOB_POD_IP"] = pod.address
        working = container.get("workingDir")
        cwd = (self.cwd / working) if working else self.cwd
        return command, env, cwd

    def _resolve(self, value: str) -> str:
        """The cluster DNS names of this job's pods, as this run's loopback addresses."""
        return SERVICE_NAME.sub(lambda m: self.address(int(m.group(2))), value)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def _die_with_parent() -> None:
    try:  # Linux: the pod dies with the runner, even if the runner is SIGKILLed
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except OSError:
        pass
