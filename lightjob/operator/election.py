"""Leader election through a coordination.k8s.io Lease, the way client-go does it.

Every replica runs `lead()`. One holds the Lease and runs kopf; the others stand by, read the
Lease every retry period and take it once its holder has not renewed it for a whole lease
duration, as measured on their own clock from when they saw it change. The API server lets
exactly one of several concurrent takers through (an update names the resourceVersion it
read; the others get 409 Conflict). A leader that cannot renew within the renew deadline,
which is shorter than the lease, exits at once: by the time another replica may take over,
it no longer acts. A leader stopped with SIGTERM stops kopf, then releases the Lease, so a
standby takes over within a retry period instead of a lease duration. Why a Lease and not
kopf's peering: docs/operator.md, "Leader election".
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import kubernetes
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

log = logging.getLogger("lightjob.operator")

MICRO_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"  # the API server's RFC3339Micro: six digits, always


@dataclass(frozen=True, slots=True)
class LeaseConfig:
    name: str
    namespace: str
    identity: str  # unique per process: own_identity()
    lease_duration: float = 15.0  # a standby takes over after this long without a renewal
    renew_deadline: float = 10.0  # the leader gives up (exits) after this long without one
    retry_period: float = 2.0  # how often the leader renews and a standby looks


def own_identity() -> str:
    """The pod's name (POD_NAME, from the downward API) or the host's, plus a per-process
    suffix: a restarted process never mistakes its predecessor's Lease for its own."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def claim(
    spec: dict[str, Any] | None,
    seen_at: float,
    now: float,
    wall: dt.datetime,
    config: LeaseConfig,
) -> dict[str, Any] | None:
    """The Lease spec that takes or keeps the lease for `config.identity` (`spec` None: no
    Lease yet), or None while another holder's lease runs.

    `seen_at` is when (this process's monotonic clock) `spec` was last seen to change. Expiry
    is measured from then, never from the holder's renewTime, so clocks that disagree
    between nodes can neither shorten nor lengthen a lease.
    """
    if spec is None:  # no Lease yet: the first holder
        spec, transitions = {}, 0
    else:  # a change of holder (from a released Lease's "" too) is a transition
        holder = spec.get("holderIdentity") or ""
        duration = spec.get("leaseDurationSeconds") or config.lease_duration
        if holder and holder != config.identity and now < seen_at + duration:
            return None
        transitions = (spec.get("leaseTransitions") or 0) + (1 if holder != config.identity else 0)
    mine = spec.get("holderIdentity") == config.identity
    stamp = wall.astimezone(dt.timezone.utc).strftime(MICRO_TIME)
    return {
        "holderIdentity": config.identity,
        "leaseDurationSeconds": math.ceil(config.lease_duration),
        "acquireTime": spec.get("acquireTime", stamp) if mine else stamp,
        "renewTime": stamp,
        "leaseTransitions": transitions,
    }


def released(spec: dict[str, Any], wall: dt.datetime) -> dict[str, Any]:
    """The spec a leader leaves behind when it stops: no holder, so a standby takes it at
    its next look. (A duration of 0 is invalid; client-go writes 1 too.)"""
    stamp = wall.astimezone(dt.timezone.utc).strftime(MICRO_TIME)
    return {**spec, "holderIdentity": "", "leaseDurationSeconds": 1, "renewTime": stamp}


