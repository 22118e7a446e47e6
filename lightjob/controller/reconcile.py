"""The decisions: (job, observed pods, now) -> Plan. No I/O, no clock, no client.

Level-based: the plan depends only on what exists now and on the job's status, so it is
safe to compute from any trigger, again and again, and after an operator restart in the
middle of applying a plan. Applying a plan and planning again yields nothing to do.

One attempt is one gang of pods `<job>-node-<rank>` labelled with the attempt number.
An attempt ends in success (node 0's trainer exits 0), a failure (an exit code 1..127 or
OOMKilled: counts against backoffLimit, with exponential back-off), a preemption (a
disruption, an eviction, a signal exit such as lightjob's 143, or a pod deleted by
someone else: never counts as a failure, restarts at once), a resize of a fixed-size job,
or a suspend. The next attempt starts once every pod of the last one is gone.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from lightjob.api.models import LightningJob, LightningJobSpec, LightningJobStatus
from lightjob.api.validate import explain
from lightjob.controller import build, progress
from lightjob.controller.progress import Sample
from lightjob.controller.status import set_conditions

TERMINAL = ("Succeeded", "Failed")
# Kubernetes Job's back-off: 10 s, doubled per failure, at most 6 minutes.
BACKOFF_CAP_SECONDS = 360.0
DISRUPTION_REASONS = {"Evicted", "Preempting", "Shutdown", "NodeLost", "Terminated", "NodeShutdown"}


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


@dataclass(frozen=True, slots=True)
class Event:
    type: str  # "Normal" or "Warning"
    reason: str
    message: str
    cause: str = ""  # for metrics: exit_code, oom_killed, disruption, signal, deleted, ...


@dataclass(slots=True)
class Plan:
    create: list[build.Manifest] = field(default_factory=list)
    update: list[build.Manifest] = field(default_factory=list)  # objects whose spec to patch
    delete: list[str] = field(default_factory=list)  # pod names
    status: dict[str, Any] | None = None  # the whole new status, when it changed
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None  # seconds until a time-based decision is due
    delete_job: bool = False  # ttlSecondsAfterFinished has passed
    reason: str = ""  # why the job stands where it does (the condition's reason), for logs

    def delete_pods(self, pods: list[PodView]) -> None:
        """Delete these pods, except those already going or already in the plan."""
        self.delete += [p.name for p in pods if not p.deleting and p.name not in self.delete]

    @property
    def is_empty(self) -> bool:
        return not (
            self.create
            or self.update
            or self.delete
            or self.status
            or self.events
            or self.delete_job
        )


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
    try:
        spec = LightningJob.model_validate(
            {k: body.get(k) for k in ("apiVersion", "kind", "metadata", "spec")}
        ).spec
    except ValidationError as err:
        error = "; ".join(str(p) for p in explain(err, body))
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
    disrupted = None
    target = conditions.get("DisruptionTarget")
    if target and target.get("status") == "True":
        disrupted = (
            f"{target.get('reason') or 'DisruptionTarget'}: {target.get('message') or ''}".rstrip(
                ": "
            )
        )
    elif status.get("reason") in DISRUPTION_REASONS:
        disrupted = f"{status['reason']}: {status.get('message') or ''}".rstrip(": ")
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
    scheduled = conditions.get("PodScheduled")
    unschedulable = None
    if (
        scheduled
        and scheduled.get("status") == "False"
        and scheduled.get("reason") == "Unschedulable"
    ):
        unschedulable = scheduled.get("message") or "Unschedulable"
    return PodView(
        name=meta.get("name", ""),
        rank=rank,
        attempt=attempt,
        phase=status.get("phase") or "Pending",
        deleting=bool(meta.get("deletionTimestamp")),
        running="running" in state,
        exit_code=terminated.get("exitCode") if terminated else None,
        reason=(terminated or {}).get("reason") or "",
        disrupted=disrupted,
        unschedulable=unschedulable,
        message=(terminated or {}).get("message") or "",
        metrics_url=f"http://{_host(ip)}:{metrics_port}/metrics" if ip and metrics_port else "",
    )


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


def backoff_delay(restarts: int, base: float) -> float:
    return float(min(base * 2 ** max(0, restarts - 1), BACKOFF_CAP_SECONDS))


@dataclass(slots=True)
class _Outcome:
    kind: str  # "succeeded", "failed", "preempted", "running", "pending"
    message: str = ""
    cause: str = ""


def reconcile(
    job: JobView,
    pods: list[PodView],
    service_exists: bool,
    now: dt.datetime,
    *,
    backoff_base: float = 10.0,
    sample: Sample | None = None,
    podgroup: PodGroupView | None = None,
) -> Plan:
    """The plan for one job. `sample` is node 0's metrics, when the caller read them;
    `podgroup` the job's PodGroup, when it uses gang scheduling and one exists."""
    plan = _decide(job, pods, service_exists, now, backoff_base, sample, podgroup)
    # A pod name still taken (say by an old attempt's pod that is shutting down) is never
    # created twice: the pod is created by a later reconcile, once the name is free.
    taken = {p.name for p in pods}
    plan.create = [
        m for m in plan.create if m["kind"] != "Pod" or m["metadata"]["name"] not in taken
    ]
    return plan


