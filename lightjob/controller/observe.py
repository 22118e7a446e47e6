"""Observing: what the API says about a job, its pods and its PodGroup, as plain facts.

Each fact is read once here, so the decisions (policy.py, attempts.py, reconcile.py)
never look inside a Kubernetes object.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cache
from typing import Any

from pydantic import ValidationError

from lightjob.api.crd import build_crd, prune
from lightjob.api.models import LightningJob, LightningJobSpec, LightningJobStatus
from lightjob.api.validate import explain
from lightjob.controller import build

# A pod's status.reason when the cluster took it away (eviction, preemption by the kubelet
# for a critical pod, node shutdown, node lost).
DISRUPTION_REASONS = {
    "Evicted",
    "Preempted",
    "Preempting",
    "Shutdown",
    "NodeShutdown",
    "Terminated",
    "NodeLost",
}


@dataclass(frozen=True, slots=True)
class PodView:
    """What the controller needs to know about one of the job's pods."""

    name: str
    rank: int
    attempt: int
    phase: str
    deleting: bool
    running: bool  # the trainer container is running
    exit_code: int | None  # the trainer container's exit code, once terminated
    reason: str  # why it terminated: "OOMKilled", "Error", "Completed", ...
    disrupted: str | None  # why it was disrupted (preempted, evicted, node lost), if it was
    unschedulable: str | None  # the scheduler's message while it cannot be placed
    message: str = ""  # the trainer's termination message (final metrics, or a log tail)
    metrics_url: str = ""  # rank 0's Prometheus endpoint, once the pod has an IP
    # Why the trainer container is not running yet (ImagePullBackOff, ...), and the detail.
    waiting: str = ""
    waiting_message: str = ""
    created: dt.datetime | None = None  # creationTimestamp
    # While deleting: when its grace period ends (the API server's deletionTimestamp).
    deletion_time: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    """The API refused to create an object a plan asked for (403 from a ResourceQuota or
    Pod Security admission, 422 from a policy, a webhook's denial): its code, reason and
    message, as the API gave them."""

    kind: str
    name: str
    code: int
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class PodGroupView:
    """The job's PodGroup, as the API has it."""

    spec: dict[str, Any]
    unschedulable: str | None  # the scheduler's reason the gang cannot be placed, if any


@dataclass(frozen=True, slots=True)
class JobView:
    name: str
    namespace: str
    uid: str
    generation: int
    deleting: bool
    spec: LightningJobSpec | None  # None when the stored spec is invalid
    spec_error: str
    status: LightningJobStatus
    raw_status: dict[str, Any]
    ignored: tuple[str, ...] = ()  # fields of the stored spec this version does not know


@cache
def _spec_schema() -> dict[str, Any]:
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return dict(schema["properties"]["spec"])


def observe_job(body: dict[str, Any]) -> JobView:
    """Read a stored LightningJob; an invalid spec becomes spec=None and a message."""
    meta = body.get("metadata", {})
    raw_status = body.get("status") or {}
    try:
        status = LightningJobStatus.model_validate(raw_status)
    except ValidationError:
        status = LightningJobStatus()
    spec: LightningJobSpec | None = None
    error = ""
    # Fields a newer version of the CRD let through are ignored, as the API server would
    # prune them: a job written for a newer minor version still runs. (`lightjob validate`
    # and the CRD keep rejecting them.)
    raw_spec, ignored = prune(body.get("spec"), _spec_schema(), "spec")
    readable = {k: body.get(k) for k in ("apiVersion", "kind", "metadata")}
    try:
        spec = LightningJob.model_validate({**readable, "spec": raw_spec}).spec
    except ValidationError as err:
        error = "; ".join(str(p) for p in explain(err, {**readable, "spec": raw_spec}))
    return JobView(
        name=meta.get("name", ""),
        namespace=meta.get("namespace", "default"),
        uid=meta.get("uid", ""),
        generation=int(meta.get("generation") or 0),
        deleting=bool(meta.get("deletionTimestamp")),
        spec=spec,
        spec_error=error,
        status=status,
        raw_status=raw_status,
        ignored=tuple(ignored),
    )


