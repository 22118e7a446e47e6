"""The summary that ends `lightjob run`, and what a failed pod's log says went wrong."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# torch.distributed prefixes what a rank prints to stderr with "[rank0]: ".
_RANK_PREFIX = re.compile(r"^\[rank\d+\]: ?")
_TRACEBACK = "Traceback (most recent call last):"
LOG_TAIL_BYTES, FAILURE_LINES = 65536, 40
# The restart reasons the controller gives (its events), as the summary tells them.
CAUSES = {
    "Preempted": "after a preemption",
    "NodeFailed": "after a failure",
    "Resized": "after a resize",
    "Resumed": "resuming the previous run",
}


@dataclass(slots=True)
class History:
    """What this invocation saw happen that status does not keep."""

    preemptions: list[str] = field(default_factory=list)  # "digits-node-1 at step 60 (...)"
    resumes: list[str] = field(default_factory=list)  # "attempt 2 from step 61, after ..."
    cause: str = ""  # why the next attempt will start: the last restart event seen

    def attempt_started(self, attempt: int, step: int | None) -> None:
        """A new attempt; `step` is the checkpoint it resumes from (None: the start)."""
        if step is None and not self.cause:
            return  # a first attempt from scratch is no news
        start = f"from step {step}" if step is not None else "from the start (no checkpoint)"
        self.resumes.append(f"attempt {attempt} {start}{', ' + self.cause if self.cause else ''}")
        self.cause = ""


@dataclass(frozen=True, slots=True)
class Failure:
    pod: str
    headline: str  # the exception and its message, e.g. "KeyError: 'val_acc'"
    detail: str  # the traceback, or the termination message, or the log's tail


def failure_of(pod: str, log_path: Path, message: str) -> Failure:
    """What went wrong in a failed pod: the exception its log ends with, if it raised one;
    else its termination message, unless that is the runtime's final metrics (JSON written
    when fit returned, which says nothing of an error); else the log's tail."""
    log = _tail(log_path)
    raised = exception_in(log)
    if raised is not None:
        lines = raised[1]
        if len(lines) > FAILURE_LINES:  # keep the header, the innermost frames and the error
            lines = [lines[0], "  ...", *lines[-(FAILURE_LINES - 2) :]]
        return Failure(pod, raised[0], "\n".join(lines))
    if message and not message.lstrip().startswith("{"):
        lines = [line for line in message.splitlines() if line.strip()]
        return Failure(pod, lines[-1].strip() if lines else "", message)
    lines = [line for line in log.replace("\r", "\n").splitlines() if line.strip()]
    return Failure(pod, "", "\n".join(lines[-FAILURE_LINES:]))


def exception_in(log: str) -> tuple[str, list[str]] | None:
    """The last traceback in a log: its exception line ("KeyError: 'val_acc'") and its lines."""
    lines = [_RANK_PREFIX.sub("", line) for line in log.replace("\r", "\n").splitlines()]
    starts = [i for i, line in enumerate(lines) if line.strip() == _TRACEBACK]
    if not starts:
        return None
    # Frames are indented; the first line at the margin after them names the exception.
    for end in range(starts[-1] + 1, len(lines)):
        line = lines[end]
        if line.strip() and not line[0].isspace():
            return line.strip(), lines[starts[-1] : end + 1]
    return None


def render(
    name: str,
    status: dict[str, Any],
    elapsed: float,
    checkpoint: str,
    logs: Path,
    history: History,
    failure: Failure | None,
) -> str:
    lines = [
        f"phase        {status.get('phase')}: {status.get('message', '')}",
        f"attempts     {status.get('attempt', 0)} (failures {status.get('restarts', 0)}, "
        f"preemptions {status.get('preemptions', 0)}, resizes {status.get('resizes', 0)})",
    ]
    lines += _listed("preempted", history.preemptions)
    lines += _listed("resumed", history.resumes)
    lines.append(f"time         {elapsed:.1f}s")
    progress = status.get("progress") or {}
    if progress:
        lines.append(f"final        step {progress.get('step')}, epoch {progress.get('epoch')}")
        metrics = progress.get("metrics") or {}
        if metrics:
            shown = " ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))
            lines.append(f"metrics      {shown}")
    lines.append(f"checkpoint   {checkpoint}")
    lines.append(f"logs         {logs}")
    if status.get("phase") == "Suspended":
        lines.append("resume       run the same command again")
    text = f"\n── lightjob run: {name} " + "─" * 40 + "\n" + "\n".join(lines) + "\n"
    if failure is not None and status.get("phase") == "Failed":
        headline = f": {failure.headline}" if failure.headline else ""
        text += f"\nlast failure ({failure.pod}){headline}\n{failure.detail}\n"
    return text


def _listed(label: str, items: list[str]) -> list[str]:
    return [f"{label if i == 0 else '':<12} {item}" for i, item in enumerate(items)]


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as log:
            log.seek(0, 2)
            log.seek(max(0, log.tell() - LOG_TAIL_BYTES))
            return log.read().decode(errors="replace")
    except OSError:
        return ""