def _decide(
    job: JobView,
    pods: list[PodView],
    service_exists: bool,
    now: dt.datetime,
    backoff_base: float,
    sample: Sample | None,
    podgroup: PodGroupView | None,
) -> Plan:
    plan = Plan()
    if job.deleting:
        return plan  # owner references let the garbage collector take the pods
    status = job.status.model_copy(deep=True)
    status.observed_generation = job.generation
    status.selector = build.selector(job.name)
    if job.spec is None:
        if status.phase not in TERMINAL:
            _finish(status, plan, now, "Failed", "InvalidSpec", f"invalid spec: {job.spec_error}")
        plan.delete_pods(pods)
        return _complete(job, status, plan, now, reason="InvalidSpec")
    spec = job.spec
    if status.phase in TERMINAL:
        _clean_up(spec, pods, plan)
        _expire(spec, status, plan, now)
        return _complete(job, status, plan, now)

    if not service_exists:
        plan.create.append(build.build_service(job.name, job.namespace, job.uid, spec))
    _gang(job, spec, podgroup, plan)  # before any pod, which the scheduler would hold
    # Pods of a newer attempt than the status says: the operator stopped after creating
    # them and before writing status. Adopt that attempt rather than start another.
    attempt = max([status.attempt, *(p.attempt for p in pods)])
    if attempt != status.attempt:
        status.attempt, status.phase, status.replicas = attempt, "Pending", spec.num_nodes
        status.attempt_start_time = status.attempt_start_time or now
    current = [p for p in pods if p.attempt == attempt]
    plan.delete_pods([p for p in pods if p.attempt != attempt])

    deadline = spec.run_policy.active_deadline_seconds
    if deadline and status.start_time and (now - status.start_time).total_seconds() > deadline:
        _finish(
            status,
            plan,
            now,
            "Failed",
            "DeadlineExceeded",
            f"the job ran longer than activeDeadlineSeconds={deadline}",
        )
        _clean_up(spec, current, plan)
        return _complete(job, status, plan, now, reason="DeadlineExceeded")

    if spec.run_policy.suspend:
        return _suspend(job, spec, status, pods, plan, now)
    if status.phase == "Suspended":
        status.phase, status.next_attempt_time = "Restarting", now
        plan.events.append(Event("Normal", "Resumed", "resumed; starting a new attempt"))

    if status.phase == "Restarting" or attempt == 0:
        return _next_attempt(job, spec, status, pods, plan, now)

    added: list[int] = []
    if spec.num_nodes != status.replicas:
        if spec.rendezvous.backend != "c10d":
            # A fixed world size cannot change under a running gang: restart at the new
            # size; the runtime resumes from the checkpoint and re-shards the data.
            status.resizes += 1
            plan.events.append(
                Event(
                    "Normal",
                    "Resized",
                    f"resizing from {status.replicas} to {spec.num_nodes} nodes: new attempt",
                )
            )
            _restart(status, current, plan, now, f"resizing to {spec.num_nodes} nodes")
            return _settle(job, spec, status, pods, plan, now, "Resizing")
        added = _resize_elastic(job, spec, status, current, plan)
    # A pod beyond the gang's size (left by an interrupted plan) has no place in it.
    plan.delete_pods([p for p in current if p.rank >= status.replicas])

    outcome = _classify(current, status.replicas, status.phase, added)
    if outcome.kind == "succeeded":
        _final_progress(status, next((p for p in current if p.rank == 0), None), now)
        _finish(status, plan, now, "Succeeded", "Succeeded", "node 0's trainer exited 0")
        _clean_up(spec, current, plan)
        return _complete(job, status, plan, now, reason="Succeeded")
    if outcome.kind == "preempted":
        return _preempted(job, spec, status, pods, current, plan, now, outcome)
    if outcome.kind == "failed":
        return _failed(job, spec, status, pods, current, plan, now, outcome, backoff_base)
    if sample is not None and status.phase == "Running":
        progress.update(status, sample, now, spec.metrics.status_metrics)
    return _active(job, spec, status, current, plan, now, podgroup)


