"""kopf handlers: every trigger runs the same level-based reconcile of one job.

Triggers: any event on a LightningJob (create, update, and the initial listing after an
operator restart), any event on a pod labelled with a job name, a wake-up at the moment
the controller's last plan asked for (`Plan.requeue_after`: back-off, deadlines, TTL),
and a slow timer that re-reads every job as a safety net. Each reconcile reads the job
and its pods, asks the controller for a plan, applies it, writes status once, and posts
the plan's events. Reconciles of one job never overlap.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import logging
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import kopf

from lightjob.api.models import GROUP, PLURAL, VERSION
from lightjob.controller import (
    JobView,
    Plan,
    PodView,
    Sample,
    Settings,
    observe_job,
    observe_pod,
    observe_podgroup,
    parse,
    reconcile,
    record_refusal,
)
from lightjob.controller.build import JOB_LABEL, PODGROUP_API
from lightjob.operator import metrics
from lightjob.operator.election import LeaseConfig, lead
from lightjob.operator.kube import KubeClient, Stale, api_client

log = logging.getLogger("lightjob.operator")


@dataclass(frozen=True, slots=True)
class OperatorConfig:
    namespaces: tuple[str, ...] = ()  # empty: all namespaces
    peering: str | None = None  # kopf peering object for leader election; None: standalone
    interval: float = 10.0  # seconds between safety-net reconciles of each job
    backoff_base: float = 10.0  # first back-off after a failure (doubles per failure)
    force_delete_after: float = 60.0  # seconds past a pod's grace period before a force delete
    list_chunk_size: int | None = 500  # kopf lists in pages of this many (limit/continue)
    metrics_port: int | None = 8080
    progress_interval: float = 15.0  # at most one read of a job's progress per this many s
    log_format: str = "text"  # or "json": one object per line
    kubeconfig: str | None = None  # None: in-cluster config, else KUBECONFIG
    finalizer: str = "lightjob.dev/kopf-finalizer"
    liveness: str | None = None  # kopf's liveness endpoint, e.g. http://0.0.0.0:8081/healthz
    leader_election: LeaseConfig | None = None  # act only while holding this Lease


SERVICE_TTL_SECONDS = 30.0
STALE_RETRIES = 3  # decisions made again after a conflicting write, before writing anyway
SCRAPE_TIMEOUT_SECONDS = 2.0
SCRAPE_BACKOFF_CAP_SECONDS = 300.0


# Pod IPs are reached directly, never through an HTTP(S)_PROXY set for the operator's pod.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def read_progress(url: str) -> Sample | None:
    """Node 0's metrics; None when it cannot be reached yet (not an error: status keeps
    the last progress seen, and when it was seen)."""
    try:
        with _DIRECT.open(url, timeout=SCRAPE_TIMEOUT_SECONDS) as response:
            return parse(response.read().decode("utf-8", "replace"))
    except (OSError, ValueError) as err:
        log.debug("progress of %s not readable: %s", url, err)
        return None


@dataclass(slots=True)
class Reconciler:
    """One job at a time, through the controller.

    Triggers coalesce: while a reconcile of a job waits for the running one, further
    triggers return at once, since the waiting reconcile reads the world after them.
    """

    client: KubeClient
    settings: Settings
    progress_interval: float = 15.0
    _locks: defaultdict[str, threading.Lock] = field(
        default_factory=lambda: defaultdict(threading.Lock)
    )
    _waiting: set[str] = field(default_factory=set)
    _guard: threading.Lock = field(default_factory=threading.Lock)
    # When each job's Service was last seen: it rarely goes away, so it is looked up
    # again only every SERVICE_TTL_SECONDS rather than on every reconcile.
    _services: dict[str, float] = field(default_factory=dict)
    # job -> (when its progress was last read, how many reads in a row failed)
    _scraped: dict[str, tuple[float, int]] = field(default_factory=dict)

    def __call__(self, namespace: str, name: str) -> Plan | None:
        key = f"{namespace}/{name}"
        with self._guard:
            if key in self._waiting:
                return None
            self._waiting.add(key)
            lock = self._locks[key]
        with lock:
            with self._guard:
                self._waiting.discard(key)
            for _ in range(STALE_RETRIES):
                try:
                    return self._reconcile(namespace, name, key)
                except Stale as err:
                    # Decided from a job that changed since (a user's edit, another writer):
                    # nothing was applied; decide again from what it is now.
                    log.debug("lightjob: %s; reconciling again", err)
            return self._reconcile(namespace, name, key, conditional=False)

    def _reconcile(
        self, namespace: str, name: str, key: str, conditional: bool = True
    ) -> Plan | None:
        started = time.perf_counter()
        body = self.client.get_job(namespace, name)
        if body is None:
            metrics.observe_phase(key, None)
            self._services.pop(key, None)
            self._scraped.pop(key, None)
            return None
        job = observe_job(body)
        listed = self.client.list_pods(namespace, name)
        pods = [v for v in (observe_pod(p, job.uid) for p in listed) if v]
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        has_service = self._service_exists(namespace, name, key)
        sample = self._sample(key, job, pods)
        podgroup = None
        if job.spec is not None and job.spec.scheduling.gang:
            api_version = PODGROUP_API[job.spec.scheduling.gang_provider]
            podgroup = observe_podgroup(self.client.get_podgroup(namespace, name, api_version))
        plan = reconcile(
            job,
            pods,
            has_service,
            now,
            settings=self.settings,
            sample=sample,
            podgroup=podgroup,
        )
        version = body.get("metadata", {}).get("resourceVersion") if conditional else None
        refused = self.client.apply(namespace, name, plan, job.raw_status, version)
        if refused is not None:
            # The API refused a pod (quota, Pod Security, a webhook): the controller records
            # it in status and says when to try again.
            written = plan.status if plan.status is not None else job.raw_status
            after = observe_job({**body, "status": written})
            then = record_refusal(after, refused, now, self.settings)
            self.client.apply(namespace, name, then, written)
            plan.events += then.events
            plan.status, plan.requeue_after = then.status or plan.status, then.requeue_after
            plan.reason = then.reason
        for event in plan.events:
            kopf.event(cast(Any, body), type=event.type, reason=event.reason, message=event.message)
            _count(event)
        current = plan.status or job.raw_status
        metrics.observe_phase(key, None if plan.delete_job else current.get("phase"))
        metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)
        if plan.create or plan.update or plan.delete or plan.events or plan.delete_job:
            # One line per decision; a status-only write (progress) is not one.
            fields = {
                "job": key,
                "attempt": current.get("attempt"),
                "phase": current.get("phase"),
                "reason": plan.reason,
                "created": len(plan.create),
                "deleted": len(plan.delete),
                "events": ",".join(e.reason for e in plan.events) or "-",
            }
            log.info(
                " ".join(f"{k}=%s" for k in fields), *fields.values(), extra={"decision": fields}
            )
        return plan

    def _sample(self, key: str, job: JobView, pods: list[PodView]) -> Sample | None:
        """Node 0's progress, read at most once per progress_interval while it runs. An
        endpoint that does not answer (a script without lightjob's runtime, a NetworkPolicy)
        is read less and less often, up to every SCRAPE_BACKOFF_CAP_SECONDS."""
        if job.status.phase != "Running":
            self._scraped.pop(key, None)
            return None
        node0 = next(
            (p for p in pods if p.rank == 0 and p.attempt == job.status.attempt and p.running),
            None,
        )
        if node0 is None or not node0.metrics_url:
            return None
        last, failures = self._scraped.get(key, (None, 0))
        wait = min(self.progress_interval * 2**failures, SCRAPE_BACKOFF_CAP_SECONDS)
        if last is not None and time.monotonic() - last < wait:
            return None
        sample = read_progress(node0.metrics_url)
        self._scraped[key] = (time.monotonic(), 0 if sample is not None else failures + 1)
        return sample

    def _service_exists(self, namespace: str, name: str, key: str) -> bool:
        seen = self._services.get(key)
        if seen is not None and time.monotonic() - seen < SERVICE_TTL_SECONDS:
            return True
        exists = self.client.service_exists(namespace, name)
        if exists:
            self._services[key] = time.monotonic()
        return exists


class Wakeups:
    """One wake-up per job, at the moment its last plan asked to be looked at again.

    Timer handles on kopf's event loop (no thread per job); the reconcile they start runs
    on the loop's executor, like kopf's own handlers. A new plan replaces the job's
    wake-up, and a plan that asks for none cancels it.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, reconcile: Callable[[str, str], object]
    ) -> None:
        self._loop = loop
        self._reconcile = reconcile
        self._handles: dict[tuple[str, str], asyncio.TimerHandle] = {}

    def set(self, namespace: str, name: str, delay: float | None) -> None:
        """From a reconcile, in any thread: wake the job up after `delay` seconds (None:
        never). The wake-up runs in the caller's context, which is kopf's (kopf.event
        needs it)."""
        context = contextvars.copy_context()
        self._loop.call_soon_threadsafe(self._set, (namespace, name), delay, context)

    def _set(self, key: tuple[str, str], delay: float | None, context: contextvars.Context) -> None:
        old = self._handles.pop(key, None)
        if old is not None:
            old.cancel()
        if delay is not None:
            self._handles[key] = self._loop.call_later(max(0.0, delay), self._fire, key, context)

    def _fire(self, key: tuple[str, str], context: contextvars.Context) -> None:
        self._handles.pop(key, None)
        self._loop.run_in_executor(None, context.run, self._reconcile, *key)


