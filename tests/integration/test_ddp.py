"""DDP across real processes on the CPU (gloo): the launcher, two "nodes" started with the
operator's env, torchrun, a plain Lightning script, and the failure paths."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from lightjob.controller import Sample, parse
from lightjob.runtime.distributed import find_free_port
from tests.integration.ddp_script import data

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "integration" / "ddp_script.py"


def base_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "WORLD_SIZE", "LOCAL_RANK", "RANK")
    }
    env.update(PYTHONPATH=str(ROOT), LIGHTJOB_RENDEZVOUS_TIMEOUT="60", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"timed out:\n{out[-3000:]}") from None
    return out


def load(out: Path, rank: int) -> dict[str, Any]:
    return torch.load(out / f"rank{rank}.pt", weights_only=False)


def no_process_mentions(marker: str) -> bool:
    listing = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return not [line for line in listing.splitlines() if marker in line and "ps -eo" not in line]


def one_process_reference(steps: int, global_batch: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    layer = nn.Linear(8, 2)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    x, y = data().tensors
    for step in range(steps):
        chunk = slice(step * global_batch, (step + 1) * global_batch)
        optimizer.zero_grad()
        nn.functional.cross_entropy(layer(x[chunk]), y[chunk]).backward()
        optimizer.step()
    return {f"layer.{k}": v for k, v in layer.state_dict().items()}


def assert_ranks_match_reference(out: Path, world: int, steps: int, batch: int) -> None:
    reference = one_process_reference(steps, batch * world)
    states = [load(out, rank) for rank in range(world)]
    for state in states:
        assert state["world_size"] == world
        for key, value in reference.items():
            torch.testing.assert_close(state["state_dict"][key], value, rtol=0, atol=1e-5)
    for state in states[1:]:
        for key in reference:
            assert torch.equal(state["state_dict"][key], states[0]["state_dict"][key])


def test_devices_2_trains_in_two_processes_like_one_process(tmp_path: Path) -> None:
    proc = start(
        [sys.executable, "-m", "tests.integration.ddp_script", str(tmp_path), "--devices", "2"],
        base_env(),
    )
    output = finish(proc)
    assert proc.returncode == 0, output[-3000:]
    assert_ranks_match_reference(tmp_path, world=2, steps=6, batch=8)
    rank0, rank1 = load(tmp_path, 0), load(tmp_path, 1)
    # The user's sequential order is kept: together the ranks saw the first 96 samples.
    first = data().tensors[0][: 6 * 16, 0].tolist()
    assert sorted(rank0["seen"] + rank1["seen"]) == sorted(first)
    assert rank0["seen"] == first[0::2]
    # sync_dist reductions: every sample counted once, and the mean over ranks.
    assert rank0["val_count"] == rank1["val_count"] == 40.0
    assert rank0["rank_mean"] == rank1["rank_mean"] == 0.5
    # Logging and the progress bar happen once, on rank 0.
    assert sorted(os.listdir(tmp_path / "lightning_logs")) == ["version_0"]
    assert output.count("Trainable params") == 1
    assert sorted(p.name for p in tmp_path.glob("rank_zero_only.*")) == ["rank_zero_only.0"]
    assert no_process_mentions(str(tmp_path))


def test_launching_a_script_file_and_keeping_a_shuffle(tmp_path: Path) -> None:
    proc = start(
        [sys.executable, str(SCRIPT), str(tmp_path), "--devices", "2", "--shuffle"], base_env()
    )
    output = finish(proc)
    assert proc.returncode == 0, output[-3000:]
    seen = load(tmp_path, 0)["seen"] + load(tmp_path, 1)["seen"]
    assert len(set(seen)) == len(seen) == 96  # a shuffled epoch, sharded without overlap
    assert load(tmp_path, 0)["seen"] != data().tensors[0][:96:2, 0].tolist()


def test_two_nodes_started_with_the_operator_env(tmp_path: Path) -> None:
    port = str(find_free_port())
    procs = [
        start(
            [sys.executable, "-m", "tests.integration.ddp_script", str(tmp_path), "--devices", "1"],
            base_env(
                MASTER_ADDR="127.0.0.1", MASTER_PORT=port, NODE_RANK=str(rank), WORLD_SIZE="2"
            ),
        )
        for rank in (0, 1)
    ]
    outputs = [finish(p) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[1][-3000:]
    assert_ranks_match_reference(tmp_path, world=2, steps=6, batch=8)
    assert [load(tmp_path, r)["node_rank"] for r in (0, 1)] == [0, 1]


def test_two_nodes_under_torchrun_with_c10d_rendezvous(tmp_path: Path) -> None:
    port = str(find_free_port())
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "2",
        "--nproc-per-node",
        "1",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"127.0.0.1:{port}",
        "--rdzv-id",
        "lightjob-test",
        "-m",
        "tests.integration.ddp_script",
        str(tmp_path),
        "--devices",
        "1",
    ]
    procs = [start(command, base_env()) for _ in range(2)]
    outputs = [finish(p, timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-3000:]
    assert_ranks_match_reference(tmp_path, world=2, steps=6, batch=8)


def test_a_plain_lightning_script_joins_across_two_nodes(tmp_path: Path) -> None:
    port = str(find_free_port())
    script = str(ROOT / "tests" / "integration" / "pl_script.py")
    procs = [
        start(
            [sys.executable, script, str(tmp_path)],
            base_env(
                MASTER_ADDR="127.0.0.1", MASTER_PORT=port, NODE_RANK=str(rank), WORLD_SIZE="2"
            ),
        )
        for rank in (0, 1)
    ]
    outputs = [finish(p, timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-3000:]
    states = [load(tmp_path, r) for r in (0, 1)]
    assert [s["world_size"] for s in states] == [2, 2]
    for key in states[0]["state_dict"]:
        assert torch.equal(states[0]["state_dict"][key], states[1]["state_dict"][key])


@pytest.mark.parametrize("failing", [1, 0])
def test_a_failing_rank_stops_the_whole_run_within_seconds(tmp_path: Path, failing: int) -> None:
    began = time.monotonic()
    proc = start(
        [
            sys.executable,
            "-m",
            "tests.integration.ddp_script",
            str(tmp_path),
            "--devices",
            "2",
            "--fail-rank",
            str(failing),
        ],
        base_env(),
    )
    output = finish(proc, timeout=90)
    assert proc.returncode != 0
    assert time.monotonic() - began < 30, output[-2000:]
    assert f"rank {failing} fails on purpose" in output
    if failing == 1:
        assert "lightjob: local rank 1 exited with code 1;" in output
    assert no_process_mentions(str(tmp_path))


@pytest.mark.parametrize(
    ("node_rank", "message"),
    [
        # Node 0 waits for a peer that never starts...
        ("0", "rendezvous at 127.0.0.1:{port} timed out after 3s: rank(s) 1 of 2 never arrived"),
        # ...and node 1 waits for a node 0 that never starts.
        ("1", "rank 1 could not reach the rendezvous at 127.0.0.1:{port}"),
    ],
)
def test_a_missing_peer_is_a_clear_timeout(tmp_path: Path, node_rank: str, message: str) -> None:
    port = str(find_free_port())
    proc = start(
        [sys.executable, "-m", "tests.integration.ddp_script", str(tmp_path), "--devices", "1"],
        base_env(
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=port,
            NODE_RANK=node_rank,
            WORLD_SIZE="2",
            LIGHTJOB_RENDEZVOUS_TIMEOUT="3",
        ),
    )
    output = finish(proc, timeout=60)
    assert proc.returncode != 0
    assert message.format(port=port) in output


@pytest.mark.parametrize(
    ("env", "args", "fragment"),
    [
        (
            {"WORLD_SIZE": "4", "NODE_RANK": "0"},
            ["--devices", "1", "--num-nodes", "3"],
            "Trainer(num_nodes=3) but WORLD_SIZE=4 with 1 device(s) per node",
        ),
        (
            {"WORLD_SIZE": "3", "NODE_RANK": "0"},
            ["--devices", "2"],
            "WORLD_SIZE=3 in the environment is not a multiple",
        ),
        ({"WORLD_SIZE": "2", "NODE_RANK": "5"}, ["--devices", "1"], "NODE_RANK=5 is outside 0..1"),
    ],
)
def test_env_that_contradicts_the_trainer_is_an_error_not_a_hang(
    tmp_path: Path, env: dict[str, str], args: list[str], fragment: str
) -> None:
    proc = start(
        [sys.executable, "-m", "tests.integration.ddp_script", str(tmp_path), *args],
        base_env(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(find_free_port()), **env),
    )
    output = finish(proc, timeout=60)
    assert proc.returncode != 0 and fragment in output, output[-2000:]


def free_port_pair() -> int:
    """A port p with p + 1 free too (local ranks 0 and 1 serve metrics on p and p + 1)."""
    for _ in range(50):
        port = find_free_port()
        try:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise AssertionError("no two consecutive free ports")


def scrape(port: int) -> Sample | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return parse(response.read().decode())
    except OSError:
        return None


def test_each_process_serves_its_progress_and_logs_json(tmp_path: Path) -> None:
    port = free_port_pair()
    env = base_env(
        LIGHTJOB_METRICS_PORT=str(port),
        LIGHTJOB_POD_IP="127.0.0.1",
        LIGHTJOB_LOG_FORMAT="json",
        LIGHTJOB_CHECKPOINT_URI=str(tmp_path / "ckpt"),
        LIGHTJOB_CHECKPOINT_EVERY_N_STEPS="40",
    )
    args = ["--devices", "2", "--steps", "240", "--step-sleep", "0.02", "--log-every", "4"]
    proc = start([sys.executable, "-m", "tests.integration.ddp_script", str(tmp_path), *args], env)
    seen: list[Sample] = []
    other: list[Sample] = []
    try:
        while proc.poll() is None:
            for target, where in ((seen, port), (other, port + 1)):
                sample = scrape(where)
                if sample is not None and sample.step is not None:
                    target.append(sample)
            time.sleep(0.2)
    finally:
        output = finish(proc)
    assert proc.returncode == 0, output[-3000:]
    steps = [s.step for s in seen]
    assert len(set(steps)) >= 3, steps  # the step advanced while we watched
    assert steps == sorted(steps)
    assert all(s.step % 4 == 0 for s in seen), steps  # updated only at log_every_n_steps
    assert all(s.max_steps == 240 for s in seen)
    assert "train_loss" in seen[-1].metrics and 0 < seen[-1].metrics["train_loss"] < 10
    moving = [s for s in seen if s.samples_per_second]
    assert moving and all(s.samples_per_second > 0 for s in moving)
    saved = [s for s in seen if s.checkpoint_uri]
    assert saved and saved[-1].checkpoint_step % 40 == 0
    assert saved[-1].checkpoint_uri.startswith(str(tmp_path / "ckpt"))
    assert Path(saved[-1].checkpoint_uri).exists()
    assert len({s.step for s in other}) >= 2  # local rank 1 serves on port + 1
    records = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    saves = [r for r in records if "durable in" in r["message"] and r.get("uri")]
    assert saves, output[-3000:]
    assert saves[0]["rank"] == 0 and saves[0]["node"] == 0 and saves[0]["world_size"] == 2
    assert saves[0]["level"] == "info" and saves[0]["step"] % 40 == 0