def _resize_elastic(
    job: JobView,
    spec: LightningJobSpec,
    status: LightningJobStatus,
    current: list[PodView],
    plan: Plan,
) -> list[int]:
    """Add or remove pods in place; torchrun's elastic agents re-form the group."""
    plan.events.append(
        Event(
            "Normal", "Resized", f"elastic resize from {status.replicas} to {spec.num_nodes} nodes"
        )
    )
    plan.delete_pods([p for p in current if p.rank >= spec.num_nodes])
    existing = {p.rank for p in current}
    added = [r for r in range(status.replicas, spec.num_nodes) if r not in existing]
    plan.create += [
        build.build_pod(job.name, job.namespace, job.uid, spec, r, status.attempt) for r in added
    ]
    status.replicas = spec.num_nodes
    return added


def _gang(job: JobView, spec: LightningJobSpec, observed: PodGroupView | None, plan: Plan) -> None:
    """Create the PodGroup, or bring its spec (minMember follows numNodes) up to date."""
    desired = build.build_podgroup(job.name, job.namespace, job.uid, spec)
    if desired is None:
        return
    if observed is None:
        plan.create.append(desired)
    elif any(observed.spec.get(k) != v for k, v in desired["spec"].items()):
        plan.update.append(desired)


def _active(
    job: JobView,
    spec: LightningJobSpec,
    status: LightningJobStatus,
    current: list[PodView],
    plan: Plan,
    now: dt.datetime,
    podgroup: PodGroupView | None = None,
) -> Plan:
    """An attempt in progress: fill in pods never created, report progress, enforce the
    pending deadline."""
    members = [p for p in current if p.rank < status.replicas]
    ranks = {p.rank for p in members} | {
        int(m["metadata"]["labels"][build.RANK_LABEL]) for m in plan.create if m["kind"] == "Pod"
    }
    # Before the gang first ran, a missing pod was never created (or the operator stopped
    # mid-plan): create it. Once running, a missing pod is a preemption (see _classify).
    missing = [r for r in range(status.replicas) if r not in ranks]
    if missing and status.phase != "Running":
        plan.create += [
            build.build_pod(job.name, job.namespace, job.uid, spec, r, status.attempt)
            for r in missing
        ]
    ready = sum(p.running for p in members)
    status.ready_nodes = ready
    if ready == status.replicas:
        if status.phase != "Running":
            plan.events.append(Event("Normal", "Running", f"all {ready} nodes are running"))
        status.phase = "Running"
        status.message = _progress(status)
        return _complete(job, status, plan, now, reason="AllNodesRunning")
    status.phase = "Pending"
    unschedulable = next((p for p in members if p.unschedulable), None)
    if unschedulable is not None:
        message = f"node {unschedulable.rank} cannot be scheduled: {unschedulable.unschedulable}"
    elif podgroup is not None and podgroup.unschedulable:
        message = (
            f"the gang of {status.replicas} nodes cannot be scheduled: {podgroup.unschedulable}"
        )
    else:
        status.message = _progress(status)
        return _complete(job, status, plan, now, reason="WaitingForNodes")
    if status.message != message:
        plan.events.append(Event("Warning", "Unschedulable", message))
    status.message = message
    pending = spec.run_policy.pending_deadline_seconds
    started = status.attempt_start_time or now
    if pending and (now - started).total_seconds() > pending:
        _finish(
            status,
            plan,
            now,
            "Failed",
            "PendingDeadlineExceeded",
            f"pods stayed unschedulable longer than pendingDeadlineSeconds={pending}: {message}",
        )
        _clean_up(spec, current, plan)
        return _complete(job, status, plan, now, reason="PendingDeadlineExceeded")
    return _complete(job, status, plan, now, reason="Unschedulable")


