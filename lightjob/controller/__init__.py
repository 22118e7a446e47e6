"""Pure decisions: from a LightningJob, its observed pods and the time, to a Plan.

No I/O, no kopf, no Kubernetes client: the operator and `lightjob run` both apply these.
"""

from lightjob.controller.build import build_pod, build_service, pod_name, selector
from lightjob.controller.progress import Sample, parse
from lightjob.controller.reconcile import (
    Event,
    JobView,
    Plan,
    PodGroupView,
    PodView,
    observe_job,
    observe_pod,
    observe_podgroup,
    reconcile,
)

__all__ = [
    "Event",
    "JobView",
    "Plan",
    "PodGroupView",
    "PodView",
    "Sample",
    "build_pod",
    "build_service",
    "observe_job",
    "observe_pod",
    "observe_podgroup",
    "parse",
    "pod_name",
    "reconcile",
    "selector",
]
