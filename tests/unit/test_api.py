"""The LightningJob API: models, CRD, CEL twins and `lightjob validate`."""

from __future__ import annotations

import copy
import io
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import kubernetes_validate
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from lightjob import cli
from lightjob.api import models
from lightjob.api.crd import build_crd, render_reference
from lightjob.api.validate import read_documents

ROOT = Path(__file__).resolve().parents[2]


def job_doc(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "lightjob.dev/v1alpha1",
        "kind": "LightningJob",
        "metadata": {"name": "demo"},
        "spec": {"image": "ghcr.io/example/train:1", **spec},
    }


def crd_schema() -> dict[str, Any]:
    return build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def strict(schema: Any) -> Any:
    """The CRD schema as `kubectl apply` enforces it: server-side field validation is
    Strict by default, so unknown fields are errors rather than silently pruned."""
    schema = copy.deepcopy(schema)

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
                node["additionalProperties"] = False
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(schema)
    return schema


def cel_violations(doc: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    """Evaluate the CRD's CEL rules on a document the way the API server would."""
    env = celpy.Environment()
    spec_schema = crd_schema()["properties"]["spec"]
    messages = []

    def run(rule: str, message: str, **bindings: Any) -> None:
        program = env.program(env.compile(rule))
        if not program.evaluate({k: celpy.json_to_cel(v) for k, v in bindings.items()}):
            messages.append(message)

    spec = doc["spec"]
    for rule in spec_schema["x-kubernetes-validations"]:
        run(rule["rule"], rule["message"], self=spec)
    for name, prop in spec_schema["properties"].items():
        for rule in prop.get("x-kubernetes-validations", []):
            if name in spec:
                run(rule["rule"], rule["message"], self=spec[name])
        for sub, sub_prop in prop.get("properties", {}).items():
            for rule in sub_prop.get("x-kubernetes-validations", []):
                # Transition rules run only when the field exists in the old and new object.
                before = (old or {}).get("spec", {}).get(name, {}).get(sub)
                after = spec.get(name, {}).get(sub)
                if "oldSelf" in rule["rule"] and before is not None and after is not None:
                    run(rule["rule"], rule["message"], self=after, oldSelf=before)
    return messages


def crd_accepts(doc: dict[str, Any]) -> bool:
    validator = jsonschema.Draft4Validator(strict(crd_schema()))
    return validator.is_valid(doc) and not cel_violations(doc)


def problems_of(doc: Any) -> list[str]:
    text = yaml.safe_dump(doc) if not isinstance(doc, str) else doc
    return [str(p) for d in read_documents("job.yaml", text) for p in d.problems]


VALID = [
    job_doc(),
    job_doc(numNodes=4, minNodes=2, maxNodes=8, rendezvous={"backend": "c10d", "port": 23456}),
    job_doc(
        devicesPerNode=8,
        resourcesPerNode={"limits": {"nvidia.com/gpu": 8, "memory": "64Gi", "cpu": "500m"}},
        env=[{"name": "NCCL_DEBUG", "value": "INFO"}],
        envFrom=[{"secretRef": {"name": "s3-creds"}}],
        volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
        volumeMounts=[{"name": "data", "mountPath": "/data"}],
        podTemplate={
            "labels": {"team": "vision"},
            "tolerations": [{"key": "spot", "operator": "Exists"}],
            "priorityClassName": "high",
        },
        checkpoint={"uri": "s3://bucket/run", "everyNSteps": 500, "keep": 2},
        runPolicy={"backoffLimit": 0, "suspend": True, "cleanPodPolicy": "All"},
    ),
]

VALID.append(job_doc(rendezvous={"port": 9090}, metrics={"enabled": False}))
VALID.append(
    yaml.safe_load((Path(__file__).parents[2] / "examples/gpu/lightningjob.yaml").read_text())
)

# (document, the field path the error must name, a fragment of the message)
INVALID = [
    (job_doc(numNodes=-1), "spec.numNodes", "greater than or equal to 1"),
    (job_doc(numNodes="2"), "spec.numNodes", "valid integer"),
    (job_doc(numNodes=2, minNodes=3), "spec.minNodes", "<= spec.numNodes"),
    (job_doc(numNodes=5, maxNodes=4), "spec.numNodes", "<= spec.maxNodes"),
    (job_doc(devicesPerNode="many"), "spec.devicesPerNode", "positive integer or 'auto'"),
    (job_doc(devicesPerNode=0), "spec.devicesPerNode", "positive integer or 'auto'"),
    (
        job_doc(devicesPerNode=4, resourcesPerNode={"limits": {"nvidia.com/gpu": 2}}),
        "spec.devicesPerNode",
        "nvidia.com/gpu",
    ),
    (
        job_doc(runPolicy={"backofLimit": 1}),
        "spec.runPolicy.backofLimit",
        "did you mean 'backoffLimit'",
    ),
    (job_doc(numnodes=2), "spec.numnodes", "did you mean 'numNodes'"),
    (job_doc(rendezvous={"backend": "etcd"}), "spec.rendezvous.backend", "'static' or 'c10d'"),
    (job_doc(rendezvous={"port": 70000}), "spec.rendezvous.port", "less than or equal to 65535"),
    (job_doc(env=[{"value": "x"}]), "spec.env[0].name", "required field is missing"),
    (job_doc(checkpoint={"keep": 0}), "spec.checkpoint.keep", "greater than or equal to 1"),
    ({**job_doc(), "metadata": {"name": "Bad_Name"}}, "metadata.name", "pattern"),
    ({k: v for k, v in job_doc().items() if k != "spec"}, "spec", "required field is missing"),
    (job_doc(scheduling={"provider": "kueue"}), "spec.scheduling.provider", "'coscheduling'"),
    (job_doc(metrics={"port": 29500}), "spec.metrics.port", "differ from spec.rendezvous.port"),
    (
        job_doc(metrics={"port": 9000}, rendezvous={"port": 9000}),
        "spec.metrics.port",
        "differ from spec.rendezvous.port",
    ),
    (job_doc(rendezvous={"port": 9090}), "spec.metrics.port", "differ from spec.rendezvous.port"),
    (job_doc(nccl={"debug": "LOUD"}), "spec.nccl.debug", "'WARN'"),
    (job_doc(sharedMemorySize=""), "spec.sharedMemorySize", "Kubernetes quantity"),
    (
        job_doc(placement={"exclusiveTopology": ""}),
        "spec.placement.exclusiveTopology",
        "at least 1",
    ),
]


@pytest.mark.parametrize("doc", VALID)
def test_valid_documents_pass_validate_and_the_crd(doc: dict[str, Any]) -> None:
    assert problems_of(doc) == []
    assert crd_accepts(doc)


@pytest.mark.parametrize(("doc", "path", "fragment"), INVALID)
def test_invalid_documents_fail_both_with_the_field_named(
    doc: dict[str, Any], path: str, fragment: str
) -> None:
    problems = problems_of(doc)
    assert any(p.startswith(path) and fragment in p for p in problems), problems
    assert not crd_accepts(doc)


def test_image_is_required_by_both() -> None:
    doc = job_doc()
    del doc["spec"]["image"]
    assert problems_of(doc) == ["spec.image: required field is missing"]
    assert not crd_accepts(doc)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("spec: [1,", "not valid YAML at line 1"),
        ("- a\n- b\n", "expected a mapping"),
        ("apiVersion: apps/v1\nkind: Deployment\n", "expected apiVersion lightjob.dev/v1alpha1"),
        ("", "no YAML document found"),
        ("just a string", "expected a mapping"),
    ],
)
def test_garbage_is_explained(text: str, fragment: str) -> None:
    problems = problems_of(text)
    assert len(problems) == 1 and fragment in problems[0], problems


