"""The API emulator behaves as the API server does where the operator depends on it: a
client sees the same answers (through the real kubernetes client, over HTTP)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.integration.conftest import JOBS, Cluster
from tests.integration.test_operator import custom_api, job


def core_api(cluster: Cluster) -> Any:
    import kubernetes

    client = kubernetes.config.new_client_from_config(config_file=cluster.kubeconfig)
    return kubernetes.client.CoreV1Api(client)


async def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, *args, **kwargs)


async def refused(fn: Any, *args: Any, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    """The API's refusal of a call (a client method, or one of the coroutines here)."""
    from kubernetes.client.exceptions import ApiException

    with pytest.raises(ApiException) as caught:
        if asyncio.iscoroutinefunction(fn):
            await fn(*args, **kwargs)
        else:
            await call(fn, *args, **kwargs)
    return int(caught.value.status), json.loads(caught.value.body)


async def create_job(cluster: Cluster, body: dict[str, Any], **kwargs: Any) -> Any:
    api = custom_api(cluster)
    return await call(
        api.create_namespaced_custom_object,
        "lightjob.dev",
        "v1alpha1",
        "default",
        "lightningjobs",
        body,
        **kwargs,
    )


async def test_unknown_fields_are_pruned_with_a_warning_or_refused_when_strict(
    emulated: Cluster,
) -> None:
    extra = job("warned")
    extra["spec"]["futureFeature"] = {"on": True}
    extra["spec"]["runPolicy"] = {"backoffLimit": 1, "typo": 3}
    stored = await create_job(emulated, extra)
    assert (
        "futureFeature" not in stored["spec"] and stored["spec"]["runPolicy"]["backoffLimit"] == 1
    )
    assert "typo" not in stored["spec"]["runPolicy"]
    # `kubectl apply` asks for strict field validation: 400 names every unknown field.
    strict = job("strict")
    strict["spec"]["futureFeature"] = 1
    code, status = await refused(create_job, emulated, strict, field_validation="Strict")
    assert code == 400 and status["reason"] == "BadRequest"
    assert 'strict decoding error: unknown field "spec.futureFeature"' in status["message"]
    # Anything under a field that preserves unknown fields (an affinity) is kept.
    kept = job("kept", podTemplate={"affinity": {"nodeAffinity": {"anything": 1}}})
    stored = await create_job(emulated, kept)
    assert stored["spec"]["podTemplate"]["affinity"] == {"nodeAffinity": {"anything": 1}}


async def test_defaults_are_applied_inside_objects_that_exist_only(emulated: Cluster) -> None:
    stored = await create_job(emulated, job("defaults", runPolicy={"backoffLimit": 1}))
    spec = stored["spec"]
    assert (spec["devicesPerNode"], spec["sharedMemorySize"]) == ("auto", "8Gi")
    assert spec["runPolicy"]["cleanPodPolicy"] == "Running"  # runPolicy exists: defaulted
    assert spec["runPolicy"]["backoffLimit"] == 1  # given values stay
    assert "checkpoint" not in spec  # an absent object is not created to hold defaults


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        (
            {"minNodes": 3},
            'spec: Invalid value: "object": spec.minNodes must be <= spec.numNodes',
        ),
        (
            {"devicesPerNode": 0},
            'spec.devicesPerNode: Invalid value: "integer": '
            "spec.devicesPerNode must be a positive integer or 'auto'",
        ),
        (
            {"sharedMemorySize": "lots"},
            'spec.sharedMemorySize: Invalid value: "string": spec.sharedMemorySize must be',
        ),
    ],
)
async def test_cel_rules_at_every_level_as_the_api_server_words_them(
    emulated: Cluster, spec: dict[str, Any], says: str
) -> None:
    code, status = await refused(create_job, emulated, job("cel", **spec))
    assert code == 422 and status["reason"] == "Invalid"
    assert status["message"].startswith('LightningJob.lightjob.dev "cel" is invalid: ')
    assert says in status["message"]


