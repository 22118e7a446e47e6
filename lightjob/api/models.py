"""The LightningJob resource as pydantic models: the single source of truth.

The CRD (`lightjob crd`), `lightjob validate`, the controller and docs/api.md all read
these classes. Python code uses snake_case names; YAML and the Kubernetes API use the
camelCase aliases. Kubernetes sub-objects that lightjob only passes through to the pod
(volumes, affinity, tolerations, ...) stay plain dicts: modelling them again would only
drift from the upstream schema.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

GROUP = "lightjob.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "LightningJob"
PLURAL = "lightningjobs"
SINGULAR = "lightningjob"
SHORT_NAMES = ["lj"]

# A Kubernetes object lightjob passes through unchanged (x-kubernetes-preserve-unknown-fields).
KubeObject = dict[str, Any]

# How long pods the API refuses, or containers that cannot start, are retried when
# runPolicy.pendingDeadlineSeconds is unset: those wait for a person, not for capacity.
STUCK_SECONDS = 300
# Two minutes covers a synchronous checkpoint of a few GB to object storage; the runtime
# logs how much of the grace period each preemption save used, so users can tune it.
DEFAULT_GRACE_SECONDS = 120
DEFAULT_RENDEZVOUS_PORT = 29500
DEFAULT_METRICS_PORT = 9090
# The 64 MB a container gets by default makes DataLoader workers die with "Bus error".
DEFAULT_SHM_SIZE = "8Gi"


def _is_plain_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


DEVICES_PER_NODE_MESSAGE = "spec.devicesPerNode must be a positive integer or 'auto'"


def _int_or_auto(value: object) -> object:
    if value == "auto" or (_is_plain_int(value) and value >= 1):  # type: ignore[operator]
        return value
    raise ValueError(DEVICES_PER_NODE_MESSAGE)


# A Kubernetes quantity's text form: a number, then a binary or decimal suffix or exponent.
QUANTITY_PATTERN = (
    r"^[+-]?([0-9]+([.][0-9]*)?|[.][0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$"
)
QUANTITY_MESSAGE = "must be a Kubernetes quantity such as 4, '500m' or '16Gi'"


def _quantity(value: object) -> object:
    # Kubernetes quantities are int-or-string ("4", 4, "16Gi", "500m").
    if _is_plain_int(value) or (isinstance(value, str) and re.match(QUANTITY_PATTERN, value)):
        return value
    raise ValueError(QUANTITY_MESSAGE)


DevicesPerNode = Annotated[int | Literal["auto"], BeforeValidator(_int_or_auto)]
Quantity = Annotated[int | str, BeforeValidator(_quantity)]


class Model(BaseModel):
    """Base for spec models: camelCase on the wire, unknown fields rejected, no coercion."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        extra="forbid",
        strict=True,
    )


class EnvVar(Model):
    """One container environment variable, as in a Pod's `env`."""

    name: str = Field(min_length=1, description="Variable name.")
    value: str | None = Field(None, description="Literal value.")
    value_from: KubeObject | None = Field(
        None, description="A Kubernetes EnvVarSource (secretKeyRef, configMapKeyRef, fieldRef...)."
    )


class Resources(Model):
    """Requests and limits for each node's trainer container."""

    limits: dict[str, Quantity] = Field(
        default_factory=dict, description="e.g. {cpu: 8, memory: 64Gi, nvidia.com/gpu: 8}."
    )
    requests: dict[str, Quantity] = Field(default_factory=dict, description="As limits.")
    claims: list[KubeObject] = Field(default_factory=list, description="Dynamic resource claims.")


class Capabilities(Model):
    """Linux capabilities of the trainer container."""

    add: list[str] = Field(default_factory=list, description="Capabilities to add.")
    drop: list[str] = Field(
        default_factory=lambda: ["ALL"], description="Capabilities to drop (default: ALL)."
    )


class SeccompProfile(Model):
    """The trainer container's seccomp profile."""

    type: Literal["RuntimeDefault", "Localhost", "Unconfined"] = Field(
        "RuntimeDefault", description="RuntimeDefault, Localhost or Unconfined."
    )
    localhost_profile: str | None = Field(
        None, min_length=1, description="The profile's file on the node, with type Localhost."
    )


