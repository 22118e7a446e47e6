"""TQDMProgressBar: epoch, step, rate and the prog_bar metrics, on global rank 0."""

from __future__ import annotations

import math
import sys
import time
from typing import TYPE_CHECKING, Any

from lightjob.runtime.callbacks.callback import Callback

if TYPE_CHECKING:
    from lightjob.runtime.module import LightningModule
    from lightjob.runtime.trainer import Trainer


class TQDMProgressBar(Callback):
    """Epoch, step, rate and the prog_bar metrics, on global rank 0."""

    def __init__(
        self, refresh_rate: int = 1, process_position: int = 0, leave: bool = False
    ) -> None:
        self.refresh_rate = refresh_rate
        self.process_position = process_position
        self.leave = leave
        self._bar: Any = None
        self._last_postfix = 0.0
        # Not a terminal (CI, `kubectl logs`): redraw rarely, so logs stay readable.
        self._min_interval = 0.1 if sys.stderr.isatty() else 10.0

    @property
    def is_enabled(self) -> bool:
        return self.refresh_rate > 0

    def _new_bar(self, trainer: Trainer, description: str, total: float, leave: bool) -> Any:
        from tqdm.auto import tqdm

        return tqdm(
            desc=description,
            total=None if math.isinf(total) else int(total),
            position=2 * self.process_position,
            leave=leave,
            dynamic_ncols=True,
            file=sys.stderr,
            mininterval=self._min_interval,
            disable=not trainer.is_global_zero,
            smoothing=0,
        )

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._close()
        self._bar = self._new_bar(
            trainer, f"Epoch {trainer.current_epoch}", trainer.num_training_batches, True
        )

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._bar is None:
            return
        self._bar.update(1)
        now = time.monotonic()
        if now - self._last_postfix >= max(self._min_interval, 0.5):
            self._last_postfix = now
            self._bar.set_postfix(self._postfix(trainer), refresh=False)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._bar is not None:
            self._bar.set_postfix(self._postfix(trainer), refresh=True)
            self._close()

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._close()

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        self._close()

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _postfix(self, trainer: Trainer) -> dict[str, str]:
        shown = {}
        if trainer.logger is not None and not isinstance(trainer.logger.version, str):
            shown["v_num"] = str(trainer.logger.version)
        for key, value in trainer.progress_bar_metrics.items():
            shown[key] = f"{value:.3g}" if isinstance(value, float) else str(value)
        return shown
