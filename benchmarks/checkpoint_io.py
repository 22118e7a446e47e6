"""Checkpoint save/load speed against plain fsspec writes of the same bytes, side by side.

A ~100 MB checkpoint (model weights and Adam state) is saved and loaded through
lightjob's CheckpointStore, to moto's S3 server (its own process, on 127.0.0.1) and to the
local disk, and
compared with `fs.pipe_file` / `fs.cat_file` of the same serialised bytes. Also: how long
a background save blocks the training thread (the CPU snapshot) against a synchronous save,
and the most memory a save holds in byte buffers besides the checkpoint's own tensors
(tracemalloc's peak: Python buffers, not tensor storage).

    python benchmarks/checkpoint_io.py [--mb 100] [--repeats 3]

Targets (issue 5): store throughput >= 0.8x the plain write; background blocking <= 10%
of a synchronous save. Issue 14: no whole in-memory copy of the bytes on the remote path.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import fsspec
import torch

from lightjob.runtime.checkpoint import CheckpointStore, snapshot
from lightjob.runtime.durable import Agreement, Durability, PreemptionSignal


def make_checkpoint(megabytes: int) -> dict[str, Any]:
    # Weights plus Adam's two moments: three tensors of a third each.
    numel = megabytes * 1_000_000 // 4 // 3
    weights = torch.randn(numel)
    return {
        "state_dict": {"weight": weights},
        "optimizer_states": [
            {"state": {0: {"exp_avg": torch.randn(numel), "exp_avg_sq": torch.rand(numel)}}}
        ],
        "global_step": 1,
    }


def timed(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_buffers(fn: Callable[[], Any]) -> float:
    """The most memory Python objects (byte buffers, mostly) held while `fn` ran, in MB."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


def serialise(checkpoint: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return buffer.getvalue()


def measure(name: str, uri: str, checkpoint: dict[str, Any], repeats: int) -> None:
    """Save: the store (serialise + write + pointer) against fs.pipe of bytes serialised
    beforehand. Load: the store (pointer + read + verify + deserialise) against fs.cat and
    torch.load of the same bytes."""
    data = serialise(checkpoint)
    megabytes = len(data) / 1e6
    fs, root = fsspec.core.url_to_fs(uri)
    store = CheckpointStore(uri, keep=2)
    # Each write goes to a new name, as a series of checkpoints does (writing a new file
    # costs several times more than overwriting one on this machine's disk).
    names = (f"{root}/plain-{i}.bin" for i in range(10_000))
    plain_path = f"{root}/plain.bin"
    fs.pipe_file(plain_path, data)

    plain_write = timed(lambda: fs.pipe_file(next(names), data), repeats)
    synced = None
    if fs.protocol in ("file", ("file", "local")):

        def pipe_and_fsync() -> None:
            with open(next(names), "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())

        synced = timed(pipe_and_fsync, repeats)
    step = iter(range(1, 10_000))
    ours_write = timed(lambda: store.save(checkpoint, next(step), 0), repeats)
    plain_read = timed(
        lambda: torch.load(io.BytesIO(fs.cat_file(plain_path)), weights_only=True), repeats
    )
    ours_read = timed(lambda: store.load_latest(), repeats)
    held = peak_buffers(lambda: store.save(checkpoint, next(step), 0))

    print(f"\n{name}: {megabytes:.0f} MB checkpoint")
    print(
        f"  save: fs.pipe of the bytes {megabytes / plain_write:6.0f} MB/s; lightjob store "
        f"{megabytes / ours_write:6.0f} MB/s; ratio {plain_write / ours_write:.2f}x"
    )
    if synced is not None:
        print(
            f"        the same bytes written and fsync'd {megabytes / synced:6.0f} MB/s; "
            f"ratio {synced / ours_write:.2f}x (the store fsyncs, to survive a crash)"
        )
    print(
        f"  load: fs.cat + torch.load  {megabytes / plain_read:6.0f} MB/s; lightjob store "
        f"{megabytes / ours_read:6.0f} MB/s; ratio {plain_read / ours_read:.2f}x"
    )
    print(f"  memory: a store save held {held:.0f} MB of buffers at most ({held / megabytes:.2f}x)")


def measure_background(uri: str, checkpoint: dict[str, Any], repeats: int) -> None:
    store = CheckpointStore(uri, keep=2)
    durable = Durability(
        store,
        every_n_steps=None,
        every_n_minutes=None,
        background=True,
        preemption=PreemptionSignal(),
        agreement=Agreement(1),
        is_writer=True,
        barrier=lambda: None,
    )
    step = iter(range(1, 10_000))
    sync = timed(lambda: durable.save(next(step), 0, lambda: checkpoint, background=False), repeats)
    blocked = []
    for _ in range(repeats):
        start = time.perf_counter()
        durable.save(next(step), 0, lambda: checkpoint, background=True)
        blocked.append(time.perf_counter() - start)
        durable.saver.wait()
    block = statistics.median(blocked)
    copy = timed(lambda: snapshot(checkpoint), repeats)
    print(
        f"\nbackground save to {uri.split(':')[0]}: blocks training {block * 1e3:.0f} ms "
        f"(the CPU snapshot: {copy * 1e3:.0f} ms) vs a synchronous save {sync * 1e3:.0f} ms: "
        f"{block / sync:.1%}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import logging

    logging.getLogger("lightjob").setLevel(logging.WARNING)
    # moto in its own process, so that tracemalloc sees only the client's buffers.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")
        fsspec.config.conf["s3"] = {"endpoint_url": f"http://127.0.0.1:{port}"}
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        fsspec.filesystem("s3").mkdir("lightjob-bench")
        checkpoint = make_checkpoint(args.mb)
        measure("moto S3 (127.0.0.1)", "s3://lightjob-bench/run", checkpoint, args.repeats)
        with tempfile.TemporaryDirectory() as folder:
            measure("local disk", folder, checkpoint, args.repeats)
            measure_background(folder, checkpoint, args.repeats)
        measure_background("s3://lightjob-bench/background", checkpoint, args.repeats)
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
