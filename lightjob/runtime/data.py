"""Batches and loaders: device transfer, batch limits, and the samplers behind DDP and resume.

The Trainer leaves a user's DataLoader alone unless it must change the sampler: to shard
it across ranks (DDP), to make it sequential (overfit_batches), or to start part-way
through an epoch (resume). Then it rebuilds the loader with the same settings.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    DistributedSampler,
    IterableDataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
)

from lightjob.runtime.errors import MisconfigurationException


def apply_to_tensors(data: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """Apply `fn` to every tensor in nested lists, tuples (named too) and dicts."""
    if isinstance(data, torch.Tensor):
        return fn(data)
    if isinstance(data, list | tuple):
        converted = [apply_to_tensors(x, fn) for x in data]
        return type(data)(*converted) if hasattr(data, "_fields") else type(data)(converted)
    if isinstance(data, dict):
        return type(data)((k, apply_to_tensors(v, fn)) for k, v in data.items())
    return data


def move_to_device(batch: Any, device: torch.device) -> Any:
    return apply_to_tensors(batch, lambda t: t.to(device, non_blocking=True))


def infer_batch_size(batch: Any) -> int:
    """Size of the first dimension of the first tensor in the batch (1 if there is none)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.size(0)) if batch.ndim else 1
    items = batch.values() if isinstance(batch, dict) else batch
    if isinstance(items, list | tuple) or isinstance(batch, dict):
        for item in items:
            size = infer_batch_size(item)
            if size:
                return size
    return 1


def check_iterable(loader: Any, what: str) -> None:
    if loader is None or not hasattr(loader, "__iter__"):
        raise MisconfigurationException(
            f"{what} must be an iterable of batches, such as a torch DataLoader; "
            f"got {type(loader).__name__}"
        )


def num_batches(loader: Any) -> float:
    try:
        return float(len(loader))
    except (TypeError, NotImplementedError):
        return math.inf


def limit_batches(available: float, limit: int | float | None, flag: str) -> float:
    """Apply a limit_*_batches value: an int is a count, a float a fraction."""
    if limit is None:
        return available
    if isinstance(limit, bool) or not isinstance(limit, int | float) or limit < 0:
        raise MisconfigurationException(f"Trainer({flag}={limit!r}) must be an int >= 0 or a float")
    if isinstance(limit, int):
        return min(available, float(limit))
    if limit > 1.0:
        raise MisconfigurationException(f"Trainer({flag}={limit}) as a fraction must be <= 1.0")
    if math.isinf(available):
        if limit == 1.0:
            return available
        raise MisconfigurationException(
            f"Trainer({flag}={limit}) is a fraction, but the loader has no length; use an int"
        )
    return float(int(available * limit))


def is_shuffling(loader: Any) -> bool:
    return isinstance(getattr(loader, "sampler", None), RandomSampler)


def rebuild_loader(
    loader: DataLoader,
    *,
    sampler: Sampler | None = None,
    batch_sampler: Sampler | None = None,
    **overrides: Any,
) -> DataLoader:
    """A DataLoader with the same settings as `loader` but another (batch) sampler."""
    kwargs: dict[str, Any] = {
        "num_workers": loader.num_workers,
        "collate_fn": loader.collate_fn,
        "pin_memory": loader.pin_memory,
        "timeout": loader.timeout,
        "worker_init_fn": loader.worker_init_fn,
        "multiprocessing_context": loader.multiprocessing_context,
        "generator": loader.generator,
        "persistent_workers": loader.persistent_workers,
        "pin_memory_device": loader.pin_memory_device,
    }
    if loader.num_workers > 0:
        kwargs["prefetch_factor"] = loader.prefetch_factor
    kwargs.update(overrides)
    if batch_sampler is not None:
        return DataLoader(loader.dataset, batch_sampler=batch_sampler, **kwargs)
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=sampler,
        drop_last=loader.drop_last,
        **kwargs,
    )


