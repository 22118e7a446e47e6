"""Numeric precision: autocast, gradient scaling, and dtype conversion, in one small object."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch

from lightjob.runtime.data import apply_to_tensors
from lightjob.runtime.errors import MisconfigurationException

# What users write -> the canonical name (as in Lightning 2.x).
_ALIASES = {
    "32": "32-true",
    "32-true": "32-true",
    "64": "64-true",
    "64-true": "64-true",
    "16": "16-mixed",
    "16-mixed": "16-mixed",
    "16-true": "16-true",
    "bf16": "bf16-mixed",
    "bf16-mixed": "bf16-mixed",
    "bf16-true": "bf16-true",
}
_NO_CONTEXT = contextlib.nullcontext()
_TRUE_DTYPES = {"64-true": torch.float64, "16-true": torch.float16, "bf16-true": torch.bfloat16}


def parse_precision(value: int | str) -> str:
    name = _ALIASES.get(str(value))
    if name is None:
        valid = ", ".join(repr(v) for v in ["32-true", "16-mixed", "bf16-mixed", "bf16-true", 64])
        raise MisconfigurationException(
            f"Trainer(precision={value!r}) is not supported; use one of {valid} (16 means '16-mixed')"
        )
    return name


class Precision:
    """Everything a step needs to know about precision.

    Mixed precision runs the forward pass under autocast; fp16 also scales the loss so
    small gradients survive, unscales before clipping, and skips a step whose gradients
    overflowed (GradScaler.step does the skipping).
    """

    def __init__(self, name: str, device_type: str) -> None:
        self.name = name
        self.param_dtype = _TRUE_DTYPES.get(name)
        self.autocast_dtype = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}.get(name)
        self.device_type = device_type
        self.scaler = torch.amp.GradScaler(device_type) if name == "16-mixed" else None
        self._unscaled: set[int] = set()  # optimizers unscaled since the last scaler update

    def convert_module(self, module: torch.nn.Module) -> torch.nn.Module:
        return module.to(self.param_dtype) if self.param_dtype is not None else module

    def convert_input(self, batch: Any) -> Any:
        if self.param_dtype is None:
            return batch
        return apply_to_tensors(
            batch, lambda t: t.to(self.param_dtype) if t.is_floating_point() else t
        )

    def forward_context(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return _NO_CONTEXT  # the common case costs nothing per step
        return torch.autocast(self.device_type, dtype=self.autocast_dtype)

    def backward(self, loss: torch.Tensor, **kwargs: Any) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward(**kwargs)

    def optimizer_step(
        self,
        optimizer: torch.optim.Optimizer,
        closure: Callable[[], Any],
        before_step: Callable[[], None],
        **kwargs: Any,
    ) -> Any:
        """Run `closure` (forward + backward), then `before_step` (hooks, clipping), then step."""
        if self.scaler is None:

            def closure_then_hooks() -> Any:
                loss = closure()
                before_step()
                return loss

            return optimizer.step(closure=closure_then_hooks, **kwargs)
        # GradScaler.step cannot take a closure: run it first, then unscale so the hooks and
        # gradient clipping see true gradients.
        loss = closure()
        self.unscale(optimizer)
        before_step()
        self.scaler.step(optimizer, **kwargs)
        self.scaler.update()
        self._unscaled.clear()
        return loss

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Unscale an optimizer's gradients, once per step (clipping may ask first)."""
        if self.scaler is not None and id(optimizer) not in self._unscaled:
            self.scaler.unscale_(optimizer)
            self._unscaled.add(id(optimizer))

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
