"""Checkpoint bytes on any fsspec URI: local paths, file://, memory://, s3://, gs://.

A checkpoint is a plain dict (Lightning's keys). Writing one is two hops from
`Trainer.save_checkpoint`: serialise to bytes here, then one whole-object write, which
object stores make atomic; local files are written beside and renamed into place.
"""

from __future__ import annotations

import io
import os
import pickle
import tempfile
import warnings
from typing import IO, Any

import fsspec
import torch


def open_uri(uri: str, mode: str = "rb") -> IO[Any]:
    return fsspec.open(uri, mode).open()


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = fsspec.core.url_to_fs(uri)
    return fs, path


def to_bytes(checkpoint: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return buffer.getvalue()


def write_bytes(data: bytes, uri: str) -> None:
    """Write `data` so that a reader sees either the old object or the whole new one."""
    fs, path = filesystem(uri)
    if _is_local(fs):
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    else:
        fs.pipe_file(path, data)


def save(checkpoint: dict[str, Any], uri: str) -> int:
    """Serialise and write a checkpoint; returns its size in bytes."""
    data = to_bytes(checkpoint)
    write_bytes(data, uri)
    return len(data)


def load(uri: str, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
    """Read a checkpoint, safely when possible.

    With weights_only unset, tensors and plain Python values load without running any
    code from the file; a checkpoint that needs more (custom classes in hyperparameters,
    say) is loaded fully, with a warning that this executes code from the file.
    """
    fs, path = filesystem(uri)
    data = fs.cat_file(path)
    if weights_only is not None:
        return _torch_load(data, map_location, weights_only)
    try:
        return _torch_load(data, map_location, True)
    except pickle.UnpicklingError as err:
        warnings.warn(
            f"Checkpoint {uri} holds Python objects that weights_only=True refuses "
            f"({str(err).splitlines()[0][:160]}). Loading it fully runs code from the file: "
            "only load checkpoints you trust.",
            stacklevel=2,
        )
        return _torch_load(data, map_location, False)


def _torch_load(data: bytes, map_location: Any, weights_only: bool) -> dict[str, Any]:
    loaded = torch.load(io.BytesIO(data), map_location=map_location, weights_only=weights_only)
    if not isinstance(loaded, dict):
        raise pickle.UnpicklingError(f"a checkpoint must be a dict, got {type(loaded).__name__}")
    return loaded


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")