def _count(event: Any) -> None:
    if event.reason == "NodeFailed":
        metrics.RESTARTS.labels(reason=event.cause).inc()
    elif event.reason == "Preempted":
        metrics.PREEMPTIONS.labels(reason=event.cause).inc()


def build_registry(config: OperatorConfig) -> kopf.OperatorRegistry:
    """A fresh registry with the handlers bound to `config` (tests run several)."""
    registry = kopf.OperatorRegistry()
    state: dict[str, Reconciler] = {}
    wakeups: dict[str, Wakeups] = {}

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # In a pod: the service account; elsewhere: the kubeconfig (a fresh registry has
        # none of kopf's default login handlers).
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry)
    def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.finalizer = config.finalizer
        # Watch exactly the namespaces given (or all): no listing of namespaces or CRDs,
        # which a least-privilege Role could not do anyway (see operator/rbac.py).
        settings.scanning.disabled = True
        settings.posting.level = logging.WARNING  # kopf's own events: warnings only
        settings.execution.max_workers = 32
        # Page the initial lists (limit/continue), as a large cluster needs.
        settings.watching.chunk_size = config.list_chunk_size
        state["reconcile"] = Reconciler(
            KubeClient(api_client(config.kubeconfig, settings.execution.max_workers or 32)),
            Settings(config.backoff_base, config.force_delete_after),
            config.progress_interval,
        )
        if config.metrics_port is not None:
            from prometheus_client import start_http_server

            start_http_server(config.metrics_port)

    @kopf.on.startup(registry=registry)
    async def remember_the_loop(**_: Any) -> None:
        wakeups["job"] = Wakeups(asyncio.get_running_loop(), reconcile_one)

    def reconcile_one(namespace: str | None, name: str | None) -> None:
        if not (namespace and name and "reconcile" in state):
            return
        try:
            plan = state["reconcile"](namespace, name)
        except Exception:
            # Look again soon, whatever went wrong (kopf logs the error of a handler).
            if "job" in wakeups:
                wakeups["job"].set(namespace, name, config.interval)
            raise
        if plan is not None and "job" in wakeups:
            # No plan: a reconcile of this job was already waiting and will set it.
            wakeups["job"].set(namespace, name, None if plan.delete_job else plan.requeue_after)

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    def job_changed(type: str, name: str, namespace: str | None, **_: Any) -> None:
        if type == "DELETED":
            metrics.observe_phase(f"{namespace}/{name}", None)
            return
        reconcile_one(namespace, name)

    @kopf.on.event("", "v1", "pods", labels={JOB_LABEL: kopf.PRESENT}, registry=registry)
    def pod_changed(labels: Mapping[str, str], namespace: str | None, **_: Any) -> None:
        reconcile_one(namespace, labels.get(JOB_LABEL))

    @kopf.timer(GROUP, VERSION, PLURAL, interval=config.interval, registry=registry)
    def tick(name: str, namespace: str | None, **_: Any) -> None:
        reconcile_one(namespace, name)

    return registry


def run(config: OperatorConfig) -> None:
    """Run the operator until it is stopped (SIGTERM/SIGINT), as `lightjob operator` does;
    with leader election, from when this replica holds the Lease (operator/election.py)."""
    kopf.configure(
        verbose=False,
        log_format=kopf.LogFormat.JSON if config.log_format == "json" else kopf.LogFormat.FULL,
    )

    def operate() -> None:
        kopf.run(
            registry=build_registry(config),
            clusterwide=not config.namespaces,
            namespaces=list(config.namespaces),
            standalone=config.peering is None,
            peering_name=config.peering,
            liveness_endpoint=config.liveness,
        )

    if config.leader_election is None:
        operate()
    else:
        lead(config.leader_election, api_client(config.kubeconfig, 2), config.liveness, operate)