class LeaseElector:
    """The Lease's I/O: read it, take or renew it, release it. Thread-safe enough for one
    renewing thread and one liveness server reading `last_attempt`."""

    def __init__(self, api_client: kubernetes.client.ApiClient, config: LeaseConfig) -> None:
        self.api = kubernetes.client.CoordinationV1Api(api_client)
        self.config = config
        self.last_attempt = time.monotonic()
        self._seen: tuple[dict[str, Any], float] | None = None  # (spec, when it last changed)

    def try_acquire_or_renew(self, deadline: float) -> bool:
        """One look at the Lease; True when this process holds it now. Every call ends by
        `deadline` (monotonic)."""
        self.last_attempt = now = time.monotonic()
        name, namespace = self.config.name, self.config.namespace
        try:
            lease = self._read(deadline)
            if lease is None:
                spec = claim(None, now, now, _utcnow(), self.config)
                assert spec is not None
                body: Any = {"metadata": {"name": name, "namespace": namespace}, "spec": spec}
                self.api.create_namespaced_lease(namespace, body, _request_timeout=_left(deadline))
                self._took(spec, now, None)
                return True
            spec = lease.get("spec") or {}
            if self._seen is None or self._seen[0] != spec:
                self._seen = (spec, now)
            wanted = claim(spec, self._seen[1], now, _utcnow(), self.config)
            if wanted is None:
                return False
            self.api.replace_namespaced_lease(
                name,
                namespace,
                cast(Any, {**lease, "spec": wanted}),
                _request_timeout=_left(deadline),
            )
            self._took(wanted, now, spec.get("holderIdentity"))
            return True
        except ApiException as err:
            if err.status != 409:  # 409: another replica wrote first; it leads
                log.warning("lightjob: Lease %s/%s: API error %s", namespace, name, err.status)
            return False
        except (HTTPError, OSError) as err:
            log.warning("lightjob: Lease %s/%s unreachable: %s", namespace, name, err)
            return False

    @property
    def holder(self) -> str | None:
        """The holder as last read (or written) by this process."""
        return self._seen[0].get("holderIdentity") if self._seen else None

    def acquire(self, stop: threading.Event) -> bool:
        """Stand by until this process holds the Lease (True) or `stop` is set (False)."""
        holder = None
        while not stop.is_set():
            if self.try_acquire_or_renew(time.monotonic() + self.config.renew_deadline):
                return True
            if self.holder != holder:
                holder = self.holder
                log.info("lightjob: standing by; the Lease is held by %s", holder)
            stop.wait(self.config.retry_period)
        return False

    @contextmanager
    def renewing(self, on_lost: Callable[[], None]) -> Iterator[None]:
        """Renew the Lease every retry period while the block runs; call `on_lost` (which
        must stop this process acting) if a renew deadline passes without a renewal."""
        stop = threading.Event()

        def renew() -> None:
            # Counted from when the attempt that renewed began, never from its answer: the
            # write happened after that, so a standby's lease duration, counted from when it
            # sees the write, ends after this renew deadline.
            renewed = self.last_attempt
            while not stop.wait(self.config.retry_period):
                began = time.monotonic()
                if self.try_acquire_or_renew(renewed + self.config.renew_deadline):
                    renewed = began
                elif (
                    self.holder not in (None, "", self.config.identity)  # another one took it
                    or time.monotonic() - renewed >= self.config.renew_deadline
                ):
                    on_lost()
                    return

        thread = threading.Thread(target=renew, name="lease-renewer", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def release(self) -> None:
        """Leave the Lease free, if this process still holds it (best effort: at worst a
        standby waits out the lease duration)."""
        deadline = time.monotonic() + self.config.renew_deadline
        try:
            lease = self._read(deadline)
            spec = (lease or {}).get("spec") or {}
            if lease is None or spec.get("holderIdentity") != self.config.identity:
                return
            self.api.replace_namespaced_lease(
                self.config.name,
                self.config.namespace,
                cast(Any, {**lease, "spec": released(spec, _utcnow())}),
                _request_timeout=_left(deadline),
            )
            log.info("lightjob: released the Lease %s", self.config.name)
        except (ApiException, HTTPError, OSError) as err:
            log.warning("lightjob: could not release the Lease: %s", err)

    def _read(self, deadline: float) -> dict[str, Any] | None:
        try:
            response = self.api.read_namespaced_lease(
                self.config.name,
                self.config.namespace,
                _preload_content=False,
                _request_timeout=_left(deadline),
            )
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        lease: dict[str, Any] = json.loads(cast(Any, response).data)
        return lease

    def _took(self, spec: dict[str, Any], now: float, previous: str | None) -> None:
        self._seen = (spec, now)
        if previous != self.config.identity:
            log.info(
                "lightjob: leading: took the Lease %s/%s (previous holder: %s)",
                self.config.namespace,
                self.config.name,
                previous or "none",
            )


def lead(
    config: LeaseConfig,
    api_client: kubernetes.client.ApiClient,
    liveness: str | None,
    operate: Callable[[], None],
) -> None:
    """Stand by until this replica holds the Lease, then `operate()` (kopf) while renewing
    it. SIGTERM while standing by returns at once; after `operate()` returns, the Lease is
    released. Losing the Lease ends the process at once (see `exit_now`)."""
    elector = LeaseElector(api_client, config)
    stop = threading.Event()
    handlers = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in _STOP_SIGNALS}
    try:
        with _standby_liveness(liveness, elector):
            if not elector.acquire(stop):
                return
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    try:
        with elector.renewing(on_lost=exit_now):
            operate()
    finally:
        elector.release()


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def exit_now() -> None:
    """The Lease is lost: another replica may take over at any moment. Handler threads may
    be mid-write, and a graceful stop would wait for them, so the process ends at once
    (client-go's controllers do the same). Plans are idempotent: the new leader finishes
    whatever this one left half done."""
    log.critical("lightjob: lost the Lease (not renewed within the renew deadline); exiting")
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(1)


@contextmanager
def _standby_liveness(url: str | None, elector: LeaseElector) -> Iterator[None]:
    """While standing by (kopf not running yet), answer the liveness probe at kopf's
    --liveness URL: 200 while the election loop keeps looking at the Lease, 503 when it is
    stuck. kopf serves the same URL once this replica leads."""
    if url is None:
        yield
        return
    parts = urllib.parse.urlsplit(url)
    stale = max(60.0, 3 * elector.config.renew_deadline)

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if urllib.parse.urlsplit(self.path).path != parts.path:
                self.send_error(404)
                return
            fresh = time.monotonic() - elector.last_attempt < stale
            body = json.dumps({"standby": True, "lease": elector.config.name}).encode()
            self.send_response(200 if fresh else 503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the kubelet probes every few seconds: not worth a log line each

    server = http.server.ThreadingHTTPServer(
        (parts.hostname or "localhost", parts.port or 80), Health
    )
    thread = threading.Thread(target=server.serve_forever, name="standby-liveness", daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()  # kopf binds the same port next


def _left(deadline: float) -> float:
    return max(0.1, deadline - time.monotonic())


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)
