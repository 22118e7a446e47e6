"""Exact resume: where the fit loop is, saved under the checkpoint's "loops" key, and the
batches a resumed epoch still has to run.

A checkpoint is taken between two batches. It records the batches done in the epoch, the
global sample position (samples of the epoch's order done by all ranks, which lets a run
resume with another world size), and every rank's RNG states now and at the epoch's start.
A resumed epoch replays the epoch's start so the sampler draws the same order, skips the
batches done by index only (no data is read), then restores the RNG states of the moment
the checkpoint was taken.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from lightjob.runtime import data
from lightjob.runtime.seed import capture_rng_states, restore_rng_states


@dataclass(slots=True)
class Progress:
    """Where the fit loop is; what a checkpoint stores under "loops" for exact resume."""

    epoch: int = 0
    global_step: int = 0
    batches_done: int = 0  # batches finished in the current epoch
    # Where this epoch (re)started: (batch index, samples of the epoch's order done by all
    # ranks). The sample position is what lets a resumed run change its world size.
    resumed_at: tuple[int, int] = (0, 0)
    epoch_start_rng: Any = None
    val_pending: bool = False  # a validation was due after the batch the checkpoint follows
    same_world: bool = True  # False when restored from a checkpoint of another world size
    resume_rng: Any = None  # this rank's RNG states at the checkpoint, until the epoch resumes
    is_last_batch: bool = False  # the batch just run is the epoch's last (not checkpointed)

    def global_samples(self, samples_per_batch: int) -> int:
        first_batch, first_samples = self.resumed_at
        return first_samples + (self.batches_done - first_batch) * samples_per_batch

    def reset(self) -> None:
        """Back to the start, in place: the loop's parts hold this object."""
        for field in dataclasses.fields(self):
            setattr(self, field.name, field.default)

    def next_epoch(self) -> None:
        self.epoch += 1
        self.batches_done, self.resumed_at, self.epoch_start_rng = 0, (0, 0), None


def gather_loop_state(
    progress: Progress, strategy: Any, *, samples_per_batch: int, num_training_batches: float
) -> tuple[dict[str, Any], list[Any]]:
    """The checkpoint's "loops" entry, and every rank's RNG states so each rank continues
    its own random stream on resume (gathering them is a collective under DDP)."""
    ranks = strategy.all_gather_object(
        {"now": capture_rng_states(), "epoch_start": progress.epoch_start_rng}
    )
    loops = {
        "fit_loop": {
            "epoch": progress.epoch,
            "global_step": progress.global_step,
            "batches_done": progress.batches_done,
            "global_samples": progress.global_samples(samples_per_batch),
            "epoch_done": progress.batches_done >= num_training_batches,
            "val_pending": progress.val_pending,
            "world_size": strategy.world_size,
            "epoch_start_rng": [r["epoch_start"] for r in ranks],
        }
    }
    return loops, [r["now"] for r in ranks]


def restore_progress(
    progress: Progress, checkpoint: dict[str, Any], *, world_size: int, global_rank: int
) -> None:
    """Set `progress` to where `checkpoint` was taken, in place."""
    progress.reset()
    loop = checkpoint.get("loops", {}).get("fit_loop")
    progress.global_step = int(checkpoint.get("global_step", 0))
    if loop is None:  # a checkpoint written elsewhere: continue with the next epoch
        progress.epoch = int(checkpoint.get("epoch", 0)) + 1
        return
    progress.epoch = int(loop["epoch"])
    progress.same_world = loop.get("world_size", 1) == world_size
    rng_states = checkpoint.get("rng_states") or []
    epoch_starts = loop.get("epoch_start_rng") or []
    if progress.same_world and global_rank < len(rng_states):
        progress.resume_rng = rng_states[global_rank]
        progress.epoch_start_rng = epoch_starts[global_rank] if epoch_starts else None
    if loop["epoch_done"]:
        progress.epoch += 1
        return
    progress.batches_done = int(loop["batches_done"])
    progress.resumed_at = (progress.batches_done, int(loop.get("global_samples", 0)))
    progress.val_pending = bool(loop.get("val_pending", False))


def epoch_batches(progress: Progress, loader: Any, world_size: int) -> tuple[Iterator[Any], int]:
    """This epoch's batches and the index of the first; after a mid-epoch restore, only
    the batches not yet seen, with every RNG as it was at that point."""
    resume_rng, progress.resume_rng = progress.resume_rng, None
    if progress.batches_done == 0:
        if resume_rng is not None:
            restore_rng_states(resume_rng)
        progress.epoch_start_rng = capture_rng_states()
        return iter(loader), 0
    # Replay the epoch's start so the sampler draws the same order as before.
    if progress.epoch_start_rng is not None and progress.same_world:
        restore_rng_states(progress.epoch_start_rng)
    restore_rest: Callable[[], None] = (
        (lambda: restore_rng_states(resume_rng)) if resume_rng else (lambda: None)
    )
    samples = progress.resumed_at[1]
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, data.ResumableDistributedSampler):
        sampler.set_start(samples)
        first = samples // max(1, (loader.batch_size or 1) * world_size)
        progress.batches_done, progress.resumed_at = first, (first, samples)
        iterator = iter(loader)  # draws its worker seed from the epoch's start, as before
        restore_rest()
        return iterator, first
    skip = (
        progress.batches_done
        if progress.same_world
        else samples // (getattr(loader, "batch_size", None) or 1)
    )
    progress.batches_done, progress.resumed_at = skip, (skip, samples)
    if data.can_replace_sampler(loader):
        skipping = data.SkipBatches(loader.batch_sampler, skip, restore_rest)
        return iter(data.rebuild_loader(loader, batch_sampler=skipping)), skip
    # No sampler to skip with (an iterable dataset): read and drop the batches done.
    iterator = iter(loader)
    for _ in range(skip):
        next(iterator, None)
    restore_rest()
    return iterator, skip


def set_sampler_epoch(loader: Any, epoch: int) -> None:
    for sampler in (
        getattr(loader, "sampler", None),
        getattr(getattr(loader, "batch_sampler", None), "sampler", None),
    ):
        set_epoch = getattr(sampler, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch)
