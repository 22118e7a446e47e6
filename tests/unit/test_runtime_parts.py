"""The Trainer's parts on their own: the schedule's rules, the checkpoint dict, the batches
a resumed epoch runs, and the durable saver on memory://."""

from __future__ import annotations

import math
import uuid
from typing import Any

import fsspec
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from lightjob.callbacks import Callback
from lightjob.runtime import resume, state
from lightjob.runtime.checkpoint import CheckpointStore, load
from lightjob.runtime.distributed import SingleDeviceStrategy
from lightjob.runtime.durable import Agreement, Durability, PreemptionSignal
from lightjob.runtime.errors import MisconfigurationException
from lightjob.runtime.optim import SchedulerConfig
from lightjob.runtime.precision import Precision
from lightjob.runtime.resume import Progress
from lightjob.runtime.schedule import Schedule
from lightjob.runtime.seed import capture_rng_states
from tests.helpers import TinyModel

# -- the schedule -----------------------------------------------------------------------------


def at(epoch: int = 0, step: int = 0, done: int = 0) -> Progress:
    return Progress(epoch=epoch, global_step=step, batches_done=done)


FIT_DONE = [
    # (schedule, progress, batches per epoch, elapsed, should_stop) -> done before the epoch?
    (Schedule(), at(), 10, None, False, False),
    (Schedule(), at(), 0, None, False, True),  # no training batches at all
    (Schedule(max_epochs=2), at(epoch=1), 10, None, False, False),
    (Schedule(max_epochs=2), at(epoch=2), 10, None, False, True),
    (Schedule(max_epochs=-1, max_steps=5), at(epoch=9, step=4), 10, None, False, False),
    (Schedule(max_epochs=-1, max_steps=5), at(step=5), 10, None, False, True),
    (Schedule(max_time=60.0), at(), 10, 59.9, False, False),
    (Schedule(max_time=60.0), at(), 10, 60.0, False, True),
    (Schedule(), at(), 10, None, True, True),  # a callback asked to stop
    (Schedule(min_epochs=2), at(epoch=1), 10, None, True, False),  # ...but min_epochs not met
    (Schedule(min_epochs=2), at(epoch=2), 10, None, True, True),
    (Schedule(min_steps=30), at(epoch=3, step=29), 10, None, True, False),
]


@pytest.mark.parametrize(("schedule", "progress", "batches", "elapsed", "stop", "done"), FIT_DONE)
def test_when_the_fit_is_done(
    schedule: Schedule,
    progress: Progress,
    batches: float,
    elapsed: float | None,
    stop: bool,
    done: bool,
) -> None:
    assert schedule.is_fit_done(progress, batches, elapsed, stop) is done


STOP_AFTER_BATCH = [
    # (schedule, progress, elapsed, should_stop) -> stop after this batch?
    (Schedule(), at(), None, False, False),
    (Schedule(max_time=1.0), at(), 1.5, False, True),
    (Schedule(), at(), None, True, True),
    # The epoch in progress does not count towards min_epochs.
    (Schedule(min_epochs=1), at(epoch=0, step=100), None, True, False),
    (Schedule(min_epochs=1), at(epoch=1, step=100), None, True, True),
    (Schedule(min_steps=10), at(epoch=5, step=9), None, True, False),
]


@pytest.mark.parametrize(("schedule", "progress", "elapsed", "stop", "expected"), STOP_AFTER_BATCH)
def test_when_to_stop_after_a_batch(
    schedule: Schedule, progress: Progress, elapsed: float | None, stop: bool, expected: bool
) -> None:
    assert schedule.should_stop_after_batch(progress, elapsed, stop) is expected


VAL_EVERY = [
    # (val_check_interval, batches per epoch) -> training batches between validations
    (1.0, 10, 10),
    (0.5, 10, 5),
    (0.25, 10, 2),
    (0.01, 10, 1),  # never less than one batch
    (3, 10, 3),
    (10, 10, 10),
    (1.0, math.inf, None),  # an epoch without a length validates at its end only
]