def _last_line(message: str) -> str:
    """The last line of a termination message (a traceback's error), for status.

    The runtime's final metrics (JSON) are no error: it writes them when fit returns, so a
    script that fails after fit leaves them, and Kubernetes then reads no log tail. Say
    that fit had finished rather than paste the JSON; the error itself is in the pod's log.
    """
    final = _final_metrics(message)
    if final is not None:
        return f" after fit finished at step {final['step']}"
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return f": {lines[-1][:200]}" if lines else ""


def _final_metrics(message: str) -> dict[str, Any] | None:
    """The runtime's final step and metrics, when the termination message holds them."""
    if not message.startswith("{"):
        return None
    try:
        final = json.loads(message)
    except ValueError:
        return None
    return final if isinstance(final, dict) and isinstance(final.get("step"), int) else None


def _final_progress(status: LightningJobStatus, node0: PodView | None, now: dt.datetime) -> None:
    """Node 0's termination message holds the final step, metrics and checkpoint (JSON)."""
    final = _final_metrics(node0.message) if node0 is not None else None
    if final is None:
        return
    try:
        metrics = {k: float(v) for k, v in (final.get("metrics") or {}).items()}
        checkpoint = final.get("checkpoint") or {}
        when = checkpoint.get("time")
        sample = Sample(
            step=int(final["step"]),
            epoch=final.get("epoch"),
            max_steps=int(final["step"]),
            metrics=metrics,
            checkpoint_uri=checkpoint.get("uri", ""),
            checkpoint_step=checkpoint.get("step"),
            checkpoint_time=_unix(when) if when else None,
        )
    except (ValueError, TypeError, AttributeError, KeyError):
        return
    progress.update(status, sample, now)
    if status.progress is not None:
        status.progress.eta = None


def _unix(rfc3339: str) -> float:
    return dt.datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def _progress(status: LightningJobStatus) -> str:
    return f"attempt {status.attempt}: {status.ready_nodes}/{status.replicas} nodes running"


def _classify(current: list[PodView], replicas: int, phase: str, added: list[int]) -> _Outcome:
    """How the attempt stands. A preemption wins over a failure seen at the same time: the
    other ranks of a preempted gang often crash as their peer vanishes."""
    members = [p for p in current if p.rank < replicas]
    node0 = next((p for p in members if p.rank == 0), None)
    if node0 is not None and node0.exit_code == 0:
        return _Outcome("succeeded")
    for pod in members:
        if pod.disrupted:
            return _Outcome(
                "preempted", f"node {pod.rank} was disrupted ({pod.disrupted})", "disruption"
            )
    for pod in members:
        if pod.reason == "OOMKilled":
            return _Outcome("failed", f"node {pod.rank} was OOMKilled", "oom_killed")
    for pod in members:
        if pod.exit_code is not None and pod.exit_code >= 128:
            return _Outcome(
                "preempted",
                f"node {pod.rank} was stopped by signal {pod.exit_code - 128}",
                "signal",
            )
        if pod.deleting:
            return _Outcome("preempted", f"node {pod.rank}'s pod was deleted", "deleted")
    if phase == "Running":
        gone = sorted(set(range(replicas)) - {p.rank for p in members} - set(added))
        if gone:
            return _Outcome("preempted", f"the pod of node {gone[0]} disappeared", "disappeared")
    for pod in members:
        if pod.exit_code is not None and pod.exit_code != 0:
            return _Outcome(
                "failed",
                f"node {pod.rank} exited with code {pod.exit_code}{_last_line(pod.message)}",
                "exit_code",
            )
        if pod.phase == "Failed":
            return _Outcome("failed", f"node {pod.rank}'s pod failed", "pod_failed")
    return _Outcome("running" if phase == "Running" else "pending")


