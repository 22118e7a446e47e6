"""The operator's Prometheus metrics, served on /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

JOBS = Gauge("lightjob_jobs", "LightningJobs by phase, as last reconciled", ["phase"])
RECONCILE_SECONDS = Histogram(
    "lightjob_reconcile_duration_seconds",
    "Time to read a job and its pods, decide, and apply the plan",
    buckets=(0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
PODS_CREATED = Counter("lightjob_pods_created_total", "Pods the operator created")
PODS_DELETED = Counter("lightjob_pods_deleted_total", "Pods the operator deleted")
RESTARTS = Counter("lightjob_restarts_total", "Attempts ended by a failure", ["reason"])
PREEMPTIONS = Counter("lightjob_preemptions_total", "Attempts ended by a preemption", ["reason"])
API_ERRORS = Counter(
    "lightjob_api_errors_total", "Kubernetes API calls that failed", ["verb", "code"]
)

PHASES = ("Pending", "Running", "Restarting", "Suspended", "Succeeded", "Failed")
_phase_of: dict[str, str] = {}


def observe_phase(key: str, phase: str | None) -> None:
    """Track one job's phase (None when it is gone) and refresh the gauge."""
    if phase is None:
        _phase_of.pop(key, None)
    else:
        _phase_of[key] = phase
    for name in PHASES:
        JOBS.labels(phase=name).set(sum(1 for p in _phase_of.values() if p == name))
