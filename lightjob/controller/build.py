"""Pure builders: the Service and Pods a LightningJob needs, as plain manifests.

Nothing here touches a client. Names are deterministic (`<job>-node-<rank>`), so applying
the same plan twice, or after an operator restart, creates nothing twice.
"""

from __future__ import annotations

from typing import Any

from lightjob.api.models import API_VERSION, KIND, LightningJobSpec

JOB_LABEL = "lightjob.dev/job-name"
RANK_LABEL = "lightjob.dev/node-rank"
ATTEMPT_LABEL = "lightjob.dev/attempt"
MANAGED_BY = {"app.kubernetes.io/managed-by": "lightjob"}
TRAINER = "trainer"  # the container whose state the controller reads
METRICS_PORT = "metrics"  # the container port of local rank 0's Prometheus endpoint

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


def build_service(job: str, namespace: str, uid: str, spec: LightningJobSpec) -> Manifest:
    """The headless Service that gives each pod `<pod>.<job>.<ns>.svc`; not-ready pods are
    published too, since ranks must find node 0 before any of them is ready."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": job,
            "namespace": namespace,
            "labels": {JOB_LABEL: job, **MANAGED_BY},
            "ownerReferences": [owner_reference(job, uid)],
        },
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
    container: dict[str, Any] = {
        "name": TRAINER,
        "image": spec.image,
        "env": build_env(job, namespace, uid, spec, rank, attempt),
        "ports": [{"name": "rendezvous", "containerPort": spec.rendezvous.port}]
        + (
            [{"name": METRICS_PORT, "containerPort": spec.metrics.port}]
            if spec.metrics.enabled
            else []
        ),
        # The runtime writes its final metrics there; on an error the log's tail (the
        # traceback) becomes the message, and so reaches the job's status.
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    optional = {
        "imagePullPolicy": spec.image_pull_policy,
        "command": spec.command,
        "args": spec.args,
        "workingDir": spec.working_dir,
        "envFrom": (spec.env_from + spec.checkpoint.env_from) or None,
        "resources": _resources(spec) or None,
        "volumeMounts": spec.volume_mounts or None,
    }
    container.update({k: v for k, v in optional.items() if v is not None})
    pod_spec: dict[str, Any] = {
        "hostname": name,
        "subdomain": job,
        "restartPolicy": "Never",  # the controller restarts the gang, never the kubelet
        "automountServiceAccountToken": template.automount_service_account_token,
        "terminationGracePeriodSeconds": spec.run_policy.termination_grace_period_seconds,
        "containers": [container],
    }
    pod_optional = {
        "nodeSelector": template.node_selector or None,
        "tolerations": template.tolerations or None,
        "affinity": template.affinity,
        "priorityClassName": template.priority_class_name,
        "schedulerName": template.scheduler_name,
        "serviceAccountName": template.service_account_name,
        "securityContext": template.security_context,
        "imagePullSecrets": template.image_pull_secrets or None,
        "volumes": spec.volumes or None,
    }
    pod_spec.update({k: v for k, v in pod_optional.items() if v is not None})
    labels = {
        **template.labels,
        JOB_LABEL: job,
        RANK_LABEL: str(rank),
        ATTEMPT_LABEL: str(attempt),
        **MANAGED_BY,
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": dict(template.annotations),
            "ownerReferences": [owner_reference(job, uid)],
        },
        "spec": pod_spec,
    }
