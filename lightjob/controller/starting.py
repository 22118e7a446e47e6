"""A gang that cannot start, and how long it may try.

A pod of the gang that is not running yet may be blocked: the scheduler cannot place it,
the API refused to create it (a ResourceQuota, Pod Security admission, a policy or a
webhook), or its container cannot start (an image that cannot be pulled, a missing
Secret). Each block is timed from when it began for that pod (its creation, or the first
refusal), so a pod added to a job that has run for hours is judged on its own time.

Past the deadline, a scale-up goes back to the size it grew from (a running job is never
killed by the nodes it could not get); anything else fails the job and deletes its pods,
which would otherwise hold resources for a gang that never forms.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from lightjob.api.models import STUCK_SECONDS, Refusal
from lightjob.controller.attempts import backoff_delay, restart_when_clear, tear_down
from lightjob.controller.observe import JobView, Refused
from lightjob.controller.plan import (
    REFUSED,
    Context,
    Plan,
    Settings,
    clear_refusal,
    conclude,
    end_job,
    give_up_time,
)
from lightjob.controller.status import set_condition

# The kubelet's reasons for a container that waits on something only a person can fix.
CANNOT_START = {
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
}
CANNOT_START_CONDITION = "ContainerCannotStart"
# Retries of a refused create back off like failed attempts, but at most this long apart.
REFUSAL_RETRY_CAP_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Block:
    what: str  # "refused", "unschedulable" or "container"
    reason: str  # the API's reason, Unschedulable, or the kubelet's (ImagePullBackOff, ...)
    message: str  # for status and events
    due: dt.datetime  # when it gives up


def blocks(ctx: Context) -> list[Block]:
    """What keeps the gang's pods from running, earliest deadline first."""
    status, start = ctx.status, ctx.status.attempt_start_time or ctx.now
    found = []
    if status.refusal is not None:
        refusal = status.refusal
        found.append(
            Block("refused", refusal.reason, describe(refusal), give_up_time(ctx, refusal.since))
        )
    for pod in ctx.members:
        if pod.running or pod.exit_code is not None:
            continue
        since = pod.created or start
        if pod.unschedulable:
            message = f"node {pod.rank} cannot be scheduled: {pod.unschedulable}"
            block = Block("unschedulable", "Unschedulable", message, give_up_time(ctx, since, True))
            found.append(block)
        elif pod.waiting in CANNOT_START:
            detail = f"{pod.waiting}: {pod.waiting_message}".rstrip(": ")
            message = f"node {pod.rank} cannot start its container: {detail}"
            found.append(Block("container", pod.waiting, message, give_up_time(ctx, since)))
    group = ctx.podgroup
    if (
        group is not None
        and group.unschedulable
        and not any(b.what == "unschedulable" for b in found)
    ):
        since = min((p.created or start for p in ctx.members if not p.running), default=start)
        message = f"the gang of {status.replicas} nodes cannot be scheduled: {group.unschedulable}"
        found.append(
            Block("unschedulable", "Unschedulable", message, give_up_time(ctx, since, True))
        )
    return sorted(found, key=lambda b: b.due)


def while_blocked(ctx: Context, found: list[Block]) -> Plan:
    """Say why the gang waits (status, an event when the reason changes, a condition for
    containers that cannot start), and give up when the first deadline passes."""
    status, first = ctx.status, found[0]
    containers = [b for b in found if b.what == "container"]
    set_condition(
        status,
        CANNOT_START_CONDITION,
        bool(containers),
        containers[0].reason if containers else "Started",
        containers[0].message if containers else "",
        ctx.now,
        ctx.job.generation,
    )
    if ctx.now >= first.due:
        return _give_up(ctx, first)
    if status.message != first.message and first.what != "refused":  # refusals have theirs
        reason = "Unschedulable" if first.what == "unschedulable" else CANNOT_START_CONDITION
        ctx.event("Warning", reason, first.message)
    status.message = first.message
    if first.due.year < dt.MAXYEAR:
        ctx.plan.look_again((first.due - ctx.now).total_seconds())
    return conclude(ctx, "PodCreationRefused" if first.what == "refused" else "Unschedulable")


