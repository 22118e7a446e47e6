"""When the fit loop stops, validates and logs.

`Schedule` holds the Trainer flags that decide it; its methods are pure predicates over
where the loop is (the Progress of resume.py, a batch index), so each rule can be read and
tested on its own. Nothing here reads a clock or touches a device: callers pass the time
elapsed.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lightjob.runtime.errors import MisconfigurationException

if TYPE_CHECKING:
    from lightjob.runtime.resume import Progress


@dataclass(frozen=True, slots=True)
class Schedule:
    max_epochs: int = 1000  # -1: no limit
    min_epochs: int = 0
    max_steps: int = -1  # -1: no limit
    min_steps: int = 0
    max_time: float | None = None  # seconds
    val_check_interval: int | float = 1.0  # a fraction of the epoch, or every N batches
    check_val_every_n_epoch: int | None = 1  # None: never validate during fit
    log_every_n_steps: int = 50

    # -- stopping ---------------------------------------------------------------------------

    def is_steps_done(self, global_step: int) -> bool:
        return self.max_steps != -1 and global_step >= self.max_steps

    def is_min_reached(self, epochs_done: int, global_step: int) -> bool:
        """min_epochs (counting only finished epochs) and min_steps are met."""
        return epochs_done >= self.min_epochs and global_step >= self.min_steps

    def is_time_up(self, elapsed: float | None) -> bool:
        return self.max_time is not None and elapsed is not None and elapsed >= self.max_time

    def is_fit_done(
        self,
        progress: Progress,
        num_training_batches: float,
        elapsed: float | None,
        should_stop: bool,
    ) -> bool:
        """Before an epoch: is there nothing left to train?"""
        epoch, step = progress.epoch, progress.global_step
        if num_training_batches == 0 or self.is_steps_done(step):
            return True
        if self.max_epochs != -1 and epoch >= self.max_epochs:
            return True
        if self.is_time_up(elapsed):
            return True
        return should_stop and self.is_min_reached(epoch, step)

    def should_stop_after_batch(
        self, progress: Progress, elapsed: float | None, should_stop: bool
    ) -> bool:
        """After a batch: max_time ran out, or a stop was asked for and the minimums are met
        (the epoch in progress does not count towards min_epochs)."""
        return self.is_time_up(elapsed) or (
            should_stop and self.is_min_reached(progress.epoch, progress.global_step)
        )

    def estimated_stepping_batches(self, num_training_batches: float, accumulate: int) -> float:
        """Optimizer steps the fit will take (inf when only max_time bounds it)."""
        per_epoch = math.ceil(num_training_batches / accumulate)
        by_epochs = per_epoch * self.max_epochs if self.max_epochs != -1 else math.inf
        by_steps = self.max_steps if self.max_steps != -1 else math.inf
        return min(by_epochs, by_steps)

    # -- validation -------------------------------------------------------------------------

    def val_every_n_batches(self, num_training_batches: float) -> int:
        """How many training batches lie between two validations within an epoch."""
        interval = self.val_check_interval
        if isinstance(interval, float):
            if not 0.0 < interval <= 1.0:
                raise MisconfigurationException(
                    f"Trainer(val_check_interval={interval}) as a fraction must be in (0, 1]"
                )
            if math.isinf(num_training_batches):
                if interval != 1.0:
                    raise MisconfigurationException(
                        "Trainer(val_check_interval) as a fraction needs a training loader with a length; use an int"
                    )
                return sys.maxsize
            return max(1, int(num_training_batches * interval))
        if interval > num_training_batches:
            raise MisconfigurationException(
                f"Trainer(val_check_interval={interval}) is more than the {int(num_training_batches)} "
                "training batches per epoch; lower it"
            )
        return interval

    def is_validation_epoch(self, epoch: int) -> bool:
        every = self.check_val_every_n_epoch
        return every is not None and (epoch + 1) % every == 0

    def should_validate_after_batch(
        self, progress: Progress, batch_idx: int, val_every: int, enable_validation: bool
    ) -> bool:
        """Within the epoch, after batch `batch_idx` (the loop skips the epoch's last
        batch: the epoch-end validation covers it)."""
        return (
            enable_validation
            and self.is_validation_epoch(progress.epoch)
            and (batch_idx + 1) % val_every == 0
        )

    def should_validate_at_epoch_end(
        self,
        progress: Progress,
        num_training_batches: float,
        val_every: int,
        validated_last: bool,
        enable_validation: bool,
    ) -> bool:
        """After the epoch's batches: when the interval is a fraction or divides the epoch,
        and also when max_steps cut the epoch short; not again right after a validation."""
        if not enable_validation or not self.is_validation_epoch(progress.epoch) or validated_last:
            return False
        done = progress.batches_done
        if done >= num_training_batches:
            return isinstance(self.val_check_interval, float) or done % val_every == 0
        return self.is_steps_done(progress.global_step)

    # -- logging ----------------------------------------------------------------------------

    def should_log(self, batches_seen: int, should_stop: bool) -> bool:
        """Whether the step values of the `batches_seen`-th training batch (counting from 1)
        go to the loggers: every log_every_n_steps batches, and when the fit is stopping."""
        return batches_seen % max(1, self.log_every_n_steps) == 0 or should_stop
