"""The plan: what one reconcile decided, and the context it was decided in.

A `Context` carries what every decision reads (the job, its pods, the time) and the
`Plan` they add to; `conclude` turns the status being decided into the plan's status
write, its conditions, and when to look again.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from lightjob.api.models import STUCK_SECONDS, LightningJobSpec, LightningJobStatus
from lightjob.controller import build
from lightjob.controller.observe import JobView, PodGroupView, PodView
from lightjob.controller.status import set_condition, set_conditions

TERMINAL = ("Succeeded", "Failed")


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
    force_delete: list[str] = field(default_factory=list)  # pod names, gracePeriodSeconds 0
    status: dict[str, Any] | None = None  # the whole new status, when it changed
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None  # seconds until a time-based decision is due
    delete_job: bool = False  # ttlSecondsAfterFinished has passed
    reason: str = ""  # why the job stands where it does (the condition's reason), for logs

    def delete_pods(self, pods: list[PodView]) -> None:
        """Delete these pods, except those already going or already in the plan."""
        self.delete += [p.name for p in pods if not p.deleting and p.name not in self.delete]

    def look_again(self, seconds: float | None) -> None:
        """Ask to be reconciled again in `seconds` (the earliest request wins)."""
        if seconds is not None:
            self.requeue_after = (
                seconds if self.requeue_after is None else min(self.requeue_after, seconds)
            )

    @property
    def is_empty(self) -> bool:
        return not (
            self.create
            or self.update
            or self.delete
            or self.force_delete
            or self.status
            or self.events
            or self.delete_job
        )


@dataclass(frozen=True, slots=True)
class Settings:
    """How the operator (or `lightjob run`) tunes the decisions."""

    backoff_base: float = 10.0  # first back-off after a failure (doubles per failure)
    # A pod still Terminating this long after its grace period ended is force-deleted: its
    # node is gone or unreachable, and nothing else would ever remove it.
    force_delete_after: float = 60.0


@dataclass(slots=True)
class Context:
    """What one reconcile decides from, and the plan it builds. `status` starts as a copy
    of the job's and becomes the status to write."""

    job: JobView
    spec: LightningJobSpec
    status: LightningJobStatus
    pods: list[PodView]  # every pod of the job, of any attempt
    now: dt.datetime
    settings: Settings
    service_exists: bool = True
    podgroup: PodGroupView | None = None  # the job's PodGroup, with gang scheduling
    plan: Plan = field(default_factory=Plan)

    @property
    def current(self) -> list[PodView]:
        """The pods of the attempt the status names."""
        return [p for p in self.pods if p.attempt == self.status.attempt]

    @property
    def members(self) -> list[PodView]:
        """The current attempt's pods that belong to its gang (rank < replicas)."""
        return [p for p in self.current if p.rank < self.status.replicas]

    def event(self, type: str, reason: str, message: str, cause: str = "") -> None:
        self.plan.events.append(Event(type, reason, message, cause))

    @property
    def num_nodes(self) -> int:
        """The size to run at: spec.numNodes, unless a scale-up to it could not be placed
        and was rolled back (then the size kept, until numNodes changes again)."""
        rejected = self.status.rejected_num_nodes
        if rejected is not None and rejected == self.spec.num_nodes:
            return self.status.replicas
        return self.spec.num_nodes

    def build_pod(self, rank: int) -> build.Manifest:
        """Rank `rank`'s pod of the current attempt, for a gang of `num_nodes`."""
        spec = self.spec
        if self.num_nodes != spec.num_nodes:
            spec = spec.model_copy(update={"num_nodes": self.num_nodes})
        job = self.job
        return build.build_pod(job.name, job.namespace, job.uid, spec, rank, self.status.attempt)


def end_job(ctx: Context, phase: str, reason: str, message: str) -> None:
    """The job is over: Succeeded or Failed, with an event that says why."""
    status = ctx.status
    status.phase, status.message = phase, message  # type: ignore[assignment]
    status.completion_time, status.next_attempt_time = ctx.now, None
    status.ready_nodes, status.resized_from = 0, None
    clear_refusal(ctx, "JobFinished")
    ctx.event("Normal" if phase == "Succeeded" else "Warning", reason, message)


REFUSED = "PodCreationRefused"  # the condition while the API refuses one of the job's objects


def clear_refusal(ctx: Context, reason: str, message: str = "") -> None:
    """The refusal is over: the object exists now, or the attempt ended."""
    if ctx.status.refusal is not None:
        ctx.status.refusal = None
        set_condition(ctx.status, REFUSED, False, reason, message, ctx.now, ctx.job.generation)


def conclude(ctx: Context, reason: str = "") -> Plan:
    """Finish the status (conditions, node counts, when to look again) and attach it to
    the plan if anything changed."""
    status, plan = ctx.status, ctx.plan
    # A pod name still taken (say by an old attempt's pod that is shutting down) is never
    # created twice: the pod is created by a later reconcile, once the name is free.
    taken = {p.name for p in ctx.pods}
    plan.create = [
        m for m in plan.create if m["kind"] != "Pod" or m["metadata"]["name"] not in taken
    ]
    refusal = status.refusal
    if plan.create and refusal is not None and ctx.now < refusal.retry_time:
        plan.create = []  # the API refused the last try: wait out the back-off
        plan.look_again((refusal.retry_time - ctx.now).total_seconds())
    status.nodes = f"{status.ready_nodes}/{ctx.num_nodes}"
    plan.reason = reason or status.phase
    set_conditions(status, reason or status.phase, ctx.now, ctx.job.generation)
    plan.look_again(next_due(ctx))
    wire = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    if wire != ctx.job.raw_status:
        plan.status = wire
    return plan


def give_up_time(ctx: Context, since: dt.datetime, unschedulable: bool = False) -> dt.datetime:
    """When a gang stuck since `since` gives up: after pendingDeadlineSeconds, or (for what
    waits on a person, not on capacity: refusals, containers that cannot start) after
    STUCK_SECONDS when it is unset. Unschedulable pods without a deadline wait forever."""
    pending = ctx.spec.run_policy.pending_deadline_seconds
    if pending is None and unschedulable:
        return dt.datetime.max.replace(tzinfo=dt.timezone.utc)
    return since + dt.timedelta(seconds=pending if pending is not None else STUCK_SECONDS)


def force_delete_time(ctx: Context, pod: PodView) -> dt.datetime | None:
    """When a pod that is being deleted is given up on and force-deleted."""
    if pod.deletion_time is None:
        return None
    return pod.deletion_time + dt.timedelta(seconds=ctx.settings.force_delete_after)


def next_due(ctx: Context) -> float | None:
    """Seconds until a decision that only time can trigger."""
    spec, status, now = ctx.spec, ctx.status, ctx.now
    moments = [
        when
        for pod in ctx.pods
        if pod.name not in ctx.plan.force_delete
        and (when := force_delete_time(ctx, pod)) is not None
    ]
    if status.phase == "Restarting" and status.next_attempt_time is not None:
        moments.append(status.next_attempt_time)
    deadline = spec.run_policy.active_deadline_seconds
    if deadline and status.start_time and status.phase not in (*TERMINAL, "Suspended"):
        moments.append(
            status.start_time + dt.timedelta(seconds=deadline + status.suspended_seconds)
        )
    if status.refusal is not None:
        moments += [status.refusal.retry_time, give_up_time(ctx, status.refusal.since)]
    # A moment already past was decided on in this reconcile (what is left waits for pods,
    # not for time), so only those ahead count.
    future = [(m - now).total_seconds() for m in moments if m > now]
    return min(future) if future else None
