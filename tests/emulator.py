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
  ValidatingAdmissionPolicy's 422, see admission.py), and Pod Security admission for
  namespaces labelled pod-security.kubernetes.io/enforce (crd_schema.py holds the
  custom-resource semantics);
- list and watch with labelSelector and fieldSelector; lists in pages (limit/continue);
  watch resumption from a resourceVersion, 410 Gone for one older than the compacted
  history (`watches.compact()`), BOOKMARK events, timeoutSeconds, and watches the server
  ends (`watches.close()`; see watches.py);
- finalizers, deletionTimestamp (for a pod, the end of its grace period), graceful pod
  deletion (the kubelet stand-in finishes it, or never does for a lost node), force
  deletion with gracePeriodSeconds 0, and owner-reference garbage collection;
- namespaces, nodes, events, kopf's peering resources, and both kinds of PodGroup;
- coordination.k8s.io Leases for leader election, decoded as the API server decodes them
  (MicroTime fields need exactly six fractional digits) and validated as it validates them;
- any number of clients at once, each call recorded with its caller (the bearer token of
  its kubeconfig), as an audit log would.
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
from typing import Any

import aiohttp.web
import jsonpatch
import jsonschema
import kmock

from lightjob.api.crd import build_crd
from tests.admission import PSA_LABEL, Rule, pod_security_problems
from tests.crd_schema import MISSING, CelRules, default, prune
from tests.watches import Watches, fields_match, label_selector

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
    # kopf's peering (lightjob operator --peering), as kopf's CRDs: no status subresource.
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
    # Leader election (the operator's --leader-elect): a Lease has no status subresource.
    ("coordination.k8s.io", "v1", "leases"): {"kind": "Lease", "namespaced": True, "status": False},
}
LEASES = "coordination.k8s.io/v1/leases"
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
        self.watches = Watches()
        self.history = self.watches.history  # (rv, resource, type, object): every change
        self.watchers = self.watches.queues  # resource -> the queues that follow it
        self.calls: list[tuple[str, str]] = []  # (method, path) of every object request
        self.queries: list[dict[str, str]] = []  # and its query parameters
        self.callers: list[str] = []  # and who made it (its Authorization header)
        # Faults to inject: (method, path fragment, status code, times left).
        self.faults: list[list[Any]] = []
        self.after_write: Any = None  # called with (method, resource, name) after each write
        self.on_request: Any = None  # called with (method, path) before each object request
        # Admission refusals injected per request: (resource, namespace, object) -> an
        # ApiError to answer with, or None (see exceeded_quota and denied_by_policy).
        self.admission: list[Rule] = []
        self._rv = itertools.count(1)
        crd = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        self._job_schema = jsonschema.Draft4Validator(crd)
        self._cel = CelRules()
        self._warnings: list[str] = []  # for the Warning header of the request in hand
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
        self.callers.append(raw.headers.get("Authorization", ""))
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
                state = [
                    (int(o["metadata"]["resourceVersion"]), "ADDED", o)
                    for (r, _, _), o in self.store.items()
                    if r == resource
                ]
                kind = _info(resource)["kind"]
                return await self.watches.serve(raw, resource, kind, namespace, params, state)
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
        wanted = label_selector(selector)
        found = sorted(
            (
                (key, o)
                for key, o in self.by_resource[resource].items()
                if (not namespace or key[0] == namespace)
                and wanted(o["metadata"].get("labels") or {})
                and fields_match(o, fields)
            ),
            key=lambda pair: pair[0],
        )
        rv = self._current_rv()
        if cont:
            token = json.loads(base64.b64decode(cont))
            if token["rv"] < self.watches.compacted_rv:
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
        if resource == LEASES:
            _validate_lease(obj)
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
        if "json-patch" not in content_type:
            # A PUT, or a merge patch, that names a resourceVersion is conditional on it.
            wanted = ((data or {}).get("metadata") or {}).get("resourceVersion")
            if wanted and wanted != old["metadata"]["resourceVersion"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {resource} "{name}": the object has '
                    "been modified; please apply your changes to the latest version and try again",
                )
        if method == "PUT":
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
            if resource == LEASES:
                _validate_lease(new)
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
        self.watches.publish(resource, kind, obj)

    def _current_rv(self) -> int:
        return self.watches.current_rv()

    # -- admission: what a valid create may still be refused by --------------------------------

    def _admit(self, resource: str, namespace: str, obj: dict[str, Any]) -> None:
        """Requests only (the tests' and the kubelet's direct calls skip it), as admission
        plugins and webhooks see them: the injected refusals, then Pod Security admission
        for namespaces labelled pod-security.kubernetes.io/enforce."""
        for rule in self.admission:
            refusal = rule(resource, namespace, obj)
            if refusal is not None:
                raise ApiError(*refusal)
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
                unknown += prune(obj[part], schema["properties"][part], part)
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
                default(obj[part], schema["properties"][part])
        name = obj.get("metadata", {}).get("name")
        errors = sorted(self._job_schema.iter_errors(obj), key=lambda e: list(e.path))
        problems = [
            f"{'.'.join(str(p) for p in e.path)}: Invalid value: {e.message}"
            for e in errors
            if not e.path or e.path[0] in (*parts, "metadata")
        ]
        for part in parts:
            if part in obj:
                before = (old or {}).get(part, MISSING)
                problems += self._cel.problems(schema["properties"][part], obj[part], before, part)
        if problems:
            listed = problems[0] if len(problems) == 1 else f"[{', '.join(problems)}]"
            raise ApiError(
                422, "Invalid", f'LightningJob.lightjob.dev "{name}" is invalid: {listed}'
            )

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


# Go's RFC3339Micro, which the API server parses a Lease's MicroTime fields with: exactly six
# fractional digits (Python's isoformat() drops them when the microseconds are 0).
MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)$")


def _validate_lease(obj: dict[str, Any]) -> None:
    spec = obj.get("spec") or {}
    for field in ("acquireTime", "renewTime"):
        value = spec.get(field)
        if value is not None and not (isinstance(value, str) and MICRO_TIME.match(value)):
            raise ApiError(
                400,
                "BadRequest",
                f'Lease in version "v1" cannot be handled as a Lease: parsing time "{value}" '
                'as "2006-01-02T15:04:05.000000Z07:00": cannot parse',
            )
    for field, least in (("leaseDurationSeconds", 1), ("leaseTransitions", 0)):
        value = spec.get(field)
        if value is not None and (not isinstance(value, int) or value < least):
            raise ApiError(
                422, "Invalid", f"Lease is invalid: spec.{field}: Invalid value: {value!r}"
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