def _preempted(
    job: JobView,
    spec: LightningJobSpec,
    status: LightningJobStatus,
    pods: list[PodView],
    current: list[PodView],
    plan: Plan,
    now: dt.datetime,
    outcome: _Outcome,
) -> Plan:
    message = outcome.message
    status.preemptions += 1
    limit = spec.run_policy.preemption_limit
    if limit is not None and status.preemptions > limit:
        _finish(
            status,
            plan,
            now,
            "Failed",
            "PreemptionLimitExceeded",
            f"{message}; preemptionLimit={limit} exceeded",
        )
        _clean_up(spec, current, plan)
        return _complete(job, status, plan, now, reason="PreemptionLimitExceeded")
    plan.events.append(
        Event(
            "Warning",
            "Preempted",
            f"attempt {status.attempt}: {message}; restarting",
            outcome.cause,
        )
    )
    _restart(status, current, plan, now, message)
    return _settle(job, spec, status, pods, plan, now, "Preempted")


def _failed(
    job: JobView,
    spec: LightningJobSpec,
    status: LightningJobStatus,
    pods: list[PodView],
    current: list[PodView],
    plan: Plan,
    now: dt.datetime,
    outcome: _Outcome,
    backoff_base: float,
) -> Plan:
    message = outcome.message
    status.restarts += 1
    limit = spec.run_policy.backoff_limit
    if status.restarts > limit:
        _finish(
            status,
            plan,
            now,
            "Failed",
            "BackoffLimitExceeded",
            f"{message}; backoffLimit={limit} exceeded",
        )
        _clean_up(spec, current, plan)  # Running (the default) keeps finished pods' logs
        return _complete(job, status, plan, now, reason="BackoffLimitExceeded")
    delay = backoff_delay(status.restarts, backoff_base)
    plan.events.append(
        Event(
            "Warning",
            "NodeFailed",
            f"attempt {status.attempt}: {message}; restarting in {delay:.0f}s",
            outcome.cause,
        )
    )
    _restart(status, current, plan, now + dt.timedelta(seconds=delay), message)
    return _settle(job, spec, status, pods, plan, now, "NodeFailed")


def _restart(
    status: LightningJobStatus, current: list[PodView], plan: Plan, at: dt.datetime, message: str
) -> None:
    """Tear the gang down; the next attempt starts once it is gone, and not before `at`."""
    plan.create = [m for m in plan.create if m["kind"] != "Pod"]  # e.g. an elastic addition
    plan.delete_pods(current)
    status.phase, status.next_attempt_time, status.message = "Restarting", at, message
    status.ready_nodes = 0


def _settle(
    job: JobView,
    spec: LightningJobSpec,
    status: LightningJobStatus,
    pods: list[PodView],
    plan: Plan,
    now: dt.datetime,
    reason: str,
) -> Plan:
    """After deciding to restart: start the next attempt now if nothing is left to wait for."""
    if not pods and status.next_attempt_time is not None and status.next_attempt_time <= now:
        return _next_attempt(job, spec, status, pods, plan, now)
    return _complete(job, status, plan, now, reason=reason)


def _next_attempt(
    job: JobView,
    spec: LightningJobSpec,
    status: LightningJobStatus,
    pods: list[PodView],
    plan: Plan,
    now: dt.datetime,
) -> Plan:
    """Between attempts: wait for the old gang to go and for the back-off, then start."""
    plan.delete_pods(pods)
    if pods:
        status.message = status.message or "waiting for the previous attempt's pods to stop"
        return _complete(job, status, plan, now, reason="Restarting")
    if status.next_attempt_time is not None and now < status.next_attempt_time:
        return _complete(job, status, plan, now, reason="BackingOff")
    status.attempt += 1
    status.replicas = spec.num_nodes
    status.phase, status.ready_nodes = "Pending", 0
    status.attempt_start_time, status.next_attempt_time = now, None
    status.start_time = status.start_time or now
    status.message = _progress(status)
    plan.create += [
        build.build_pod(job.name, job.namespace, job.uid, spec, rank, status.attempt)
        for rank in range(spec.num_nodes)
    ]
    plan.events.append(
        Event(
            "Normal",
            "AttemptStarted",
            f"attempt {status.attempt} started on {spec.num_nodes} nodes",
        )
    )
    return _complete(job, status, plan, now, reason="AttemptStarted")


