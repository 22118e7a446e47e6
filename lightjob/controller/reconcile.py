"""The decisions: (job, observed pods, now) -> Plan. No I/O, no clock, no client.

Level-based: the plan depends only on what exists now and on the job's status, so it is
safe to compute from any trigger, again and again, and after an operator restart in the
middle of applying a plan. Applying a plan and planning again yields nothing to do.

The parts: observe.py reads pods into facts, policy.py judges an attempt from them (the
failure policy), attempts.py ends attempts and starts the next one (back-off included),
plan.py holds the plan and the context it is built in. This module decides which of
them applies, and runs an attempt while it lasts.
"""

from __future__ import annotations

import datetime as dt

from lightjob.api.models import LightningJobStatus
from lightjob.controller import build, progress
from lightjob.controller.attempts import (
    active_seconds,
    after_failure,
    after_preemption,
    clean_up,
    expire,
    next_attempt,
    progress_message,
    restart_when_clear,
    resume,
    suspend,
    tear_down,
)
from lightjob.controller.observe import JobView, PodGroupView, PodView
from lightjob.controller.plan import (
    TERMINAL,
    Context,
    Event,
    Plan,
    Settings,
    clear_refusal,
    conclude,
    end_job,
    force_delete_time,
)
from lightjob.controller.policy import final_metrics, judge
from lightjob.controller.progress import Sample
from lightjob.controller.starting import blocks, while_blocked
from lightjob.controller.status import set_condition

DEFAULT_SETTINGS = Settings()


def reconcile(
    job: JobView,
    pods: list[PodView],
    service_exists: bool,
    now: dt.datetime,
    *,
    settings: Settings = DEFAULT_SETTINGS,
    sample: Sample | None = None,
    podgroup: PodGroupView | None = None,
) -> Plan:
    """The plan for one job. `sample` is node 0's metrics, when the caller read them;
    `podgroup` the job's PodGroup, when it uses gang scheduling and one exists."""
    if job.deleting:
        return Plan()  # owner references let the garbage collector take the pods
    if job.spec is None:
        return _unreadable(job, now)
    status = job.status.model_copy(deep=True)
    status.observed_generation = job.generation
    status.selector = build.selector(job.name)
    ctx = Context(job, job.spec, status, pods, now, settings, service_exists, podgroup)
    return _decide(ctx, sample)


INVALID_SPEC = "InvalidSpec"  # the condition while this operator cannot read the stored spec
IGNORED_FIELDS = "UnknownFieldsIgnored"  # the condition while it reads it without some fields


def _unreadable(job: JobView, now: dt.datetime) -> Plan:
    """A stored spec this version rejects (a rule added since it was stored, or an older
    operator after a rollback) never kills the job: warn once, say why in a condition, and
    change nothing else until the spec is fixed. Its pods run on as they are."""
    plan = Plan(reason=INVALID_SPEC)
    status = job.status.model_copy(deep=True)
    message = f"this operator cannot read the spec, so it leaves the job as it is: {job.spec_error}"
    old = next((c for c in status.conditions if c.type == INVALID_SPEC), None)
    if old is None or old.status != "True" or old.message != message:
        plan.events.append(Event("Warning", INVALID_SPEC, message))
    set_condition(status, INVALID_SPEC, True, "Rejected", message, now, job.generation)
    wire = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    if wire != job.raw_status:
        plan.status = wire
    return plan


def _note_spec_read(ctx: Context) -> None:
    """The spec is readable: an InvalidSpec condition ends, and fields this version does
    not know (written under a newer CRD) are named once, in a warning and a condition."""
    job, status = ctx.job, ctx.status
    set_condition(status, INVALID_SPEC, False, "Readable", "", ctx.now, job.generation)
    message = ""
    if job.ignored:
        message = f"ignored, unknown to this operator version: {', '.join(job.ignored)}"
        old = next((c for c in status.conditions if c.type == IGNORED_FIELDS), None)
        if old is None or old.status != "True" or old.message != message:
            ctx.event("Warning", IGNORED_FIELDS, message)
    reason = "NewerSpec" if job.ignored else "AllKnown"
    set_condition(
        status, IGNORED_FIELDS, bool(job.ignored), reason, message, ctx.now, job.generation
    )


