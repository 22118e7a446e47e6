"""hparams.yaml, read and written as Lightning's `lightning.pytorch.core.saving` does.

The loggers write `hparams.yaml` through `save_hparams_to_yaml`, and users read it back with
`load_hparams_from_yaml`, so both live here, at Lightning's path. The module loads no torch
(fsspec, for remote paths, only when called).
"""

from __future__ import annotations

import enum
import os
import warnings
from argparse import Namespace
from collections.abc import Mapping, MutableMapping
from typing import Any

import yaml


def _filesystem(path: str | os.PathLike[str]) -> tuple[Any, str]:
    import fsspec

    fs, _ = fsspec.core.url_to_fs(os.fspath(path))
    return fs, os.fspath(path)


def save_hparams_to_yaml(
    config_yaml: str | os.PathLike[str],
    hparams: Mapping[str, Any] | Namespace,
    use_omegaconf: bool = True,
) -> None:
    """Write `hparams` to `config_yaml`, keys sorted, as PyYAML's `yaml.dump` writes them
    (a tuple is `!!python/tuple`, a class `!!python/name:`); an Enum is written as its name.
    A value PyYAML cannot represent at all (a lock, an open file) is left out with a warning
    and, as Lightning does, replaced in `hparams` by its type's name, which a later save of
    the same dict then writes.

    `use_omegaconf` is accepted for Lightning's signature; lightjob never writes through
    OmegaConf (docs/runtime.md, "Differences from Lightning").
    """
    fs, path = _filesystem(config_yaml)
    folder = os.path.dirname(path)
    if not fs.isdir(folder):
        raise RuntimeError(f"Missing folder: {folder}.")
    if isinstance(hparams, Namespace):
        hparams = vars(hparams)
    if not isinstance(hparams, Mapping):
        raise TypeError(f"hparams must be a dict or an argparse.Namespace, not {type(hparams)}")
    writable: dict[Any, Any] = {}
    for key, value in hparams.items():
        value = value.name if isinstance(value, enum.Enum) else value
        try:
            yaml.dump(value)
        except (TypeError, ValueError):
            warnings.warn(
                f"Skipping '{key}' parameter because it is not possible to safely dump to YAML.",
                stacklevel=2,
            )
            if isinstance(hparams, MutableMapping):
                hparams[key] = type(value).__name__  # as Lightning: a later save writes the name
        else:
            writable[key] = value
    with fs.open(path, "w", newline="") as out:
        yaml.dump(writable, out)


def load_hparams_from_yaml(
    config_yaml: str | os.PathLike[str], use_omegaconf: bool = True
) -> dict[str, Any]:
    """The dict in `config_yaml` (PyYAML's full loader), or {} with a RuntimeWarning when the
    file does not exist."""
    fs, path = _filesystem(config_yaml)
    if not fs.exists(path):
        warnings.warn(f"Missing Tags: {path}.", RuntimeWarning, stacklevel=2)
        return {}
    with fs.open(path, "r") as source:
        loaded: dict[str, Any] = yaml.full_load(source)
    return loaded