class SecurityContext(Model):
    """The trainer container's securityContext. The defaults meet Pod Security "restricted"
    except runAsNonRoot, which only an image that runs as a non-root user can meet: set it
    when yours does (lightjob's runtime image runs as UID 1000)."""

    allow_privilege_escalation: bool = Field(
        False, description="Let a process gain more privileges than its parent (setuid)."
    )
    capabilities: Capabilities = Field(
        default_factory=Capabilities, description="Linux capabilities (default: drop ALL)."
    )
    seccomp_profile: SeccompProfile = Field(
        default_factory=SeccompProfile, description="Seccomp profile (default: RuntimeDefault)."
    )
    run_as_non_root: bool | None = Field(
        None, description="Refuse to start the container as root (UID 0)."
    )
    run_as_user: int | None = Field(None, ge=0, description="UID to run the trainer as.")
    run_as_group: int | None = Field(None, ge=0, description="GID to run the trainer as.")
    read_only_root_filesystem: bool | None = Field(
        None, description="Mount the container's root filesystem read-only."
    )


class PodTemplate(Model):
    """Pod-level settings copied onto every node's pod."""

    labels: dict[str, str] = Field(default_factory=dict, description="Extra pod labels.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Extra pod annotations.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Pod nodeSelector.")
    tolerations: list[KubeObject] = Field(default_factory=list, description="Pod tolerations.")
    affinity: KubeObject | None = Field(None, description="Pod affinity (merged with lightjob's).")
    priority_class_name: str | None = Field(None, description="Pod priorityClassName.")
    scheduler_name: str | None = Field(None, description="Pod schedulerName.")
    service_account_name: str | None = Field(None, description="Pod serviceAccountName.")
    security_context: KubeObject | None = Field(None, description="Pod securityContext.")
    image_pull_secrets: list[KubeObject] = Field(
        default_factory=list, description="Pod imagePullSecrets, e.g. [{name: regcred}]."
    )
    automount_service_account_token: bool = Field(
        False,
        description="Mount an API token into job pods. Off by default: training needs no "
        "Kubernetes API access.",
    )


class CheckpointSpec(Model):
    """Where and how often the runtime writes durable checkpoints."""

    uri: str | None = Field(
        None,
        min_length=1,
        description="Any fsspec URI (s3://bucket/prefix, gs://..., file:///...). "
        "Passed to every pod as LIGHTJOB_CHECKPOINT_URI. Immutable once set.",
    )
    env_from: list[KubeObject] = Field(
        default_factory=list,
        description="envFrom sources (e.g. a secretRef with AWS credentials) added to every pod.",
    )
    every_n_steps: int | None = Field(None, ge=1, description="Save every N optimizer steps.")
    every_n_minutes: float | None = Field(None, gt=0, description="Save every N minutes.")
    keep: int = Field(3, ge=1, description="How many checkpoints to retain.")


class RendezvousSpec(Model):
    """How the nodes of an attempt find each other."""

    port: int = Field(DEFAULT_RENDEZVOUS_PORT, ge=1, le=65535, description="Port on node 0.")
    backend: Literal["static", "c10d"] = Field(
        "static",
        description="static: fixed world size (MASTER_ADDR/PORT). c10d: torchrun elastic "
        "rendezvous, needed to add or remove nodes without a restart.",
    )
    timeout_seconds: int = Field(900, ge=1, description="How long nodes wait for their peers.")


class NcclSpec(Model):
    """Common NCCL settings, as env on every pod (the user's own env still wins), and the
    pod network for clusters whose fast interconnect is only on the host network."""

    debug: Literal["VERSION", "WARN", "INFO", "TRACE"] | None = Field(
        None, description="NCCL_DEBUG."
    )
    socket_ifname: str | None = Field(
        None, min_length=1, description="NCCL_SOCKET_IFNAME, e.g. eth0 or ^lo,docker."
    )
    ib_disable: bool | None = Field(None, description="NCCL_IB_DISABLE (true: no InfiniBand).")
    ib_hca: str | None = Field(None, min_length=1, description="NCCL_IB_HCA, e.g. mlx5_0,mlx5_1.")
    host_network: bool = Field(
        False,
        description="Run pods on the host network (dnsPolicy ClusterFirstWithHostNet, so the "
        "rendezvous name still resolves). Ports must then be free on each host.",
    )


