"""Pure builders: the Service and Pods a LightningJob needs, as plain manifests.

Nothing here touches a client. Names are deterministic (`<job>-node-<rank>`), so applying
the same plan twice, or after an operator restart, creates nothing twice.
"""

from __future__ import annotations

import copy
from typing import Any

from lightjob.api.models import API_VERSION, KIND, LightningJobSpec

JOB_LABEL = "lightjob.dev/job-name"
RANK_LABEL = "lightjob.dev/node-rank"
ATTEMPT_LABEL = "lightjob.dev/attempt"
MANAGED_BY = {"app.kubernetes.io/managed-by": "lightjob"}
TRAINER = "trainer"  # the container whose state the controller reads
METRICS_PORT = "metrics"  # the container port of local rank 0's Prometheus endpoint
GPU = "nvidia.com/gpu"
# What GPU node pools are usually tainted with (GKE, EKS and AKS GPU pools, the GPU operator).
GPU_TOLERATION = {"key": GPU, "operator": "Exists", "effect": "NoSchedule"}
HOSTNAME = "kubernetes.io/hostname"
SHM_VOLUME = "lightjob-shm"
# Gang scheduling: each provider's PodGroup API, default scheduler, and how pods join a group.
PODGROUP_API = {
    "coscheduling": "scheduling.x-k8s.io/v1alpha1",
    "volcano": "scheduling.volcano.sh/v1beta1",
}
DEFAULT_SCHEDULER = {"coscheduling": "scheduler-plugins-scheduler", "volcano": "volcano"}
COSCHEDULING_LABEL = "scheduling.x-k8s.io/pod-group"
VOLCANO_ANNOTATION = "scheduling.k8s.io/group-name"

Manifest = dict[str, Any]


def pod_name(job: str, rank: int) -> str:
    return f"{job}-node-{rank}"


def selector(job: str) -> str:
    return f"{JOB_LABEL}={job}"


def master_address(job: str, namespace: str) -> str:
    """Node 0's stable DNS name, through the job's headless Service."""
    return f"{pod_name(job, 0)}.{job}.{namespace}.svc"


