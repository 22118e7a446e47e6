"""Admission, as the API server words its refusals: rules to inject per request (a
ResourceQuota with no room left, a ValidatingAdmissionPolicy that denies), and what Pod
Security admission finds wrong with a pod. The emulator answers with them (emulator.py,
`Emulator.admission` and `Emulator._admit`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Refusal = tuple[int, str, str]  # HTTP code, reason, message
Rule = Callable[[str, str, dict[str, Any]], Refusal | None]  # (resource, namespace, object)

PSA_LABEL = "pod-security.kubernetes.io/enforce"
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def exceeded_quota(
    names: set[str],
    quota: str = "team-gpus",
    resource: str = "requests.nvidia.com/gpu",
    requested: str = "8",
    used: str = "16",
    limited: str = "16",
) -> Rule:
    """A ResourceQuota with no room left for these pods (403 Forbidden)."""

    def rule(path: str, namespace: str, obj: dict[str, Any]) -> Refusal | None:
        name = obj.get("metadata", {}).get("name")
        if path != "v1/pods" or name not in names:
            return None
        return (
            403,
            "Forbidden",
            f'pods "{name}" is forbidden: exceeded quota: {quota}, requested: '
            f"{resource}={requested}, used: {resource}={used}, limited: {resource}={limited}",
        )

    return rule


def denied_by_policy(names: set[str], message: str, policy: str = "require-team-label") -> Rule:
    """A ValidatingAdmissionPolicy that denies these pods (its default reason: 422 Invalid)."""

    def rule(path: str, namespace: str, obj: dict[str, Any]) -> Refusal | None:
        name = obj.get("metadata", {}).get("name")
        if path != "v1/pods" or name not in names:
            return None
        return (
            422,
            "Invalid",
            f"pods \"{name}\" is forbidden: ValidatingAdmissionPolicy '{policy}' with binding "
            f"'{policy}-binding' denied request: {message}",
        )

    return rule


def pod_security_problems(pod: dict[str, Any], level: str) -> list[str]:
    """What Pod Security admission finds wrong with a pod at `level` (baseline or
    restricted), in its words; privileged finds nothing."""
    if level not in ("baseline", "restricted"):
        return []
    spec = pod.get("spec") or {}
    pod_context = spec.get("securityContext") or {}
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    problems = []
    hosts = [k for k in ("hostNetwork", "hostPID", "hostIPC") if spec.get(k)]
    if hosts:
        problems.append(f"host namespaces ({', '.join(f'{k}=true' for k in hosts)})")
    for c in containers:
        if (c.get("securityContext") or {}).get("privileged"):
            problems.append(
                f'privileged (container "{c["name"]}" must not set securityContext.privileged=true)'
            )
    for volume in spec.get("volumes") or []:
        if "hostPath" in volume:
            problems.append(f'hostPath volumes (volume "{volume["name"]}")')
    if level == "baseline":
        return problems
    for volume in spec.get("volumes") or []:
        kinds = [k for k in volume if k != "name"]
        if kinds and kinds[0] not in RESTRICTED_VOLUMES and kinds[0] != "hostPath":
            problems.append(
                f'restricted volume types (volume "{volume["name"]}" uses restricted volume '
                f'type "{kinds[0]}")'
            )
    for c in containers:
        context = c.get("securityContext") or {}
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(
                f'allowPrivilegeEscalation != false (container "{c["name"]}" must set '
                "securityContext.allowPrivilegeEscalation=false)"
            )
    for c in containers:
        capabilities = (c.get("securityContext") or {}).get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            problems.append(
                f'unrestricted capabilities (container "{c["name"]}" must set '
                'securityContext.capabilities.drop=["ALL"])'
            )
        extra = [a for a in capabilities.get("add") or [] if a != "NET_BIND_SERVICE"]
        if extra:
            problems.append(
                f'unrestricted capabilities (container "{c["name"]}" must not include '
                f'"{extra[0]}" in securityContext.capabilities.add)'
            )
    non_root = [
        c["name"]
        for c in containers
        if (c.get("securityContext") or {}).get("runAsNonRoot", pod_context.get("runAsNonRoot"))
        is not True
    ]
    if non_root:
        problems.append(
            f'runAsNonRoot != true (pod or container "{non_root[0]}" must set '
            "securityContext.runAsNonRoot=true)"
        )
    for c in containers:
        if (c.get("securityContext") or {}).get("runAsUser", pod_context.get("runAsUser")) == 0:
            problems.append(f'runAsUser=0 (container "{c["name"]}" must not set runAsUser=0)')
    unconfined = [
        c["name"]
        for c in containers
        if ((c.get("securityContext") or {}).get("seccompProfile") or {}).get(
            "type", (pod_context.get("seccompProfile") or {}).get("type")
        )
        not in ("RuntimeDefault", "Localhost")
    ]
    if unconfined:
        problems.append(
            f'seccompProfile (pod or container "{unconfined[0]}" must set '
            'securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")'
        )
    return problems
