"""Where this process sits in the job, how the job's processes start, and how they talk.

- `detect_cluster`: torchrun/TorchElastic env, lightjob's operator env (MASTER_ADDR,
  MASTER_PORT, NODE_RANK, WORLD_SIZE; also what Lightning understands), or one machine.
- `Launcher`: when nothing started the per-device processes, the first process re-runs the
  user's script once per extra local device, as Lightning does, and stops them all when
  one fails.
- `SingleDeviceStrategy` / `DDPStrategy`: what the Trainer calls to place the model,
  shard loaders and reduce values.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

from lightjob.runtime import data, telemetry
from lightjob.runtime.durable import PREEMPTED_EXIT_CODE
from lightjob.runtime.errors import MisconfigurationException

if TYPE_CHECKING:
    from lightjob.runtime.options import Devices

log = logging.getLogger("lightjob")
DEFAULT_TIMEOUT = dt.timedelta(minutes=30)


@dataclass(frozen=True, slots=True)
class ClusterEnv:
    """This process's place in the job."""

    kind: str  # "torchrun", "lightjob" (operator or Lightning-style env) or "local"
    world_size: int
    global_rank: int
    local_rank: int
    node_rank: int
    num_nodes: int
    master_addr: str
    master_port: int
    launched: bool  # True when every process already exists (torchrun, or a launched child)


def detect_cluster(devices: int, num_nodes: int, num_nodes_set: bool) -> ClusterEnv:
    """Read the environment; a mismatch with what the Trainer asked for is an error now,
    not a hang at the first collective."""
    env = os.environ
    if "TORCHELASTIC_RUN_ID" in env or "GROUP_RANK" in env:
        world = int(env["WORLD_SIZE"])
        local_world = int(env.get("LOCAL_WORLD_SIZE", devices))
        if local_world != devices:
            raise MisconfigurationException(
                f"Trainer(devices={devices}) but torchrun started {local_world} processes per "
                f"node (--nproc-per-node); make them equal"
            )
        nodes = world // local_world
        _check_nodes(num_nodes, nodes, num_nodes_set, f"torchrun started {nodes} node(s)")
        return ClusterEnv(
            "torchrun",
            world,
            int(env["RANK"]),
            int(env["LOCAL_RANK"]),
            int(env["GROUP_RANK"]),
            nodes,
            env.get("MASTER_ADDR", "127.0.0.1"),
            int(env.get("MASTER_PORT", 29500)),
            True,
        )
    if "MASTER_ADDR" in env and "NODE_RANK" in env:
        world = int(env.get("WORLD_SIZE", devices * num_nodes))
        if world % devices:
            raise MisconfigurationException(
                f"WORLD_SIZE={world} in the environment is not a multiple of Trainer(devices={devices})"
            )
        nodes = world // devices
        _check_nodes(
            num_nodes, nodes, num_nodes_set, f"WORLD_SIZE={world} with {devices} device(s) per node"
        )
        node_rank = int(env["NODE_RANK"])
        if not 0 <= node_rank < nodes:
            raise MisconfigurationException(f"NODE_RANK={node_rank} is outside 0..{nodes - 1}")
        local_rank = int(env.get("LOCAL_RANK", 0))
        return ClusterEnv(
            "lightjob",
            world,
            node_rank * devices + local_rank,
            local_rank,
            node_rank,
            nodes,
            env["MASTER_ADDR"],
            int(env.get("MASTER_PORT", 29500)),
            "LOCAL_RANK" in env or devices == 1,
        )
    if num_nodes > 1:
        raise MisconfigurationException(
            f"Trainer(num_nodes={num_nodes}) needs each node started with MASTER_ADDR, MASTER_PORT, "
            "NODE_RANK and WORLD_SIZE (the lightjob operator sets them), or with torchrun"
        )
    local_rank = int(env.get("LOCAL_RANK", 0))
    return ClusterEnv(
        "local",
        devices,
        local_rank,
        local_rank,
        0,
        1,
        env.get("MASTER_ADDR", "127.0.0.1"),
        int(env.get("MASTER_PORT", 0)),
        "LOCAL_RANK" in env or devices == 1,
    )


def _check_nodes(asked: int, found: int, asked_explicitly: bool, where: str) -> None:
    if asked_explicitly and asked != found:
        raise MisconfigurationException(
            f"Trainer(num_nodes={asked}) but {where}; make them agree, or leave num_nodes "
            "unset to take it from the environment"
        )


