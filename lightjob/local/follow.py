"""`lightjob run JOB.yaml --kube`: apply the job to the kubeconfig's cluster and follow it.

Creates the LightningJob (or updates its spec), prints its phase changes, training progress
(status.progress, as the operator reads it from node 0), events and node 0's log as it goes, and exits with its result: 0 Succeeded, 1 Failed. Ctrl-C stops
following; the job keeps running on the cluster.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any, TextIO

from lightjob.api.models import GROUP, PLURAL, VERSION
from lightjob.api.validate import InvalidJobError, load_job


def follow(
    path: str, context: str | None = None, out: TextIO = sys.stdout, poll: float = 2.0
) -> int:
    import kubernetes

    try:
        job = load_job(path)
    except InvalidJobError as err:
        out.write(f"lightjob: invalid job:\n{err}\n")
        return 2
    # The client reads KUBECONFIG once, when it is imported: name the file explicitly.
    config_file = os.path.expanduser(
        os.environ.get("KUBECONFIG", "~/.kube/config").split(os.pathsep)[0]
    )
    try:
        client = kubernetes.config.new_client_from_config(config_file=config_file, context=context)
        _, active = kubernetes.config.list_kube_config_contexts(config_file=config_file)
    except (kubernetes.config.ConfigException, FileNotFoundError) as err:
        out.write(f"lightjob: no usable kubeconfig ({err}); set KUBECONFIG or use --context\n")
        return 2
    namespace = (
        job.metadata.namespace or (active or {}).get("context", {}).get("namespace") or "default"
    )
    name = job.metadata.name
    custom = kubernetes.client.CustomObjectsApi(client)
    core = kubernetes.client.CoreV1Api(client)
    body = job.model_dump(mode="json", by_alias=True, exclude_none=True)
    body.pop("status", None)
    try:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
        out.write(f"lightjob: created {namespace}/{name}\n")
    except kubernetes.client.exceptions.ApiException as err:
        if err.status == 409:
            custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, {"spec": body["spec"]}
            )
            out.write(f"lightjob: updated {namespace}/{name}\n")
        else:
            out.write(f"lightjob: the cluster refused the job ({err.status}): {_reason(err)}\n")
            return 2
    logs = _LogFollower(core, namespace, f"{name}-node-0", out)
    last: tuple[Any, ...] = ()
    last_progress = ""
    seen_events: set[str] = set()
    try:
        while True:
            current: dict[str, Any] = custom.get_namespaced_custom_object(  # type: ignore[assignment]
                GROUP, VERSION, namespace, PLURAL, name
            )
            status = current.get("status") or {}
            state = (status.get("phase"), status.get("attempt"), status.get("nodes"))
            if state != last:
                last = state
                out.write(
                    f"lightjob: {name}: {status.get('phase', 'Pending')} attempt {status.get('attempt', 0)}"
                    f" nodes {status.get('nodes', '-')} {status.get('message', '')}\n"
                )
            progress = progress_line(status)
            if progress and progress != last_progress:
                last_progress = progress
                out.write(f"lightjob: {name}: {progress}\n")
            _print_events(core, namespace, name, seen_events, out)
            logs.ensure(str(status.get("attempt")))
            if status.get("phase") in ("Succeeded", "Failed"):
                out.write(f"lightjob: {name} {status['phase']}: {status.get('message', '')}\n")
                return 0 if status["phase"] == "Succeeded" else 1
            time.sleep(poll)
    except KeyboardInterrupt:
        out.write(
            f"\nlightjob: stopped following; {name} keeps running (kubectl delete lj {name} to stop it)\n"
        )
        return 130
    finally:
        logs.stop()


def progress_line(status: dict[str, Any]) -> str:
    """status.progress and lastCheckpoint in one line: "step 240/690, loss 0.4124, 1.2e+03
    samples/s, ETA 38s, checkpoint at step 200"; empty before any progress."""
    progress = status.get("progress") or {}
    if progress.get("step") is None or status.get("phase") != "Running":
        return ""
    total = f"/{progress['maxSteps']}" if progress.get("maxSteps") else ""
    parts = [f"step {progress['step']}{total}"]
    if progress.get("loss") is not None:
        parts.append(f"loss {progress['loss']:.4g}")
    if progress.get("samplesPerSecond"):
        parts.append(f"{progress['samplesPerSecond']:.3g} samples/s")
    if progress.get("eta"):
        parts.append(f"ETA {progress['eta']}")
    checkpoint = status.get("lastCheckpoint") or {}
    if checkpoint.get("step") is not None:
        parts.append(f"checkpoint at step {checkpoint['step']}")
    return ", ".join(parts)


def _print_events(core: Any, namespace: str, name: str, seen: set[str], out: TextIO) -> None:
    try:
        events = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
    except Exception:
        return
    for event in events.items:
        key = f"{event.metadata.name}/{event.count}"
        if key not in seen:
            seen.add(key)
            out.write(f"lightjob: {event.reason}: {event.message}\n")


class _LogFollower:
    """Streams node 0's log on a thread; a new attempt means a new pod, so a new stream."""

    def __init__(self, core: Any, namespace: str, pod: str, out: TextIO) -> None:
        self.core, self.namespace, self.pod, self.out = core, namespace, pod, out
        self.attempt: str | None = None
        self.thread: threading.Thread | None = None

    def ensure(self, attempt: str) -> None:
        if attempt == self.attempt or (self.thread is not None and self.thread.is_alive()):
            return
        self.attempt = attempt
        self.thread = threading.Thread(target=self._stream, daemon=True)
        self.thread.start()

    def _stream(self) -> None:
        try:
            stream = self.core.read_namespaced_pod_log(
                self.pod, self.namespace, follow=True, _preload_content=False
            )
            for chunk in stream.stream():
                self.out.write(chunk.decode(errors="replace"))
                self.out.flush()
        except Exception:
            self.attempt = None

    def stop(self) -> None:
        self.thread = None


def _reason(err: Any) -> str:
    import json

    try:
        return str(json.loads(err.body).get("message"))
    except (ValueError, TypeError, AttributeError):
        return str(err.reason)
