"""Durable checkpoints on a real S3 API (moto's server via s3fs), preemption and exact resume."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import warnings
import zlib
from argparse import Namespace
from pathlib import Path
from typing import Any

import fsspec
import pytest
import torch

import lightjob as L
from lightjob.callbacks import Callback
from lightjob.runtime import checkpoint as ckpt_io
from lightjob.runtime.durable import PREEMPTED_EXIT_CODE
from lightjob.runtime.errors import MisconfigurationException
from tests.conftest import S3
from tests.helpers import TinyModel, loader, quiet

ROOT = Path(__file__).resolve().parents[2]


class StartStep(Callback):
    """Records the step training started from."""

    def __init__(self) -> None:
        self.step: int | None = None

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.step = trainer.global_step


def fit(tmp_path: Path, uri: str, **flags: Any) -> tuple[L.Trainer, StartStep]:
    start = StartStep()
    trainer = L.Trainer(**quiet(tmp_path, callbacks=[start], checkpoint_uri=uri, **flags))
    trainer.fit(TinyModel(), loader(n=64, batch_size=8))
    return trainer, start


def script_env(s3: S3 | None = None) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("MASTER_PORT", "LOCAL_RANK", "WORLD_SIZE")
    }
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", LIGHTJOB_RENDEZVOUS_TIMEOUT="60")
    if s3 is not None:
        env.update(s3.env)
    return env


def run_script(out: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.integration.resume_script", str(out), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def preempt_at(out: Path, step: int, *args: str, env: dict[str, str]) -> tuple[int, str]:
    """Start the script, SIGTERM its first process once it reports `step`, and wait."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.integration.resume_script",
            str(out),
            *args,
            "--sleep",
            "0.01",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.strip() == f"STEP {step}":
            proc.send_signal(signal.SIGTERM)
            break
    rest, _ = proc.communicate(timeout=120)
    return proc.returncode, "".join(lines) + rest


def weights(out: Path, rank: int) -> dict[str, torch.Tensor]:
    return torch.load(out / f"final.{rank}.pt", weights_only=True)


def assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs by {(a[key] - b[key]).abs().max()}"


# -- preemption and exact resume ------------------------------------------------------------