def find_free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class Launcher:
    """Start local ranks 1..devices-1 by re-running the user's command; watch them."""

    def __init__(self) -> None:
        self.children: list[subprocess.Popen[bytes]] = []
        self._stopping = False
        self._killed: set[int] = set()  # pids this launcher killed: not failures to report

    def launch(self, cluster: ClusterEnv, devices: int) -> ClusterEnv:
        command = _script_command()
        port = cluster.master_port or find_free_port(cluster.master_addr)
        shared = {
            "MASTER_ADDR": cluster.master_addr,
            "MASTER_PORT": str(port),
            "NODE_RANK": str(cluster.node_rank),
            "WORLD_SIZE": str(cluster.world_size),
        }
        os.environ.update(shared)
        os.environ["LOCAL_RANK"] = "0"
        for local_rank in range(1, devices):
            env = {**os.environ, **shared, "LOCAL_RANK": str(local_rank)}
            self.children.append(subprocess.Popen(command, env=env, preexec_fn=_die_with_parent))
        threading.Thread(target=self._watch, name="lightjob-launcher", daemon=True).start()
        atexit.register(self._wait_at_exit)
        previous_hook = sys.excepthook

        def kill_then_report(*info: Any) -> None:
            # Rank 0 failed outside the Trainer: the others would wait for it in a collective.
            self.kill(grace=2.0)
            previous_hook(*info)

        sys.excepthook = kill_then_report
        return ClusterEnv(
            cluster.kind,
            cluster.world_size,
            cluster.node_rank * devices,
            0,
            cluster.node_rank,
            cluster.num_nodes,
            cluster.master_addr,
            port,
            True,
        )

    def _watch(self) -> None:
        """A failed rank must not leave the others hanging in a collective: stop them all."""
        while not self._stopping:
            for rank, child in enumerate(self.children, start=1):
                code = child.poll()
                # A preempted rank exits 143 after the checkpoint is durable; rank 0 exits
                # the same way on its own, so that is no failure to act on.
                if code not in (None, 0, PREEMPTED_EXIT_CODE) and not self._stopping:
                    _report(rank, code, "stopping the other ranks")
                    self.kill()
                    os._exit(_exit_code(code))
            time.sleep(0.2)

    def kill(self, grace: float = 0.0) -> None:
        """Stop the local ranks; those already on their way out get `grace` seconds, so
        their own exit code (the real failure) is what gets reported."""
        self._stopping = True
        deadline = time.monotonic() + grace
        for child in self.children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
        for child in self.children:
            if child.poll() is None:
                self._killed.add(child.pid)
                child.kill()
        for child in self.children:
            child.wait()

    def forward_signal(self, signum: int) -> None:
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signum)

    def _wait_at_exit(self) -> None:
        # Rank 0 finished its script: the other ranks run the same script and finish too.
        self._stopping = True
        codes = [
            (rank, child.wait(), child.pid) for rank, child in enumerate(self.children, start=1)
        ]
        failed = [
            (rank, code)
            for rank, code, pid in codes
            if code not in (0, PREEMPTED_EXIT_CODE) and pid not in self._killed
        ]
        for rank, code in failed:
            _report(rank, code, "so this run failed")
        if failed:
            os._exit(_exit_code(failed[0][1]))


def _report(rank: int, code: int, consequence: str) -> None:
    log.error(
        "lightjob: local rank %d exited with code %d; %s",
        rank,
        code,
        consequence,
        extra={"local_rank": rank, "exit_code": code},
    )


def _exit_code(code: int) -> int:
    return code if code > 0 else 128 - code  # killed by signal N: exit 128+N, as a shell does


def _script_command() -> list[str]:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name not in ("__main__", None):
        module = spec.name.removesuffix(".__main__")
        return [sys.executable, "-m", module, *sys.argv[1:]]
    script = sys.argv[0] if sys.argv else ""
    if not script or script == "-c" or not os.path.exists(script):
        raise MisconfigurationException(
            "Trainer(devices>1) starts one process per device by re-running your script, but "
            "this process was not started from a script (a notebook or `python -c`). Put the "
            "code in a file, or start it with torchrun."
        )
    return [sys.executable, os.path.abspath(script), *sys.argv[1:]]


