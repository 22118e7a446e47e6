"""Where each stage's data comes from: the loaders passed in, else the datamodule's, else
the module's; checked, and prepared for the strategy (a DistributedSampler under DDP).
"""

from __future__ import annotations

import os
from typing import Any

from lightjob.runtime import data
from lightjob.runtime.errors import MisconfigurationException
from lightjob.runtime.hooks import overrides
from lightjob.runtime.seed import worker_init_fn

_STEPS = {"val": "validation_step", "test": "test_step", "predict": "predict_step"}


def train_loader(model: Any, datamodule: Any, given: Any, strategy: Any, *, overfit: bool) -> Any:
    """The training loader: made sequential for overfit_batches, then prepared."""
    loader = given
    if loader is None:
        source = (
            datamodule
            if datamodule is not None and overrides(datamodule, "train_dataloader")
            else model
        )
        if not overrides(source, "train_dataloader"):
            raise MisconfigurationException(
                "Trainer.fit needs training data: pass train_dataloaders=..., a datamodule, "
                "or define train_dataloader() on the module"
            )
        loader = source.train_dataloader()
    data.check_iterable(loader, "the train dataloader")
    if overfit:
        loader = data.make_sequential(loader)
    return strategy.prepare_loader(seed_workers(loader), train=True)


def eval_loaders(
    model: Any, datamodule: Any, kind: str, given: Any, fn: str, strategy: Any
) -> list[Any]:
    """The loaders of `kind` ("val", "test", "predict") for Trainer.`fn`; none when fit
    has nothing to validate with (no val loader, or no validation_step)."""
    loaders = given
    if loaders is None:
        for source in (datamodule, model):
            if source is not None and overrides(source, f"{kind}_dataloader"):
                loaders = getattr(source, f"{kind}_dataloader")()
                break
    if loaders is None:
        if kind == "val" and fn == "fit":
            return []
        raise MisconfigurationException(
            f"Trainer.{fn} needs {kind} data: pass dataloaders=..., a datamodule, "
            f"or define {kind}_dataloader() on the module"
        )
    if kind == "val" and fn == "fit" and not overrides(model, "validation_step"):
        return []
    if kind != "predict" and not overrides(model, _STEPS[kind]):
        raise MisconfigurationException(
            f"{type(model).__name__} has no {_STEPS[kind]}(self, batch, batch_idx); define it "
            f"to run Trainer.{fn}"
        )
    listed = list(loaders) if isinstance(loaders, list | tuple) else [loaders]
    for loader in listed:
        data.check_iterable(loader, f"the {kind} dataloader")
    return [strategy.prepare_loader(seed_workers(d), train=False) for d in listed]


def seed_workers(loader: Any) -> Any:
    """With seed_everything(workers=True), give loaders without a worker_init_fn one."""
    if (
        os.environ.get("PL_SEED_WORKERS") == "1"
        and getattr(loader, "num_workers", 0) > 0
        and loader.worker_init_fn is None
        and data.can_replace_sampler(loader)
    ):
        return data.rebuild_loader(loader, sampler=loader.sampler, worker_init_fn=worker_init_fn)
    return loader