def _decide(ctx: Context, sample: Sample | None) -> Plan:
    job, spec, status, plan = ctx.job, ctx.spec, ctx.status, ctx.plan
    _note_spec_read(ctx)
    _force_delete_stuck(ctx)
    _note_created(ctx)
    if status.phase in TERMINAL:
        clean_up(ctx, ctx.pods)
        expire(ctx)
        return conclude(ctx)

    if not ctx.service_exists:
        plan.create.append(build.build_service(job.name, job.namespace, job.uid, spec))
    _gang(ctx)  # before any pod, which the scheduler would hold
    # Pods of a newer attempt than the status says: the operator stopped after creating
    # them and before writing status. Adopt that attempt rather than start another.
    attempt = max([status.attempt, *(p.attempt for p in ctx.pods)])
    if attempt != status.attempt:
        status.attempt, status.phase, status.replicas = attempt, "Pending", ctx.num_nodes
        status.attempt_start_time = status.attempt_start_time or ctx.now
    plan.delete_pods([p for p in ctx.pods if p.attempt != attempt])

    if spec.run_policy.suspend:
        return suspend(ctx)
    if status.phase == "Suspended":
        resume(ctx)

    deadline = spec.run_policy.active_deadline_seconds
    if deadline and status.start_time and active_seconds(ctx) >= deadline:
        end_job(
            ctx,
            "Failed",
            "DeadlineExceeded",
            f"the job ran longer than activeDeadlineSeconds={deadline}"
            + (
                f" (not counting {status.suspended_seconds}s suspended)"
                if status.suspended_seconds
                else ""
            ),
        )
        clean_up(ctx, ctx.current)
        return conclude(ctx, "DeadlineExceeded")

    if status.phase == "Restarting" or attempt == 0:
        return next_attempt(ctx)
    return _attempt_in_progress(ctx, sample)


def _attempt_in_progress(ctx: Context, sample: Sample | None) -> Plan:
    """Resize it if numNodes changed, judge it from its pods (policy.py), and end it or
    carry it on."""
    spec, status, plan = ctx.spec, ctx.status, ctx.plan
    added: list[int] = []
    if ctx.num_nodes != status.replicas:
        if spec.rendezvous.backend != "c10d":
            # A fixed world size cannot change under a running gang: restart at the new
            # size; the runtime resumes from the checkpoint and re-shards the data.
            _grow_from(ctx)
            status.resizes += 1
            ctx.event(
                "Normal",
                "Resized",
                f"resizing from {status.replicas} to {ctx.num_nodes} nodes: new attempt",
            )
            tear_down(ctx, ctx.now, f"resizing to {ctx.num_nodes} nodes")
            return restart_when_clear(ctx, "Resizing")
        added = _resize_elastic(ctx)
    # A pod beyond the gang's size (left by an interrupted plan) has no place in it.
    plan.delete_pods([p for p in ctx.current if p.rank >= status.replicas])

    # Once the gang ran, each of its pods must exist: one that is gone was taken away. (The
    # new pods of a scale-up may not exist yet, or have been refused.)
    ran = status.resized_from if status.resized_from is not None else status.replicas
    expected = set(range(ran)) - set(added) if status.phase == "Running" else set()
    outcome = judge(ctx.members, status.phase, expected)
    if outcome.kind == "succeeded":
        _final_progress(status, next((p for p in ctx.current if p.rank == 0), None), ctx.now)
        end_job(ctx, "Succeeded", "Succeeded", outcome.message)
        clean_up(ctx, ctx.current)
        return conclude(ctx, "Succeeded")
    if outcome.kind == "preempted":
        return after_preemption(ctx, outcome)
    if outcome.kind == "failed":
        return after_failure(ctx, outcome)
    if sample is not None and status.phase == "Running":
        progress.update(status, sample, ctx.now, spec.metrics.status_metrics)
    return _active(ctx)


def _note_created(ctx: Context) -> None:
    """A refused object that exists now ends the refusal; a numNodes the user changed
    since a scale-up to it was rolled back is tried afresh."""
    status = ctx.status
    refusal = status.refusal
    if refusal is not None:
        exists = {
            "Pod": any(p.name == refusal.name for p in ctx.pods),
            "Service": ctx.service_exists,
            "PodGroup": ctx.podgroup is not None,
        }.get(refusal.kind, False)
        if exists:
            clear_refusal(ctx, "Created", f"{refusal.kind.lower()} {refusal.name} was created")
    if status.rejected_num_nodes not in (None, ctx.spec.num_nodes):
        status.rejected_num_nodes = None