def _die_with_parent() -> None:
    # Linux: the kernel kills the child when the launching process dies, even by SIGKILL.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class SingleDeviceStrategy:
    """One process on one device: no wrapping, no collectives."""

    world_size = 1
    global_rank = 0
    local_rank = 0
    node_rank = 0
    num_nodes = 1
    is_global_zero = True
    launcher: Launcher | None = None

    def __init__(self, device: torch.device) -> None:
        self.root_device = device

    def setup_environment(self) -> None: ...

    def wrap(self, model: nn.Module) -> nn.Module | None:
        return None  # the Trainer calls the module's step methods directly

    def no_sync(self, wrapped: nn.Module | None) -> Any:
        return nullcontext()

    def prepare_loader(self, loader: Any, *, train: bool) -> Any:
        return loader

    def reduce(self, value: torch.Tensor, op: str = "mean") -> torch.Tensor:
        return value

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        return decision

    def barrier(self, name: str | None = None) -> None: ...

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        return obj

    def all_gather_object(self, obj: Any) -> list[Any]:
        return [obj]

    def teardown(self) -> None: ...


class DDPStrategy(SingleDeviceStrategy):
    """DistributedDataParallel over NCCL (GPUs) or gloo (CPUs)."""

    def __init__(
        self,
        *,
        find_unused_parameters: bool = False,
        static_graph: bool = False,
        process_group_backend: str | None = None,
        timeout: dt.timedelta | None = None,
        gradient_as_bucket_view: bool = False,
        **ddp_kwargs: Any,
    ) -> None:
        self.find_unused_parameters = find_unused_parameters
        self.static_graph = static_graph
        self.process_group_backend = process_group_backend
        self.timeout = timeout or _timeout_from_env()
        self.ddp_kwargs = {"gradient_as_bucket_view": gradient_as_bucket_view, **ddp_kwargs}
        self.cluster: ClusterEnv | None = None
        self.launcher = None
        self.root_device = torch.device("cpu")
        self.use_distributed_sampler = True

    def configure(
        self, cluster: ClusterEnv, devices: int, accelerator: str, device_ids: list[int]
    ) -> None:
        if not cluster.launched:
            self.launcher = Launcher()
            cluster = self.launcher.launch(cluster, devices)
        self.cluster = cluster
        if accelerator == "cuda":
            self.root_device = torch.device("cuda", device_ids[cluster.local_rank])
            torch.cuda.set_device(self.root_device)

    @property
    def world_size(self) -> int:  # type: ignore[override]
        return self.cluster.world_size if self.cluster else 1

    @property
    def global_rank(self) -> int:  # type: ignore[override]
        return self.cluster.global_rank if self.cluster else 0

    @property
    def local_rank(self) -> int:  # type: ignore[override]
        return self.cluster.local_rank if self.cluster else 0

    @property
    def node_rank(self) -> int:  # type: ignore[override]
        return self.cluster.node_rank if self.cluster else 0

    @property
    def num_nodes(self) -> int:  # type: ignore[override]
        return self.cluster.num_nodes if self.cluster else 1

    @property
    def is_global_zero(self) -> bool:  # type: ignore[override]
        return self.global_rank == 0

    def setup_environment(self) -> None:
        if dist.is_available() and dist.is_initialized():
            return
        assert self.cluster is not None
        backend = self.process_group_backend or (
            "nccl" if self.root_device.type == "cuda" else "gloo"
        )
        if self.cluster.kind == "torchrun":
            dist.init_process_group(backend, timeout=self.timeout)
            return
        store = rendezvous(self.cluster, self.timeout)
        dist.init_process_group(
            backend,
            store=store,
            rank=self.cluster.global_rank,
            world_size=self.cluster.world_size,
            timeout=self.timeout,
        )

    def wrap(self, model: nn.Module) -> nn.Module:
        device_ids = [self.root_device.index] if self.root_device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(
            StepDispatch(model),
            device_ids=device_ids,
            find_unused_parameters=self.find_unused_parameters,
            static_graph=self.static_graph,
            **self.ddp_kwargs,
        )

    def no_sync(self, wrapped: nn.Module | None) -> Any:
        return wrapped.no_sync() if wrapped is not None else nullcontext()  # type: ignore[operator]

    def prepare_loader(self, loader: Any, *, train: bool) -> Any:
        if not self.use_distributed_sampler or self.world_size == 1:
            return loader
        if not data.can_replace_sampler(loader):
            return loader
        if not isinstance(
            loader.sampler, torch.utils.data.RandomSampler | torch.utils.data.SequentialSampler
        ):
            return loader  # the user's own sampler (DistributedSampler included) stays
        sampler = data.ResumableDistributedSampler(
            loader.dataset,
            num_replicas=self.world_size,
            rank=self.global_rank,
            # Keep the user's order: shuffle only when their loader shuffled.
            shuffle=train and data.is_shuffling(loader),
            seed=int(os.environ.get("PL_GLOBAL_SEED", 0)),
        )
        return data.rebuild_loader(loader, sampler=sampler)

    def reduce(self, value: torch.Tensor, op: str = "mean") -> torch.Tensor:
        tensor = value.detach().clone().to(self.root_device)
        reduce_op = {
            "sum": dist.ReduceOp.SUM,
            "mean": dist.ReduceOp.SUM,
            "max": dist.ReduceOp.MAX,
            "min": dist.ReduceOp.MIN,
        }[op]
        dist.all_reduce(tensor, op=reduce_op)
        return tensor / self.world_size if op == "mean" else tensor

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        votes = self.reduce(torch.tensor(int(decision)), "sum")
        return bool(votes == self.world_size) if all else bool(votes > 0)

    def barrier(self, name: str | None = None) -> None:
        if dist.is_initialized():
            dist.barrier()

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def all_gather_object(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out


def start_processes(strategy: SingleDeviceStrategy, devices: Devices) -> None:
    """Join the run's processes (launching this node's others first if nothing did), once
    per strategy; then `rank_zero_only` and the log lines know this process's rank."""
    if isinstance(strategy, DDPStrategy) and strategy.cluster is None:
        count = len(devices.ids)
        cluster = detect_cluster(count, devices.num_nodes, devices.num_nodes_set)
        strategy.configure(cluster, count, devices.accelerator, devices.ids)
    strategy.setup_environment()
    rank_zero_only.rank = strategy.global_rank  # type: ignore[attr-defined]
    telemetry.context.update(
        rank=strategy.global_rank, node=strategy.node_rank, world_size=strategy.world_size
    )


class StepDispatch(nn.Module):
    """What DDP wraps: its forward runs the LightningModule's current step method, so DDP's
    forward-time bookkeeping (buffers, unused parameters, static graph) happens as in a
    plain PyTorch DDP loop."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.step_name = "training_step"

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.module, self.step_name)(*args, **kwargs)


def rendezvous(cluster: ClusterEnv, timeout: dt.timedelta) -> dist.Store:
    """Meet at MASTER_ADDR:MASTER_PORT, naming who is missing when someone never comes."""
    seconds = timeout.total_seconds()
    address = f"{cluster.master_addr}:{cluster.master_port}"
    try:
        store = dist.TCPStore(
            cluster.master_addr,
            cluster.master_port,
            cluster.world_size,
            is_master=cluster.global_rank == 0,
            timeout=timeout,
            wait_for_workers=False,
        )
    except (RuntimeError, dist.DistError) as err:
        raise RuntimeError(
            f"rank {cluster.global_rank} could not reach the rendezvous at {address} within "
            f"{seconds:.0f}s (is node 0 running, and MASTER_ADDR/MASTER_PORT right?): {err}"
        ) from None
    store.set(f"lightjob/joined/{cluster.global_rank}", "1")
    if cluster.global_rank == 0:
        deadline = time.monotonic() + seconds
        while True:
            missing = [
                r for r in range(cluster.world_size) if not store.check([f"lightjob/joined/{r}"])
            ]
            if not missing:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"rendezvous at {address} timed out after {seconds:.0f}s: rank(s) "
                    f"{', '.join(map(str, missing))} of {cluster.world_size} never arrived"
                )
            time.sleep(0.05)
    return store


def _timeout_from_env() -> dt.timedelta:
    seconds = os.environ.get("LIGHTJOB_RENDEZVOUS_TIMEOUT")
    return dt.timedelta(seconds=float(seconds)) if seconds else DEFAULT_TIMEOUT


def _rank_from_env() -> int:
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID"):
        if key in os.environ:
            return int(os.environ[key])
    return 0


def rank_zero_only(fn: Any) -> Any:
    """Run `fn` on global rank 0 only; elsewhere it returns None. The Trainer keeps
    `rank_zero_only.rank` current once it knows the rank."""

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if rank_zero_only.rank == 0:  # type: ignore[attr-defined]
            return fn(*args, **kwargs)
        return None

    wrapped.__name__ = getattr(fn, "__name__", "wrapped")
    wrapped.__doc__ = fn.__doc__
    return wrapped


rank_zero_only.rank = _rank_from_env()  # type: ignore[attr-defined]