async def test_transition_rules_keep_immutable_fields(emulated: Cluster) -> None:
    api = custom_api(emulated)
    await create_job(emulated, job("fixed", checkpoint={"uri": "s3://b/one"}, rendezvous={}))
    patch = {"spec": {"checkpoint": {"uri": "s3://b/two"}, "rendezvous": {"backend": "c10d"}}}
    code, status = await refused(
        api.patch_namespaced_custom_object,
        "lightjob.dev",
        "v1alpha1",
        "default",
        "lightningjobs",
        "fixed",
        patch,
    )
    assert code == 422
    # Both fields are named: the backend was set by the schema's default (rendezvous
    # existed), so it has an old value too. A field without an old value passes.
    assert "spec.checkpoint.uri is immutable" in status["message"]
    assert "spec.rendezvous.backend is immutable" in status["message"]
    fresh = await create_job(emulated, job("fresh"))
    assert "checkpoint" not in fresh["spec"]
    patched = await call(
        api.patch_namespaced_custom_object,
        "lightjob.dev",
        "v1alpha1",
        "default",
        "lightningjobs",
        "fresh",
        {"spec": {"checkpoint": {"uri": "s3://b/new"}}},
    )
    assert patched["spec"]["checkpoint"]["uri"] == "s3://b/new"  # set for the first time


async def test_a_patch_with_a_stale_resource_version_is_a_conflict(emulated: Cluster) -> None:
    api = custom_api(emulated)
    created = await create_job(emulated, job())
    stale = created["metadata"]["resourceVersion"]
    emulated.api.update(JOBS, "default", "demo", None, {"metadata": {"labels": {"a": "b"}}})

    async def write_status(version: str) -> Any:
        patch = {"metadata": {"resourceVersion": version}, "status": {"phase": "Running"}}
        return await call(
            api.patch_namespaced_custom_object_status,
            "lightjob.dev",
            "v1alpha1",
            "default",
            "lightningjobs",
            "demo",
            patch,
        )

    code, status = await refused(write_status, stale)
    assert (code, status["reason"]) == (409, "Conflict")
    current = emulated.api.get(JOBS, "default", "demo")["metadata"]["resourceVersion"]
    assert (await write_status(current))["status"]["phase"] == "Running"


async def test_lists_come_in_pages_with_continue_tokens(emulated: Cluster) -> None:
    core = core_api(emulated)
    for rank in range(5):  # (in a namespace the kubelet stand-in leaves alone)
        emulated.api.create(
            "v1/pods",
            "elsewhere",
            {"metadata": {"name": f"p{rank}", "labels": {"x": "y"}}, "spec": {"containers": []}},
        )
    names, token, pages = [], None, 0
    while True:
        page = await call(
            core.list_namespaced_pod, "elsewhere", label_selector="x=y", limit=2, _continue=token
        )
        pages += 1
        names += [p.metadata.name for p in page.items]
        token = page.metadata._continue
        if not token:
            break
    assert (names, pages) == (["p0", "p1", "p2", "p3", "p4"], 3)
    first = await call(core.list_namespaced_pod, "elsewhere", limit=2)
    emulated.api.create("v1/pods", "elsewhere", {"metadata": {"name": "late"}, "spec": {}})
    emulated.api.watches.compact()
    code, status = await refused(
        core.list_namespaced_pod, "elsewhere", limit=2, _continue=first.metadata._continue
    )
    assert (code, status["reason"]) == (410, "Expired")


async def test_a_watch_from_a_compacted_version_is_gone_and_bookmarks_carry_the_version(
    emulated: Cluster,
) -> None:
    import aiohttp

    emulated.api.watches.bookmark_interval = 0.2
    emulated.api.create("v1/pods", "elsewhere", {"metadata": {"name": "a"}, "spec": {}})
    old = emulated.api.get("v1/pods", "elsewhere", "a")["metadata"]["resourceVersion"]
    emulated.api.update("v1/pods", "elsewhere", "a", None, {"metadata": {"labels": {"b": "c"}}})
    emulated.api.watches.compact()
    url = f"{emulated.url}/api/v1/namespaces/elsewhere/pods"
    async with aiohttp.ClientSession() as session:
        params = {"watch": "true", "resourceVersion": old}
        async with session.get(url, params=params) as response:
            (line,) = [json.loads(line) async for line in response.content]
        assert line["type"] == "ERROR" and line["object"]["code"] == 410
        assert line["object"]["reason"] == "Expired"
        params = {"watch": "true", "allowWatchBookmarks": "true", "timeoutSeconds": "1"}
        async with session.get(url, params=params) as response:
            events = [json.loads(line) async for line in response.content]
    assert events[0]["type"] == "ADDED"  # a watch without a version starts with the state
    bookmark = next(e for e in events if e["type"] == "BOOKMARK")
    assert bookmark["object"]["metadata"]["resourceVersion"] == str(
        emulated.api.watches.current_rv()
    )
    assert set(bookmark["object"]) == {"kind", "apiVersion", "metadata"}
