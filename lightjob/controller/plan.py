"""The plan: what one reconcile decided, and the context it was decided in.

A `Context` carries what every decision reads (the job, its pods, the time) and the
`Plan` they add to; `conclude` turns the status being decided into the plan's status
write, its conditions, and when to look again.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from lightjob.api.models import LightningJobSpec, LightningJobStatus
from lightjob.controller import build
from lightjob.controller.observe import JobView, PodView
from lightjob.controller.status import set_conditions

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


def end_job(ctx: Context, phase: str, reason: str, message: str) -> None:
    """The job is over: Succeeded or Failed, with an event that says why."""
    status = ctx.status
    status.phase, status.message = phase, message  # type: ignore[assignment]
    status.completion_time, status.next_attempt_time = ctx.now, None
    status.ready_nodes = 0
    ctx.event("Normal" if phase == "Succeeded" else "Warning", reason, message)


def conclude(ctx: Context, reason: str = "") -> Plan:
    """Finish the status (conditions, node counts, when to look again) and attach it to
    the plan if anything changed."""
    status, plan = ctx.status, ctx.plan
    status.nodes = f"{status.ready_nodes}/{ctx.spec.num_nodes}"
    plan.reason = reason or status.phase
    set_conditions(status, reason or status.phase, ctx.now, ctx.job.generation)
    plan.look_again(next_due(ctx))
    wire = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    if wire != ctx.job.raw_status:
        plan.status = wire
    return plan


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
    if deadline and status.start_time and status.phase not in TERMINAL:
        moments.append(status.start_time + dt.timedelta(seconds=deadline))
    pending = spec.run_policy.pending_deadline_seconds
    if pending and status.phase == "Pending" and status.attempt_start_time:
        moments.append(status.attempt_start_time + dt.timedelta(seconds=pending))
    # A moment already past was decided on in this reconcile (what is left waits for pods,
    # not for time), so only those ahead count.
    future = [(m - now).total_seconds() for m in moments if m > now]
    return min(future) if future else None
