"""Datasets by name: ``config.dataset.name`` plus its fields -> a prepared TFDS builder."""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Mapping
from typing import Any


def _motion_preparer() -> Callable[..., Any]:
    from vjax.data.motion_builder import prepare_motion  # lazy: imports TFDS

    return prepare_motion


def _video_preparer(name: str) -> Callable[[], Callable[..., Any]]:
    """The preparer of a video dataset stored as whole videos of JPEG frames."""

    def get() -> Callable[..., Any]:
        from vjax.data.video_builder import prepare_videos  # lazy: imports TFDS

        return functools.partial(prepare_videos, name)

    return get


# name -> a function returning that dataset's ``prepare(data_dir, **fields) -> builder``.
_PREPARERS: dict[str, Callable[[], Callable[..., Any]]] = {
    "vjax_motion": _motion_preparer,
    **{
        name: _video_preparer(name)
        for name in ("video_folder", "kinetics", "ssv2", "ucf101", "hmdb51", "epic_kitchens")
    },
}


def preparer(name: str) -> Callable[..., Any]:
    """The ``prepare(data_dir, **fields) -> builder`` function of dataset ``name``."""
    if name not in _PREPARERS:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(sorted(_PREPARERS))}")
    return _PREPARERS[name]()


def load_dataset(dataset_config: Mapping[str, Any]):
    """Prepares (once) and returns the TFDS builder the config names.

    >>> builder = load_dataset({"name": "vjax_motion", "data_dir": "/tmp/tfds", "num_classes": 4})
    >>> source = builder.as_data_source("train")
    """
    from vjax.config_utils import unknown_key_error

    kwargs = dict(dataset_config)
    prepare = preparer(kwargs.pop("name"))
    valid = list(inspect.signature(prepare).parameters)
    for key in kwargs:
        if key not in valid:
            raise unknown_key_error(f"dataset.{key}", [f"dataset.{k}" for k in valid])
    kwargs["data_dir"] = os.path.expanduser(kwargs.get("data_dir") or "~/tensorflow_datasets")
    return prepare(**kwargs)


def stores_whole_videos(builder) -> bool:
    """True for builders whose records are whole videos of JPEG frames (``video_folder`` and
    the builders sharing its core); clips are then cut by :mod:`vjax.data.transforms`."""
    return "frames" in builder.info.features


def dataset_class_names(builder) -> list[str] | dict[str, list[str]]:
    """The class names of a builder's label: a list, or ``{task: names}`` for a multi-task
    builder (its ``TASKS``, e.g. Epic-Kitchens' ``("verb", "noun")``: one ClassLabel each);
    ``[]`` for unlabelled videos (no label feature)."""
    features = builder.info.features
    tasks = getattr(builder, "TASKS", ("label",))
    if tuple(tasks) == ("label",):
        return list(features["label"].names) if "label" in features else []
    return {task: list(features[task].names) for task in tasks}


def clip_spec(
    builder, input_config: Mapping[str, Any] | None = None
) -> tuple[tuple[int, ...], list[str] | dict[str, list[str]]]:
    """``((T, H, W, C), class_names)`` of a video classification builder (class names: see
    :func:`dataset_class_names`).

    Fixed-clip datasets (``vjax_motion``) store the clip shape; for whole stored videos it is
    what ``input_config`` (``config.input``) cuts: ``(num_frames, crop_size, crop_size, 3)``.
    """
    names = dataset_class_names(builder)
    if stores_whole_videos(builder):
        from vjax.data.transforms import InputOptions

        return InputOptions.from_config(input_config).clip_shape, names
    return tuple(builder.info.features["video"].shape), names