class PlacementSpec(Model):
    """Where the job's pods go, merged into the pod's affinity (the user's terms are kept)."""

    prefer_distinct_hosts: bool = Field(
        True,
        description="Soft anti-affinity on kubernetes.io/hostname: prefer one pod per host.",
    )
    exclusive_topology: str | None = Field(
        None,
        min_length=1,
        description="A topology key (e.g. kubernetes.io/hostname): no two pods of the job "
        "share a domain of it (required anti-affinity).",
    )
    colocate_topology: str | None = Field(
        None,
        min_length=1,
        description="A topology key (e.g. topology.kubernetes.io/zone, or a rack label): all "
        "pods of the job in one domain of it (required affinity).",
    )


class SchedulingSpec(Model):
    """Gang scheduling: all of a job's pods are placed together or not at all."""

    gang: bool = Field(False, description="Create a PodGroup with minMember = numNodes.")
    provider: Literal["coscheduling", "volcano"] | None = Field(
        None,
        description="coscheduling (scheduler-plugins, scheduling.x-k8s.io) or volcano; "
        "default: volcano when schedulerName is volcano, else coscheduling.",
    )
    scheduler_name: str | None = Field(
        None,
        min_length=1,
        description="Pod schedulerName; default with gang: scheduler-plugins-scheduler "
        "(coscheduling) or volcano.",
    )
    queue: str | None = Field(None, min_length=1, description="Volcano queue of the PodGroup.")
    priority_class_name: str | None = Field(
        None, min_length=1, description="Priority class of the pods (and Volcano PodGroup)."
    )
    schedule_timeout_seconds: int | None = Field(
        None, ge=1, description="How long the scheduler waits for the whole gang (coscheduling)."
    )

    @property
    def gang_provider(self) -> str:
        if self.provider is not None:
            return self.provider
        return "volcano" if self.scheduler_name == "volcano" else "coscheduling"


class MetricsSpec(Model):
    """The Prometheus endpoint each training process serves (see docs/operator.md)."""

    enabled: bool = Field(
        True, description="Serve metrics; the operator reads node 0's for status.progress."
    )
    port: int = Field(
        DEFAULT_METRICS_PORT,
        ge=1,
        le=65535,
        description="Port of local rank 0 (container port `metrics`); local rank i uses port + i.",
    )
    status_metrics: list[str] = Field(
        default_factory=list,
        description="Logged metrics to copy into status.progress.metrics (the Loss column "
        "takes the first); default: up to 8, loss-like names first.",
    )


class RunPolicy(Model):
    """Restarts, deadlines and cleanup."""

    backoff_limit: int = Field(3, ge=0, description="Failed attempts allowed before Failed.")
    preemption_limit: int | None = Field(
        None, ge=0, description="Preemptions allowed before Failed; unset means unlimited."
    )
    active_deadline_seconds: int | None = Field(
        None,
        ge=1,
        description="Fail the job once it has run this long since it started, time "
        "suspended not counted.",
    )
    pending_deadline_seconds: int | None = Field(
        None,
        ge=1,
        description="Fail an attempt whose pods stay unschedulable this long, measured per "
        "pod from its creation (unset: they wait). Pods the API refuses and containers that "
        f"cannot start (image pull errors) give up after this long, or {STUCK_SECONDS} s "
        "when unset.",
    )
    ttl_seconds_after_finished: int | None = Field(
        None, ge=0, description="Delete the LightningJob this long after it finished."
    )
    clean_pod_policy: Literal["All", "Running", "None"] = Field(
        "Running",
        description="Pods deleted when the job finishes: All, Running (keep finished pods and "
        "their logs), or None.",
    )
    suspend: bool = Field(
        False,
        description="Stop gracefully with a checkpoint; false again resumes (Kueue-compatible).",
    )
    termination_grace_period_seconds: int = Field(
        DEFAULT_GRACE_SECONDS,
        ge=1,
        description="Grace period after SIGTERM; must cover one synchronous checkpoint save.",
    )


