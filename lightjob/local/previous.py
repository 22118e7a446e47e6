"""What `lightjob run` does with a job's previous run: resume it, or set it aside.

A job's run lives in `runs/<job>/`: status.json, logs/, and checkpoints/ unless
spec.checkpoint.uri names another place. Running the job again resumes a run that was
suspended or interrupted. After a run that finished (Succeeded or Failed) it starts a new
one: the finished run is moved aside, never deleted, to `runs/<job>.<n>` (job names have
no dots, so this never names another job's folder), and checkpoints kept outside that
folder go to `<uri>/previous-<n>/`. The runtime resumes from `<uri>/latest.json`, or else
the newest `<uri>/step-*.ckpt`, so it no longer sees them there. `--resume` and `--fresh`
force either choice.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FINISHED = ("Succeeded", "Failed")
POINTER = "latest.json"
_OBJECT = re.compile(r"step-\d{10}\.ckpt")


class PreviousRunError(Exception):
    """The previous run cannot be resumed or set aside; the message says why."""


@dataclass(frozen=True, slots=True)
class Decision:
    status: dict[str, Any] | None  # the status the new invocation continues from, if any
    message: str  # what happened to the previous run, for the user; "" when nothing did


def should_resume(phase: str | None, choice: str | None) -> bool:
    """Resume an earlier run, or start a new one? `phase` is the earlier run's (None: only
    its checkpoints are left), `choice` the user's flag ("resume", "fresh" or None)."""
    if choice is not None:
        return choice == "resume"
    return phase not in FINISHED


def settle(run_dir: Path, uri: str, choice: str | None) -> Decision:
    """Resume the previous run of the job whose folder is `run_dir`, or move it aside."""
    status_file = run_dir / "status.json"
    try:
        status = json.loads(status_file.read_text()) if status_file.exists() else None
    except ValueError as err:
        raise PreviousRunError(f"{status_file} is unreadable ({err}): move it away") from err
    phase = status.get("phase") if status else None
    step = checkpoint_step(uri)
    try:
        has_checkpoint = step is not None or has_objects(uri)
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PreviousRunError(f"spec.checkpoint.uri: cannot list {uri}: {reason}") from err
    name = run_dir.name
    if status is None and not has_checkpoint:
        if choice == "resume":
            raise PreviousRunError(
                f"--resume: {name} has no earlier run to resume (no {status_file}, "
                f"no checkpoint in {uri})"
            )
        return Decision(None, "")  # a first run
    if should_resume(phase, choice):
        if status is None:
            where = f" (step {step})" if step is not None else ""
            return Decision(
                None,
                f"resuming {name} from the checkpoint in {uri}{where}, which no run in "
                f"{run_dir} recorded (--fresh starts over)",
            )
        return _resume(name, dict(status))
    return _set_aside(run_dir, uri, phase, status, has_checkpoint, choice)


def _resume(name: str, status: dict[str, Any]) -> Decision:
    phase, attempt = status.get("phase"), status.get("attempt", 0)
    if phase == "Suspended":
        message = f"resuming {name} (suspended after attempt {attempt})"
    elif phase not in FINISHED:
        message = f"resuming {name} (interrupted while {phase}, attempt {attempt})"
    else:
        message = f"resuming {name}, which {phase} after attempt {attempt} (--resume)"
        status.pop("completionTime", None)
        if phase == "Failed" and status.get("restarts"):
            # The user decided to continue (a fixed script, say): backoffLimit applies anew.
            message += f"; its {status['restarts']} failures no longer count"
            status["restarts"] = 0
    status.update(phase="Suspended", readyNodes=0)
    return Decision(status, message)


