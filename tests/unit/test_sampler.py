"""The resumable sampler: a resumed epoch is exactly the rest of the uninterrupted one."""

from __future__ import annotations

import pytest

from lightjob.runtime.data import ResumableDistributedSampler


def shards(n: int, world: int, start: int = 0, **kwargs: bool) -> list[list[int]]:
    out = []
    for rank in range(world):
        sampler = ResumableDistributedSampler(
            list(range(n)), num_replicas=world, rank=rank, seed=3, **kwargs
        )
        sampler.set_epoch(1)
        sampler.set_start(start)
        indices = list(sampler)
        assert len(indices) == len(sampler)
        out.append(indices)
    return out


@pytest.mark.parametrize("n", [1437, 1436, 10, 7])
@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("drop_last", [True, False])
def test_a_resumed_epoch_is_the_tail_of_the_uninterrupted_one(
    n: int, world: int, shuffle: bool, drop_last: bool
) -> None:
    batch = 2
    whole = shards(n, world, shuffle=shuffle, drop_last=drop_last)
    for steps in range(len(whole[0]) // batch + 1):
        resumed = shards(n, world, steps * batch * world, shuffle=shuffle, drop_last=drop_last)
        assert resumed == [indices[steps * batch :] for indices in whole], steps


@pytest.mark.parametrize(("n", "before", "after"), [(1437, 2, 3), (10, 3, 2), (7, 2, 4)])
def test_another_world_size_shards_the_rest_evenly_and_misses_nothing(
    n: int, before: int, after: int
) -> None:
    batch = 2
    done = [i for rank in shards(n, before) for i in rank[:batch]]
    resumed = shards(n, after, start=batch * before)
    assert len({len(rank) for rank in resumed}) == 1  # the same count on every rank
    assert set(done) | {i for rank in resumed for i in rank} == set(range(n))