class LightningJobSpec(Model):
    """What to run, on how many nodes, and how to keep it running."""

    num_nodes: int = Field(1, ge=1, description="Nodes (pods) in the gang. The scale subresource.")
    min_nodes: int | None = Field(None, ge=1, description="Smallest allowed numNodes.")
    max_nodes: int | None = Field(None, ge=1, description="Largest allowed numNodes.")
    devices_per_node: DevicesPerNode = Field(
        "auto",
        description="Training processes per node; auto = the nvidia.com/gpu limit, else 1.",
    )
    image: str = Field(min_length=1, description="Container image of the trainer.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        None, description="Container imagePullPolicy."
    )
    command: list[str] | None = Field(None, description="Container command (entrypoint).")
    args: list[str] | None = Field(None, description="Container args.")
    env: list[EnvVar] = Field(default_factory=list, description="Extra container env.")
    env_from: list[KubeObject] = Field(default_factory=list, description="Container envFrom.")
    working_dir: str | None = Field(None, description="Container workingDir.")
    resources_per_node: Resources = Field(
        default_factory=Resources, description="Trainer container resources on each node."
    )
    volumes: list[KubeObject] = Field(default_factory=list, description="Pod volumes.")
    volume_mounts: list[KubeObject] = Field(
        default_factory=list, description="Trainer container volumeMounts."
    )
    security_context: SecurityContext = Field(
        default_factory=SecurityContext,
        description="Trainer container securityContext; the pod's own is "
        "podTemplate.securityContext.",
    )
    pod_template: PodTemplate = Field(default_factory=PodTemplate, description="Pod overrides.")
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec, description="Checkpoints.")
    rendezvous: RendezvousSpec = Field(
        default_factory=RendezvousSpec, description="Rendezvous settings."
    )
    run_policy: RunPolicy = Field(default_factory=RunPolicy, description="Restarts and deadlines.")
    metrics: MetricsSpec = Field(default_factory=MetricsSpec, description="Prometheus metrics.")
    shared_memory_size: Quantity = Field(
        DEFAULT_SHM_SIZE,
        description="Size of the memory-backed /dev/shm of each pod (DataLoader workers pass "
        "batches through it); it counts against the pod's memory. A volumeMount of your own "
        "at /dev/shm replaces it.",
    )
    nccl: NcclSpec = Field(default_factory=NcclSpec, description="NCCL settings.")
    placement: PlacementSpec = Field(default_factory=PlacementSpec, description="Pod placement.")
    scheduling: SchedulingSpec = Field(
        default_factory=SchedulingSpec, description="Gang scheduling."
    )

    @model_validator(mode="after")
    def _check_cross_field_rules(self) -> LightningJobSpec:
        broken = [rule.explain(self) for rule in SPEC_RULES if not rule.holds(self)]
        if broken:
            raise ValueError("; ".join(broken))
        return self

    @property
    def lower_nodes(self) -> int:
        return self.min_nodes if self.min_nodes is not None else self.num_nodes

    @property
    def upper_nodes(self) -> int:
        return self.max_nodes if self.max_nodes is not None else self.num_nodes

    @property
    def num_gpus_per_node(self) -> int:
        gpus = self.resources_per_node.limits.get("nvidia.com/gpu", 0)
        return int(gpus) if isinstance(gpus, int | str) and str(gpus).isdigit() else 0

    @property
    def num_devices_per_node(self) -> int:
        if self.devices_per_node == "auto":
            return max(1, self.num_gpus_per_node)
        return self.devices_per_node


class SpecRule:
    """A cross-field rule: CEL for the CRD, a Python twin for `lightjob validate`.

    Both carry the same message; the Python one adds the offending values.
    """

    def __init__(self, cel: str, message: str, holds: Any, shows: dict[str, Any]) -> None:
        self.cel = cel
        self.message = message
        self.holds = holds
        self.shows = shows  # label -> getter of the value to show

    def explain(self, spec: LightningJobSpec) -> str:
        values = ", ".join(f"{label}={get(spec)!r}" for label, get in self.shows.items())
        return f"{self.message} (got {values})"


def _explicit_gpus(spec: LightningJobSpec) -> int | None:
    gpus = spec.resources_per_node.limits.get("nvidia.com/gpu")
    return gpus if _is_plain_int(gpus) else None  # type: ignore[return-value]