@pytest.mark.parametrize("devices", [2, 1])
def test_sigterm_at_a_random_step_then_resume_is_bitwise_exact(
    tmp_path: Path, s3: S3, devices: int
) -> None:
    env = script_env(s3)
    common = ["--devices", str(devices), "--max-epochs", "3"]
    full = run_script(tmp_path / "full", *common, "--uri", s3.uri("full"), env=env)
    assert full.returncode == 0, full.stderr[-3000:]

    step = random.Random().randint(3, 60)
    code, output = preempt_at(tmp_path / "cut", step, *common, "--uri", s3.uri("cut"), env=env)
    assert code == PREEMPTED_EXIT_CODE, output[-3000:]
    assert "preemption checkpoint s3://" in output and "durable in" in output
    pointer = json.loads(fsspec.filesystem("s3").cat_file(f"{s3.bucket}/cut/latest.json"))
    assert pointer["step"] >= step, (pointer, step)  # nothing finished before SIGTERM is lost
    assert not (tmp_path / "cut" / "final.0.pt").exists()

    resumed = run_script(tmp_path / "cut", *common, "--uri", s3.uri("cut"), env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from s3://{s3.bucket}/cut/step-{pointer['step']:010d}.ckpt" in resumed.stderr
    for rank in range(devices):
        assert_bitwise_equal(weights(tmp_path / "cut", rank), weights(tmp_path / "full", rank))


def test_world_size_change_continues_from_the_same_global_sample(tmp_path: Path, s3: S3) -> None:
    env = script_env(s3)
    uri = s3.uri("resize")
    first = run_script(tmp_path, "--devices", "2", "--max-steps", "6", "--uri", uri, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_script(tmp_path, "--devices", "3", "--max-epochs", "1", "--uri", uri, env=env)
    assert second.returncode == 0, second.stderr[-3000:]

    seen: list[int] = []
    for rank in range(3):
        path = tmp_path / f"seen.{rank}"
        for line in path.read_text().splitlines() if path.exists() else []:
            epoch, *ids = line.split()
            assert epoch == "0"
            seen += map(int, ids)
    # 6 steps x 2 ranks x 4 before, then the other 192 samples on 3 ranks: each exactly once.
    assert sorted(seen) == list(range(240))


# -- a bad newest checkpoint: the next run resumes from the last good one ----------------------


def test_killed_between_data_and_pointer_resumes_from_the_pointer(tmp_path: Path, s3: S3) -> None:
    uri = s3.uri("crash")
    fit(tmp_path, uri, max_steps=8, checkpoint_every_n_steps=4)
    code = (
        "import os, signal, sys\n"
        "from lightjob.runtime.checkpoint import CheckpointStore\n"
        f"store = CheckpointStore({uri!r})\n"
        "store.write_object({'global_step': 12}, step=12, epoch=1)\n"
        "os.kill(os.getpid(), signal.SIGKILL)  # dies before store.commit()\n"
    )
    killed = subprocess.run([sys.executable, "-c", code], env=script_env(s3), cwd=ROOT, timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert any(u.endswith("step-0000000012.ckpt") for u in ckpt_io.CheckpointStore(uri).objects())

    trainer, start = fit(tmp_path, uri, max_steps=10)
    assert start.step == 8 and trainer.ckpt_path == f"{uri}/step-0000000008.ckpt"


@pytest.mark.parametrize(
    "damage", ["corrupt pointer", "delete newest", "garbage newest", "bit flip in newest"]
)
def test_a_damaged_newest_checkpoint_falls_back_to_the_last_good_one(
    tmp_path: Path, s3: S3, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    uri = s3.uri("damage")
    fit(tmp_path, uri, max_steps=8, checkpoint_every_n_steps=4)
    fs = fsspec.filesystem("s3")
    newest = f"{s3.bucket}/damage/step-0000000008.ckpt"
    if damage == "corrupt pointer":
        fs.pipe_file(f"{s3.bucket}/damage/latest.json", b"{not json")
        fs.rm_file(newest)  # and the object it would fall back to first
    elif damage == "delete newest":
        fs.rm_file(newest)
    elif damage == "garbage newest":
        fs.pipe_file(newest, b"\x80\x04 definitely not a checkpoint")
    else:  # the same size, and torch.load would read it: only the CRC32 tells
        data = bytearray(fs.cat_file(newest))
        data[len(data) // 2] ^= 0xFF
        fs.pipe_file(newest, bytes(data))
    with caplog.at_level("WARNING", logger="lightjob"):
        trainer, start = fit(tmp_path, uri, max_steps=10)
    assert start.step == 4, caplog.text
    assert trainer.ckpt_path == f"{uri}/step-0000000004.ckpt"
    assert "unusable" in caplog.text or "corrupt" in caplog.text


def test_retention_keeps_the_newest_and_the_checkpoint_resumed_from(tmp_path: Path, s3: S3) -> None:
    uri = s3.uri("keep")
    fit(tmp_path, uri, max_steps=4, checkpoint_every_n_steps=2)
    store = ckpt_io.CheckpointStore(uri)
    assert [o.rsplit("/", 1)[1] for o in store.objects()] == [
        "step-0000000004.ckpt",
        "step-0000000002.ckpt",
    ]
    fit(tmp_path, uri, max_steps=16, checkpoint_every_n_steps=2, checkpoint_keep=2)
    names = [o.rsplit("/", 1)[1] for o in store.objects()]
    assert names == ["step-0000000016.ckpt", "step-0000000014.ckpt", "step-0000000004.ckpt"]
    pointer = store.pointer()
    assert pointer is not None and pointer.step == 16


# -- errors ---------------------------------------------------------------------------------------


def test_a_missing_bucket_fails_before_training(tmp_path: Path, s3: S3) -> None:
    model = TinyModel()
    trainer = L.Trainer(
        **quiet(tmp_path, max_steps=2, checkpoint_uri="s3://no-such-bucket-lightjob/run")
    )
    with pytest.raises(
        MisconfigurationException,
        match=r"checkpoint location s3://no-such-bucket-lightjob/run is not writable",
    ):
        trainer.fit(model, loader())
    assert model.seen == []


def test_a_failed_background_upload_is_raised_in_the_training_loop(tmp_path: Path, s3: S3) -> None:
    class DropBucket(Callback):
        def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
            if trainer.global_step == 2:
                fs = fsspec.filesystem("s3")
                fs.rm(s3.bucket, recursive=True)
                fs.invalidate_cache()

    model = TinyModel()
    trainer = L.Trainer(
        **quiet(
            tmp_path,
            max_steps=20,
            checkpoint_uri=s3.uri("gone"),
            checkpoint_every_n_steps=3,
            callbacks=[DropBucket()],
        )
    )
    with pytest.raises(RuntimeError, match="background checkpoint save failed"):
        trainer.fit(model, loader())
    assert len(model.seen) < 20


# -- reading checkpoints ----------------------------------------------------------------------


def test_last_without_any_checkpoint_starts_fresh_then_resumes(tmp_path: Path, s3: S3) -> None:
    """Lightning #18261: ckpt_path="last" silently started from scratch on s3://."""
    uri = s3.uri("last")
    _, start = fit(tmp_path, uri, max_steps=3)
    assert start.step == 0
    trainer = L.Trainer(**quiet(tmp_path, max_steps=6, checkpoint_uri=uri))
    trainer.fit(TinyModel(), loader(), ckpt_path="last")
    assert trainer.ckpt_path == f"{uri}/step-0000000003.ckpt" and trainer.global_step == 6
    restored = TinyModel.load_from_checkpoint(f"{uri}/step-0000000006.ckpt")
    assert torch.equal(restored.layer.weight, trainer.lightning_module.layer.weight)  # type: ignore[union-attr]


def test_checkpoints_load_with_weights_only_and_warn_when_they_cannot(tmp_path: Path) -> None:
    class WithNamespace(TinyModel):
        def __init__(self, config: Any = None, lr: float = 0.1, features: int = 8) -> None:
            super().__init__(lr, features)

    model = WithNamespace(config=Namespace(depth=2))
    trainer = L.Trainer(**quiet(tmp_path, max_steps=1))
    trainer.fit(model, loader())
    trainer.save_checkpoint(tmp_path / "plain.ckpt", weights_only=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        restored = WithNamespace.load_from_checkpoint(str(tmp_path / "plain.ckpt"))
    assert restored.hparams.config == Namespace(depth=2)
    assert any("only load checkpoints you trust" in str(w.message) for w in caught)
    with pytest.raises(Exception, match="Unsupported global"):
        WithNamespace.load_from_checkpoint(str(tmp_path / "plain.ckpt"), weights_only=True)


def test_memory_and_file_uris_go_through_the_same_store(tmp_path: Path) -> None:
    for uri in ("memory://lightjob-test/run", f"file://{tmp_path}/store"):
        trainer, _ = fit(tmp_path, uri, max_steps=4, checkpoint_every_n_steps=2)
        assert trainer.last_checkpoint is not None and trainer.last_checkpoint.step == 4
        _, start = fit(tmp_path, uri, max_steps=6)
        assert start.step == 4


class Unpicklable:
    def __reduce__(self) -> Any:
        raise RuntimeError("this object cannot be pickled")


def test_checkpoint_bytes_stream_to_s3_in_parts_and_a_failed_write_leaves_nothing(
    s3: S3,
) -> None:
    """No whole in-memory copy on the remote path: torch.save streams into s3fs's file,
    uploaded in 50 MiB parts and completed only at the end, with the CRC on the way."""
    fs = fsspec.filesystem("s3")
    weights = {"w": torch.randn(15_000_000)}  # 60 MB: two parts
    uri = s3.uri("stream", "big.ckpt")
    size, crc = ckpt_io.write_checkpoint(weights, uri)
    data = fs.cat_file(uri)
    assert (len(data), zlib.crc32(data)) == (size, crc)
    assert size > 60_000_000
    assert torch.equal(ckpt_io.load(uri)["w"], weights["w"])

    broken = s3.uri("stream", "broken.ckpt")
    with pytest.raises(RuntimeError, match="cannot be pickled"):
        ckpt_io.write_checkpoint({"w": weights["w"], "bad": Unpicklable()}, broken)
    fs.invalidate_cache()
    assert not fs.exists(broken)
    assert not fs.call_s3("list_multipart_uploads", Bucket=s3.bucket).get("Uploads")