def test_defaults_are_what_a_user_expects() -> None:
    job = models.LightningJob.model_validate(job_doc(numNodes=3))
    spec = job.spec
    assert (spec.lower_nodes, spec.upper_nodes) == (3, 3)  # fixed size
    assert spec.run_policy.backoff_limit == 3
    assert spec.run_policy.preemption_limit is None  # unlimited preemptions
    assert spec.run_policy.termination_grace_period_seconds >= 60  # room for a checkpoint
    assert spec.num_devices_per_node == 1
    gpus = job_doc(resourcesPerNode={"limits": {"nvidia.com/gpu": 8}})
    assert models.LightningJob.model_validate(gpus).spec.num_devices_per_node == 8


# The CEL rules and their pydantic twins must agree on every spec.
node_counts = st.one_of(st.none(), st.integers(min_value=1, max_value=6))


@settings(deadline=None)  # a correctness property: a busy machine must not fail it
@given(
    num=st.integers(min_value=1, max_value=6),
    low=node_counts,
    high=node_counts,
    devices=st.one_of(st.just("auto"), st.integers(min_value=1, max_value=9)),
    gpus=st.one_of(st.none(), st.integers(min_value=0, max_value=9)),
)
def test_cel_rules_agree_with_pydantic(
    num: int, low: int | None, high: int | None, devices: int | str, gpus: int | None
) -> None:
    spec: dict[str, Any] = {"numNodes": num, "devicesPerNode": devices}
    if low is not None:
        spec["minNodes"] = low
    if high is not None:
        spec["maxNodes"] = high
    if gpus is not None:
        spec["resourcesPerNode"] = {"limits": {"nvidia.com/gpu": gpus}}
    doc = job_doc(**spec)
    cel_messages = cel_violations(doc)
    pydantic_messages = problems_of(doc)
    assert bool(cel_messages) == bool(pydantic_messages), (cel_messages, pydantic_messages)
    for message in cel_messages:  # same words, pydantic adds the values
        assert any(message in p for p in pydantic_messages)


