"""LightningModule and LightningDataModule: the user's side of the API."""

from __future__ import annotations

import copy
import inspect
from argparse import Namespace
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lightjob.runtime.errors import MisconfigurationException

if TYPE_CHECKING:
    from lightjob.runtime.trainer import Trainer


class AttributeDict(dict[str, Any]):
    """A dict whose keys read as attributes: `self.hparams.lr`."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError as err:
            raise AttributeError(f"no hyperparameter {key!r}; have {sorted(self)}") from err

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value


class HyperparametersMixin:
    """`save_hyperparameters()` and `hparams`, shared by modules and data modules."""

    _hparams: AttributeDict
    _hparams_initial: AttributeDict
    _log_hyperparams: bool

    def save_hyperparameters(
        self,
        *args: Any,
        ignore: str | Iterable[str] | None = None,
        frame: Any = None,
        logger: bool = True,
    ) -> None:
        """Record the arguments of `__init__` (or the ones named) as `self.hparams`."""
        self._log_hyperparams = logger
        if len(args) == 1 and isinstance(args[0], dict | Namespace | Mapping):
            values = dict(vars(args[0]) if isinstance(args[0], Namespace) else args[0])
        else:
            init_args = _init_args(self, frame or inspect.currentframe().f_back)  # type: ignore[union-attr]
            if args:
                missing = [a for a in args if not isinstance(a, str) or a not in init_args]
                if missing:
                    raise MisconfigurationException(
                        f"save_hyperparameters({', '.join(map(repr, missing))}): not an "
                        f"argument of __init__; its arguments are {sorted(init_args)}"
                    )
                values = {name: init_args[name] for name in args}
            else:
                values = init_args
        ignored = {ignore} if isinstance(ignore, str) else set(ignore or ())
        values = {k: v for k, v in values.items() if k not in ignored}
        self._hparams = AttributeDict(values)
        self._hparams_initial = AttributeDict(copy.deepcopy(values))

    @property
    def hparams(self) -> AttributeDict:
        if "_hparams" not in self.__dict__:
            self._hparams = AttributeDict()
        return self.__dict__["_hparams"]

    @property
    def hparams_initial(self) -> AttributeDict:
        initial = self.__dict__.get("_hparams_initial")
        return initial if initial is not None else AttributeDict()


def _init_args(obj: Any, frame: Any) -> dict[str, Any]:
    """The arguments of every `__init__` of `obj` on the stack, from the base class out:
    a subclass's arguments are recorded too, and win over its parents' (as in Lightning)."""
    frames = []
    while (
        frame is not None
        and frame.f_code.co_name == "__init__"
        and frame.f_locals.get("self") is obj
    ):
        frames.append(frame)
        frame = frame.f_back
    values: dict[str, Any] = {}
    for init_frame in frames:
        info = inspect.getargvalues(init_frame)
        found = {n: info.locals[n] for n in info.args if n not in ("self", "__class__")}
        if info.keywords:
            found.update(info.locals[info.keywords])
        values.update(found)
    return values


class LightningModule(HyperparametersMixin, nn.Module):
    """An nn.Module that also holds its training, evaluation and optimizer logic."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._trainer: Trainer | None = None
        self._device_cache: torch.device | None = None
        self.automatic_optimization = True
        self.example_input_array: Any = None

    # -- the Trainer, and what it knows -----------------------------------------------------

    @property
    def trainer(self) -> Trainer:
        if self._trainer is None:
            raise RuntimeError(f"{type(self).__qualname__} is not attached to a Trainer")
        return self._trainer

    @trainer.setter
    def trainer(self, trainer: Trainer | None) -> None:
        self._trainer = trainer

    @property
    def current_epoch(self) -> int:
        return self._trainer.current_epoch if self._trainer is not None else 0

    @property
    def global_step(self) -> int:
        return self._trainer.global_step if self._trainer is not None else 0

    @property
    def global_rank(self) -> int:
        return self._trainer.global_rank if self._trainer is not None else 0

    @property
    def local_rank(self) -> int:
        return self._trainer.local_rank if self._trainer is not None else 0

    @property
    def device(self) -> torch.device:
        if self._device_cache is None:
            first = next(self.parameters(), None)
            return first.device if first is not None else torch.device("cpu")
        return self._device_cache

    @property
    def dtype(self) -> torch.dtype:
        first = next(self.parameters(), None)
        return first.dtype if first is not None else torch.get_default_dtype()

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        self._device_cache = None  # .to(), .cuda(), .cpu() may move it
        return super()._apply(fn, *args, **kwargs)

    def print(self, *args: Any, **kwargs: Any) -> None:
        if self.global_rank == 0:
            print(*args, **kwargs)

    # -- logging ----------------------------------------------------------------------------

    def log(
        self,
        name: str,
        value: Any,
        prog_bar: bool = False,
        logger: bool | None = None,
        on_step: bool | None = None,
        on_epoch: bool | None = None,
        reduce_fx: str | Callable[..., Any] = "mean",
        enable_graph: bool = False,
        sync_dist: bool = False,
        sync_dist_group: Any = None,
        add_dataloader_idx: bool = True,
        batch_size: int | None = None,
        metric_attribute: str | None = None,
        rank_zero_only: bool = False,
    ) -> None:
        """Record a scalar. Outside a Trainer this does nothing, as in Lightning."""
        if self._trainer is None:
            return
        if callable(reduce_fx):
            reduce_fx = getattr(reduce_fx, "__name__", str(reduce_fx)).replace("amax", "max")
        self._trainer.metrics_sink.log(
            name,
            value,
            prog_bar=prog_bar,
            logger=True if logger is None else logger,
            on_step=on_step,
            on_epoch=on_epoch,
            reduce_fx=reduce_fx,
            sync_dist=sync_dist,
            add_dataloader_idx=add_dataloader_idx,
            batch_size=batch_size,
        )

    def log_dict(self, dictionary: Mapping[str, Any], **kwargs: Any) -> None:
        for name, value in dictionary.items():
            self.log(name, value, **kwargs)

    # -- the steps the user writes ------------------------------------------------------------

    def training_step(self, *args: Any, **kwargs: Any) -> Any:
        raise MisconfigurationException(
            f"{type(self).__name__} has no training_step(self, batch, batch_idx); "
            "define it to use Trainer.fit"
        )

    def validation_step(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def test_step(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        return self(batch)

    def configure_optimizers(self) -> Any:
        raise MisconfigurationException(
            f"{type(self).__name__} has no configure_optimizers(); define it to return an "
            "optimizer, e.g. torch.optim.Adam(self.parameters(), lr=1e-3)"
        )

    def configure_callbacks(self) -> Any:
        return []

    # -- optimization (manual optimization uses these directly) ------------------------------

    def optimizers(self, use_pl_optimizer: bool = True) -> Any:
        optimizers: list[Any] = list(self.trainer.optimizers)
        optimization = self.trainer.optimization
        if use_pl_optimizer and optimization is not None:
            optimizers = [optimization.lightning_optimizer(opt) for opt in optimizers]
        return optimizers[0] if len(optimizers) == 1 else optimizers

    def lr_schedulers(self) -> Any:
        schedulers = [config.scheduler for config in self.trainer.lr_scheduler_configs]
        if not schedulers:
            return None
        return schedulers[0] if len(schedulers) == 1 else schedulers

    def manual_backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        optimization = self.trainer.optimization
        if optimization is None:
            raise MisconfigurationException(
                "manual_backward() runs the backward pass of a training step; call it inside "
                "training_step while Trainer.fit runs"
            )
        optimization.backward(loss, *args, **kwargs)

    def backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """Called by the Trainer for the loss; override to customise backward."""
        self.trainer.precision_plugin.backward(loss, *args, **kwargs)

    def optimizer_step(
        self,
        epoch: int,
        batch_idx: int,
        optimizer: Any,
        optimizer_closure: Callable[[], Any] | None = None,
    ) -> None:
        """Override for e.g. learning-rate warm-up; must call optimizer.step(closure=...)."""
        optimizer.step(closure=optimizer_closure)

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: Any) -> None:
        optimizer.zero_grad()

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        if metric is None:
            scheduler.step()
        else:
            scheduler.step(metric)

    def clip_gradients(
        self,
        optimizer: Any,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        if gradient_clip_val is None or gradient_clip_val <= 0:
            return
        optimizer = getattr(optimizer, "_optimizer", optimizer)
        self.trainer.precision_plugin.unscale(optimizer)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        algorithm = gradient_clip_algorithm or "norm"
        if algorithm == "norm":
            nn.utils.clip_grad_norm_(params, gradient_clip_val)
        elif algorithm == "value":
            nn.utils.clip_grad_value_(params, gradient_clip_val)
        else:
            raise MisconfigurationException(
                f"gradient_clip_algorithm={algorithm!r}: use 'norm' or 'value'"
            )

    def configure_gradient_clipping(
        self,
        optimizer: Any,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def freeze(self) -> None:
        for param in self.parameters():
            param.requires_grad = False
        self.eval()

    def unfreeze(self) -> None:
        for param in self.parameters():
            param.requires_grad = True
        self.train()

    # -- checkpoints --------------------------------------------------------------------------

    @classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path: str,
        map_location: Any = None,
        hparams_file: str | None = None,
        strict: bool = True,
        weights_only: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        """Build the module from a checkpoint's hyperparameters (overridden by kwargs) and
        load its weights."""
        from lightjob.runtime import checkpoint as ckpt_io

        checkpoint = ckpt_io.load(
            checkpoint_path, map_location=map_location, weights_only=weights_only
        )
        hparams = dict(checkpoint.get("hyper_parameters") or {})
        if hparams_file is not None:
            import yaml

            with ckpt_io.open_uri(hparams_file, "r") as stream:
                hparams.update(yaml.safe_load(stream) or {})
        model = cls(**{**hparams, **kwargs})
        model.on_load_checkpoint(checkpoint)
        model.load_state_dict(checkpoint["state_dict"], strict=strict)
        return model

    # -- hooks: the Trainer calls these in the order documented in docs/runtime.md -----------

    def setup(self, stage: str) -> None: ...
    def teardown(self, stage: str) -> None: ...
    def prepare_data(self) -> None: ...
    def on_fit_start(self) -> None: ...
    def on_fit_end(self) -> None: ...
    def on_train_start(self) -> None: ...
    def on_train_end(self) -> None: ...
    def on_validation_start(self) -> None: ...
    def on_validation_end(self) -> None: ...
    def on_test_start(self) -> None: ...
    def on_test_end(self) -> None: ...
    def on_predict_start(self) -> None: ...
    def on_predict_end(self) -> None: ...
    def on_train_epoch_start(self) -> None: ...
    def on_train_epoch_end(self) -> None: ...
    def on_validation_epoch_start(self) -> None: ...
    def on_validation_epoch_end(self) -> None: ...
    def on_test_epoch_start(self) -> None: ...
    def on_test_epoch_end(self) -> None: ...
    def on_predict_epoch_start(self) -> None: ...
    def on_predict_epoch_end(self) -> None: ...
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> Any: ...
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None: ...
    def on_validation_batch_start(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None: ...
    def on_validation_batch_end(
        self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None: ...
    def on_test_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_test_batch_end(
        self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None: ...
    def on_predict_batch_start(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None: ...
    def on_predict_batch_end(
        self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None: ...
    def on_before_backward(self, loss: torch.Tensor) -> None: ...
    def on_after_backward(self) -> None: ...
    def on_before_optimizer_step(self, optimizer: Any) -> None: ...
    def on_before_zero_grad(self, optimizer: Any) -> None: ...
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None: ...
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None: ...

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return batch

    def transfer_batch_to_device(
        self, batch: Any, device: torch.device, dataloader_idx: int
    ) -> Any:
        from lightjob.runtime.data import move_to_device

        return move_to_device(batch, device)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return batch

    # Data can live on the module too, as in Lightning.
    def train_dataloader(self) -> Any:
        raise NotImplementedError

    def val_dataloader(self) -> Any:
        raise NotImplementedError

    def test_dataloader(self) -> Any:
        raise NotImplementedError

    def predict_dataloader(self) -> Any:
        raise NotImplementedError


class LightningDataModule(HyperparametersMixin):
    """Everything about the data: download once, split, and build the loaders."""

    prepare_data_per_node = True

    def __init__(self) -> None:
        self.trainer: Trainer | None = None

    def prepare_data(self) -> None: ...
    def setup(self, stage: str) -> None: ...
    def teardown(self, stage: str) -> None: ...

    def train_dataloader(self) -> Any:
        raise NotImplementedError

    def val_dataloader(self) -> Any:
        raise NotImplementedError

    def test_dataloader(self) -> Any:
        raise NotImplementedError

    def predict_dataloader(self) -> Any:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...