@pytest.mark.parametrize(("interval", "batches", "every"), VAL_EVERY)
def test_validation_interval_in_batches(
    interval: int | float, batches: float, every: int | None
) -> None:
    found = Schedule(val_check_interval=interval).val_every_n_batches(batches)
    assert found == every if every is not None else found > 10**12


@pytest.mark.parametrize(
    ("interval", "batches", "flag"),
    [
        (1.5, 10, "must be in (0, 1]"),
        (0.5, math.inf, "needs a training loader with a length"),
        (11, 10, "is more than the 10 training batches"),
    ],
)
def test_a_validation_interval_that_cannot_work_is_an_error(
    interval: int | float, batches: float, flag: str
) -> None:
    with pytest.raises(MisconfigurationException, match="val_check_interval") as error:
        Schedule(val_check_interval=interval).val_every_n_batches(batches)
    assert flag in str(error.value)


VALIDATE_AFTER_BATCH = [
    # (check_val_every_n_epoch, epoch, batch_idx, val_every, enabled) -> validate after it?
    (1, 0, 4, 5, True, True),
    (1, 0, 3, 5, True, False),
    (1, 0, 9, 5, True, True),
    (1, 0, 4, 5, False, False),  # no validation data
    (2, 0, 4, 5, True, False),  # not a validation epoch
    (2, 1, 4, 5, True, True),
    (None, 1, 4, 5, True, False),  # never during fit
]


@pytest.mark.parametrize(
    ("every_n_epochs", "epoch", "batch_idx", "val_every", "enabled", "expected"),
    VALIDATE_AFTER_BATCH,
)
def test_when_to_validate_after_a_batch(
    every_n_epochs: int | None,
    epoch: int,
    batch_idx: int,
    val_every: int,
    enabled: bool,
    expected: bool,
) -> None:
    schedule = Schedule(check_val_every_n_epoch=every_n_epochs)
    assert (
        schedule.should_validate_after_batch(at(epoch=epoch), batch_idx, val_every, enabled)
        is expected
    )


VALIDATE_AT_EPOCH_END = [
    # (schedule, progress, batches per epoch, val_every, validated_last) -> validate?
    (Schedule(), at(done=10), 10, 10, False, True),
    (Schedule(), at(done=10), 10, 10, True, False),  # it just ran, after the last batch
    (Schedule(val_check_interval=3), at(done=10), 10, 3, False, False),  # 3 does not divide 10
    (Schedule(val_check_interval=5), at(done=10), 10, 5, False, True),
    (Schedule(val_check_interval=0.3), at(done=10), 10, 3, False, True),  # a fraction: always
    (Schedule(max_steps=4), at(step=4, done=4), 10, 10, False, True),  # max_steps cut it short
    (Schedule(), at(step=4, done=4), 10, 10, False, False),  # stopped early for another reason
    (Schedule(check_val_every_n_epoch=2), at(epoch=0, done=10), 10, 10, False, False),
]


@pytest.mark.parametrize(
    ("schedule", "progress", "batches", "val_every", "validated_last", "expected"),
    VALIDATE_AT_EPOCH_END,
)
def test_when_to_validate_at_the_end_of_an_epoch(
    schedule: Schedule,
    progress: Progress,
    batches: float,
    val_every: int,
    validated_last: bool,
    expected: bool,
) -> None:
    found = schedule.should_validate_at_epoch_end(
        progress, batches, val_every, validated_last, True
    )
    assert found is expected
    assert not schedule.should_validate_at_epoch_end(progress, batches, val_every, False, False)


@pytest.mark.parametrize(
    ("every", "batches_seen", "stop", "expected"),
    [
        (50, 50, False, True),
        (50, 49, False, False),
        (50, 49, True, True),  # stopping: the last values are written
        (1, 7, False, True),
        (0, 3, False, True),  # 0 logs every step rather than dividing by zero
    ],
)
def test_when_step_values_go_to_the_loggers(
    every: int, batches_seen: int, stop: bool, expected: bool
) -> None:
    assert Schedule(log_every_n_steps=every).should_log(batches_seen, stop) is expected