@pytest.mark.parametrize(
    ("old", "new", "changed"),
    [
        ({"checkpoint": {"uri": "s3://a/x"}}, {"checkpoint": {"uri": "s3://a/y"}}, True),
        ({"checkpoint": {"uri": "s3://a/x"}}, {"checkpoint": {"uri": "s3://a/x"}}, False),
        ({}, {"checkpoint": {"uri": "s3://a/x"}}, False),  # setting it the first time is fine
        ({"rendezvous": {"backend": "static"}}, {"rendezvous": {"backend": "c10d"}}, True),
        ({"numNodes": 2}, {"numNodes": 3}, False),
    ],
)
def test_immutable_fields_agree_with_their_transition_rules(
    old: dict[str, Any], new: dict[str, Any], changed: bool
) -> None:
    old_doc, new_doc = job_doc(**old), job_doc(**new)
    old_spec = models.LightningJob.model_validate(old_doc).spec
    new_spec = models.LightningJob.model_validate(new_doc).spec
    assert bool(models.immutable_changes(old_spec, new_spec)) == changed
    assert bool(cel_violations(new_doc, old=old_doc)) == changed


def test_committed_crd_is_generated_from_the_models() -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli.main(["crd"]) == 0
    committed = (ROOT / "crds" / "lightningjob.yaml").read_text()
    assert committed == out.getvalue(), "crds/ is stale: run `make generate`"


def test_docs_reference_every_field() -> None:
    docs = (ROOT / "docs" / "api.md").read_text()
    assert render_reference(build_crd()) in docs, "docs/api.md is stale: run `make generate`"


def test_crd_is_a_valid_kubernetes_object() -> None:
    crd = yaml.safe_load((ROOT / "crds" / "lightningjob.yaml").read_text())
    kubernetes_validate.validate(crd, "1.30.0", strict=True)
    kubernetes_validate.validate(crd, kubernetes_validate.latest_version(), strict=True)


def test_crd_schema_is_structural() -> None:
    """The API server rejects a CRD whose schema is not structural; check its rules here."""

    def visit(node: dict[str, Any], path: str) -> None:
        assert "$ref" not in node, path
        special = node.get("x-kubernetes-int-or-string") or node.get(
            "x-kubernetes-preserve-unknown-fields"
        )
        assert "type" in node or special, f"{path} has no type"
        if node.get("x-kubernetes-int-or-string"):
            assert node.get("anyOf") == [{"type": "integer"}, {"type": "string"}], path
        else:
            assert "anyOf" not in node and "oneOf" not in node, path
        assert not ("properties" in node and "additionalProperties" in node), path
        for name, child in node.get("properties", {}).items():
            visit(child, f"{path}.{name}")
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                visit(node[key], f"{path}.{key}")

    visit(crd_schema(), "")
    crd = build_crd()
    version = crd["spec"]["versions"][0]
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.numNodes"
    assert "status" in version["subresources"]
    assert crd["spec"]["names"]["shortNames"] == ["lj"]
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Phase", "Nodes", "Step", "Loss", "ETA", "Restarts", "Preemptions", "Age"]


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lightjob.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_validate_cli_reports_every_problem_without_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump_all([job_doc(numNodes=-1), job_doc(), job_doc(runPolicy={"x": 1})])
    )
    result = run_cli("validate", str(bad), str(tmp_path / "missing.yaml"))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"{bad}: document 1 (demo): spec.numNodes:" in result.stderr
    assert f"{bad}: document 3 (demo): spec.runPolicy.x: unknown field" in result.stderr
    assert "missing.yaml: cannot read file: No such file or directory" in result.stderr
    assert f"{bad}: document 2 (demo): valid LightningJob" in result.stdout


def test_validate_cli_accepts_good_files_and_stdin() -> None:
    result = run_cli("validate", "-", stdin=yaml.safe_dump(job_doc(numNodes=2)))
    assert result.returncode == 0, result.stderr
    assert "<stdin>: document 1 (demo): valid LightningJob" in result.stdout


def test_binary_input_is_explained(tmp_path: Path) -> None:
    blob = tmp_path / "blob.yaml"
    blob.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    result = run_cli("validate", str(blob))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "cannot read file" in result.stderr


@pytest.mark.parametrize(
    "module",
    [
        "lightjob",
        "lightjob.api",
        "lightjob.cli",
        "lightjob.controller",
        "lightjob.operator.handlers",
    ],
)
def test_light_modules_do_not_import_torch(module: str) -> None:
    code = f"import sys, {module}; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_readme_shows_the_gpu_example_as_committed() -> None:
    example = (ROOT / "examples" / "gpu" / "lightningjob.yaml").read_text()
    assert f"```yaml\n{example}```" in (ROOT / "README.md").read_text()
