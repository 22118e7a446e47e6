"""ModelSummary: the module's layers and parameter counts, when fitting starts."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from lightjob.runtime.callbacks.callback import Callback

if TYPE_CHECKING:
    from lightjob.runtime.module import LightningModule
    from lightjob.runtime.trainer import Trainer


class ModelSummary(Callback):
    """Print the module's layers and parameter counts when fitting starts."""

    def __init__(self, max_depth: int = 1) -> None:
        self.max_depth = max_depth

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.is_global_zero and self.max_depth != 0:
            print(summarize(pl_module, self.max_depth))


def summarize(module: torch.nn.Module, max_depth: int = 1) -> str:
    rows = []
    for name, child in module.named_modules():
        depth = name.count(".") + 1
        if not name or (max_depth >= 0 and depth > max_depth):
            continue
        params = sum(p.numel() for p in child.parameters())
        rows.append(
            (name, type(child).__name__, _human(params), "train" if child.training else "eval")
        )
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    total = sum(p.numel() for p in module.parameters())
    size_mb = sum(p.numel() * p.element_size() for p in module.parameters()) / 1e6
    header = ("", "Name", "Type", "Params", "Mode")
    table = [header] + [(str(i), *row) for i, row in enumerate(rows)]
    widths = [max(len(r[c]) for r in table) for c in range(len(header))]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in table]
    rule = "-" * max(len(line) for line in lines)
    return "\n".join(
        [
            rule,
            lines[0],
            rule,
            *lines[1:],
            rule,
            f"{_human(trainable):<8}Trainable params",
            f"{_human(total - trainable):<8}Non-trainable params",
            f"{_human(total):<8}Total params",
            f"{size_mb:<8.3f}Total estimated model params size (MB)",
        ]
    )


def _human(count: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return str(count)
