"""The Helm chart, rendered by a real helm binary, and the images and the kind script."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from lightjob.controller import build
from lightjob.operator import metrics as operator_metrics
from lightjob.operator import rbac
from lightjob.runtime import telemetry

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "lightjob"
HELM = str(Path(sys.executable).parent / "helm")
PSS_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HELM, *args], capture_output=True, text=True, timeout=120)


def render(*sets: str) -> list[dict[str, Any]]:
    args = [a for s in sets for a in ("--set", s)]
    result = helm("template", "lj", str(CHART), "-n", "lightjob-system", *args)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def crd_schemas() -> dict[str, Any]:
    """Schemas of the custom resources the chart creates, from the chart's own CRDs."""
    schemas = {}
    for path in (CHART / "crds").glob("*.yaml"):
        for crd in yaml.safe_load_all(path.read_text()):
            kind = crd["spec"]["names"]["kind"]
            schemas[kind] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schemas


def normalised(
    rules: list[dict[str, Any]],
) -> list[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]]:
    return sorted(
        (tuple(r["apiGroups"]), tuple(r["resources"]), tuple(sorted(r["verbs"]))) for r in rules
    )


VARIANTS = {
    "defaults": (),
    "namespace list": ("watch.namespaces={team-a,team-b}",),
    "service monitor": ("metrics.serviceMonitor.enabled=true",),
    "monitoring": (
        "metrics.podMonitor.enabled=true",
        "metrics.grafanaDashboard.enabled=true",
        "watch.namespaces={team-a}",
    ),
    "one replica": ("leaderElection.enabled=false", "replicaCount=1"),
    "coscheduling": ("gangScheduling.provider=coscheduling",),
    "volcano in namespaces": (
        "gangScheduling.provider=volcano",
        "watch.namespaces={team-a,team-b}",
    ),
}


def test_helm_lint_passes() -> None:
    result = helm("lint", str(CHART), "--strict")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_rendered_manifest_is_valid(variant: str) -> None:
    schemas = crd_schemas()
    docs = render(*VARIANTS[variant])
    assert docs
    for doc in docs:
        if doc["kind"] in schemas:
            jsonschema.Draft4Validator(schemas[doc["kind"]]).validate(doc)
        elif doc["kind"] == "ServiceMonitor":
            assert doc["spec"]["endpoints"][0]["port"] == "metrics"  # a Prometheus Operator CRD
        elif doc["kind"] == "PodMonitor":
            assert doc["spec"]["podMetricsEndpoints"][0]["port"] == build.METRICS_PORT
            assert doc["spec"]["namespaceSelector"] == {"matchNames": ["team-a"]}
            labels = doc["spec"]["selector"]["matchLabels"]
            assert labels.items() <= build.MANAGED_BY.items()
        else:
            kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


@pytest.mark.parametrize(
    ("variant", "cluster_wide", "gang"),
    [
        ("defaults", True, None),
        ("namespace list", False, None),
        ("one replica", True, None),
        ("coscheduling", True, "coscheduling"),
        ("volcano in namespaces", False, "volcano"),
    ],
)
def test_the_operator_gets_exactly_the_rules_it_uses_and_no_secrets(
    variant: str, cluster_wide: bool, gang: str | None
) -> None:
    docs = render(*VARIANTS[variant])
    roles = [
        d
        for d in docs
        if d["kind"] in ("Role", "ClusterRole")
        and not d["metadata"]["name"].endswith(("-edit", "-leader-election"))
    ]
    assert roles and all((d["kind"] == "ClusterRole") == cluster_wide for d in roles)
    for role in roles:
        assert normalised(role["rules"]) == normalised(
            rbac.rules(cluster_wide=cluster_wide, peering=False, gang=gang)
        )
    # The Lease: a Role of its own in the release's namespace, whatever is watched.
    election = [d for d in docs if d["metadata"]["name"] == "lj-lightjob-leader-election"]
    if variant == "one replica":
        assert not election
    else:
        role, binding = sorted(election, key=lambda d: d["kind"] != "Role")
        assert role["kind"] == "Role" and role["metadata"]["namespace"] == "lightjob-system"
        assert normalised(role["rules"]) == normalised(rbac.LEADER_ELECTION)
        assert binding["roleRef"]["name"] == role["metadata"]["name"]
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "lj-lightjob", "namespace": "lightjob-system"}
        ]
    for doc in docs:
        for rule in doc.get("rules", []):
            assert (
                "secrets" not in rule["resources"] and "*" not in rule["resources"] + rule["verbs"]
            )
    if not cluster_wide:
        assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
        bindings = [d for d in docs if d["kind"] == "RoleBinding" and d not in election]
        assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
        assert all(b["subjects"][0]["namespace"] == "lightjob-system" for b in bindings)


