"""Watch streams, as the API server serves them: changes since a resourceVersion, 410 Gone
for one older than the compacted history, BOOKMARK events, and watches the server ends.
The emulator publishes every change here; the kubelet stand-in follows pods through
`queues` too."""

from __future__ import annotations

import asyncio
import copy
import json
import re
from collections import defaultdict
from typing import Any

import aiohttp.web

Change = tuple[int, str, dict[str, Any]]  # (resourceVersion, ADDED/MODIFIED/DELETED, object)


class Watches:
    def __init__(self) -> None:
        self.history: list[tuple[int, str, str, dict[str, Any]]] = []  # every change
        self.queues: dict[str, list[asyncio.Queue[Change]]] = defaultdict(list)
        # The resourceVersion below which history is compacted (older watches get 410
        # Gone), how often idle watches get a bookmark, and what they were told.
        self.compacted_rv = 0
        self.bookmark_interval = 1.0
        self.sent = {"BOOKMARK": 0, "410": 0}
        self._stops: set[asyncio.Event] = set()

    def publish(self, resource: str, kind: str, obj: dict[str, Any]) -> None:
        rv = int(obj["metadata"]["resourceVersion"])
        snapshot = copy.deepcopy(obj)
        self.history.append((rv, resource, kind, snapshot))
        for queue in self.queues.get(resource, []):
            queue.put_nowait((rv, kind, snapshot))

    def current_rv(self) -> int:
        return self.history[-1][0] if self.history else 0

    async def serve(
        self,
        raw: aiohttp.web.BaseRequest,
        resource: str,
        kind: str,
        namespace: str | None,
        params: dict[str, str],
        state: list[tuple[int, str, dict[str, Any]]],
    ) -> aiohttp.web.StreamResponse:
        """One watch request: the changes since its resourceVersion (or `state`, the objects
        as they are, without one), then each change as it happens, until its timeout."""
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(raw)
        selector, fields = (
            label_selector(params.get("labelSelector", "")),
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
        self.queues[resource].append(queue)
        stop = asyncio.Event()
        self._stops.add(stop)
        if since and since.isdigit() and int(since) > 0:
            backlog = [
                (rv, t, o) for rv, r, t, o in self.history if r == resource and rv > int(since)
            ]
        else:
            backlog = state
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
                        await self._bookmark(response, resource, kind)
                        next_bookmark = loop.time() + self.bookmark_interval
                    continue
                if stop.is_set():
                    break  # closed: what happened since is for the next watch to find
                await self._send(response, event, namespace, selector, fields)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.queues[resource].remove(queue)
            self._stops.discard(stop)
        return response

    async def _bookmark(
        self, response: aiohttp.web.StreamResponse, resource: str, kind: str
    ) -> None:
        """A BOOKMARK: no object, only the resourceVersion the watch has seen up to."""
        api_version = resource.rsplit("/", 1)[0]
        bookmark = {
            "kind": kind,
            "apiVersion": api_version,
            "metadata": {"resourceVersion": str(self.current_rv())},
        }
        await response.write(json.dumps({"type": "BOOKMARK", "object": bookmark}).encode() + b"\n")
        self.sent["BOOKMARK"] += 1

    def compact(self) -> None:
        """Forget the history so far, as etcd compaction does: a watch that resumes from an
        older resourceVersion gets 410 Gone and must list again."""
        self.compacted_rv = self.current_rv()

    def close(self) -> None:
        """End every open watch (an API server restart, a load balancer's idle timeout):
        clients reconnect from the last resourceVersion they saw."""
        for stop in self._stops:
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
        if not selector(meta.get("labels") or {}) or not fields_match(obj, fields):
            return
        await response.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")


def label_selector(selector: str) -> Any:
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


def fields_match(obj: dict[str, Any], fields: str) -> bool:
    for term in filter(None, fields.split(",")):
        key, _, value = term.partition("=")
        node: Any = obj
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if str(node) != value:
            return False
    return True
