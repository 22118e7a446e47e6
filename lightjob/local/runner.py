"""`lightjob run JOB.yaml`: a LightningJob on one machine, through the same controller.

The job lives in memory (and its status in `runs/<job>/status.json`); the controller's
plans are applied to local processes (LocalPods) instead of a cluster. Node 0's output is
streamed, the controller's events are printed as they happen, and a summary ends the run.
Ctrl-C suspends gracefully (every node checkpoints); running the command again resumes.
A run that finished is set aside instead, and the command starts a new one (previous.py).
Node 0's metrics endpoint is read as the operator reads it: status.progress, and the step
that `--preempt-at-step` waits for.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import socket
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any, TextIO

from lightjob.api.validate import InvalidJobError, load_job
from lightjob.controller import (
    Event,
    PodView,
    Sample,
    Settings,
    observe_job,
    observe_pod,
    parse,
    reconcile,
)
from lightjob.local import previous
from lightjob.local.pods import LocalPods
from lightjob.local.summary import CAUSES, Failure, History, failure_of, render

EXIT_SUCCEEDED, EXIT_FAILED, EXIT_INVALID, EXIT_SUSPENDED = 0, 1, 2, 130
# Node 0's metrics, read this often (seconds); as often as the loop turns while
# --preempt-at-step waits, so the preemption lands close to its step.
SCRAPE_INTERVAL, SCRAPE_TIMEOUT = 1.0, 1.0
# Pod addresses are reached directly, never through an HTTP(S)_PROXY of the shell.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Run:
    def __init__(
        self,
        path: str,
        *,
        nodes: int | None = None,
        preempt_after: float | None = None,
        preempt_at_step: int | None = None,
        previous_run: str | None = None,
        runs_dir: str = "runs",
        backoff_seconds: float = 2.0,
        out: TextIO = sys.stdout,
    ) -> None:
        self.path = path
        self.nodes = nodes
        self.preempt_after = preempt_after
        self.preempt_at_step = preempt_at_step
        self.previous_run = previous_run  # "resume", "fresh", or None: decide from its phase
        self.runs_dir = Path(runs_dir)
        self.backoff = backoff_seconds
        self.out = out
        self.started = time.monotonic()
        self.interrupted = False
        self.history = History()
        self._scraped_at = 0.0
        self._last_step: int | None = None  # node 0's, as its metrics last said
        self._preempt_deadline: float | None = None  # when --preempt-after fires
        self._mtime = os.stat(path).st_mtime if os.path.exists(path) else 0.0

    def main(self) -> int:
        try:
            body = self._load()
        except InvalidJobError as err:
            self._say(f"invalid job:\n{err}")
            return EXIT_INVALID
        self.dir = self.runs_dir / body["metadata"]["name"]
        problem = self._start(body)
        if problem:
            self._say(problem)
            return EXIT_INVALID
        interrupt = signal.signal(signal.SIGINT, self._on_interrupt)
        phase, failure = "Failed", None
        try:
            phase = self._loop(body)
            failure = self._last_failure()
        finally:
            signal.signal(signal.SIGINT, interrupt)
            self.pods.stop_all()  # nothing is left running, whatever happened
        self._unfired_preemption()
        self._summary(body, failure)
        return {"Succeeded": EXIT_SUCCEEDED, "Suspended": EXIT_SUSPENDED}.get(phase, EXIT_FAILED)

    # -- the loop: observe, decide, apply ---------------------------------------------------------

    def _loop(self, body: dict[str, Any]) -> str:
        job_name = body["metadata"]["name"]
        seen_events: set[tuple[str, str]] = set()
        streamed = {"path": None, "offset": 0}
        while True:
            self._reload(body)
            self.pods.poll()
            job = observe_job(body)
            views = [v for v in (observe_pod(p, job.uid) for p in self.pods.observed()) if v]
            now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
            sample = self._sample(job.status.phase, job.status.attempt, views)
            plan = reconcile(
                job, views, True, now, settings=Settings(backoff_base=self.backoff), sample=sample
            )
            if plan.status is not None:
                body["status"] = plan.status
                (self.dir / "status.json").write_text(json.dumps(body["status"], indent=2))
            for event in plan.events:  # before the pods: what a new attempt resumes from
                self._record(event, body)
                key = (event.reason, event.message)
                if key not in seen_events:
                    seen_events.add(key)
                    self._say(f"{event.reason}: {event.message}")
            for manifest in plan.create:
                if manifest["kind"] == "Pod":
                    self.pods.create(manifest)
            # Local pods never stay Terminating (SIGKILL follows the grace period), so a
            # force delete is a delete here.
            for pod in plan.delete + plan.force_delete:
                self.pods.delete(pod)
            self._stream_node0(job_name, streamed)
            phase = body.get("status", {}).get("phase", "Pending")
            if phase in ("Succeeded", "Failed"):
                return str(phase)
            if phase == "Suspended" and not self.pods.pods and self.interrupted:
                return "Suspended"
            if self.interrupted and not body["spec"]["runPolicy"].get("suspend"):
                body["spec"]["runPolicy"]["suspend"] = True
                self._say("suspending: every node saves a checkpoint, then stops")
            if phase == "Running":
                self._inject_preemption()
            time.sleep(0.1)

    def _record(self, event: Event, body: dict[str, Any]) -> None:
        """What the summary tells beyond status: why each attempt started, and from where."""
        self.history.cause = CAUSES.get(event.reason, self.history.cause)
        if event.reason == "AttemptStarted":
            step = previous.checkpoint_step(body["spec"]["checkpoint"]["uri"])
            self.history.attempt_started(body["status"]["attempt"], step)
            self._last_step = None  # the old attempt's steps trigger nothing

    def _inject_preemption(self) -> None:
        """--preempt-after and --preempt-at-step, each once, while all nodes run."""
        if self.preempt_after is not None:
            if self._preempt_deadline is None:
                self._preempt_deadline = time.monotonic() + self.preempt_after
            elif time.monotonic() >= self._preempt_deadline:
                self._preempt_one(f"--preempt-after {self.preempt_after:g}", None)
                self.preempt_after = None
        step = self.preempt_at_step
        if step is not None and (self._last_step or 0) >= step:
            self._preempt_one(f"--preempt-at-step {step}", self._last_step)
            self.preempt_at_step = None

    def _sample(self, phase: str, attempt: int, views: list[PodView]) -> Sample | None:
        """Node 0's metrics while the job runs, as the operator reads them, once per
        SCRAPE_INTERVAL; None when not due or not readable (status keeps what it had)."""
        waiting = self.preempt_at_step is not None
        due = time.monotonic() - self._scraped_at >= (0.0 if waiting else SCRAPE_INTERVAL)
        node0 = next((v for v in views if v.rank == 0 and v.attempt == attempt), None)
        if phase != "Running" or not due or node0 is None or not node0.metrics_url:
            return None
        self._scraped_at = time.monotonic()
        try:
            with _DIRECT.open(node0.metrics_url, timeout=SCRAPE_TIMEOUT) as response:
                sample = parse(response.read().decode("utf-8", "replace"))
        except (OSError, ValueError):
            return None  # not serving yet, or a script without lightjob's runtime
        if sample.step is not None:
            self._last_step = sample.step
        return sample

    def _reload(self, body: dict[str, Any]) -> None:
        """Like `kubectl apply` of an edited file: a saved change to the YAML (numNodes, say)
        becomes the job's new spec and generation."""
        mtime = os.stat(self.path).st_mtime
        if mtime == self._mtime:
            return
        self._mtime = mtime
        try:
            spec = load_job(self.path).model_dump(mode="json", by_alias=True, exclude_none=True)[
                "spec"
            ]
        except InvalidJobError as err:
            self._say(f"ignoring the edited file, it is invalid:\n{err}")
            return
        spec.setdefault("checkpoint", {}).setdefault("uri", body["spec"]["checkpoint"]["uri"])
        spec.setdefault("rendezvous", {})["port"] = body["spec"]["rendezvous"]["port"]
        spec.setdefault("runPolicy", {}).setdefault(
            "suspend", body["spec"]["runPolicy"].get("suspend", False)
        )
        if spec != body["spec"]:
            body["spec"] = spec
            body["metadata"]["generation"] += 1
            self._say(
                f"{self.path} changed: applying it (generation {body['metadata']['generation']})"
            )

    def _preempt_one(self, flag: str, step: int | None) -> None:
        running = [
            p for p in self.pods.pods.values() if p.exit_code is None and p.deleting_since is None
        ]
        if running:
            victim = random.choice(running)
            at = f" at step {step}" if step is not None else ""
            self._say(f"injecting a preemption into {victim.name}{at} ({flag})")
            self.history.preemptions.append(f"{victim.name}{at} ({flag})")
            self.pods.disrupt(victim.name, "PreemptionByLightjobRun", f"lightjob run {flag}")

    def _unfired_preemption(self) -> None:
        """A preemption flag that never fired says so: it is not silently dropped."""
        if self.preempt_at_step is not None:
            seen = (
                f"its last reported step was {self._last_step}"
                if self._last_step is not None
                else "node 0's metrics endpoint never reported a step"
            )
            self._say(
                f"--preempt-at-step {self.preempt_at_step}: no preemption was injected; {seen}"
            )
        if self.preempt_after is not None:
            self._say(
                f"--preempt-after {self.preempt_after:g}: no preemption was injected; "
                "the job did not run that long"
            )

    def _on_interrupt(self, signum: int, frame: Any) -> None:
        if self.interrupted:  # a second Ctrl-C: stop at once
            raise KeyboardInterrupt
        self.interrupted = True

    # -- input -----------------------------------------------------------------------------------

    def _load(self) -> dict[str, Any]:
        job = load_job(self.path)
        body = job.model_dump(mode="json", by_alias=True, exclude_none=True)
        body.pop("status", None)
        if self.nodes is not None:
            body["spec"]["numNodes"] = self.nodes
            for bound in ("minNodes", "maxNodes"):
                body["spec"].pop(bound, None)
        meta = body["metadata"]
        meta.setdefault("namespace", "default")
        meta.update(uid=str(uuid.uuid4()), generation=1)
        body["spec"].setdefault("runPolicy", {})
        return body

    def _start(self, body: dict[str, Any]) -> str | None:
        """Check the input, resume or set aside the previous run, and prepare this one;
        a problem stops it before any pod starts."""
        problem = self._check(body)
        if problem:
            return problem
        try:
            decision = previous.settle(
                self.dir, body["spec"]["checkpoint"]["uri"], self.previous_run
            )
        except (previous.PreviousRunError, OSError) as err:
            return str(err)
        if decision.message:
            self._say(decision.message)
        if decision.status is not None:
            body["status"] = decision.status
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pods = LocalPods(self.dir)
        return self._prepare(body)

    def _check(self, body: dict[str, Any]) -> str | None:
        """Checks that fail fast, before anything is touched; the checkpoint default."""
        spec = body["spec"]
        if not spec.get("command"):
            return f"{self.path}: spec.command: lightjob run needs a command (images are not run locally)"
        executable = spec["command"][0]
        if executable not in ("python", "python3") and not _findable(executable):
            return f'{self.path}: spec.command[0]: executable file not found: "{executable}"'
        if self.preempt_at_step is not None and not spec.get("metrics", {}).get("enabled", True):
            return (
                f"{self.path}: spec.metrics.enabled is false, but --preempt-at-step reads the "
                "step from node 0's metrics endpoint"
            )
        spec.setdefault("checkpoint", {})
        if not spec["checkpoint"].get("uri"):
            spec["checkpoint"]["uri"] = str((self.dir / "checkpoints").resolve())
        return None

    def _prepare(self, body: dict[str, Any]) -> str | None:
        """The checkpoint location takes a write; the rendezvous gets a free port."""
        spec = body["spec"]
        problem = _check_writable(spec["checkpoint"]["uri"])
        if problem:
            return f"{self.path}: spec.checkpoint.uri: {problem}"
        # A free port on node 0's address, so several runs and other programs never collide.
        spec.setdefault("rendezvous", {})["port"] = _free_port(self.pods.address(0))
        return None

    # -- output ------------------------------------------------------------------------------------

    def _say(self, message: str) -> None:
        self.out.write(f"lightjob: {message}\n")
        self.out.flush()

    def _stream_node0(self, job: str, streamed: dict[str, Any]) -> None:
        """Copy node 0's new output (its progress bar too) to the terminal."""
        pod = self.pods.pods.get(f"{job}-node-0")
        if pod is None:
            return
        if streamed["path"] != pod.log_path:
            streamed["path"], streamed["offset"] = pod.log_path, 0
        try:
            with open(pod.log_path, "rb") as log:
                log.seek(streamed["offset"])
                chunk = log.read()
        except FileNotFoundError:
            return
        if chunk:
            streamed["offset"] += len(chunk)
            self.out.write(chunk.decode(errors="replace"))
            self.out.flush()

    def _summary(self, body: dict[str, Any], failure: Failure | None) -> None:
        uri = body["spec"]["checkpoint"]["uri"]
        self.out.write(
            render(
                body["metadata"]["name"],
                body.get("status", {}),
                time.monotonic() - self.started,
                _pointer(uri) or f"{uri} (none written)",
                self.dir / "logs",
                self.history,
                failure,
            )
        )
        self.out.flush()

    def _last_failure(self) -> Failure | None:
        """The pod that failed last, and what went wrong in it."""
        failed = [p for p in self.pods.pods.values() if p.exit_code not in (None, 0)]
        if not failed:
            return None
        pod = max(failed, key=lambda p: p.log_path.stat().st_mtime if p.log_path.exists() else 0.0)
        return failure_of(pod.name, pod.log_path, self.pods.message(pod))


def _findable(executable: str) -> bool:
    import shutil

    return shutil.which(executable) is not None or Path(executable).exists()


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _check_writable(uri: str) -> str | None:
    """The checkpoint location takes a write, or a clear reason why not."""
    try:
        import fsspec

        fs, path = fsspec.core.url_to_fs(uri)
        probe = f"{path.rstrip('/')}/.lightjob-run-probe"
        if fs.protocol in ("file", ("file", "local")):
            os.makedirs(path, exist_ok=True)
        fs.pipe_file(probe, b"ok")
        fs.rm_file(probe)
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return f"{uri} is not writable: {reason}"
    return None


def _pointer(uri: str) -> str | None:
    ref = previous.read_pointer(uri)
    return f"{ref.get('uri')} (step {ref['step']})" if ref is not None else None
