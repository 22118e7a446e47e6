"""Attempts and back-off: how an attempt ends, and when the next one starts.

One attempt is one gang of pods `<job>-node-<rank>` labelled with the attempt number. A
failure counts against backoffLimit and waits out an exponential back-off; a preemption
counts separately and restarts at once; a resize and a suspend count as neither. The
next attempt starts once every pod of the last one is gone, and not before the back-off.
"""

from __future__ import annotations

import datetime as dt

from lightjob.controller.observe import PodView
from lightjob.controller.plan import Context, Plan, clear_refusal, conclude, end_job
from lightjob.controller.policy import Outcome

# Kubernetes Job's back-off: 10 s, doubled per failure, at most 6 minutes.
BACKOFF_CAP_SECONDS = 360.0


def backoff_delay(restarts: int, base: float) -> float:
    return float(min(base * 2 ** max(0, restarts - 1), BACKOFF_CAP_SECONDS))


def progress_message(ctx: Context) -> str:
    status = ctx.status
    return f"attempt {status.attempt}: {status.ready_nodes}/{status.replicas} nodes running"


def after_preemption(ctx: Context, outcome: Outcome) -> Plan:
    """Count a preemption and restart at once; past preemptionLimit, the job fails."""
    status = ctx.status
    status.preemptions += 1
    limit = ctx.spec.run_policy.preemption_limit
    if limit is not None and status.preemptions > limit:
        message = f"{outcome.message}; preemptionLimit={limit} exceeded"
        end_job(ctx, "Failed", "PreemptionLimitExceeded", message)
        clean_up(ctx, ctx.current)
        return conclude(ctx, "PreemptionLimitExceeded")
    ctx.event(
        "Warning",
        "Preempted",
        f"attempt {status.attempt}: {outcome.message}; restarting",
        outcome.cause,
    )
    tear_down(ctx, ctx.now, outcome.message)
    return restart_when_clear(ctx, "Preempted")


def after_failure(ctx: Context, outcome: Outcome) -> Plan:
    """Count a failure and restart after the back-off; past backoffLimit, the job fails."""
    status = ctx.status
    status.restarts += 1
    limit = ctx.spec.run_policy.backoff_limit
    if status.restarts > limit:
        end_job(
            ctx,
            "Failed",
            "BackoffLimitExceeded",
            f"{outcome.message}; backoffLimit={limit} exceeded",
        )
        clean_up(ctx, ctx.current)  # Running (the default) keeps finished pods' logs
        return conclude(ctx, "BackoffLimitExceeded")
    delay = backoff_delay(status.restarts, ctx.settings.backoff_base)
    ctx.event(
        "Warning",
        "NodeFailed",
        f"attempt {status.attempt}: {outcome.message}; restarting in {delay:.0f}s",
        outcome.cause,
    )
    tear_down(ctx, ctx.now + dt.timedelta(seconds=delay), outcome.message)
    return restart_when_clear(ctx, "NodeFailed")


def tear_down(ctx: Context, at: dt.datetime, message: str) -> None:
    """Tear the gang down; the next attempt starts once it is gone, and not before `at`."""
    plan, status = ctx.plan, ctx.status
    plan.create = [m for m in plan.create if m["kind"] != "Pod"]  # e.g. an elastic addition
    plan.delete_pods(ctx.current)
    status.phase, status.next_attempt_time, status.message = "Restarting", at, message
    status.ready_nodes = 0
    clear_refusal(ctx, "AttemptEnded")


def restart_when_clear(ctx: Context, reason: str) -> Plan:
    """After deciding to restart: start the next attempt now if nothing is left to wait for."""
    status = ctx.status
    if (
        not ctx.pods
        and status.next_attempt_time is not None
        and status.next_attempt_time <= ctx.now
    ):
        return next_attempt(ctx)
    return conclude(ctx, reason)


def next_attempt(ctx: Context) -> Plan:
    """Between attempts: wait for the old gang to go and for the back-off, then start."""
    status = ctx.status
    ctx.plan.delete_pods(ctx.pods)
    if ctx.pods:
        status.message = status.message or "waiting for the previous attempt's pods to stop"
        return conclude(ctx, "Restarting")
    if status.next_attempt_time is not None and ctx.now < status.next_attempt_time:
        return conclude(ctx, "BackingOff")
    status.attempt += 1
    status.replicas = ctx.num_nodes
    status.phase, status.ready_nodes = "Pending", 0
    status.attempt_start_time, status.next_attempt_time = ctx.now, None
    status.start_time = status.start_time or ctx.now
    status.message = progress_message(ctx)
    ctx.plan.create += [ctx.build_pod(rank) for rank in range(status.replicas)]
    ctx.event(
        "Normal", "AttemptStarted", f"attempt {status.attempt} started on {status.replicas} nodes"
    )
    return conclude(ctx, "AttemptStarted")


def suspend(ctx: Context) -> Plan:
    """Graceful stop: pods get SIGTERM (the runtime checkpoints), then the job waits."""
    status, pods = ctx.status, ctx.pods
    ctx.plan.delete_pods(pods)
    if status.phase != "Suspended":
        ctx.event("Normal", "Suspended", "suspended: stopping all nodes")
        status.suspend_time = ctx.now
    status.phase, status.ready_nodes, status.resized_from = "Suspended", 0, None
    clear_refusal(ctx, "Suspended")
    status.message = (
        "suspended" if not pods else f"suspending: waiting for {len(pods)} pods to stop"
    )
    return conclude(ctx, "Suspended")


def resume(ctx: Context) -> None:
    """Leave Suspended: the next attempt starts from the checkpoint. Time suspended does
    not count against activeDeadlineSeconds, and a back-off that was running when the job
    was suspended still has what was left of it to run."""
    status, now = ctx.status, ctx.now
    since = status.suspend_time or now
    left = 0.0
    if status.next_attempt_time is not None:
        left = max(0.0, (status.next_attempt_time - since).total_seconds())
    if status.start_time is not None:
        status.suspended_seconds += max(0, int((now - since).total_seconds()))
    status.phase, status.suspend_time = "Restarting", None
    status.next_attempt_time = now + dt.timedelta(seconds=left)
    waits = f" after the {left:.0f}s left of its back-off" if left else ""
    ctx.event("Normal", "Resumed", f"resumed; starting a new attempt{waits}")


def active_seconds(ctx: Context) -> float:
    """How long the job has run, its suspensions left out (for activeDeadlineSeconds)."""
    status = ctx.status
    if status.start_time is None:
        return 0.0
    end = status.suspend_time or ctx.now
    return (end - status.start_time).total_seconds() - status.suspended_seconds


def clean_up(ctx: Context, pods: list[PodView]) -> None:
    """Delete pods of a finished job as cleanPodPolicy says: All, Running (the default:
    stop what still runs, keep finished pods and so their logs), or None."""
    policy = ctx.spec.run_policy.clean_pod_policy
    if policy == "None":
        return
    ctx.plan.delete_pods(
        [
            pod
            for pod in pods
            if policy == "All"
            or (pod.exit_code is None and pod.phase not in ("Succeeded", "Failed"))
        ]
    )


def expire(ctx: Context) -> None:
    """ttlSecondsAfterFinished: delete the finished job, or look again when it is due."""
    ttl = ctx.spec.run_policy.ttl_seconds_after_finished
    finished = ctx.status.completion_time
    if ttl is None or finished is None:
        return
    left = (finished + dt.timedelta(seconds=ttl) - ctx.now).total_seconds()
    if left <= 0:
        ctx.plan.delete_job = True
    else:
        ctx.plan.look_again(left)