def _grow_from(ctx: Context) -> None:
    """Remember the size a running gang grows from, so that a scale-up that cannot be
    placed can go back to it."""
    status = ctx.status
    if status.phase != "Running":
        return
    base = status.resized_from if status.resized_from is not None else status.replicas
    status.resized_from = base if ctx.num_nodes > base else None


def _force_delete_stuck(ctx: Context) -> None:
    """A pod still Terminating well after its grace period ended (its node is NotReady or
    gone, so no kubelet will ever finish its deletion) must not hold the job hostage:
    delete it with gracePeriodSeconds 0. Whatever ran there can no longer reach its peers."""
    for pod in ctx.pods:
        due = force_delete_time(ctx, pod)
        if due is None or ctx.now < due:
            continue
        ctx.plan.force_delete.append(pod.name)
        late = int((ctx.now - pod.deletion_time).total_seconds()) if pod.deletion_time else 0
        ctx.event(
            "Warning",
            "ForceDeleted",
            f"pod {pod.name} was still terminating {late}s after its grace period ended "
            "(its node may be unreachable): deleting it with gracePeriodSeconds 0",
        )


def _resize_elastic(ctx: Context) -> list[int]:
    """Add or remove pods in place; torchrun's elastic agents re-form the group, and the
    job keeps running while new pods start."""
    status, target = ctx.status, ctx.num_nodes
    ctx.event("Normal", "Resized", f"elastic resize from {status.replicas} to {target} nodes")
    _grow_from(ctx)
    ctx.plan.delete_pods([p for p in ctx.current if p.rank >= target])
    existing = {p.rank for p in ctx.current}
    added = [r for r in range(status.replicas, target) if r not in existing]
    ctx.plan.create += [ctx.build_pod(r) for r in added]
    status.replicas = target
    return added


def _gang(ctx: Context) -> None:
    """Create the PodGroup, or bring its spec (minMember follows the size) up to date."""
    job, spec = ctx.job, ctx.spec
    if ctx.num_nodes != spec.num_nodes:
        spec = spec.model_copy(update={"num_nodes": ctx.num_nodes})
    desired = build.build_podgroup(job.name, job.namespace, job.uid, spec)
    if desired is None:
        return
    if ctx.podgroup is None:
        ctx.plan.create.append(desired)
    elif any(ctx.podgroup.spec.get(k) != v for k, v in desired["spec"].items()):
        ctx.plan.update.append(desired)


def _active(ctx: Context) -> Plan:
    """An attempt in progress: fill in pods never created, report progress, and say why
    the gang waits, until it gives up (starting.py)."""
    status, plan = ctx.status, ctx.plan
    members = ctx.members
    ranks = {p.rank for p in members} | {
        int(m["metadata"]["labels"][build.RANK_LABEL]) for m in plan.create if m["kind"] == "Pod"
    }
    # Before the gang first ran, a missing pod was never created (or the operator stopped
    # mid-plan, or the API refused it): create it. Once running, a missing pod is a
    # preemption (see policy.judge), except the new ones of a scale-up.
    scaling = status.phase == "Running" and status.resized_from is not None
    first = status.resized_from if scaling and status.resized_from is not None else 0
    if status.phase != "Running" or scaling:
        plan.create += [ctx.build_pod(r) for r in range(first, status.replicas) if r not in ranks]
    ready = sum(p.running for p in members)
    status.ready_nodes = ready
    if ready == status.replicas:
        if status.phase != "Running" or scaling:
            ctx.event("Normal", "Running", f"all {ready} nodes are running")
        status.phase, status.resized_from = "Running", None
        status.message = progress_message(ctx)
        return conclude(ctx, "AllNodesRunning")
    if not scaling:
        status.phase = "Pending"  # a scale-up runs on while its new pods start
    found = blocks(ctx)
    if found:
        return while_blocked(ctx, found)
    status.message = progress_message(ctx)
    return conclude(ctx, "ScalingUp" if scaling else "WaitingForNodes")


def _final_progress(status: LightningJobStatus, node0: PodView | None, now: dt.datetime) -> None:
    """Node 0's termination message holds the final step, metrics and checkpoint (JSON)."""
    final = final_metrics(node0.message) if node0 is not None else None
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
