"""An in-process Kubernetes API for the operator tests, built on kmock.

kmock's scaffold serves discovery, errors and the HTTP server. kmock's own emulator is
deliberately simple, so the object API is done here, close enough to a real API server
for kopf, the kubernetes client and the operator, including the parts of a real cluster
that are unkind to it:

- uid, resourceVersion, generation (bumped by spec changes), creationTimestamp;
  metadata.namespace filled from the URL; generateName;
- 201 on create, 409 AlreadyExists, 409 Conflict on a stale resourceVersion (PUT, and a
  merge patch that names one), 404, and 422 for invalid objects, including a failed
  JSON-patch `test` op (which kopf relies on);
- merge, strategic-merge (as merge) and JSON patches, and PUT;
- the status subresource isolated from the main resource, and the scale subresource of
  LightningJobs (`kubectl scale`) mapped to spec.numNodes;
- LightningJobs handled as the API server handles a custom resource: unknown fields
  pruned (fieldValidation=Strict refuses them with 400; Warn, the default, answers with a
  Warning header), the schema's defaults applied inside objects that exist, the schema
  checked, and every CEL rule at every level evaluated, transition rules (oldSelf) only
  where the old object has the field, with the API server's wording;
- admission: refusals injected per request (`admission`: a ResourceQuota's 403, a
  ValidatingAdmissionPolicy's 422, see exceeded_quota and denied_by_policy), and Pod
  Security admission for namespaces labelled pod-security.kubernetes.io/enforce;
- list and watch with labelSelector and fieldSelector; lists in pages (limit/continue);
  watch resumption from a resourceVersion, 410 Gone for one older than the compacted
  history (`compact()`), BOOKMARK events, timeoutSeconds, and watches the server ends
  (`close_watches()`);
- finalizers, deletionTimestamp (for a pod, the end of its grace period), graceful pod
  deletion (the kubelet stand-in finishes it, or never does for a lost node), force
  deletion with gracePeriodSeconds 0, and owner-reference garbage collection;
- namespaces, nodes, events, kopf's peering resources, and both kinds of PodGroup.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime as dt
import itertools
import json
import re
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import aiohttp.web
import celpy
import jsonpatch
import jsonschema
import kmock

from lightjob.api.crd import build_crd

Key = tuple[str, str, str]  # (resource path, namespace or "", name)


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


RESOURCES: dict[tuple[str, str, str], dict[str, Any]] = {
    ("", "v1", "pods"): {"kind": "Pod", "namespaced": True, "status": True},
    ("", "v1", "services"): {"kind": "Service", "namespaced": True, "status": True},
    ("", "v1", "events"): {"kind": "Event", "namespaced": True, "status": False},
    ("", "v1", "namespaces"): {"kind": "Namespace", "namespaced": False, "status": True},
    ("", "v1", "nodes"): {"kind": "Node", "namespaced": False, "status": True},
    ("events.k8s.io", "v1", "events"): {"kind": "Event", "namespaced": True, "status": False},
    ("lightjob.dev", "v1alpha1", "lightningjobs"): {
        "kind": "LightningJob",
        "namespaced": True,
        "status": True,
        "scale": True,
    },
    # Gang scheduling: scheduler-plugins' and Volcano's PodGroups (their CRDs' status
    # subresources included).
    ("scheduling.x-k8s.io", "v1alpha1", "podgroups"): {
        "kind": "PodGroup",
        "namespaced": True,
        "status": True,
    },
    ("scheduling.volcano.sh", "v1beta1", "podgroups"): {
        "kind": "PodGroup",
        "namespaced": True,
        "status": True,
    },
    # As the chart's CRDs (charts/lightjob/crds/kopf-peering.yaml): no status subresource.
    ("kopf.dev", "v1", "clusterkopfpeerings"): {
        "kind": "ClusterKopfPeering",
        "namespaced": False,
        "status": False,
    },
    ("kopf.dev", "v1", "kopfpeerings"): {
        "kind": "KopfPeering",
        "namespaced": True,
        "status": False,
    },
}
NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


class Emulator(kmock.KubernetesScaffold):
    """Serve with `async with Emulator() as api, kmock.Server(api) as server: ...`."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for (group, version, plural), info in RESOURCES.items():
            subresources = {"status"} if info["status"] else set()
            if info.get("scale"):
                subresources.add("scale")
            verbs = {"get", "list", "watch", "create", "update", "patch", "delete"}
            self.resources[kmock.resource(group, version, plural)] = kmock.ResourceInfo(
                kind=info["kind"],
                namespaced=info["namespaced"],
                subresources=subresources,
                verbs=verbs,
            )
        self.store: dict[Key, dict[str, Any]] = {}
        self.by_resource: dict[str, dict[tuple[str, str], dict[str, Any]]] = defaultdict(dict)
        self.history: list[
            tuple[int, str, str, dict[str, Any]]
        ] = []  # (rv, resource, type, object)
        self.watchers: dict[str, list[asyncio.Queue[tuple[int, str, dict[str, Any]]]]] = (
            defaultdict(list)
        )
        self.calls: list[tuple[str, str]] = []  # (method, path) of every object request
        self.queries: list[dict[str, str]] = []  # and its query parameters
        # Faults to inject: (method, path fragment, status code, times left).
        self.faults: list[list[Any]] = []
        self.after_write: Any = None  # called with (method, resource, name) after each write
        self.on_request: Any = None  # called with (method, path) before each object request
        # Admission refusals injected per request: (resource, namespace, object) -> an
        # ApiError to answer with, or None (see exceeded_quota and denied_by_policy).
        self.admission: list[Callable[[str, str, dict[str, Any]], ApiError | None]] = []
        self._rv = itertools.count(1)
        crd = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        self._job_schema = jsonschema.Draft4Validator(crd)
        self._cel_env = celpy.Environment()
        self._cel_programs: dict[str, Any] = {}
        self._warnings: list[str] = []  # for the Warning header of the request in hand
        # Watches: the resourceVersion below which history is compacted (older watches
        # get 410 Gone), a way to end every open watch, and how often to send bookmarks.
        self.compacted_rv = 0
        self._watch_stops: set[asyncio.Event] = set()
        self.bookmark_interval = 1.0
        self.sent = {"BOOKMARK": 0, "410": 0}  # what the watches were told, for tests
        for name in ("default", "kube-system"):
            self.put("v1/namespaces", "", {"metadata": {"name": name}})

    # -- the HTTP side --------------------------------------------------------------------------

    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        route = _route(raw.path)
        if route is None:
            return await super().__call__(raw)  # discovery: /api, /apis, /apis/g/v, /version
        resource, namespace, name, subresource = route
        self.calls.append((raw.method, raw.path))
        self.queries.append(dict(raw.query))
        if self.on_request is not None:
            self.on_request(raw.method, raw.path)
        for fault in self.faults:
            if fault[0] == raw.method and fault[1] in raw.path and fault[3] > 0:
                fault[3] -= 1
                return aiohttp.web.json_response(
                    {
                        "apiVersion": "v1",
                        "kind": "Status",
                        "status": "Failure",
                        "code": fault[2],
                        "reason": "Injected",
                        "message": "injected by the test",
                        "metadata": {},
                    },
                    status=fault[2],
                )
        body = await raw.read()
        data = json.loads(body) if body else None
        params = dict(raw.query)
        self._warnings = []
        try:
            if raw.method == "GET" and params.get("watch") in ("true", "1"):
                return await self._watch(raw, resource, namespace, params)
            result, code = self._dispatch(
                raw.method,
                resource,
                namespace,
                name,
                subresource,
                data,
                params,
                raw.headers.get("Content-Type", ""),
            )
            if raw.method != "GET" and self.after_write is not None:
                self.after_write(raw.method, resource, name)
        except ApiError as err:
            return aiohttp.web.json_response(
                {
                    "apiVersion": "v1",
                    "kind": "Status",
                    "status": "Failure",
                    "code": err.code,
                    "reason": err.reason,
                    "message": err.message,
                    "metadata": {},
                },
                status=err.code,
            )
        headers = {"Warning": ", ".join(f'299 - "{w}"' for w in self._warnings)}
        return aiohttp.web.json_response(
            result, status=code, headers=headers if self._warnings else None
        )

    def _dispatch(
        self,
        method: str,
        resource: str,
        namespace: str | None,
        name: str | None,
        subresource: str | None,
        data: Any,
        params: dict[str, str],
        content_type: str,
    ) -> tuple[Any, int]:
        validation = params.get("fieldValidation", "Warn")
        if name is None:
            if method == "GET":
                return self.list(
                    resource,
                    namespace,
                    params.get("labelSelector", ""),
                    params.get("fieldSelector", ""),
                    int(params["limit"]) if params.get("limit") else None,
                    params.get("continue", ""),
                ), 200
            if method == "POST":
                self._admit(resource, namespace or "", data or {})
                return self.create(resource, namespace or "", data, validation), 201
            raise ApiError(405, "MethodNotAllowed", f"{method} on a collection")
        if method == "GET":
            obj = self.get(resource, namespace or "", name)
            return (self._scale_of(obj) if subresource == "scale" else obj), 200
        if method == "DELETE":
            grace = (data or {}).get("gracePeriodSeconds")
            if grace is None and params.get("gracePeriodSeconds") is not None:
                grace = int(params["gracePeriodSeconds"])
            return self.delete(resource, namespace or "", name, grace), 200
        if method in ("PATCH", "PUT"):
            return self.update(
                resource, namespace or "", name, subresource, data, content_type, method, validation
            ), 200
        raise ApiError(405, "MethodNotAllowed", method)

    async def _watch(
        self,
        raw: aiohttp.web.BaseRequest,
        resource: str,
        namespace: str | None,
        params: dict[str, str],
    ) -> aiohttp.web.StreamResponse:
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(raw)
        selector, fields = (
            _selector(params.get("labelSelector", "")),
            params.get("fieldSelector", ""),
        )
        since = params.get("resourceVersion")
        if since and since.isdigit() and 0 < int(since) < self.compacted_rv:
            gone = {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": f"too old resource version: {since} ({self.compacted_rv})",
                "reason": "Expired",
                "code": 410,
            }
            await response.write(json.dumps({"type": "ERROR", "object": gone}).encode() + b"\n")
            self.sent["410"] += 1
            return response
        queue: asyncio.Queue[tuple[int, str, dict[str, Any]]] = asyncio.Queue()
        self.watchers[resource].append(queue)
        stop = asyncio.Event()
        self._watch_stops.add(stop)
        if since and since.isdigit() and int(since) > 0:
            backlog = [
                (rv, t, o) for rv, r, t, o in self.history if r == resource and rv > int(since)
            ]
        else:
            backlog = [
                (int(o["metadata"]["resourceVersion"]), "ADDED", o)
                for (r, _, _), o in self.store.items()
                if r == resource
            ]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(params.get("timeoutSeconds") or 3600)
        bookmarks = params.get("allowWatchBookmarks") in ("true", "1")
        next_bookmark = loop.time() + self.bookmark_interval
        try:
            for event in backlog:
                await self._send(response, event, namespace, selector, fields)
            while loop.time() < deadline and not stop.is_set():
                try:
                    event = await asyncio.wait_for(queue.get(), timeout=0.2)
                except asyncio.TimeoutError:
                    if bookmarks and loop.time() >= next_bookmark:
                        await self._bookmark(response, resource)
                        next_bookmark = loop.time() + self.bookmark_interval
                    continue
                if stop.is_set():
                    break  # closed: what happened since is for the next watch to find
                await self._send(response, event, namespace, selector, fields)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.watchers[resource].remove(queue)
            self._watch_stops.discard(stop)
        return response

    async def _bookmark(self, response: aiohttp.web.StreamResponse, resource: str) -> None:
        """A BOOKMARK: no object, only the resourceVersion the watch has seen up to."""
        kind = _info(resource)["kind"]
        api_version = resource.rsplit("/", 1)[0]
        bookmark = {
            "kind": kind,
            "apiVersion": api_version,
            "metadata": {"resourceVersion": str(self._current_rv())},
        }
        await response.write(json.dumps({"type": "BOOKMARK", "object": bookmark}).encode() + b"\n")
        self.sent["BOOKMARK"] += 1

    def compact(self) -> None:
        """Forget the history so far, as etcd compaction does: a watch that resumes from an
        older resourceVersion gets 410 Gone and must list again."""
        self.compacted_rv = self._current_rv()

    def close_watches(self) -> None:
        """End every open watch (an API server restart, a load balancer's idle timeout):
        clients reconnect from the last resourceVersion they saw."""
        for stop in self._watch_stops:
            stop.set()

    async def _send(
        self,
        response: aiohttp.web.StreamResponse,
        event: tuple[int, str, dict[str, Any]],
        namespace: str | None,
        selector: Any,
        fields: str,
    ) -> None:
        _, kind, obj = event
        meta = obj["metadata"]
        if namespace and meta.get("namespace") != namespace:
            return
        if not selector(meta.get("labels") or {}) or not _fields_match(obj, fields):
            return
        await response.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")

    # -- the object store: also called directly by tests and the kubelet stand-in ---------------

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any]:
        obj = self.store.get((resource, namespace, name))
        if obj is None:
            raise ApiError(404, "NotFound", f'{resource} "{name}" not found')
        return copy.deepcopy(obj)

    def find(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.store.get((resource, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def list(
        self,
        resource: str,
        namespace: str | None,
        selector: str = "",
        fields: str = "",
        limit: int | None = None,
        cont: str = "",
    ) -> dict[str, Any]:
        """A list, in chunks of `limit` when asked: each chunk's metadata.continue resumes
        after its last item ("" at the end), and a token older than the compacted history
        is 410 Expired, as on a real API server."""
        wanted = _selector(selector)
        found = sorted(
            (
                (key, o)
                for key, o in self.by_resource[resource].items()
                if (not namespace or key[0] == namespace)
                and wanted(o["metadata"].get("labels") or {})
                and _fields_match(o, fields)
            ),
            key=lambda pair: pair[0],
        )
        rv = self._current_rv()
        if cont:
            token = json.loads(base64.b64decode(cont))
            if token["rv"] < self.compacted_rv:
                raise ApiError(
                    410,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list "
                    "result. You can start a new list without the continue parameter.",
                )
            after, rv = tuple(token["after"]), token["rv"]
            found = [pair for pair in found if pair[0] > after]
        more = ""
        if limit and len(found) > limit:
            found = found[:limit]
            token = {"rv": rv, "after": list(found[-1][0])}
            more = base64.b64encode(json.dumps(token).encode()).decode()
        metadata: dict[str, Any] = {"resourceVersion": str(rv), "continue": more}
        return {
            "apiVersion": "v1",
            "kind": "List",
            "items": [copy.deepcopy(o) for _, o in found],
            "metadata": metadata,
        }

    def create(
        self, resource: str, namespace: str, data: dict[str, Any], field_validation: str = "Warn"
    ) -> dict[str, Any]:
        info = _info(resource)
        obj = copy.deepcopy(data or {})
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        name = meta.get("name")
        if not name or not NAME.match(name) or len(name) > 253:
            raise ApiError(422, "Invalid", f"metadata.name: Invalid value: {name!r}")
        namespace = namespace if info["namespaced"] else ""
        if info["namespaced"]:
            meta["namespace"] = namespace
        if (resource, namespace, name) in self.store:
            raise ApiError(409, "AlreadyExists", f'{resource} "{name}" already exists')
        if info["status"] and resource != "v1/pods":
            obj.pop("status", None)  # the status subresource is written separately
        if resource == "v1/pods":
            obj["status"] = {"phase": "Pending"}
        if resource.startswith("lightjob.dev/"):
            self._validate_job(obj, None, field_validation, ("spec",))
        meta.update(
            uid=str(uuid.uuid4()),
            generation=1,
            creationTimestamp=_now().isoformat().replace("+00:00", "Z"),
        )
        self._commit(resource, namespace, name, obj, "ADDED")
        return copy.deepcopy(obj)

    def put(self, resource: str, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Store an object as it is, skipping validation: an object from before a schema
        change, or one a newer CRD (another operator version) let through. Replacing an
        object keeps its identity and bumps its generation when the spec changed."""
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        old = self.store.get((resource, namespace, meta["name"]))
        if old is not None:
            for key in ("uid", "creationTimestamp", "generation"):
                meta[key] = old["metadata"][key]
            if obj.get("spec") != old.get("spec"):
                meta["generation"] += 1
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("generation", 1)
        meta.setdefault("creationTimestamp", _now().isoformat().replace("+00:00", "Z"))
        if namespace:
            meta["namespace"] = namespace
        self._commit(resource, namespace, meta["name"], obj, "ADDED" if old is None else "MODIFIED")
        return copy.deepcopy(obj)

    def update(
        self,
        resource: str,
        namespace: str,
        name: str,
        subresource: str | None,
        data: Any,
        content_type: str = "application/merge-patch+json",
        method: str = "PATCH",
        field_validation: str = "Warn",
    ) -> dict[str, Any]:
        key = (resource, namespace, name)
        old = self.store.get(key)
        if old is None:
            raise ApiError(404, "NotFound", f'{resource} "{name}" not found')
        if subresource == "scale":
            return self._scale(key, old, data, method)
        if method == "PUT":
            wanted = (data or {}).get("metadata", {}).get("resourceVersion")
            if wanted and wanted != old["metadata"]["resourceVersion"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {resource} "{name}": '
                    "the object has been modified; please apply your changes to the latest version",
                )
            patched = copy.deepcopy(data)
        elif "json-patch" in content_type:
            try:
                patched = jsonpatch.apply_patch(old, data)
            except (
                jsonpatch.JsonPatchTestFailed,
                jsonpatch.JsonPatchConflict,
                jsonpatch.JsonPointerException,
            ) as err:
                raise ApiError(422, "Invalid", f"the server rejected our request: {err}") from None
        else:
            # A merge patch that names a resourceVersion is conditional, as with PUT.
            wanted = ((data or {}).get("metadata") or {}).get("resourceVersion")
            if wanted and wanted != old["metadata"]["resourceVersion"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {resource} "{name}": the object has '
                    "been modified; please apply your changes to the latest version and try again",
                )
            patched = _merge(copy.deepcopy(old), data or {})
        new = copy.deepcopy(old)
        info = _info(resource)
        if subresource == "status":
            new["status"] = patched.get("status")
            if resource.startswith("lightjob.dev/") and new["status"] is not None:
                self._validate_job(new, old, field_validation, ("status",))
        else:
            new = patched
            new["metadata"] = {
                **patched.get("metadata", {}),
                **{
                    k: old["metadata"][k]
                    for k in ("uid", "namespace", "creationTimestamp", "generation")
                    if k in old["metadata"]
                },
            }
            if info["status"] and resource != "v1/pods":
                new["status"] = old.get("status")  # status changes need the subresource
            if resource.startswith("lightjob.dev/"):
                self._validate_job(new, old, field_validation, ("spec",))
            if new.get("spec") != old.get("spec"):
                new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        if new.get("status") is None:
            new.pop("status", None)
        if new == old:
            return copy.deepcopy(old)
        self._commit(resource, namespace, name, new, "MODIFIED")
        # The last finalizer removed from an object being deleted: it goes. (A pod being
        # deleted gracefully goes when its kubelet says so, with a zero-grace delete.)
        meta = new["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and resource != "v1/pods":
            self._remove(key)
        return copy.deepcopy(new)

    def delete(
        self, resource: str, namespace: str, name: str, grace: int | None = None
    ) -> dict[str, Any]:
        key = (resource, namespace, name)
        obj = self.store.get(key)
        if obj is None:
            raise ApiError(404, "NotFound", f'{resource} "{name}" not found')
        meta = obj["metadata"]
        if resource == "v1/pods" and grace is None:
            grace = (obj.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
        running = (
            resource == "v1/pods"
            and (obj.get("spec") or {}).get("nodeName")
            and (obj.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        )
        if meta.get("finalizers") or (running and grace):
            if not meta.get("deletionTimestamp"):
                new = copy.deepcopy(obj)
                # A pod's deletionTimestamp is when its grace period ends, as the API server
                # sets it; for other objects, the time of the request.
                when = _now() + dt.timedelta(seconds=grace or 0)
                new["metadata"]["deletionTimestamp"] = when.isoformat().replace("+00:00", "Z")
                if resource == "v1/pods":
                    new["metadata"]["deletionGracePeriodSeconds"] = grace
                self._commit(resource, namespace, name, new, "MODIFIED")
            return copy.deepcopy(self.store[key])
        return self._remove(key)

    def _remove(self, key: Key) -> dict[str, Any]:
        obj = self.store.pop(key)
        self.by_resource[key[0]].pop((key[1], key[2]), None)
        obj["metadata"]["resourceVersion"] = str(next(self._rv))
        self._publish(key[0], "DELETED", obj)
        uid = obj["metadata"].get("uid")
        for other_key, other in list(self.store.items()):  # owner-reference garbage collection
            owners = other["metadata"].get("ownerReferences") or []
            if any(o.get("uid") == uid for o in owners) and other_key in self.store:
                self.delete(*other_key)
        return obj

    def _commit(
        self, resource: str, namespace: str, name: str, obj: dict[str, Any], kind: str
    ) -> None:
        obj["metadata"]["resourceVersion"] = str(next(self._rv))
        self.store[(resource, namespace, name)] = obj
        self.by_resource[resource][(namespace, name)] = obj
        self._publish(resource, kind, obj)

    def _publish(self, resource: str, kind: str, obj: dict[str, Any]) -> None:
        rv = int(obj["metadata"]["resourceVersion"])
        snapshot = copy.deepcopy(obj)
        self.history.append((rv, resource, kind, snapshot))
        for queue in self.watchers.get(resource, []):
            queue.put_nowait((rv, kind, snapshot))

    def _current_rv(self) -> int:
        return self.history[-1][0] if self.history else 0

    # -- admission: what a valid create may still be refused by --------------------------------

    def _admit(self, resource: str, namespace: str, obj: dict[str, Any]) -> None:
        """Requests only (the tests' and the kubelet's direct calls skip it), as admission
        plugins and webhooks see them: the injected refusals, then Pod Security admission
        for namespaces labelled pod-security.kubernetes.io/enforce."""
        for rule in self.admission:
            error = rule(resource, namespace, obj)
            if error is not None:
                raise error
        if resource == "v1/pods":
            ns = self.find("v1/namespaces", "", namespace) or {}
            level = (ns.get("metadata", {}).get("labels") or {}).get(PSA_LABEL)
            problems = pod_security_problems(obj, level) if level else []
            if problems:
                name = obj.get("metadata", {}).get("name")
                raise ApiError(
                    403,
                    "Forbidden",
                    f'pods "{name}" is forbidden: violates PodSecurity "{level}:latest": '
                    + ", ".join(problems),
                )

    # -- LightningJob specifics ----------------------------------------------------------------------

    def _validate_job(
        self,
        obj: dict[str, Any],
        old: dict[str, Any] | None = None,
        field_validation: str = "Warn",
        parts: tuple[str, ...] = ("spec", "status"),
    ) -> None:
        """What the API server does with a custom resource, in its order: prune the fields
        the schema does not declare (fieldValidation Strict refuses them instead, with 400;
        Warn, the default, says so in a Warning header), apply the schema's defaults, check
        the schema, then every CEL rule at every level (transition rules, with oldSelf, only
        where the old object has the field too)."""
        schema = self._job_schema.schema
        unknown: list[str] = []
        for part in parts:
            if isinstance(obj.get(part), dict):
                unknown += _prune(obj[part], schema["properties"][part], part)
        if unknown and field_validation == "Strict":
            raise ApiError(
                400,
                "BadRequest",
                'LightningJob in version "v1alpha1" cannot be handled as a LightningJob: '
                "strict decoding error: " + ", ".join(f'unknown field "{u}"' for u in unknown),
            )
        if field_validation != "Ignore":
            self._warnings += [f'unknown field "{u}"' for u in unknown]
        for part in parts:
            if isinstance(obj.get(part), dict):
                _default(obj[part], schema["properties"][part])
        name = obj.get("metadata", {}).get("name")
        errors = sorted(self._job_schema.iter_errors(obj), key=lambda e: list(e.path))
        problems = [
            f"{'.'.join(str(p) for p in e.path)}: Invalid value: {e.message}"
            for e in errors
            if not e.path or e.path[0] in (*parts, "metadata")
        ]
        for part in parts:
            if part in obj:
                before = (old or {}).get(part, _MISSING)
                problems += self._cel(schema["properties"][part], obj[part], before, part)
        if problems:
            listed = problems[0] if len(problems) == 1 else f"[{', '.join(problems)}]"
            raise ApiError(
                422, "Invalid", f'LightningJob.lightjob.dev "{name}" is invalid: {listed}'
            )

    def _cel(self, schema: dict[str, Any], value: Any, old: Any, path: str) -> list[str]:
        """The x-kubernetes-validations failed at this node and below, as the API server
        words them."""
        problems = []
        for rule in schema.get("x-kubernetes-validations") or []:
            uses_old = "oldSelf" in rule["rule"]
            if uses_old and old is _MISSING:
                continue  # a transition rule needs the old value
            if rule["rule"] not in self._cel_programs:
                self._cel_programs[rule["rule"]] = self._cel_env.program(
                    self._cel_env.compile(rule["rule"])
                )
            activation = {"self": celpy.json_to_cel(value)}
            if uses_old:
                activation["oldSelf"] = celpy.json_to_cel(old)
            try:
                result = self._cel_programs[rule["rule"]].evaluate(activation)
                holds = not isinstance(result, Exception) and bool(result)
            except Exception:
                holds = False
            if not holds:
                kind = _json_type(value)
                message = rule.get("message") or f"failed rule: {rule['rule']}"
                problems.append(f'{path}: Invalid value: "{kind}": {message}')
        if isinstance(value, dict):
            for key, sub in (schema.get("properties") or {}).items():
                if key in value:
                    before = old.get(key, _MISSING) if isinstance(old, dict) else _MISSING
                    problems += self._cel(sub, value[key], before, f"{path}.{key}")
            extra = schema.get("additionalProperties")
            if isinstance(extra, dict):
                for key, item in value.items():
                    before = old.get(key, _MISSING) if isinstance(old, dict) else _MISSING
                    problems += self._cel(extra, item, before, f"{path}[{key}]")
        if isinstance(value, list) and isinstance(schema.get("items"), dict):
            for i, item in enumerate(value):
                problems += self._cel(schema["items"], item, _MISSING, f"{path}[{i}]")
        return problems

    def _scale_of(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        return {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion")},
            "spec": {"replicas": obj["spec"].get("numNodes", 1)},
            "status": {
                "replicas": (obj.get("status") or {}).get("replicas", 0),
                "selector": (obj.get("status") or {}).get("selector", ""),
            },
        }

    def _scale(self, key: Key, old: dict[str, Any], data: Any, method: str) -> dict[str, Any]:
        replicas = (data or {}).get("spec", {}).get("replicas")
        if not isinstance(replicas, int):
            raise ApiError(422, "Invalid", "spec.replicas: Required value")
        self.update(key[0], key[1], key[2], None, {"spec": {"numNodes": replicas}})
        return self._scale_of(self.store[key])


# -- admission refusals, as the API server words them -------------------------------------------

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
) -> Callable[[str, str, dict[str, Any]], ApiError | None]:
    """A ResourceQuota with no room left for these pods (403 Forbidden)."""

    def rule(path: str, namespace: str, obj: dict[str, Any]) -> ApiError | None:
        name = obj.get("metadata", {}).get("name")
        if path != "v1/pods" or name not in names:
            return None
        return ApiError(
            403,
            "Forbidden",
            f'pods "{name}" is forbidden: exceeded quota: {quota}, requested: '
            f"{resource}={requested}, used: {resource}={used}, limited: {resource}={limited}",
        )

    return rule


def denied_by_policy(
    names: set[str], message: str, policy: str = "require-team-label"
) -> Callable[[str, str, dict[str, Any]], ApiError | None]:
    """A ValidatingAdmissionPolicy that denies these pods (its default reason: 422 Invalid)."""

    def rule(path: str, namespace: str, obj: dict[str, Any]) -> ApiError | None:
        name = obj.get("metadata", {}).get("name")
        if path != "v1/pods" or name not in names:
            return None
        return ApiError(
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


# -- a structural schema, as the API server applies it to custom resources ------------------------

_MISSING = object()


def _prune(value: Any, schema: dict[str, Any], path: str) -> list[str]:
    """Drop (in place) what the schema does not declare; the paths dropped."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    dropped: list[str] = []
    if isinstance(value, dict) and "properties" in schema:
        for key in list(value):
            if key not in schema["properties"]:
                dropped.append(f"{path}.{key}")
                del value[key]
            else:
                dropped += _prune(value[key], schema["properties"][key], f"{path}.{key}")
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, item in value.items():
            dropped += _prune(item, schema["additionalProperties"], f"{path}[{key}]")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            dropped += _prune(item, schema["items"], f"{path}[{i}]")
    return dropped


def _default(value: Any, schema: dict[str, Any]) -> None:
    """Fill in (in place) the schema's defaults, in objects that exist: a default inside
    an absent object is not applied, as on the API server."""
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                _default(value[key], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and "properties" not in schema:
            for item in value.values():
                _default(item, extra)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            _default(item, schema["items"])


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    return {dict: "object", list: "array", str: "string", int: "integer", float: "number"}.get(
        type(value), "null"
    )


def _route(path: str) -> tuple[str, str | None, str | None, str | None] | None:
    """(resource path "group/version/plural" or "v1/plural", namespace, name, subresource)."""
    parts = path.strip("/").split("/")
    if parts[:1] == ["api"] and len(parts) >= 3:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 4:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    if (
        rest[0] == "namespaces"
        and len(rest) >= 3
        and (group, version, "namespaces") != ("", "v1", rest[2])
    ):
        namespace, rest = rest[1], rest[2:]
    plural, name, subresource = rest[0], (rest[1:2] or [None])[0], (rest[2:3] or [None])[0]
    if (group, version, plural) not in RESOURCES:
        return None
    resource = f"{group}/{version}/{plural}" if group else f"{version}/{plural}"
    return resource, namespace, name, subresource


def _info(resource: str) -> dict[str, Any]:
    parts = resource.split("/")
    key = ("", parts[0], parts[1]) if len(parts) == 2 else (parts[0], parts[1], parts[2])
    return RESOURCES[key]


def _merge(target: Any, patch: Any) -> Any:
    """JSON merge patch (RFC 7386)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = _merge(target.get(key), value)
    return target


def _selector(selector: str) -> Any:
    """Compile a label selector (a=b, a==b, a!=b, a in (x,y), a notin (x), a, !a) into a
    predicate over a labels dict."""
    tests = []
    for term in re.findall(r"[^,(]+(?:\([^)]*\))?", selector):
        term = term.strip()
        if not term:
            continue
        found = re.fullmatch(r"(\S+)\s+(in|notin)\s+\((.*)\)", term)
        if found:
            key, negate = found.group(1), found.group(2) == "notin"
            values = {v.strip() for v in found.group(3).split(",")}
            tests.append(lambda labels, k=key, v=values, n=negate: (labels.get(k) in v) != n)
        elif "!=" in term:
            key, value = (x.strip() for x in term.split("!=", 1))
            tests.append(lambda labels, k=key, v=value: labels.get(k) != v)
        elif "=" in term:
            key, value = (x.strip() for x in term.replace("==", "=").split("=", 1))
            tests.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif term.startswith("!"):
            tests.append(lambda labels, k=term[1:]: k not in labels)
        else:
            tests.append(lambda labels, k=term: k in labels)
    return lambda labels: all(test(labels) for test in tests)


def _fields_match(obj: dict[str, Any], fields: str) -> bool:
    for term in filter(None, fields.split(",")):
        key, _, value = term.partition("=")
        node: Any = obj
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if str(node) != value:
            return False
    return True


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


async def serve(port: int = 0) -> None:
    """Run the emulator and the kubelet stand-in as their own process (the benchmark's API
    server), printing `URL <url>`; GET /debug/calls returns the calls served so far."""
    from tests.kubelet import Kubelet

    api = Emulator()
    api.fallback["get /debug/calls"] << (lambda request: {"calls": api.calls})
    async with api, kmock.Server(api, port=port or None) as server:
        print(f"URL {str(server.url).rstrip('/')}", flush=True)
        await Kubelet(api).run()


if __name__ == "__main__":
    asyncio.run(serve())