def owner_reference(job: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": job,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def job_metadata(job: str, namespace: str, uid: str) -> dict[str, Any]:
    """Metadata of an object that belongs to the whole job (its Service, its PodGroup):
    named after it, and deleted with it."""
    return {
        "name": job,
        "namespace": namespace,
        "labels": {JOB_LABEL: job, **MANAGED_BY},
        "ownerReferences": [owner_reference(job, uid)],
    }


def build_service(job: str, namespace: str, uid: str, spec: LightningJobSpec) -> Manifest:
    """The headless Service that gives each pod `<pod>.<job>.<ns>.svc`; not-ready pods are
    published too, since ranks must find node 0 before any of them is ready."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": job_metadata(job, namespace, uid),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {JOB_LABEL: job},
            "ports": [{"name": "rendezvous", "port": spec.rendezvous.port}],
        },
    }


def build_env(
    job: str, namespace: str, uid: str, spec: LightningJobSpec, rank: int, attempt: int
) -> list[dict[str, Any]]:
    """The env torchrun, PyTorch Lightning and lightjob all understand, then the user's."""
    master = master_address(job, namespace)
    port = str(spec.rendezvous.port)
    devices = spec.num_devices_per_node
    env: dict[str, str] = {
        "MASTER_ADDR": master,
        "MASTER_PORT": port,
        "NODE_RANK": str(rank),
        "WORLD_SIZE": str(spec.num_nodes * devices),
        "PET_NPROC_PER_NODE": str(devices),
        "LIGHTJOB_JOB_NAME": job,
        "LIGHTJOB_ATTEMPT": str(attempt),
        "LIGHTJOB_RENDEZVOUS_TIMEOUT": str(spec.rendezvous.timeout_seconds),
        "LIGHTJOB_TERMINATION_GRACE_SECONDS": str(spec.run_policy.termination_grace_period_seconds),
    }
    if spec.rendezvous.backend == "c10d":
        env.update(
            PET_NNODES=f"{spec.lower_nodes}:{spec.upper_nodes}",
            PET_RDZV_BACKEND="c10d",
            PET_RDZV_ENDPOINT=f"{master}:{port}",
            PET_RDZV_ID=uid,
            # torchrun cannot always tell that node 0's name is its own: say so.
            PET_RDZV_CONF=f"is_host={int(rank == 0)}",
        )
    else:
        env.update(
            PET_NNODES=str(spec.num_nodes),
            PET_NODE_RANK=str(rank),
            PET_MASTER_ADDR=master,
            PET_MASTER_PORT=port,
        )
    if spec.metrics.enabled:
        env["LIGHTJOB_METRICS_PORT"] = str(spec.metrics.port)
    checkpoint = spec.checkpoint
    if checkpoint.uri:
        env["LIGHTJOB_CHECKPOINT_URI"] = checkpoint.uri
        env["LIGHTJOB_CHECKPOINT_KEEP"] = str(checkpoint.keep)
        if checkpoint.every_n_steps:
            env["LIGHTJOB_CHECKPOINT_EVERY_N_STEPS"] = str(checkpoint.every_n_steps)
        if checkpoint.every_n_minutes:
            env["LIGHTJOB_CHECKPOINT_EVERY_N_MINUTES"] = str(checkpoint.every_n_minutes)
    env.update(nccl_env(spec))
    # The user's env comes last and wins: NCCL settings and overrides always pass through.
    user = [e.model_dump(by_alias=True, exclude_none=True) for e in spec.env]
    names = {e["name"] for e in user}
    return [{"name": k, "value": v} for k, v in env.items() if k not in names] + user


def _resources(spec: LightningJobSpec) -> dict[str, Any]:
    """Quantities as strings ("1", "2Gi"): what typed Kubernetes clients require."""
    resources = spec.resources_per_node.model_dump(by_alias=True, exclude_defaults=True)
    for kind in ("limits", "requests"):
        if kind in resources:
            resources[kind] = {k: str(v) for k, v in resources[kind].items()}
    return resources


def build_pod(
    job: str, namespace: str, uid: str, spec: LightningJobSpec, rank: int, attempt: int
) -> Manifest:
    name = pod_name(job, rank)
    template = spec.pod_template
    volumes, mounts = shared_memory(spec)
    container = _trainer(spec, build_env(job, namespace, uid, spec, rank, attempt), mounts)
    pod_spec: dict[str, Any] = {
        "hostname": name,
        "subdomain": job,
        "restartPolicy": "Never",  # the controller restarts the gang, never the kubelet
        "automountServiceAccountToken": template.automount_service_account_token,
        "terminationGracePeriodSeconds": spec.run_policy.termination_grace_period_seconds,
        "containers": [container],
        "volumes": volumes,
    }
    if spec.nccl.host_network:
        # The headless Service still names node 0; this DNS policy keeps cluster names
        # resolvable from the host network.
        pod_spec.update(hostNetwork=True, dnsPolicy="ClusterFirstWithHostNet")
    pod_optional = {
        "nodeSelector": template.node_selector or None,
        "tolerations": tolerations(spec) or None,
        "affinity": affinity(job, spec),
        "serviceAccountName": template.service_account_name,
        "securityContext": template.security_context,
        "imagePullSecrets": template.image_pull_secrets or None,
        **_scheduler(spec),
    }
    pod_spec.update({k: v for k, v in pod_optional.items() if v is not None})
    labels = {
        **template.labels,
        JOB_LABEL: job,
        RANK_LABEL: str(rank),
        ATTEMPT_LABEL: str(attempt),
        **MANAGED_BY,
    }
    annotations = dict(template.annotations)
    if spec.scheduling.gang and spec.scheduling.gang_provider == "coscheduling":
        labels[COSCHEDULING_LABEL] = job
    elif spec.scheduling.gang:
        annotations[VOLCANO_ANNOTATION] = job
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner_reference(job, uid)],
        },
        "spec": pod_spec,
    }


def _trainer(spec: LightningJobSpec, env: list[Any], mounts: list[Any]) -> dict[str, Any]:
    """The training container."""
    ports = [{"name": "rendezvous", "containerPort": spec.rendezvous.port}]
    if spec.metrics.enabled:
        ports.append({"name": METRICS_PORT, "containerPort": spec.metrics.port})
    container: dict[str, Any] = {
        "name": TRAINER,
        "image": spec.image,
        "env": env,
        "ports": ports,
        # The runtime writes its final metrics there; on an error the log's tail (the
        # traceback) becomes the message, and so reaches the job's status.
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
        "securityContext": security_context(spec),
    }
    optional = {
        "imagePullPolicy": spec.image_pull_policy,
        "command": spec.command,
        "args": spec.args,
        "workingDir": spec.working_dir,
        "envFrom": (spec.env_from + spec.checkpoint.env_from) or None,
        "resources": _resources(spec) or None,
    }
    container.update({k: v for k, v in optional.items() if v is not None})
    return container


