"""Datasets by name: ``config.dataset.name`` plus its fields -> a prepared TFDS builder."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping
from typing import Any


def _motion_preparer() -> Callable[..., Any]:
    from vjax.data.motion_builder import prepare_motion  # lazy: imports TFDS

    return prepare_motion


# name -> a function returning that dataset's ``prepare(data_dir, **fields) -> builder``.
_PREPARERS: dict[str, Callable[[], Callable[..., Any]]] = {"vjax_motion": _motion_preparer}


def load_dataset(dataset_config: Mapping[str, Any]):
    """Prepares (once) and returns the TFDS builder the config names.

    >>> builder = load_dataset({"name": "vjax_motion", "data_dir": "/tmp/tfds", "num_classes": 4})
    >>> source = builder.as_data_source("train")
    """
    from vjax.config_utils import unknown_key_error

    kwargs = dict(dataset_config)
    name = kwargs.pop("name")
    if name not in _PREPARERS:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(sorted(_PREPARERS))}")
    prepare = _PREPARERS[name]()
    valid = list(inspect.signature(prepare).parameters)
    for key in kwargs:
        if key not in valid:
            raise unknown_key_error(f"dataset.{key}", [f"dataset.{k}" for k in valid])
    kwargs["data_dir"] = os.path.expanduser(kwargs.get("data_dir") or "~/tensorflow_datasets")
    return prepare(**kwargs)


def clip_spec(builder) -> tuple[tuple[int, ...], int, list[str]]:
    """``((T, H, W, C), num_classes, class_names)`` of a video classification builder."""
    features = builder.info.features
    return tuple(features["video"].shape), features["label"].num_classes, features["label"].names
