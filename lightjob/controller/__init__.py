"""Pure decisions: from a LightningJob, its observed pods and the time, to a Plan.

No I/O, no kopf, no Kubernetes client: the operator and `lightjob run` both apply these.
"""

from lightjob.controller.build import build_pod, build_service, pod_name, selector
from lightjob.controller.progress import Sample, parse
from lightjob.controller.reconcile import (
    Event,
    JobView,
    Plan,
    PodView,
    observe_job,
    observe_pod,
    reconcile,
)

__all__ = [
    "Event",
    "JobView",
    "Plan",
    "PodView",
    "Sample",
    "build_pod",
    "build_service",
    "observe_job",
    "observe_pod",
    "parse",
    "pod_name",
    "reconcile",
    "selector",
]
