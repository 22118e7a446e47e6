"""Durable training: periodic checkpoints to a CheckpointStore, and preemption.

SIGTERM only sets a flag; the ranks agree at a step boundary; then one durable
checkpoint and a documented exit code.

The agreement costs no blocking collective per step. With several ranks, every step
boundary starts an asynchronous all-reduce of a few flags on a small gloo group (CPU
only, never a GPU sync) and reads the one started at the previous boundary, which has
had a whole step to complete. So all ranks act on the same flags at the same step, one
step after they were raised.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from lightjob.runtime.checkpoint import (
    BackgroundSaver,
    CheckpointRef,
    CheckpointStore,
    snapshot,
)
from lightjob.runtime.errors import MisconfigurationException
from lightjob.runtime.telemetry import Telemetry

if TYPE_CHECKING:
    from lightjob.runtime.options import DurableConfig

log = logging.getLogger("lightjob")
Dump = Callable[[], dict[str, Any]]  # builds the checkpoint dict; a collective under DDP

# 128 + SIGTERM: what a shell reports for a process ended by SIGTERM, and what lightjob
# exits with once the preemption checkpoint is durable. The operator counts it as a
# preemption, never as a failure (failures are exit codes 1..127).
PREEMPTED_EXIT_CODE = 143

PREEMPT, SAVE = 0, 1  # positions in the flag vector


class PreemptionSignal:
    """Turns SIGTERM into a flag (and passes it on to the other local ranks)."""

    def __init__(self, forward: Callable[[int], None] | None = None) -> None:
        self.received_at: float | None = None
        self._forward = forward
        self._previous: Any = None
        self._installed = False

    @property
    def requested(self) -> bool:
        return self.received_at is not None

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread() and not self._installed:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)
            self._installed = False

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received_at is None:
            self.received_at = time.monotonic()
        if self._forward is not None:
            self._forward(signum)


class Agreement:
    """The ranks' shared view of the flags; see the module docstring."""

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size
        self._group: Any = None
        self._pending: tuple[Any, torch.Tensor] | None = None
        if world_size > 1:
            self._group = dist.new_group(backend="gloo")

    def exchange(self, flags: list[int]) -> list[int]:
        """Offer this rank's flags; get the flags every rank agreed on (max over ranks)."""
        if self._group is None:
            return flags
        agreed = [0] * len(flags)
        if self._pending is not None:
            work, tensor = self._pending
            work.wait()
            agreed = [int(v) for v in tensor.tolist()]
        tensor = torch.tensor(flags, dtype=torch.int32)
        work = dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=self._group, async_op=True)
        self._pending = (work, tensor)
        return agreed

    def drain(self) -> None:
        """Finish the exchange in flight (every rank has one), e.g. before leaving fit."""
        if self._pending is not None:
            self._pending[0].wait()
            self._pending = None