def _set_aside(
    run_dir: Path,
    uri: str,
    phase: str | None,
    status: dict[str, Any] | None,
    has_checkpoint: bool,
    choice: str | None,
) -> Decision:
    aside = _next_number(run_dir, uri)
    inside = _local_path(uri)
    carried = inside is not None and inside.is_relative_to(run_dir.resolve())
    # The checkpoints first and the run's folder (its status.json) last: an interrupted
    # move leaves a finished run's record in place, so the next run moves the rest.
    checkpoints_to = run_to = ""
    if has_checkpoint and not carried:
        checkpoints_to = f"{uri.rstrip('/')}/previous-{aside}"
        _move_checkpoints(uri, checkpoints_to)
    if run_dir.exists():
        target = run_dir.with_name(f"{run_dir.name}.{aside}")
        run_dir.rename(target)
        run_to = str(target)
        if carried and inside is not None:
            new_uri = str(target.resolve() / inside.relative_to(run_dir.resolve()))
            _repoint(new_uri, uri, new_uri)
    if status is None:
        what = f"{uri} held checkpoints that no run in {run_dir} recorded: moved them to "
        what += checkpoints_to or run_to
    else:
        ended = {"Suspended": "was suspended"}.get(str(phase), f"was interrupted while {phase}")
        ended = str(phase) if phase in FINISHED else ended
        what = f"the previous run of {run_dir.name} {ended} (attempt {status.get('attempt', 0)})"
        what += f": moved it to {run_to}"
        what += f" and its checkpoints to {checkpoints_to}" if checkpoints_to else ""
    why = "--fresh" if choice == "fresh" else "--resume continues a finished run instead"
    return Decision(None, f"{what}; starting a new run ({why})")


def _next_number(run_dir: Path, uri: str) -> int:
    """One past the highest number used by a run set aside, here or in the checkpoints."""
    taken = [0]
    if run_dir.parent.exists():
        for path in run_dir.parent.glob(f"{run_dir.name}.*"):
            suffix = path.name[len(run_dir.name) + 1 :]
            if suffix.isdigit():
                taken.append(int(suffix))
    fs, root = _filesystem(uri)
    if fs.exists(root):
        for path in fs.ls(root, detail=False):
            found = re.fullmatch(r"previous-(\d+)", path.rstrip("/").rsplit("/", 1)[-1])
            if found:
                taken.append(int(found.group(1)))
    return max(taken) + 1


def read_pointer(uri: str) -> dict[str, Any] | None:
    """`<uri>/latest.json` (the checkpoint's "uri" and "step"); None when there is no
    readable one: missing, unreadable or not ours (the runtime then falls back too)."""
    try:
        fs, root = _filesystem(uri)
        ref = json.loads(fs.cat_file(f"{root}/{POINTER}"))
        return ref if isinstance(ref, dict) and isinstance(ref.get("step"), int) else None
    except Exception:
        return None


def checkpoint_step(uri: str) -> int | None:
    ref = read_pointer(uri)
    return ref["step"] if ref is not None else None


def has_objects(uri: str) -> bool:
    fs, root = _filesystem(uri)
    return fs.exists(root) and any(_OBJECT.fullmatch(name) for name in _names(fs, root))


def _move_checkpoints(uri: str, target: str) -> None:
    """Move the checkpoint objects, then the pointer, into `target`; repoint the pointer."""
    fs, root = _filesystem(uri)
    _, target_root = _filesystem(target)
    fs.makedirs(target_root, exist_ok=True)
    names = sorted(name for name in _names(fs, root) if _OBJECT.fullmatch(name))
    for name in [*names, *([POINTER] if fs.exists(f"{root}/{POINTER}") else [])]:
        fs.mv(f"{root}/{name}", f"{target_root}/{name}")
    _repoint(target, uri, target)


def _repoint(location: str, old: str, new: str) -> None:
    """A moved pointer names its object at the old place: make it name the new one, so the
    run set aside stays resumable from where it now is."""
    ref = read_pointer(location)
    prefix = old.rstrip("/") + "/"
    if ref is not None and isinstance(ref.get("uri"), str) and ref["uri"].startswith(prefix):
        ref["uri"] = new.rstrip("/") + "/" + ref["uri"][len(prefix) :]
        fs, root = _filesystem(location)
        fs.pipe_file(f"{root}/{POINTER}", json.dumps(ref, indent=2).encode())


def _names(fs: Any, root: str) -> list[str]:
    fs.invalidate_cache()
    return [path.rstrip("/").rsplit("/", 1)[-1] for path in fs.ls(root, detail=False)]


def _filesystem(uri: str) -> tuple[Any, str]:
    import fsspec

    fs, root = fsspec.core.url_to_fs(uri)
    fs.invalidate_cache()
    return fs, root.rstrip("/")


def _local_path(uri: str) -> Path | None:
    fs, root = _filesystem(uri)
    return Path(root).resolve() if fs.protocol in ("file", ("file", "local")) else None