SPEC_RULES = [
    SpecRule(
        "!has(self.minNodes) || self.minNodes <= self.numNodes",
        "spec.minNodes must be <= spec.numNodes",
        lambda s: s.min_nodes is None or s.min_nodes <= s.num_nodes,
        {"minNodes": lambda s: s.min_nodes, "numNodes": lambda s: s.num_nodes},
    ),
    SpecRule(
        "!has(self.maxNodes) || self.numNodes <= self.maxNodes",
        "spec.numNodes must be <= spec.maxNodes",
        lambda s: s.max_nodes is None or s.num_nodes <= s.max_nodes,
        {"numNodes": lambda s: s.num_nodes, "maxNodes": lambda s: s.max_nodes},
    ),
    SpecRule(
        "(has(self.metrics) && has(self.metrics.enabled) && !self.metrics.enabled)"
        " || (has(self.metrics) && has(self.metrics.port) ? self.metrics.port : "
        f"{DEFAULT_METRICS_PORT}) != (has(self.rendezvous) && has(self.rendezvous.port)"
        f" ? self.rendezvous.port : {DEFAULT_RENDEZVOUS_PORT})",
        "spec.metrics.port must differ from spec.rendezvous.port",
        lambda s: not s.metrics.enabled or s.metrics.port != s.rendezvous.port,
        {"metrics.port": lambda s: s.metrics.port, "rendezvous.port": lambda s: s.rendezvous.port},
    ),
    # Only an integer GPU limit is checked: CEL cannot parse a quantity string portably.
    SpecRule(
        "!has(self.devicesPerNode) || type(self.devicesPerNode) == string"
        " || !has(self.resourcesPerNode) || !has(self.resourcesPerNode.limits)"
        " || !('nvidia.com/gpu' in self.resourcesPerNode.limits)"
        " || type(self.resourcesPerNode.limits['nvidia.com/gpu']) != int"
        " || self.devicesPerNode <= self.resourcesPerNode.limits['nvidia.com/gpu']",
        "spec.devicesPerNode must be <= spec.resourcesPerNode.limits['nvidia.com/gpu']",
        lambda s: (
            s.devices_per_node == "auto"
            or _explicit_gpus(s) is None
            or s.devices_per_node <= _explicit_gpus(s)
        ),
        {"devicesPerNode": lambda s: s.devices_per_node, "nvidia.com/gpu": _explicit_gpus},
    ),
]

# Single-field rules the OpenAPI schema cannot say: field -> (CEL, message).
FIELD_RULES = {
    "devicesPerNode": (
        "type(self) == string ? self == 'auto' : self >= 1",
        DEVICES_PER_NODE_MESSAGE,
    ),
    "sharedMemorySize": (
        f"type(self) == int ? self >= 0 : self.matches('{QUANTITY_PATTERN}')",
        f"spec.sharedMemorySize {QUANTITY_MESSAGE}",
    ),
}

# Fields that may not change once set: CEL transition rules (`self == oldSelf`) in the CRD,
# and `immutable_changes` for the operator, which may see objects that predate the rule.
IMMUTABLE_FIELDS = {
    "checkpoint.uri": (
        "spec.checkpoint.uri is immutable: a new URI would lose the job's checkpoints"
    ),
    "rendezvous.backend": "spec.rendezvous.backend is immutable",
}


def immutable_changes(old: LightningJobSpec, new: LightningJobSpec) -> list[str]:
    """Messages for each immutable field that changed between two specs (both set)."""
    changed = []
    for dotted, message in IMMUTABLE_FIELDS.items():
        section, name = dotted.split(".")
        before = getattr(getattr(old, section), name)
        after = getattr(getattr(new, section), name)
        if before is not None and after is not None and before != after:
            changed.append(message)
    return changed


class Condition(BaseModel):
    """A status condition, following Kubernetes API conventions."""

    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, extra="ignore")

    type: str = Field(description="Running, Succeeded, Failed, Suspended, Restarting, ...")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field("", description="CamelCase machine-readable reason.")
    message: str = Field("", description="Human-readable detail.")
    last_transition_time: dt.datetime | None = Field(None, description="When status last changed.")
    observed_generation: int | None = Field(None, description="Generation this was computed for.")


class CheckpointRef(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, extra="ignore")

    uri: str = Field(description="URI of the checkpoint object.")
    step: int = Field(description="Global step it holds.")
    time: dt.datetime | None = Field(None, description="When it became durable.")