def observe_pod(pod: dict[str, Any], job_uid: str) -> PodView | None:
    """The controller's view of a pod; None for a pod this job does not own."""
    meta = pod.get("metadata", {})
    owners = meta.get("ownerReferences") or []
    if not any(o.get("uid") == job_uid and o.get("controller") for o in owners):
        return None
    labels = meta.get("labels") or {}
    try:
        rank, attempt = int(labels[build.RANK_LABEL]), int(labels[build.ATTEMPT_LABEL])
    except (KeyError, ValueError):
        return None
    status = pod.get("status") or {}
    statuses: list[dict[str, Any]] = status.get("containerStatuses") or []
    trainer: dict[str, Any] = next((c for c in statuses if c.get("name") == build.TRAINER), {})
    state = trainer.get("state") or {}
    terminated = state.get("terminated")
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    ip = status.get("podIP")
    metrics_port = next(
        (
            port.get("containerPort")
            for container in (pod.get("spec") or {}).get("containers") or []
            if container.get("name") == build.TRAINER
            for port in container.get("ports") or []
            if port.get("name") == build.METRICS_PORT
        ),
        None,
    )
    return PodView(
        name=meta.get("name", ""),
        rank=rank,
        attempt=attempt,
        phase=status.get("phase") or "Pending",
        deleting=bool(meta.get("deletionTimestamp")),
        running="running" in state,
        exit_code=terminated.get("exitCode") if terminated else None,
        reason=(terminated or {}).get("reason") or "",
        disrupted=_disruption(status, conditions),
        unschedulable=_unschedulable(conditions),
        message=(terminated or {}).get("message") or "",
        metrics_url=f"http://{_host(ip)}:{metrics_port}/metrics" if ip and metrics_port else "",
        waiting=str((state.get("waiting") or {}).get("reason") or ""),
        waiting_message=str((state.get("waiting") or {}).get("message") or ""),
        created=parse_time(meta.get("creationTimestamp")),
        deletion_time=parse_time(meta.get("deletionTimestamp")),
    )


def parse_time(value: Any) -> dt.datetime | None:
    """An RFC 3339 time from the API; None when absent or unreadable."""
    if not isinstance(value, str):
        return None
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def _disruption(status: dict[str, Any], conditions: dict[str, Any]) -> str | None:
    """Why the cluster took the pod away, if it did: a DisruptionTarget condition (eviction,
    preemption, taint eviction, node shutdown) or the pod's own reason."""
    target = conditions.get("DisruptionTarget")
    if target and target.get("status") == "True":
        reason = target.get("reason") or "DisruptionTarget"
        return f"{reason}: {target.get('message') or ''}".rstrip(": ")
    if status.get("reason") in DISRUPTION_REASONS:
        return f"{status['reason']}: {status.get('message') or ''}".rstrip(": ")
    return None


def _unschedulable(conditions: dict[str, Any]) -> str | None:
    scheduled = conditions.get("PodScheduled")
    if (
        scheduled
        and scheduled.get("status") == "False"
        and scheduled.get("reason") == "Unschedulable"
    ):
        return str(scheduled.get("message") or "Unschedulable")
    return None


def observe_podgroup(body: dict[str, Any] | None) -> PodGroupView | None:
    """Either provider's PodGroup. Volcano says why a gang waits in an Unschedulable
    condition; scheduler-plugins says it on the pods (see observe_pod)."""
    if body is None:
        return None
    conditions = (body.get("status") or {}).get("conditions") or []
    waiting = next(
        (c for c in conditions if c.get("type") == "Unschedulable" and c.get("status") == "True"),
        None,
    )
    reason = None
    if waiting is not None:
        reason = waiting.get("message") or waiting.get("reason") or "Unschedulable"
    return PodGroupView(spec=dict(body.get("spec") or {}), unschedulable=reason)


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip  # an IPv6 address, in a URL
