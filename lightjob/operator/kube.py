"""The operator's I/O: read a job and its pods, apply a plan. Retries live here.

Every call goes through `_call`, which retries conflicts, throttling (429) and server
errors with exponential back-off and counts API errors for /metrics. Creating something
that exists (409) and deleting something gone (404) are success: plans are idempotent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

import kubernetes
from kubernetes.client.exceptions import ApiException

from lightjob.api.models import GROUP, PLURAL, VERSION
from lightjob.controller import Plan, Refused, selector
from lightjob.operator import metrics

log = logging.getLogger("lightjob.operator")
T = TypeVar("T")
RETRIABLE = {409, 429, 500, 502, 503, 504}
# A create the API refuses for what it is (quota, Pod Security, a policy or a webhook, an
# invalid object): retrying at once would only be refused again.
REFUSALS = {400, 403, 422}
# (connect, read) seconds: a hung API call must not hold a reconcile (or the operator's
# shutdown) forever. Watches are kopf's and have their own timeouts.
TIMEOUT = (5.0, 30.0)


def api_client(kubeconfig: str | None, pool_size: int = 32) -> kubernetes.client.ApiClient:
    """A client of its own (not the global default): the kubeconfig file, or the pod's
    service account when `kubeconfig` is None. One connection per handler thread, or
    urllib3 discards and reopens them."""
    configuration = kubernetes.client.Configuration()
    if kubeconfig:
        kubernetes.config.load_kube_config(
            config_file=kubeconfig, client_configuration=configuration
        )
    else:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = pool_size
    return kubernetes.client.ApiClient(configuration)


class Stale(Exception):
    """The job changed between the read a decision was made from and its status write."""


class KubeClient:
    """The calls the operator makes, and nothing else (the chart's RBAC mirrors them)."""

    def __init__(self, api_client: kubernetes.client.ApiClient, retries: int = 5) -> None:
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.custom = kubernetes.client.CustomObjectsApi(api_client)
        self.retries = retries

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            body = self._call(
                "get",
                lambda: self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, name, _request_timeout=TIMEOUT
                ),
            )
            return cast(dict[str, Any], body)
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def list_pods(self, namespace: str, job: str) -> list[dict[str, Any]]:
        result = self._call(
            "list",
            lambda: self.core.list_namespaced_pod(
                namespace,
                label_selector=selector(job),
                _preload_content=False,
                _request_timeout=TIMEOUT,
            ),
        )
        return list(_json(result).get("items", []))

    def get_podgroup(self, namespace: str, job: str, api_version: str) -> dict[str, Any] | None:
        """The job's PodGroup (scheduler-plugins or Volcano); None when it does not exist."""
        group, version = api_version.split("/")
        try:
            body = self._call(
                "get",
                lambda: self.custom.get_namespaced_custom_object(
                    group, version, namespace, "podgroups", job, _request_timeout=TIMEOUT
                ),
            )
            return cast(dict[str, Any], body)
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def service_exists(self, namespace: str, job: str) -> bool:
        try:
            self._call(
                "get",
                lambda: self.core.read_namespaced_service(
                    job, namespace, _preload_content=False, _request_timeout=TIMEOUT
                ),
            )
            return True
        except ApiException as err:
            if err.status == 404:
                return False
            raise

    def apply(
        self,
        namespace: str,
        name: str,
        plan: Plan,
        current_status: dict[str, Any],
        resource_version: str | None = None,
    ) -> Refused | None:
        """Status first, then the objects: if the operator stops half-way, the next
        reconcile reads the decision from the status and finishes the teardown or the start.
        Deletions go before creations (they free quota). The first create the API refuses
        (403, 422, ...) stops the creating and is returned: the rest of a gang waits rather
        than hold resources for a gang that cannot form."""
        if plan.status is not None:
            self.write_status(namespace, name, plan.status, current_status, resource_version)
        for manifest in plan.update:
            self.patch_spec(namespace, manifest)
        for pod in plan.delete:
            self.delete_pod(namespace, pod)
        for pod in plan.force_delete:
            self.delete_pod(namespace, pod, grace_period_seconds=0)
        for manifest in plan.create:
            refused = self.create(namespace, manifest)
            if refused is not None:
                return refused
        if plan.delete_job:
            self._ignore(
                404,
                lambda: self._call(
                    "delete",
                    lambda: self.custom.delete_namespaced_custom_object(
                        GROUP, VERSION, namespace, PLURAL, name, _request_timeout=TIMEOUT
                    ),
                ),
            )
        return None

    def write_status(
        self,
        namespace: str,
        name: str,
        status: dict[str, Any],
        old: dict[str, Any],
        resource_version: str | None = None,
    ) -> str | None:
        """One merge patch of the whole status; keys that went away are removed with null.
        With `resource_version` (that of the job the decision was made from) the write is
        conditional: if the job changed since, the API answers 409 and this raises Stale,
        so that the decision is made again from what the job is now. Returns the new
        resourceVersion."""
        patch: dict[str, Any] = {"status": {**{k: None for k in old if k not in status}, **status}}
        if resource_version:
            patch["metadata"] = {"resourceVersion": resource_version}
        try:
            written = self._call(
                "patch",
                lambda: self.custom.patch_namespaced_custom_object_status(
                    GROUP, VERSION, namespace, PLURAL, name, patch, _request_timeout=TIMEOUT
                ),
                retry_conflicts=not resource_version,
            )
        except ApiException as err:
            if err.status == 409 and resource_version:
                raise Stale(f"{namespace}/{name} changed since it was read") from None
            raise
        return cast(dict[str, Any], written).get("metadata", {}).get("resourceVersion")

    def create(self, namespace: str, manifest: dict[str, Any]) -> Refused | None:
        """Create an object (one that exists is fine); None, or the API's refusal."""
        kind = manifest["kind"]
        create: Callable[[], Any] = {
            "Pod": lambda: self.core.create_namespaced_pod(
                namespace, cast(Any, manifest), _preload_content=False, _request_timeout=TIMEOUT
            ),
            "Service": lambda: self.core.create_namespaced_service(
                namespace, cast(Any, manifest), _preload_content=False, _request_timeout=TIMEOUT
            ),
            "PodGroup": lambda: self.custom.create_namespaced_custom_object(
                manifest["apiVersion"].split("/")[0],
                manifest["apiVersion"].split("/")[1],
                namespace,
                "podgroups",
                manifest,
                _request_timeout=TIMEOUT,
            ),
        }[kind]
        try:
            created = self._ignore(409, lambda: self._call("create", create, retry_conflicts=False))
        except ApiException as err:
            if err.status not in REFUSALS:
                raise
            return _refused(kind, manifest["metadata"]["name"], err)
        if created and kind == "Pod":
            metrics.PODS_CREATED.inc()
        return None

    def patch_spec(self, namespace: str, manifest: dict[str, Any]) -> None:
        """Merge-patch a custom object's spec (a PodGroup's minMember after a resize)."""
        group, version = manifest["apiVersion"].split("/")
        name = manifest["metadata"]["name"]
        self._call(
            "patch",
            lambda: self.custom.patch_namespaced_custom_object(
                group,
                version,
                namespace,
                "podgroups",
                name,
                {"spec": manifest["spec"]},
                _request_timeout=TIMEOUT,
            ),
        )

    def delete_pod(
        self, namespace: str, name: str, grace_period_seconds: int | None = None
    ) -> None:
        """Delete gracefully (the pod's own grace period), or with gracePeriodSeconds 0: at
        once, without waiting for a kubelet to confirm (a force delete)."""
        deleted = self._ignore(
            404,
            lambda: self._call(
                "delete",
                lambda: self.core.delete_namespaced_pod(
                    name,
                    namespace,
                    grace_period_seconds=grace_period_seconds,
                    propagation_policy="Background",
                    _preload_content=False,
                    _request_timeout=TIMEOUT,
                ),
            ),
        )
        if deleted:
            metrics.PODS_DELETED.inc()

    def _ignore(self, status: int, fn: Callable[[], Any]) -> bool:
        try:
            fn()
            return True
        except ApiException as err:
            if err.status == status:
                return False
            raise

    def _call(self, verb: str, fn: Callable[[], T], retry_conflicts: bool = True) -> T:
        delay = 0.2
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except ApiException as err:
                metrics.API_ERRORS.labels(verb=verb, code=str(err.status)).inc()
                retriable = err.status in RETRIABLE and (retry_conflicts or err.status != 409)
                if not retriable or attempt == self.retries:
                    raise
                log.warning(
                    "lightjob: API %s failed with %s; retrying in %.1fs", verb, err.status, delay
                )
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")


def _refused(kind: str, name: str, err: ApiException) -> Refused:
    """The API's Status (its reason and message) out of a refused request."""
    try:
        body = _json(err.body or "{}")
    except ValueError:
        body = {}
    return Refused(
        kind=kind,
        name=name,
        code=int(err.status or 0),
        reason=str(body.get("reason") or err.reason or ""),
        message=str(body.get("message") or err.body or ""),
    )


def _json(response: Any) -> dict[str, Any]:
    import json

    data = response.data if hasattr(response, "data") else response
    return json.loads(data) if isinstance(data, bytes | str) else dict(data)