def _give_up(ctx: Context, block: Block) -> Plan:
    pending = ctx.spec.run_policy.pending_deadline_seconds
    limit = (
        f"pendingDeadlineSeconds={pending}"
        if pending is not None
        else f"{STUCK_SECONDS}s (the default while pendingDeadlineSeconds is unset)"
    )
    if ctx.status.resized_from is not None:
        return _roll_back(ctx, block, limit)
    reason = "PodCreationRefused" if block.what == "refused" else "PendingDeadlineExceeded"
    end_job(ctx, "Failed", reason, f"gave up after {limit}: {block.message}")
    ctx.plan.create = [m for m in ctx.plan.create if m["kind"] != "Pod"]
    ctx.plan.delete_pods(ctx.current)
    return conclude(ctx, reason)


def _roll_back(ctx: Context, block: Block, limit: str) -> Plan:
    """A scale-up that cannot be placed: back to the size it grew from, which ran."""
    spec, status = ctx.spec, ctx.status
    previous = status.resized_from or status.replicas
    message = (
        f"numNodes={spec.num_nodes} could not be placed within {limit}: {block.message}; "
        f"back to {previous} nodes until numNodes changes"
    )
    ctx.event("Warning", "ScaleUpRolledBack", message)
    status.rejected_num_nodes, status.resized_from = spec.num_nodes, None
    clear_refusal(ctx, "RolledBack")
    set_condition(
        status, CANNOT_START_CONDITION, False, "RolledBack", "", ctx.now, ctx.job.generation
    )
    if spec.rendezvous.backend == "c10d":  # the elastic agents carry on without the new pods
        ctx.plan.delete_pods([p for p in ctx.current if p.rank >= previous])
        ctx.plan.create = [m for m in ctx.plan.create if m["kind"] != "Pod"]
        status.replicas = previous
        status.message = message
        return conclude(ctx, "ScaleUpRolledBack")
    status.replicas = previous  # the next attempt runs at this size
    status.resizes += 1
    tear_down(ctx, ctx.now, message)
    return restart_when_clear(ctx, "ScaleUpRolledBack")


def describe(refusal: Refusal) -> str:
    code = f"{refusal.code} {refusal.reason}".strip()
    return f"the API refused {refusal.kind.lower()} {refusal.name} ({code}): {refusal.message}"


def record_refusal(job: JobView, refused: Refused, now: dt.datetime, settings: Settings) -> Plan:
    """The API refused an object the last plan created. Record it in status (a
    PodCreationRefused condition with the API's message) with a FailedCreate warning, and
    retry after a back-off; `reconcile` gives up at the pending deadline. `job` holds the
    status the last plan wrote."""
    assert job.spec is not None
    ctx = Context(job, job.spec, job.status.model_copy(deep=True), [], now, settings)
    status = ctx.status
    old = status.refusal
    retries = old.retries + 1 if old is not None else 1
    delay = min(backoff_delay(retries, settings.backoff_base), REFUSAL_RETRY_CAP_SECONDS)
    status.refusal = Refusal(
        kind=refused.kind,
        name=refused.name,
        code=refused.code,
        reason=refused.reason,
        message=refused.message,
        since=old.since if old is not None else now,
        retries=retries,
        retry_time=now + dt.timedelta(seconds=delay),
    )
    text = describe(status.refusal)
    status.message = text
    set_condition(
        status, REFUSED, True, refused.reason or str(refused.code), text, now, job.generation
    )
    ctx.event(
        "Warning", "FailedCreate", f"attempt {status.attempt}: {text}; retrying in {delay:.0f}s"
    )
    return conclude(ctx, "PodCreationRefused")
