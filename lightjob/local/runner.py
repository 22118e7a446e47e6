"""`lightjob run JOB.yaml`: a LightningJob on one machine, through the same controller.

The job lives in memory (and its status in `runs/<job>/status.json`); the controller's
plans are applied to local processes (LocalPods) instead of a cluster. Node 0's output is
streamed, the controller's events are printed as they happen, and a summary ends the run.
Ctrl-C suspends gracefully (every node checkpoints); running the command again resumes.
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
import uuid
from pathlib import Path
from typing import Any, TextIO

from lightjob.api.validate import InvalidJobError, load_job
from lightjob.controller import Settings, observe_job, observe_pod, reconcile
from lightjob.local.pods import LocalPods

EXIT_SUCCEEDED, EXIT_FAILED, EXIT_INVALID, EXIT_SUSPENDED = 0, 1, 2, 130


class Run:
    def __init__(
        self,
        path: str,
        *,
        nodes: int | None = None,
        preempt_after: float | None = None,
        runs_dir: str = "runs",
        backoff_seconds: float = 2.0,
        out: TextIO = sys.stdout,
    ) -> None:
        self.path = path
        self.nodes = nodes
        self.preempt_after = preempt_after
        self.runs_dir = Path(runs_dir)
        self.backoff = backoff_seconds
        self.out = out
        self.started = time.monotonic()
        self.interrupted = False
        self._mtime = os.stat(path).st_mtime if os.path.exists(path) else 0.0

    def main(self) -> int:
        try:
            body = self._load()
        except InvalidJobError as err:
            self._say(f"invalid job:\n{err}")
            return EXIT_INVALID
        name = body["metadata"]["name"]
        self.dir = self.runs_dir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pods = LocalPods(self.dir)
        problem = self._prepare(body)
        if problem:
            self._say(problem)
            return EXIT_INVALID
        previous = signal.signal(signal.SIGINT, self._on_interrupt)
        phase, failure = "Failed", None
        try:
            phase = self._loop(body)
            failure = self._last_failure()
        finally:
            signal.signal(signal.SIGINT, previous)
            self.pods.stop_all()  # nothing is left running, whatever happened
        self._summary(body, failure)
        return {"Succeeded": EXIT_SUCCEEDED, "Suspended": EXIT_SUSPENDED}.get(phase, EXIT_FAILED)

    # -- the loop: observe, decide, apply ---------------------------------------------------------

    def _loop(self, body: dict[str, Any]) -> str:
        job_name = body["metadata"]["name"]
        seen_events: set[tuple[str, str]] = set()
        preempt_at = None
        streamed = {"path": None, "offset": 0}
        while True:
            self._reload(body)
            self.pods.poll()
            job = observe_job(body)
            views = [v for v in (observe_pod(p, job.uid) for p in self.pods.observed()) if v]
            now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
            plan = reconcile(job, views, True, now, settings=Settings(backoff_base=self.backoff))
            if plan.status is not None:
                body["status"] = plan.status
                (self.dir / "status.json").write_text(json.dumps(body["status"], indent=2))
            for manifest in plan.create:
                if manifest["kind"] == "Pod":
                    self.pods.create(manifest)
            # Local pods never stay Terminating (SIGKILL follows the grace period), so a
            # force delete is a delete here.
            for pod in plan.delete + plan.force_delete:
                self.pods.delete(pod)
            for event in plan.events:
                key = (event.reason, event.message)
                if key not in seen_events:
                    seen_events.add(key)
                    self._say(f"{event.reason}: {event.message}")
            self._stream_node0(job_name, streamed)
            phase = body.get("status", {}).get("phase", "Pending")
            if phase in ("Succeeded", "Failed"):
                return str(phase)
            if phase == "Suspended" and not self.pods.pods and self.interrupted:
                return "Suspended"
            if self.interrupted and not body["spec"]["runPolicy"].get("suspend"):
                body["spec"]["runPolicy"]["suspend"] = True
                self._say("suspending: every node saves a checkpoint, then stops")
            if self.preempt_after is not None and phase == "Running" and preempt_at is None:
                preempt_at = time.monotonic() + self.preempt_after
            if preempt_at is not None and time.monotonic() >= preempt_at:
                preempt_at, self.preempt_after = None, None
                self._preempt_one()
            time.sleep(0.1)

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

    def _preempt_one(self) -> None:
        running = [
            p for p in self.pods.pods.values() if p.exit_code is None and p.deleting_since is None
        ]
        if running:
            victim = random.choice(running)
            self._say(f"injecting a preemption into {victim.name} (--preempt-after)")
            self.pods.disrupt(
                victim.name, "PreemptionByLightjobRun", "lightjob run --preempt-after"
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

    def _prepare(self, body: dict[str, Any]) -> str | None:
        """Local defaults and checks that fail fast, before anything starts."""
        spec = body["spec"]
        if not spec.get("command"):
            return f"{self.path}: spec.command: lightjob run needs a command (images are not run locally)"
        executable = spec["command"][0]
        if executable not in ("python", "python3") and not _findable(executable):
            return f'{self.path}: spec.command[0]: executable file not found: "{executable}"'
        spec.setdefault("checkpoint", {})
        if not spec["checkpoint"].get("uri"):
            spec["checkpoint"]["uri"] = str((self.dir / "checkpoints").resolve())
        problem = _check_writable(spec["checkpoint"]["uri"])
        if problem:
            return f"{self.path}: spec.checkpoint.uri: {problem}"
        # A free port on node 0's address, so several runs and other programs never collide.
        spec.setdefault("rendezvous", {})["port"] = _free_port(self.pods.address(0))
        previous = self.dir / "status.json"
        if previous.exists():  # a run suspended or stopped before: keep its counters
            status = json.loads(previous.read_text())
            if status.get("phase") not in ("Succeeded", "Failed"):
                status.update(phase="Suspended", readyNodes=0)
                body["status"] = status
                self._say(
                    f"resuming {body['metadata']['name']} (attempt {status.get('attempt', 0)} before)"
                )
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

    def _summary(self, body: dict[str, Any], failure: tuple[str, str] | None) -> None:
        status = body.get("status", {})
        lines = [
            f"phase        {status.get('phase')}: {status.get('message', '')}",
            f"attempts     {status.get('attempt', 0)} (failures {status.get('restarts', 0)}, "
            f"preemptions {status.get('preemptions', 0)}, resizes {status.get('resizes', 0)})",
            f"time         {time.monotonic() - self.started:.1f}s",
        ]
        progress = status.get("progress") or {}
        if progress:
            metrics = " ".join(
                f"{k}={v:.4g}" for k, v in sorted(progress.get("metrics", {}).items())
            )
            lines.append(f"final        step {progress.get('step')}, epoch {progress.get('epoch')}")
            lines.append(f"metrics      {metrics}")
        pointer = _pointer(body["spec"]["checkpoint"]["uri"])
        lines.append(
            f"checkpoint   {pointer or body['spec']['checkpoint']['uri'] + ' (none written)'}"
        )
        lines.append(f"logs         {self.dir / 'logs'}")
        if status.get("phase") == "Suspended":
            lines.append("resume       run the same command again")
        self.out.write(f"\n── lightjob run: {body['metadata']['name']} " + "─" * 40 + "\n")
        self.out.write("\n".join(lines) + "\n")
        if failure and status.get("phase") == "Failed":
            self.out.write(f"\nlast failure ({failure[0]}):\n{failure[1]}\n")
        self.out.flush()

    def _last_failure(self) -> tuple[str, str] | None:
        """The pod that failed last, and its termination message (the traceback's tail)."""
        failed = [p for p in self.pods.pods.values() if p.exit_code not in (None, 0)]
        if not failed:
            return None
        pod = max(failed, key=lambda p: p.log_path.stat().st_mtime if p.log_path.exists() else 0.0)
        return pod.name, self.pods.message(pod)


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
    try:
        import fsspec

        fs, path = fsspec.core.url_to_fs(uri)
        fs.invalidate_cache()
        pointer = json.loads(fs.cat_file(f"{path.rstrip('/')}/latest.json"))
        return f"{pointer['uri']} (step {pointer['step']})"
    except Exception:
        return None