class Durability:
    """When a run writes to its CheckpointStore: every N steps or minutes (in the
    background), at the end of fit, and on preemption (synchronously, then exit).

    Checkpoints are taken only at step boundaries that close an accumulation window, so
    nothing half-accumulated is ever lost or double-counted on resume.
    """

    def __init__(
        self,
        store: CheckpointStore,
        *,
        every_n_steps: int | None,
        every_n_minutes: float | None,
        background: bool,
        preemption: PreemptionSignal,
        agreement: Agreement,
        is_writer: bool,
        barrier: Callable[[], None],
        telemetry: Telemetry | None = None,
    ) -> None:
        self.store = store
        self.telemetry = telemetry
        self.every_n_steps = every_n_steps
        self.every_n_seconds = every_n_minutes * 60 if every_n_minutes else None
        self.background = background
        self.signal = preemption
        self.agreement = agreement
        self.is_writer = is_writer
        self.barrier = barrier
        self.saver = BackgroundSaver()
        self.last: CheckpointRef | None = None
        self._last_step = -1
        self._last_time = time.monotonic()
        self._preempt_agreed = False

    def at_step_boundary(self, step: int, epoch: int, window_end: bool, dump: Dump) -> bool:
        """Save if due; True when the run must now stop for a preemption."""
        self.saver.check()
        due_by_time = (
            self.is_writer
            and self.every_n_seconds is not None
            and time.monotonic() - self._last_time >= self.every_n_seconds
        )
        agreed = self.agreement.exchange([int(self.signal.requested), int(due_by_time)])
        self._preempt_agreed = self._preempt_agreed or bool(agreed[PREEMPT])
        if not window_end or step == self._last_step:
            return False
        if self._preempt_agreed:
            self.save_for_preemption(step, epoch, dump)
            return True
        due_by_steps = self.every_n_steps is not None and step % self.every_n_steps == 0
        if due_by_steps or agreed[SAVE]:
            self.save(step, epoch, dump, background=self.background)
        return False

    def save(self, step: int, epoch: int, dump: Dump, *, background: bool) -> None:
        checkpoint = dump()  # every rank: it gathers each rank's RNG state
        self._last_step, self._last_time = step, time.monotonic()
        if self.is_writer:
            if background:
                copy = snapshot(checkpoint)  # the only part that blocks training
                self.saver.submit(lambda: self._write(copy, step, epoch))
            else:
                self.saver.wait()
                self._write(checkpoint, step, epoch)
        if not background:
            self.barrier()  # no rank moves on before the checkpoint is durable

    def _write(self, checkpoint: dict[str, Any], step: int, epoch: int) -> None:
        started = time.monotonic()
        self.last = self.store.save(checkpoint, step, epoch)
        self._saved(step, time.monotonic() - started)

    def _saved(self, step: int, took: float) -> None:
        last = self.last
        assert last is not None
        log.info(
            "lightjob: checkpoint %s (%.1f MB) durable in %.2fs",
            last.uri,
            last.size / 1e6,
            took,
            extra={"uri": last.uri, "step": step, "size": last.size, "seconds": round(took, 3)},
        )
        if self.telemetry is not None:
            self.telemetry.checkpoint_saved(last.uri, step, last.size, took)

    def save_for_preemption(self, step: int, epoch: int, dump: Dump) -> None:
        """A synchronous save, straight to the store (checkpoint.py maps its hops)."""
        started = time.monotonic()
        if self.is_writer:
            log.warning(
                "lightjob: preempted (SIGTERM); saving a checkpoint at step %d before exiting",
                step,
                extra={"step": step},
            )
        checkpoint = dump()  # every rank: it gathers each rank's RNG state
        self._last_step, self._last_time = step, time.monotonic()
        if self.is_writer:
            self.saver.wait()  # a background upload in flight lands first
            write_started = time.monotonic()
            self.last = self.store.save(checkpoint, step, epoch)
            self._saved(step, time.monotonic() - write_started)
        self.barrier()  # no rank exits before the checkpoint is durable
        if self.is_writer and self.last is not None:
            took = time.monotonic() - started
            grace = os.environ.get("LIGHTJOB_TERMINATION_GRACE_SECONDS")
            left = ""
            if grace and self.signal.received_at is not None:
                remaining = float(grace) - (time.monotonic() - self.signal.received_at)
                left = f"; {remaining:.1f}s of the {float(grace):.0f}s grace period left"
            log.warning(
                "lightjob: preemption checkpoint %s durable in %.2fs%s; exiting with code %d",
                self.last.uri,
                took,
                left,
                PREEMPTED_EXIT_CODE,
                extra={"uri": self.last.uri, "step": step, "seconds": round(took, 3)},
            )
            if self.telemetry is not None:
                self.telemetry.preemption_saved(took)

    def finish(self, step: int, epoch: int, dump: Dump) -> None:
        """End of fit: settle the exchange in flight, and make the final weights durable."""
        self.agreement.drain()
        if step != self._last_step:
            self.save(step, epoch, dump, background=False)
        self.saver.wait()
        self.barrier()

    def close(self) -> None:
        self.signal.uninstall()


def start(
    config: DurableConfig | None,
    *,
    strategy: Any,
    telemetry: Telemetry | None,
    agreement: Agreement | None,
) -> Durability | None:
    """The run's checkpoint store, checked writable before any training, and the SIGTERM
    handler; None without a checkpoint_uri. `agreement`: the one a previous fit made,
    reused when the world size is the same (making one is a collective)."""
    if config is None:
        return None
    store = CheckpointStore(config.uri, keep=config.keep)
    problem = None
    if strategy.is_global_zero:
        try:
            store.check_writable()
        except OSError as err:
            problem = str(err)
    problem = strategy.broadcast(problem)
    if problem is not None:
        raise MisconfigurationException(f"Trainer(checkpoint_uri={config.uri!r}): {problem}")
    if agreement is None or agreement.world_size != strategy.world_size:
        agreement = Agreement(strategy.world_size)
    launcher = strategy.launcher
    preemption = PreemptionSignal(forward=launcher.forward_signal if launcher else None)
    preemption.install()
    return Durability(
        store,
        telemetry=telemetry,
        every_n_steps=config.every_n_steps,
        every_n_minutes=config.every_n_minutes,
        background=config.background,
        preemption=preemption,
        agreement=agreement,
        is_writer=strategy.is_global_zero,
        barrier=lambda: strategy.barrier("checkpoint"),
    )