def test_the_operator_runs_restricted_with_leader_election() -> None:
    docs = render()
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 2
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod["containers"][0]
    assert PSS_CONTAINER.items() <= container["securityContext"].items()
    assert container["args"] == [
        "operator",
        "--all-namespaces",
        "--leader-elect",
        "--leader-elect-resource-name=lj-lightjob",
        "--leader-elect-resource-namespace=lightjob-system",
        "--leader-elect-lease-duration=15",
        "--leader-elect-renew-deadline=10",
        "--leader-elect-retry-period=2",
        "--liveness=http://0.0.0.0:8081/healthz",
        "--metrics-port=8080",
        "--interval=10",
        "--backoff-seconds=10",
        "--progress-interval=15",
        "--log-format=text",
    ]
    # The Lease names its holder by pod: the downward API gives the pod's name.
    pod_name = next(e for e in container["env"] if e["name"] == "POD_NAME")
    assert pod_name["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert not any(d["kind"] in ("ClusterKopfPeering", "KopfPeering") for d in docs)
    scoped = next(d for d in render(*VARIANTS["namespace list"]) if d["kind"] == "Deployment")
    assert scoped["spec"]["template"]["spec"]["containers"][0]["args"][1:3] == [
        "--namespace=team-a",
        "--namespace=team-b",
    ]
    single = next(d for d in render(*VARIANTS["one replica"]) if d["kind"] == "Deployment")
    assert not any(
        "leader-elect" in a for a in single["spec"]["template"]["spec"]["containers"][0]["args"]
    )


def test_the_liveness_probe_asks_the_endpoint_the_operator_serves() -> None:
    container = next(d for d in render() if d["kind"] == "Deployment")["spec"]["template"]["spec"][
        "containers"
    ][0]
    probe = container["livenessProbe"]["httpGet"]
    port = next(p["containerPort"] for p in container["ports"] if p["name"] == probe["port"])
    served = next(a for a in container["args"] if a.startswith("--liveness="))
    assert served == f"--liveness=http://0.0.0.0:{port}{probe['path']}"
    assert port != next(p["containerPort"] for p in container["ports"] if p["name"] == "metrics")
    off = next(d for d in render("livenessProbe.enabled=false") if d["kind"] == "Deployment")[
        "spec"
    ]["template"]["spec"]["containers"][0]
    assert "livenessProbe" not in off and not any("--liveness" in a for a in off["args"])
    assert [p["name"] for p in off["ports"]] == ["metrics"]


def test_a_pod_disruption_budget_keeps_a_replica_through_a_drain() -> None:
    docs = render()
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    (budget,) = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    assert budget["metadata"]["namespace"] == "lightjob-system"
    assert budget["spec"]["selector"] == deployment["spec"]["selector"]
    assert budget["spec"]["maxUnavailable"] == 1
    half = next(
        d
        for d in render("podDisruptionBudget.maxUnavailable=50%")
        if d["kind"] == "PodDisruptionBudget"
    )
    assert half["spec"]["maxUnavailable"] == "50%"
    assert not [
        d for d in render("podDisruptionBudget.enabled=false") if d["kind"] == "PodDisruptionBudget"
    ]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            ("leaderElection.enabled=false",),
            "replicaCount > 1 needs leaderElection.enabled=true",
        ),
        (
            ("leaderElection.renewDeadline=15",),
            "leaderElection needs retryPeriod < renewDeadline < leaseDuration (got 2, 15, 15)",
        ),
        (("livenessProbe.port=8080",), "livenessProbe.port must differ from metrics.port"),
        (("podDisruptionBudget.maxUnavailable=0",), "/podDisruptionBudget/maxUnavailable"),
        (("peering.enabled=true",), "additional properties 'peering' not allowed"),
    ],
)
def test_values_that_would_break_the_election_are_refused(
    settings: tuple[str, ...], message: str
) -> None:
    args = [a for s in settings for a in ("--set", s)]
    result = helm("template", "lj", str(CHART), *args)
    assert result.returncode != 0 and message in result.stderr, result.stderr