def _suspend(
    job: JobView,
    spec: LightningJobSpec,
    status: LightningJobStatus,
    pods: list[PodView],
    plan: Plan,
    now: dt.datetime,
) -> Plan:
    """Graceful stop: pods get SIGTERM (the runtime checkpoints), then the job waits."""
    plan.delete_pods(pods)
    if status.phase != "Suspended":
        plan.events.append(Event("Normal", "Suspended", "suspended: stopping all nodes"))
    status.phase, status.ready_nodes = "Suspended", 0
    status.message = (
        "suspended" if not pods else f"suspending: waiting for {len(pods)} pods to stop"
    )
    return _complete(job, status, plan, now, reason="Suspended")


def _finish(
    status: LightningJobStatus, plan: Plan, now: dt.datetime, phase: str, reason: str, message: str
) -> None:
    status.phase, status.message = phase, message  # type: ignore[assignment]
    status.completion_time, status.next_attempt_time = now, None
    status.ready_nodes = 0
    kind = "Normal" if phase == "Succeeded" else "Warning"
    plan.events.append(Event(kind, reason, message))


def _clean_up(spec: LightningJobSpec, pods: list[PodView], plan: Plan) -> None:
    """Delete pods of a finished job as cleanPodPolicy says: All, Running (the default:
    stop what still runs, keep finished pods and so their logs), or None."""
    policy = spec.run_policy.clean_pod_policy
    if policy == "None":
        return
    plan.delete_pods(
        [
            pod
            for pod in pods
            if policy == "All"
            or (pod.exit_code is None and pod.phase not in ("Succeeded", "Failed"))
        ]
    )


def _expire(
    spec: LightningJobSpec, status: LightningJobStatus, plan: Plan, now: dt.datetime
) -> None:
    ttl = spec.run_policy.ttl_seconds_after_finished
    if ttl is None or status.completion_time is None:
        return
    left = (status.completion_time + dt.timedelta(seconds=ttl) - now).total_seconds()
    if left <= 0:
        plan.delete_job = True
    else:
        plan.requeue_after = left


def _complete(
    job: JobView, status: LightningJobStatus, plan: Plan, now: dt.datetime, reason: str = ""
) -> Plan:
    """Finish the status (conditions, node counts) and attach it if anything changed."""
    spec = job.spec
    desired = spec.num_nodes if spec is not None else status.replicas
    status.nodes = f"{status.ready_nodes}/{desired}"
    plan.reason = reason or status.phase
    set_conditions(status, reason or status.phase, now, job.generation)
    if spec is not None and plan.requeue_after is None:
        plan.requeue_after = _next_due(spec, status, now)
    wire = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    if wire != job.raw_status:
        plan.status = wire
    return plan


def _next_due(spec: LightningJobSpec, status: LightningJobStatus, now: dt.datetime) -> float | None:
    """Seconds until a decision that only time can trigger."""
    moments = []
    if status.phase == "Restarting" and status.next_attempt_time is not None:
        moments.append(status.next_attempt_time)
    deadline = spec.run_policy.active_deadline_seconds
    if deadline and status.start_time and status.phase not in TERMINAL:
        moments.append(status.start_time + dt.timedelta(seconds=deadline))
    pending = spec.run_policy.pending_deadline_seconds
    if pending and status.phase == "Pending" and status.attempt_start_time:
        moments.append(status.attempt_start_time + dt.timedelta(seconds=pending))
    future = [(m - now).total_seconds() for m in moments]
    return max(0.0, min(future)) if future else None