def can_replace_sampler(loader: Any) -> bool:
    """Only plain DataLoaders over map-style datasets with a standard batch sampler."""
    return (
        isinstance(loader, DataLoader)
        and not isinstance(loader.dataset, IterableDataset)
        and type(loader.batch_sampler) is BatchSampler
        and loader.batch_size is not None
    )


def make_sequential(loader: Any) -> Any:
    """The same loader without shuffling (overfit_batches reuses the same batches)."""
    if not is_shuffling(loader) or not can_replace_sampler(loader):
        return loader
    return rebuild_loader(loader, sampler=SequentialSampler(loader.dataset))


class ResumableDistributedSampler(DistributedSampler):
    """A DistributedSampler that can start an epoch at a global sample position.

    The epoch's order is the same for any world size (seeded by seed + epoch), and ranks
    take interleaved slices of it. So after k steps of batch B on W ranks, the first
    k*B*W samples of the order are done whatever W was, and a resumed run with another
    world size shards only the rest: nothing is seen twice in that epoch.
    """

    def __init__(self, dataset: Any, **kwargs: Any) -> None:
        super().__init__(dataset, **kwargs)
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.start = 0

    def set_start(self, global_samples: int) -> None:
        self.start = global_samples

    def _order(self) -> list[int]:
        n = len(self.dataset)  # type: ignore[arg-type]
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed + self.epoch)
            return torch.randperm(n, generator=generator).tolist()
        return list(range(n))

    def __iter__(self) -> Iterator[int]:
        # Pad (or cut) the whole epoch's order first, as DistributedSampler does, and only
        # then skip what is done: a resumed epoch is then the uninterrupted epoch's tail.
        order = _to_length(self._order(), self._per_rank(len(self.dataset)) * self.num_replicas)  # type: ignore[arg-type]
        rest = order[self.start :]
        # After a world-size change the rest may not split evenly: every rank must get as
        # many samples as the others, or the ranks' collectives fall out of step.
        rest = _to_length(rest, self._per_rank(len(rest)) * self.num_replicas)
        return iter(rest[self.rank :: self.num_replicas])

    def __len__(self) -> int:
        whole = self._per_rank(len(self.dataset)) * self.num_replicas  # type: ignore[arg-type]
        return self._per_rank(max(0, whole - self.start))

    def _per_rank(self, remaining: int) -> int:
        if self.drop_last:
            return remaining // self.num_replicas
        return math.ceil(remaining / self.num_replicas)


def _to_length(order: list[int], length: int) -> list[int]:
    """`order` cut to `length`, or padded with repeats of its head (DistributedSampler's way)."""
    if length <= len(order) or not order:
        return order[:length]
    return order + (order * math.ceil(length / len(order)))[: length - len(order)]


class SkipBatches(Sampler):
    """Wraps a batch sampler to drop its first `skip` batches (indices only, no data read).

    The wrapped sampler still draws its shuffling seed from the global RNG exactly as in
    the interrupted run; `after_skip` then restores the RNG state of the checkpoint, so
    the rest of the epoch, data and model alike, continues bit for bit.
    """

    def __init__(self, batch_sampler: Any, skip: int, after_skip: Callable[[], None]) -> None:
        self.batch_sampler = batch_sampler
        self.skip = skip
        self.after_skip = after_skip

    def __iter__(self) -> Iterator[Any]:
        batches = iter(self.batch_sampler)
        for _ in range(self.skip):
            next(batches, None)
        self.after_skip()
        yield from batches

    def __len__(self) -> int:
        return max(0, len(self.batch_sampler) - self.skip)


def count_batches(loaders: list[Any], limit: int | float | None, flag: str) -> list[float]:
    """The batches each loader gives after a limit_*_batches value (`flag` names it)."""
    return [limit_batches(num_batches(loader), limit, flag) for loader in loaders]