@pytest.mark.parametrize(
    ("schedule", "batches", "accumulate", "steps"),
    [
        (Schedule(max_epochs=3), 10, 1, 30),
        (Schedule(max_epochs=3), 10, 4, 9),  # ceil(10 / 4) per epoch
        (Schedule(max_epochs=3, max_steps=7), 10, 1, 7),
        (Schedule(max_epochs=-1, max_time=5.0), 10, 1, math.inf),
    ],
)
def test_estimated_stepping_batches(
    schedule: Schedule, batches: float, accumulate: int, steps: float
) -> None:
    assert schedule.estimated_stepping_batches(batches, accumulate) == steps


# -- the checkpoint dict ----------------------------------------------------------------------


class Counter(Callback):
    def __init__(self) -> None:
        self.count = 0

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.count = state_dict["count"]


def training_state(model: TinyModel) -> state.TrainingState:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    return state.TrainingState(
        trainer=None,
        model=model,
        datamodule=None,
        callbacks=[Counter()],
        optimizers=[optimizer],
        schedulers=[SchedulerConfig(scheduler, optimizer)],
        precision=Precision("32-true", "cpu"),
    )


def test_a_checkpoint_dict_restores_weights_optimizer_scheduler_callbacks_and_position() -> None:
    trained = training_state(TinyModel())
    x, y = torch.randn(8, 8), torch.randint(0, 2, (8,))
    for _ in range(3):  # momentum buffers and a scheduler that has stepped
        trained.optimizers[0].zero_grad()
        torch.nn.functional.cross_entropy(trained.model(x), y).backward()
        trained.optimizers[0].step()
        trained.schedulers[0].scheduler.step()
    trained.callbacks[0].count = 7  # type: ignore[attr-defined]
    progress = Progress(epoch=2, global_step=23, batches_done=3, resumed_at=(0, 0))
    progress.epoch_start_rng = capture_rng_states()
    loops, rngs = resume.gather_loop_state(
        progress,
        SingleDeviceStrategy(torch.device("cpu")),
        samples_per_batch=8,
        num_training_batches=10,
    )
    checkpoint = state.build_checkpoint(trained, progress, loops, rngs)
    assert {"epoch", "global_step", "state_dict", "optimizer_states", "lr_schedulers"} <= set(
        checkpoint
    )
    assert {"callbacks", "loops", "hyper_parameters", "rng_states"} <= set(checkpoint)

    fresh = training_state(TinyModel(lr=0.5))
    with torch.no_grad():
        fresh.model.layer.weight.zero_()
    restored = Progress(epoch=99, global_step=99, batches_done=99)
    state.restore(fresh, checkpoint)
    resume.restore_progress(restored, checkpoint, world_size=1, global_rank=0)

    for ours, theirs in zip(fresh.model.parameters(), trained.model.parameters(), strict=True):
        assert torch.equal(ours, theirs)
    momentum = [s["momentum_buffer"] for s in fresh.optimizers[0].state.values()]
    expected = [s["momentum_buffer"] for s in trained.optimizers[0].state.values()]
    assert all(torch.equal(a, b) for a, b in zip(momentum, expected, strict=True))
    assert fresh.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**3)
    assert fresh.schedulers[0].scheduler.last_epoch == 3
    assert fresh.callbacks[0].count == 7  # type: ignore[attr-defined]
    assert (restored.epoch, restored.global_step, restored.batches_done) == (2, 23, 3)
    assert restored.resumed_at == (3, 24)  # 3 batches of 8 samples done in this epoch
    assert restored.resume_rng is not None and restored.epoch_start_rng is not None


def test_a_checkpoint_taken_at_the_end_of_an_epoch_resumes_with_the_next() -> None:
    progress = Progress(epoch=4, global_step=50, batches_done=10)
    loops, rngs = resume.gather_loop_state(
        progress,
        SingleDeviceStrategy(torch.device("cpu")),
        samples_per_batch=8,
        num_training_batches=10,
    )
    restored = Progress()
    resume.restore_progress(
        restored,
        {"global_step": 50, "loops": loops, "rng_states": rngs},
        world_size=1,
        global_rank=0,
    )
    assert (restored.epoch, restored.batches_done) == (5, 0)