def test_the_documented_crd_upgrade_applies_exactly_the_charts_crds() -> None:
    """Helm installs crds/ once and never upgrades them; the docs say to pipe `helm show crds`
    into `kubectl apply --server-side --force-conflicts` before `helm upgrade`."""
    shown = helm("show", "crds", str(CHART))
    assert shown.returncode == 0, shown.stderr
    files = [
        d
        for p in sorted((CHART / "crds").glob("*.yaml"))
        for d in yaml.safe_load_all(p.read_text())
    ]
    assert [d for d in yaml.safe_load_all(shown.stdout) if d] == files
    command = "kubectl apply --server-side --force-conflicts -f -"
    for doc in (CHART / "README.md", ROOT / "docs" / "operator.md"):
        assert "helm show crds" in doc.read_text() and command in doc.read_text(), doc


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("replicaCount=-1", "at '/replicaCount': minimum: got -1, want 1"),
        ("replicaCnt=2", "additional properties 'replicaCnt' not allowed"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("watch.namespaces={Team_A}", "/watch/namespaces/0"),
        ("metrics.port=70000", "/metrics/port"),
    ],
)
def test_invalid_values_fail_the_schema_with_a_clear_message(setting: str, message: str) -> None:
    result = helm("template", "lj", str(CHART), "--set", setting)
    assert result.returncode != 0 and message in result.stderr, result.stderr


def test_the_chart_carries_the_generated_crd_and_documents_every_value() -> None:
    assert (CHART / "crds" / "lightningjob.yaml").read_text() == (
        ROOT / "crds" / "lightningjob.yaml"
    ).read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def keys(node: Any, prefix: str = "") -> list[str]:
        if (
            isinstance(node, dict)
            and node
            and prefix not in ("resources", "podSecurityContext", "securityContext")
            and not prefix.endswith("labels")  # a map of labels is one value
        ):
            return [
                k
                for key, value in node.items()
                for k in keys(value, f"{prefix}.{key}" if prefix else key)
            ]
        return [prefix]

    readme = (CHART / "README.md").read_text()
    missing = [k for k in keys(values) if f"| `{k}` |" not in readme]
    assert not missing, f"values missing from charts/lightjob/README.md: {missing}"


def test_images_install_the_right_extras_and_run_as_non_root() -> None:
    operator = (ROOT / "docker" / "operator.Dockerfile").read_text()
    runtime = (ROOT / "docker" / "runtime.Dockerfile").read_text()
    assert 'pip install ".[operator]"' in operator and "torch" not in operator.lower().replace(
        "no torch", ""
    )
    assert re.search(r"^USER 65532:65532$", operator, re.M)
    assert re.search(r"^FROM pytorch/pytorch:\S+-cuda", runtime, re.M)
    assert '"/app[runtime]"' in runtime and re.search(r"^USER 1000:1000$", runtime, re.M)
    chart_user = yaml.safe_load((CHART / "values.yaml").read_text())["podSecurityContext"][
        "runAsUser"
    ]
    assert chart_user == 65532


def test_the_kind_script_passes_shellcheck() -> None:
    shellcheck = str(Path(sys.executable).parent / "shellcheck")
    result = subprocess.run(
        [shellcheck, str(ROOT / "e2e" / "kind" / "run.sh")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout


def test_the_dashboard_queries_only_metrics_that_exist() -> None:
    docs = render("metrics.grafanaDashboard.enabled=true")
    config_map = next(d for d in docs if d["kind"] == "ConfigMap")
    dashboard = json.loads(config_map["data"]["lightjob.json"])
    assert dashboard == json.loads((CHART / "dashboards" / "lightjob.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    # Metric names, leaving out label matchers and grouping labels (lightjob_job is a label).
    bare = [re.sub(r"\{[^}]*\}|by \([^)]*\)", "", e) for e in exprs]
    used = {m for e in bare for m in re.findall(r"\blightjob_[a-z_]+", e)}
    served = {f"lightjob_{name}" for name in telemetry.GAUGES} | {
        "lightjob_logged_metric",
        "lightjob_checkpoint_last_info",
    }
    operator = {
        family.name + ("_total" if family.type == "counter" else "")
        for collector in vars(operator_metrics).values()
        if isinstance(collector, MetricWrapperBase)
        for family in collector.describe()
    }
    unknown = used - served - operator
    assert not unknown, unknown
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("phase", "restarts", "preemptions", "step rate", "loss", "checkpoint age"):
        assert topic in titles
