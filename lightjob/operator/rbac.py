"""Every Kubernetes permission the operator needs, and nothing else.

The Helm chart renders exactly these rules (a test compares them), and an integration test
records every API call the running operator makes (kopf's included) and checks that each
is allowed here, and that each rule here is used. Secrets are never needed: S3
credentials reach job pods through the envFrom secretRefs in their spec.
"""

from __future__ import annotations

from typing import Any

Rule = dict[str, list[str]]

# In each watched namespace (a Role there, or a ClusterRole when watching all).
NAMESPACED: list[Rule] = [
    {
        "apiGroups": ["lightjob.dev"],
        "resources": ["lightningjobs"],
        "verbs": ["get", "list", "watch", "patch", "delete"],
    },  # patch: kopf's finalizer; delete: TTL
    {"apiGroups": ["lightjob.dev"], "resources": ["lightningjobs/status"], "verbs": ["patch"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch", "create", "delete"]},
    {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "create"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]
# kopf's peering (--peering; the chart elects through a Lease instead): the namespaced
# peering object, or the cluster-wide one.
PEERING: list[Rule] = [
    {
        "apiGroups": ["kopf.dev"],
        "resources": ["kopfpeerings"],
        "verbs": ["list", "watch", "patch"],
    },
]
CLUSTER_PEERING: list[Rule] = [
    {
        "apiGroups": ["kopf.dev"],
        "resources": ["clusterkopfpeerings"],
        "verbs": ["list", "watch", "patch"],
    },
]

# Leader election (--leader-elect): the Lease, in the operator's own namespace only (a Role
# there, whichever namespaces it watches). update, not patch: taking a Lease must name the
# resourceVersion it read, so that of two replicas only one succeeds.
LEADER_ELECTION: list[Rule] = [
    {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "verbs": ["get", "create", "update"],
    },
]


# Gang scheduling, only for the provider the chart enables (value gangScheduling.provider).
GANG: dict[str, list[Rule]] = {
    "coscheduling": [
        {
            "apiGroups": ["scheduling.x-k8s.io"],
            "resources": ["podgroups"],
            "verbs": ["get", "create", "patch"],
        }
    ],
    "volcano": [
        {
            "apiGroups": ["scheduling.volcano.sh"],
            "resources": ["podgroups"],
            "verbs": ["get", "create", "patch"],
        }
    ],
}


def rules(cluster_wide: bool, peering: bool, gang: str | None = None) -> list[Rule]:
    """The operator's rules for one way of running it."""
    extra = (CLUSTER_PEERING if cluster_wide else PEERING) if peering else []
    return [*NAMESPACED, *(GANG[gang] if gang else []), *extra]


def allows(granted: list[Rule], group: str, resource: str, verb: str) -> bool:
    return any(
        group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"]
        for r in granted
    )


def call_to_permission(
    method: str, path: str, query: dict[str, Any]
) -> tuple[str, str, str] | None:
    """(apiGroup, resource[/subresource], verb) of a Kubernetes API request; None for
    discovery, which every authenticated client may read."""
    parts = path.strip("/").split("/")
    if parts[:1] == ["api"] and len(parts) >= 3:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 4:
        group, rest = parts[1], parts[3:]
    else:
        return None
    if rest[0] == "namespaces" and len(rest) >= 3:
        rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    if sub:
        resource = f"{resource}/{sub}"
    verb = {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}.get(method)
    if method == "GET":
        verb = "watch" if query.get("watch") in ("true", "1") else ("get" if name else "list")
    return (group, resource, verb) if verb else None