def test_a_checkpoint_from_elsewhere_continues_with_the_next_epoch() -> None:
    restored = Progress(batches_done=3)
    resume.restore_progress(restored, {"epoch": 1, "global_step": 40}, world_size=1, global_rank=0)
    assert (restored.epoch, restored.global_step, restored.batches_done) == (2, 40, 0)


# -- the batches of a resumed epoch -----------------------------------------------------------


class Counted(Dataset[torch.Tensor]):
    """Numbers 0..n-1, counting each item read."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.reads = 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> torch.Tensor:
        self.reads += 1
        return torch.tensor(index)


def interrupted_at(loader: DataLoader, skip: int) -> tuple[list[Any], Progress]:
    """Run `skip` batches of a fresh epoch; return the rest as an uninterrupted run sees
    them, and the Progress a checkpoint taken there restores."""
    torch.manual_seed(1234)
    progress = Progress()
    batches, first = resume.epoch_batches(progress, loader, world_size=1)
    assert first == 0
    done = [next(batches) for _ in range(skip)]
    assert len(done) == skip
    resume_rng = capture_rng_states()
    rest = [b.clone() for b in batches]
    restored = Progress(
        batches_done=skip,
        resumed_at=(skip, skip * loader.batch_size),  # type: ignore[operator]
        epoch_start_rng=progress.epoch_start_rng,
        resume_rng=resume_rng,
    )
    return rest, restored


def test_a_resumed_epoch_skips_the_batches_done_without_reading_them() -> None:
    data = Counted(40)
    loader = DataLoader(data, batch_size=4, shuffle=True)
    rest, restored = interrupted_at(loader, skip=3)
    torch.manual_seed(999)  # the resumed process starts with other RNG states
    data.reads = 0
    batches, first = resume.epoch_batches(restored, loader, world_size=1)
    resumed = list(batches)
    assert first == 3
    assert [b.tolist() for b in resumed] == [b.tolist() for b in rest]
    assert data.reads == 40 - 3 * 4  # the skipped batches' samples were never read
    assert restored.resume_rng is None  # used once


def test_a_resumed_epoch_continues_every_rng_from_the_checkpoint() -> None:
    loader = DataLoader(Counted(40), batch_size=4, shuffle=True)
    torch.manual_seed(1234)
    progress = Progress()
    batches, _ = resume.epoch_batches(progress, loader, world_size=1)
    next(batches)
    next(batches)
    at_checkpoint = capture_rng_states()
    next(batches)  # the sampler drew its order at the epoch's start: this draws nothing
    expected = torch.rand(3)  # what training draws next in the uninterrupted run
    restored = Progress(
        batches_done=2,
        resumed_at=(2, 8),
        epoch_start_rng=progress.epoch_start_rng,
        resume_rng=at_checkpoint,
    )
    torch.manual_seed(5)  # another process, other RNG states
    batches, _ = resume.epoch_batches(restored, loader, world_size=1)
    next(batches)
    assert torch.equal(torch.rand(3), expected)


class Stream(IterableDataset[torch.Tensor]):
    def __init__(self, n: int) -> None:
        self.n = n
        self.reads = 0

    def __iter__(self) -> Any:
        for i in range(self.n):
            self.reads += 1
            yield torch.tensor(i)


def test_an_iterable_dataset_resumes_by_reading_and_dropping_the_batches_done() -> None:
    data = Stream(20)
    loader = DataLoader(data, batch_size=4)
    restored = Progress(batches_done=2, resumed_at=(2, 8))
    batches, first = resume.epoch_batches(restored, loader, world_size=1)
    assert first == 2
    assert [b.tolist() for b in batches] == [[8, 9, 10, 11], [12, 13, 14, 15], [16, 17, 18, 19]]
    assert data.reads == 20  # no sampler to skip with: the first 8 were read and dropped


def test_another_world_size_resumes_from_the_global_sample_position() -> None:
    # A run of 2 processes did 3 batches of 4 each (24 samples); one process continues.
    loader = DataLoader(Counted(40), batch_size=4)
    restored = Progress(batches_done=3, resumed_at=(3, 24), same_world=False)
    batches, first = resume.epoch_batches(restored, loader, world_size=1)
    assert first == 6  # 24 samples / batch 4
    assert next(batches).tolist() == [24, 25, 26, 27]
    assert restored.batches_done == 6 and restored.resumed_at == (6, 24)


# -- the durable saver on memory:// -----------------------------------------------------------


def durability(uri: str, **overrides: Any) -> Durability:
    flags: dict[str, Any] = {
        "every_n_steps": 2,
        "every_n_minutes": None,
        "background": True,
        "preemption": PreemptionSignal(),
        "agreement": Agreement(1),
        "is_writer": True,
        "barrier": lambda: None,
    }
    flags.update(overrides)
    return Durability(CheckpointStore(uri, keep=2), **flags)


def test_the_durable_saver_on_memory_saves_every_n_steps_and_keeps_the_newest() -> None:
    uri = f"memory://lightjob-test-{uuid.uuid4().hex[:8]}/run"
    saver = durability(uri)
    weights = {"w": torch.arange(4.0)}
    for step in range(1, 8):
        weights["w"] += 1  # training goes on changing its tensors during the upload
        stop = saver.at_step_boundary(step, 0, True, lambda: {"state_dict": dict(weights)})
        assert not stop
    saver.finish(7, 0, lambda: {"state_dict": dict(weights), "global_step": 7})
    store = CheckpointStore(uri)
    assert [u.rsplit("/", 1)[1] for u in store.objects()] == [
        "step-0000000007.ckpt",
        "step-0000000006.ckpt",
    ]
    pointer = store.pointer()
    assert pointer is not None and pointer.step == 7 and saver.last == pointer
    found = store.load_latest()
    assert found is not None
    checkpoint, path = found
    assert path == pointer.uri and torch.equal(checkpoint["state_dict"]["w"], weights["w"])
    at_six = store.objects()[1]
    # Step 6's snapshot was taken at step 6, whatever training did to the tensor afterwards.
    assert torch.equal(load(at_six)["state_dict"]["w"], torch.arange(4.0) + 6)


def test_the_durable_saver_on_memory_saves_and_stops_on_preemption() -> None:
    uri = f"memory://lightjob-test-{uuid.uuid4().hex[:8]}/run"
    signal = PreemptionSignal()
    saver = durability(uri, every_n_steps=None, preemption=signal)
    assert not saver.at_step_boundary(1, 0, True, lambda: {"global_step": 1})
    signal.received_at = 0.0  # what the SIGTERM handler records
    assert not saver.at_step_boundary(2, 0, False, lambda: {"global_step": 2})  # mid-window
    assert saver.at_step_boundary(3, 0, True, lambda: {"global_step": 3})
    pointer = CheckpointStore(uri).pointer()
    assert pointer is not None and pointer.step == 3


def test_a_corrupt_object_on_memory_is_refused_by_its_crc_and_the_previous_one_loads() -> None:
    uri = f"memory://lightjob-test-{uuid.uuid4().hex[:8]}/run"
    store = CheckpointStore(uri, keep=3)
    store.save({"global_step": 1, "w": torch.full((4,), 2.0)}, step=1, epoch=0)
    newest = store.save({"global_step": 2, "w": torch.full((4,), 2.0)}, step=2, epoch=0)
    fs, path = fsspec.core.url_to_fs(newest.uri)
    data = fs.cat_file(path)
    twos = torch.full((4,), 2.0).numpy().tobytes()
    assert data.count(twos) == 1
    # One changed weight: still a loadable checkpoint, with the same size, but not the bytes
    # the pointer recorded.
    fs.pipe_file(path, data.replace(twos, torch.tensor([2.0, 2.0, 2.0, 3.0]).numpy().tobytes()))
    assert load(newest.uri)["w"][3] == 3.0
    found = store.load_latest()
    assert found is not None and found[0]["global_step"] == 1
