"""Where a process sits in the job, read from the environment (no processes started)."""

from __future__ import annotations

from typing import Any

import pytest

from lightjob.runtime.distributed import detect_cluster
from lightjob.runtime.errors import MisconfigurationException

LAUNCH_VARS = [
    "TORCHELASTIC_RUN_ID",
    "GROUP_RANK",
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "NODE_RANK",
]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Any:
    for name in LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)

    def set_env(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    return set_env


def test_plain_single_machine(env: Any) -> None:
    cluster = detect_cluster(devices=4, num_nodes=1, num_nodes_set=False)
    assert (cluster.kind, cluster.world_size, cluster.global_rank, cluster.launched) == (
        "local",
        4,
        0,
        False,
    )
    assert detect_cluster(devices=1, num_nodes=1, num_nodes_set=False).launched


def test_torchrun(env: Any) -> None:
    env(
        TORCHELASTIC_RUN_ID="x",
        RANK="5",
        LOCAL_RANK="1",
        GROUP_RANK="2",
        WORLD_SIZE="8",
        LOCAL_WORLD_SIZE="2",
        MASTER_ADDR="10.0.0.1",
        MASTER_PORT="1234",
    )
    cluster = detect_cluster(devices=2, num_nodes=1, num_nodes_set=False)
    assert (cluster.kind, cluster.global_rank, cluster.local_rank, cluster.node_rank) == (
        "torchrun",
        5,
        1,
        2,
    )
    assert (cluster.num_nodes, cluster.launched, cluster.master_port) == (4, True, 1234)
    with pytest.raises(MisconfigurationException, match="torchrun started 2 processes per node"):
        detect_cluster(devices=4, num_nodes=1, num_nodes_set=False)
    with pytest.raises(
        MisconfigurationException, match=r"num_nodes=2\) but torchrun started 4 node"
    ):
        detect_cluster(devices=2, num_nodes=2, num_nodes_set=True)


def test_operator_env_takes_num_nodes_from_world_size(env: Any) -> None:
    env(MASTER_ADDR="job-node-0.job", MASTER_PORT="29500", NODE_RANK="3", WORLD_SIZE="32")
    cluster = detect_cluster(devices=8, num_nodes=1, num_nodes_set=False)
    assert (cluster.kind, cluster.num_nodes, cluster.global_rank, cluster.launched) == (
        "lightjob",
        4,
        24,
        False,
    )
    env(LOCAL_RANK="5")  # a process the node's launcher started
    cluster = detect_cluster(devices=8, num_nodes=4, num_nodes_set=True)
    assert (cluster.global_rank, cluster.local_rank, cluster.launched) == (29, 5, True)


def test_num_nodes_without_a_cluster_env_is_an_error(env: Any) -> None:
    with pytest.raises(MisconfigurationException, match="needs each node started with MASTER_ADDR"):
        detect_cluster(devices=1, num_nodes=2, num_nodes_set=True)