def security_context(spec: LightningJobSpec) -> dict[str, Any]:
    """The trainer's securityContext: by default no privilege escalation, no capabilities
    and the runtime's seccomp profile, which Pod Security "restricted" asks for."""
    context = spec.security_context.model_dump(by_alias=True, exclude_none=True)
    if not context["capabilities"]["add"]:
        del context["capabilities"]["add"]
    return context


def _scheduler(spec: LightningJobSpec) -> dict[str, str | None]:
    """schedulerName and priorityClassName: spec.scheduling's, else podTemplate's, else
    (with gang scheduling) the provider's usual scheduler."""
    scheduling, template = spec.scheduling, spec.pod_template
    default = DEFAULT_SCHEDULER[scheduling.gang_provider] if scheduling.gang else None
    return {
        "schedulerName": scheduling.scheduler_name or template.scheduler_name or default,
        "priorityClassName": scheduling.priority_class_name or template.priority_class_name,
    }


def nccl_env(spec: LightningJobSpec) -> dict[str, str]:
    nccl = spec.nccl
    env = {
        "NCCL_DEBUG": nccl.debug,
        "NCCL_SOCKET_IFNAME": nccl.socket_ifname,
        "NCCL_IB_DISABLE": None if nccl.ib_disable is None else str(int(nccl.ib_disable)),
        "NCCL_IB_HCA": nccl.ib_hca,
    }
    return {k: v for k, v in env.items() if v is not None}


def shared_memory(spec: LightningJobSpec) -> tuple[list[Any], list[Any]]:
    """The pod's volumes and the trainer's mounts, with a memory-backed /dev/shm unless the
    user mounts something there."""
    if any(m.get("mountPath", "").rstrip("/") == "/dev/shm" for m in spec.volume_mounts):
        return list(spec.volumes), list(spec.volume_mounts)
    size = str(spec.shared_memory_size)
    volume = {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": size}}
    mount = {"name": SHM_VOLUME, "mountPath": "/dev/shm"}
    return [*spec.volumes, volume], [*spec.volume_mounts, mount]


def tolerations(spec: LightningJobSpec) -> list[Any]:
    """The user's tolerations; with none, a GPU job tolerates the usual GPU taint."""
    if spec.pod_template.tolerations:
        return list(spec.pod_template.tolerations)
    return [dict(GPU_TOLERATION)] if spec.num_gpus_per_node else []


def affinity(job: str, spec: LightningJobSpec) -> dict[str, Any] | None:
    """The user's affinity with lightjob's placement terms appended; nothing of the user's
    is replaced."""
    merged: dict[str, Any] = copy.deepcopy(spec.pod_template.affinity or {})
    placement = spec.placement

    def term(key: str) -> dict[str, Any]:
        return {"labelSelector": {"matchLabels": {JOB_LABEL: job}}, "topologyKey": key}

    def add(kind: str, field: str, item: dict[str, Any]) -> None:
        merged.setdefault(kind, {}).setdefault(field, []).append(item)

    if placement.exclusive_topology:
        add(
            "podAntiAffinity",
            "requiredDuringSchedulingIgnoredDuringExecution",
            term(placement.exclusive_topology),
        )
    elif placement.prefer_distinct_hosts:
        add(
            "podAntiAffinity",
            "preferredDuringSchedulingIgnoredDuringExecution",
            {"weight": 100, "podAffinityTerm": term(HOSTNAME)},
        )
    if placement.colocate_topology:
        add(
            "podAffinity",
            "requiredDuringSchedulingIgnoredDuringExecution",
            term(placement.colocate_topology),
        )
    return merged or None


def build_podgroup(job: str, namespace: str, uid: str, spec: LightningJobSpec) -> Manifest | None:
    """The gang's PodGroup for the chosen provider; None without gang scheduling."""
    scheduling = spec.scheduling
    if not scheduling.gang:
        return None
    provider = scheduling.gang_provider
    group_spec: dict[str, Any] = {"minMember": spec.num_nodes}
    if provider == "coscheduling" and scheduling.schedule_timeout_seconds:
        group_spec["scheduleTimeoutSeconds"] = scheduling.schedule_timeout_seconds
    if provider == "volcano":
        extra = {"queue": scheduling.queue, "priorityClassName": scheduling.priority_class_name}
        group_spec.update({k: v for k, v in extra.items() if v})
    return {
        "apiVersion": PODGROUP_API[provider],
        "kind": "PodGroup",
        "metadata": job_metadata(job, namespace, uid),
        "spec": group_spec,
    }