class Progress(BaseModel):
    """Read from node 0's metrics endpoint while training runs, and from its termination
    message at the end."""

    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, extra="ignore")

    epoch: int | None = Field(None, description="Current epoch.")
    step: int | None = Field(None, description="Global optimizer step.")
    max_steps: int | None = Field(None, description="Steps the fit will take, when known.")
    samples_per_second: float | None = Field(None, description="Training throughput, all ranks.")
    eta: str | None = Field(None, description="Time left at the current step rate (e.g. 1h05m).")
    loss: float | None = Field(
        None, description="The logged loss (train_loss, loss, ...), else the first logged metric."
    )
    metrics: dict[str, float] = Field(default_factory=dict, description="Last logged scalars.")
    last_seen_time: dt.datetime | None = Field(
        None, description="When the step was last seen advancing."
    )


class Refusal(BaseModel):
    """The API's refusal to create one of the job's objects (a ResourceQuota, Pod Security
    admission, a policy or webhook): retried with back-off until the pending deadline."""

    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, extra="ignore")

    kind: str = Field(description="Kind of the object refused (Pod, Service, PodGroup).")
    name: str = Field(description="Its name.")
    code: int = Field(description="The API's HTTP status code (403, 422, ...).")
    reason: str = Field("", description="The API's reason (Forbidden, Invalid, ...).")
    message: str = Field("", description="The API's message.")
    since: dt.datetime = Field(description="First refusal in this attempt.")
    retries: int = Field(1, description="Refusals in a row.")
    retry_time: dt.datetime = Field(description="When the operator tries again.")


Phase = Literal["Pending", "Running", "Restarting", "Suspended", "Succeeded", "Failed"]


class LightningJobStatus(BaseModel):
    """Written by the operator only (status subresource)."""

    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, extra="ignore")

    phase: Phase = Field(
        "Pending", description="Pending, Running, Restarting, Suspended, Succeeded or Failed."
    )
    conditions: list[Condition] = Field(default_factory=list, description="Kubernetes conditions.")
    observed_generation: int | None = Field(None, description="Last spec generation acted on.")
    replicas: int = Field(0, description="Pods of the current attempt (scale status).")
    ready_nodes: int = Field(0, description="Pods whose trainer container is running.")
    nodes: str = Field("", description="'ready/desired', for kubectl get.")
    selector: str = Field("", description="Label selector of the job's pods (scale status).")
    attempt: int = Field(0, description="Current attempt, from 1.")
    restarts: int = Field(0, description="Attempts ended by a failure.")
    preemptions: int = Field(0, description="Attempts ended by a preemption.")
    start_time: dt.datetime | None = Field(None, description="When the first attempt started.")
    attempt_start_time: dt.datetime | None = Field(None, description="When this attempt started.")
    next_attempt_time: dt.datetime | None = Field(
        None, description="Earliest start of the next attempt (back-off after a failure)."
    )
    resizes: int = Field(0, description="Attempts ended to change the number of nodes.")
    resized_from: int | None = Field(
        None,
        description="Nodes before a scale-up whose new pods have not all started yet; the "
        "job returns to them if those pods cannot start in time.",
    )
    rejected_num_nodes: int | None = Field(
        None,
        description="A numNodes whose scale-up could not be placed and was rolled back; the "
        "job keeps its size until spec.numNodes changes.",
    )
    suspend_time: dt.datetime | None = Field(None, description="When the job was suspended.")
    suspended_seconds: int = Field(
        0, description="Time spent suspended, which activeDeadlineSeconds does not count."
    )
    completion_time: dt.datetime | None = Field(None, description="When the job finished.")
    refusal: Refusal | None = Field(
        None, description="The API refusing one of the job's objects, while it lasts."
    )
    last_checkpoint: CheckpointRef | None = Field(None, description="Newest durable checkpoint.")
    progress: Progress | None = Field(None, description="Training progress from node 0.")
    message: str = Field("", description="Why the job is in its phase.")


class ObjectMeta(BaseModel):
    """The part of metadata that lightjob reads; everything else passes through."""

    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, extra="allow")

    name: str = Field(
        min_length=1,
        # The job name is also its headless Service's name (a DNS-1035 label) and the
        # prefix of "<name>-node-<i>" hostnames, which must fit in 63 characters.
        max_length=52,
        pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$",
    )
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class LightningJob(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, extra="forbid")

    api_version: Literal["lightjob.dev/v1alpha1"]
    kind: Literal["LightningJob"]
    metadata: ObjectMeta
    spec: LightningJobSpec
    status: LightningJobStatus | None = None
