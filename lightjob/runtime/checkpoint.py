"""Checkpoint bytes on any fsspec URI: local paths, file://, memory://, s3://, gs://.

A checkpoint is a plain dict (Lightning's keys; state.py builds it). Its bytes stream
straight from `torch.save` into the destination, with no in-memory copy of the whole:
on disk into a temporary file beside the target, fsync'd and renamed into place; on an
object store into the filesystem's own file object, uploaded in parts as it fills
(a multipart upload on S3) and made visible only by its commit, so a reader never sees
part of one (memory:// objects live in memory anyway: they are built, then stored in one
step). The size and CRC32 are computed on the way; the store's pointer records them and
loading verifies them.

The hops from each way of saving to the bytes (keep this map true):

    Trainer.save_checkpoint                  (every rank builds the dict; rank 0 writes)
      1 write_checkpoint(checkpoint, uri)    opens the destination
        2 torch.save(checkpoint, out)        the bytes

    Durability.save_for_preemption           (SIGTERM; synchronous, then exit 143)
      1 CheckpointStore.save                 the object first, then the pointer
        2 CheckpointStore.write_object
          3 write_checkpoint
            4 torch.save                     the bytes

    Durability.save                          (every N steps or minutes, and the last)
      1 Durability._write                    on the upload thread when in the background
        2 CheckpointStore.save
          3 CheckpointStore.write_object
            4 write_checkpoint
              5 torch.save                   the bytes
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import os
import pickle
import re
import tempfile
import threading
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import IO, Any

import fsspec
import torch

log = logging.getLogger("lightjob")


def open_uri(uri: str, mode: str = "rb") -> IO[Any]:
    return fsspec.open(uri, mode).open()


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = fsspec.core.url_to_fs(uri)
    return fs, path


def write_checkpoint(checkpoint: dict[str, Any], uri: str) -> tuple[int, int]:
    """Serialise a checkpoint straight into the object at `uri`, computing its CRC32 on
    the way. Returns (size, crc32)."""
    with _atomic_writer(uri) as out:
        counted = _Checksummed(out)
        torch.save(checkpoint, counted)  # type: ignore[arg-type]  # any object with write()
    return counted.size, counted.crc


def write_bytes(data: bytes, uri: str) -> None:
    """Write a small object so that a reader sees either the old object or the whole new one."""
    fs, path = filesystem(uri)
    if _is_local(fs):
        with _atomic_writer(uri) as out:
            out.write(data)
    else:
        fs.pipe_file(path, data)  # one whole-object write, which object stores make atomic


class _Checksummed:
    """A write-only file that passes bytes on and keeps their size and CRC32."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.size = 0
        self.crc = 0

    def write(self, data: bytes) -> int:
        self.crc = zlib.crc32(data, self.crc)
        self.size += len(data)
        self.out.write(data)
        return len(data)

    def flush(self) -> None:
        self.out.flush()


@contextmanager
def _atomic_writer(uri: str) -> Iterator[IO[bytes]]:
    """A file to write an object into, visible at `uri` only once complete.

    Local paths: a temporary file beside the target, fsync'd, then renamed over it.
    Object stores: the filesystem's file with autocommit off, committed at the end and
    discarded on any error (on S3 the multipart upload is aborted, so nothing appears).
    """
    fs, path = filesystem(uri)
    if _is_local(fs):
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                yield out
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return
    if "memory" in _protocols(fs):
        # memory:// files appear at open whatever autocommit says; they live in memory
        # anyway, so build the bytes and store them in one step.
        buffer = io.BytesIO()
        yield buffer
        fs.pipe_file(path, buffer.getvalue())
        return
    remote = fs.open(path, "wb", autocommit=False)
    try:
        with remote:
            yield remote
    except BaseException:
        remote.discard()
        raise
    remote.commit()


