"""Seeding and RNG state: reproducible runs and exact resume."""

from __future__ import annotations

import os
import random
from typing import Any

import torch

try:
    import numpy as np
except ImportError:  # numpy is optional for the runtime
    np = None  # type: ignore[assignment]


def seed_everything(seed: int | None = None, workers: bool = False) -> int:
    """Seed python, numpy and torch (all devices); return the seed used.

    With `workers=True`, DataLoader workers get distinct, reproducible seeds derived from
    this one (PL_SEED_WORKERS, as in Lightning), which the Trainer applies to loaders
    that have no worker_init_fn of their own.
    """
    if seed is None:
        env = os.environ.get("PL_GLOBAL_SEED")
        seed = int(env) if env is not None else random.SystemRandom().randrange(2**32)
    seed = int(seed)
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed_everything: seed must be in [0, 2**32), got {seed}")
    os.environ["PL_GLOBAL_SEED"] = str(seed)
    os.environ["PL_SEED_WORKERS"] = str(int(workers))
    random.seed(seed)
    if np is not None:
        np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return seed


def worker_init_fn(worker_id: int) -> None:
    """Seed a DataLoader worker from torch's per-worker seed (set by the loader)."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    if np is not None:
        np.random.seed(seed)


def capture_rng_states() -> dict[str, Any]:
    """Every RNG a training step may draw from, as picklable values."""
    states: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if np is not None:
        # As tensors and ints, so a checkpoint holding them still loads with weights_only.
        state: Any = np.random.get_state()
        name, keys, pos, has_gauss, gauss = state
        states["numpy"] = (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    random.setstate(_as_python_state(states["python"]))
    torch.set_rng_state(states["torch"])
    if np is not None and "numpy" in states:
        name, keys, pos, has_gauss, gauss = states["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _as_python_state(state: Any) -> Any:
    # A checkpoint read with weights_only turns the state's tuples into lists.
    version, internal, gauss = state
    return (version, tuple(internal), gauss)
