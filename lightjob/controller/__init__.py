"""Pure decisions: from a LightningJob, its observed pods and the time, to a Plan.

No I/O, no kopf, no Kubernetes client: the operator and `lightjob run` both apply these.
"""

from lightjob.controller.build import build_pod, build_service, pod_name, selector
from lightjob.controller.observe import (
    JobView,
    PodGroupView,
    PodView,
    Refused,
    observe_job,
    observe_pod,
    observe_podgroup,
)
from lightjob.controller.plan import Event, Plan, Settings
from lightjob.controller.progress import Sample, parse
from lightjob.controller.reconcile import reconcile
from lightjob.controller.starting import record_refusal

__all__ = [
    "Event",
    "JobView",
    "Plan",
    "PodGroupView",
    "PodView",
    "Refused",
    "Sample",
    "Settings",
    "build_pod",
    "build_service",
    "observe_job",
    "observe_pod",
    "observe_podgroup",
    "parse",
    "pod_name",
    "reconcile",
    "record_refusal",
    "selector",
]