def load(uri: str, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
    """Read a checkpoint, safely when possible.

    With weights_only unset, tensors and plain Python values load without running any
    code from the file; a checkpoint that needs more (custom classes in hyperparameters,
    say) is loaded fully, with a warning that this executes code from the file.
    """
    fs, path = filesystem(uri)
    return _load_bytes(fs.cat_file(path), uri, map_location, weights_only)


def _load_bytes(
    data: bytes, uri: str, map_location: Any, weights_only: bool | None
) -> dict[str, Any]:
    if weights_only is not None:
        return _torch_load(data, map_location, weights_only)
    try:
        return _torch_load(data, map_location, True)
    except pickle.UnpicklingError as err:
        if not _is_refused_global(err):
            raise
        warnings.warn(
            f"Checkpoint {uri} holds Python objects that weights_only=True refuses "
            f"({str(err).splitlines()[0][:160]}). Loading it fully runs code from the file: "
            "only load checkpoints you trust.",
            stacklevel=3,
        )
        return _torch_load(data, map_location, False)


def _is_refused_global(err: BaseException) -> bool:
    # torch's safe unpickler refusing a class, as opposed to bytes that are not a checkpoint.
    return "Unsupported global" in str(err)


def _torch_load(data: bytes, map_location: Any, weights_only: bool) -> dict[str, Any]:
    loaded = torch.load(io.BytesIO(data), map_location=map_location, weights_only=weights_only)
    if not isinstance(loaded, dict):
        raise pickle.UnpicklingError(f"a checkpoint must be a dict, got {type(loaded).__name__}")
    return loaded


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    return (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return _protocols(fs)[0] in ("file", "local")


# -- a run's checkpoints under one prefix: objects first, the pointer last ------------------

POINTER = "latest.json"


@dataclass(frozen=True, slots=True)
class CheckpointRef:
    """One committed checkpoint, as the pointer names it."""

    uri: str
    step: int
    epoch: int
    time: str  # RFC 3339, when it became durable
    size: int
    crc32: int


class CheckpointStore:
    """Checkpoints of one run under `uri`: `step-<N>.ckpt` objects plus `latest.json`.

    `save` writes the object first and the pointer last, so a reader never sees a
    partial checkpoint: a crash at any point leaves the previous pointer and its object
    intact. `load_latest` verifies the object against the pointer's hash and falls back
    to the newest readable object when the pointer or its object is bad. Retention keeps
    the newest `keep` objects, the one the pointer names, and the one this run resumed from.
    """

    def __init__(self, uri: str, keep: int = 3) -> None:
        if keep < 1:
            raise ValueError(f"checkpoint keep={keep} must be >= 1")
        self.uri = uri.rstrip("/")
        self.keep = keep
        self.fs, self.root = filesystem(self.uri)
        self.resumed_from: str | None = None
        self._saved: list[str] | None = None  # objects here, oldest first, once listed

    def object_uri(self, step: int) -> str:
        return f"{self.uri}/step-{step:010d}.ckpt"

    def check_writable(self) -> None:
        """Fail before training when the location cannot take a checkpoint."""
        probe = f"{self.uri}/.lightjob-write-probe"
        try:
            write_bytes(b"ok", probe)
            self.fs.rm_file(filesystem(probe)[1])
        except Exception as err:
            raise OSError(
                f"checkpoint location {self.uri} is not writable: {_reason(err)}"
            ) from err

    def save(self, checkpoint: dict[str, Any], step: int, epoch: int) -> CheckpointRef:
        ref = self.write_object(checkpoint, step, epoch)
        self.commit(ref)
        return ref

    def write_object(self, checkpoint: dict[str, Any], step: int, epoch: int) -> CheckpointRef:
        """The first half of a save: the object, not yet named by the pointer."""
        uri = self.object_uri(step)
        size, crc = write_checkpoint(checkpoint, uri)
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        return CheckpointRef(uri, step, epoch, now.isoformat().replace("+00:00", "Z"), size, crc)

    def commit(self, ref: CheckpointRef) -> None:
        """The second half: point at the object, then apply retention."""
        write_bytes(json.dumps(asdict(ref), indent=2).encode(), f"{self.uri}/{POINTER}")
        self.prune(ref)

    def pointer(self) -> CheckpointRef | None:
        """What `latest.json` names; None when there is none. Raises ValueError if unreadable."""
        path = f"{self.root}/{POINTER}"
        self.fs.invalidate_cache()
        if not self.fs.exists(path):
            return None
        try:
            return CheckpointRef(**json.loads(self.fs.cat_file(path)))
        except (ValueError, TypeError) as err:
            raise ValueError(f"{self.uri}/{POINTER} is corrupt: {_reason(err)}") from err

    def objects(self) -> list[str]:
        """URIs of the checkpoint objects here, newest step first."""
        self.fs.invalidate_cache()
        if not self.fs.exists(self.root):
            return []
        names = [p.rsplit("/", 1)[-1] for p in self.fs.ls(self.root, detail=False)]
        steps = sorted((n for n in names if re.fullmatch(r"step-\d{10}\.ckpt", n)), reverse=True)
        return [f"{self.uri}/{n}" for n in steps]

    def load_latest(self, map_location: Any = None) -> tuple[dict[str, Any], str] | None:
        """The newest good checkpoint and its URI, or None when there is none at all."""
        tried: list[str] = []
        try:
            ref = self.pointer()
        except ValueError as err:
            log.warning("lightjob: %s; looking for the newest readable checkpoint", err)
            ref = None
        if ref is not None:
            try:
                return self._load_verified(ref, map_location), ref.uri
            except Exception as err:
                log.warning(
                    "lightjob: checkpoint %s is unusable (%s); falling back", ref.uri, _reason(err)
                )
                tried.append(ref.uri)
        for uri in self.objects():
            if uri in tried:
                continue
            try:
                checkpoint = load(uri, map_location=map_location)
            except Exception as err:
                log.warning(
                    "lightjob: checkpoint %s is unusable (%s); falling back", uri, _reason(err)
                )
                continue
            log.warning("lightjob: resuming from %s, the newest readable checkpoint", uri)
            return checkpoint, uri
        if tried:
            raise RuntimeError(f"no readable checkpoint under {self.uri}; tried {', '.join(tried)}")
        return None

    def _load_verified(self, ref: CheckpointRef, map_location: Any) -> dict[str, Any]:
        data = self.fs.cat_file(filesystem(ref.uri)[1])
        mismatch = ValueError("its bytes do not match the size and CRC32 the pointer recorded")
        if len(data) != ref.size:
            raise mismatch
        # zlib releases the GIL: the CRC runs on another core while the bytes deserialise,
        # and a mismatch discards what was loaded.
        crc: list[int] = []
        check = threading.Thread(target=lambda: crc.append(zlib.crc32(data)), daemon=True)
        check.start()
        try:
            checkpoint = _load_bytes(data, ref.uri, map_location, None)
        finally:
            check.join()
        if crc != [ref.crc32]:
            raise mismatch
        return checkpoint

    def prune(self, current: CheckpointRef) -> None:
        # List once; after that this writer knows what it added and removed.
        if self._saved is None:
            self._saved = self.objects()[::-1]
        elif current.uri not in self._saved:
            self._saved.append(current.uri)
        protected = {current.uri, self.resumed_from}
        for uri in [u for u in self._saved[: -self.keep] if u not in protected]:
            self.fs.rm_file(filesystem(uri)[1])
            self._saved.remove(uri)


def _reason(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0][:300]


class BackgroundSaver:
    """Uploads a CPU snapshot on a worker thread while training goes on.

    At most one upload is in flight: submitting another first waits for it. A failed
    upload is raised by the next `check()` (the Trainer calls it at every step
    boundary), so it is never lost.
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, work: Callable[[], None]) -> None:
        self.wait()

        def run() -> None:
            try:
                work()
            except BaseException as err:
                self._error = err

        self._thread = threading.Thread(target=run, name="lightjob-checkpoint-upload", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.check()

    def check(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"background checkpoint save failed: {_reason(error)}") from error


def snapshot(obj: Any) -> Any:
    """A copy of a checkpoint dict whose tensors are on the CPU and owned by the copy, so
    training can go on changing its own tensors while the copy is uploaded."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: snapshot(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [snapshot(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(snapshot(v) for v in obj)
    return obj
