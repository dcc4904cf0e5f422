"""Datasets by name: ``config.dataset.name`` plus its fields -> a prepared TFDS builder."""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from vjax.log_filters import drop_absl_warnings
from vjax.suggest import closest_hint

# TFDS warns on every builder made from a config it does not list, i.e. on every vjax dataset.
drop_absl_warnings("Using custom data configuration")


def _motion_preparer() -> Callable[..., Any]:
    from vjax.data.motion_builder import prepare_motion  # lazy: imports TFDS

    return prepare_motion


def _av_motion_preparer() -> Callable[..., Any]:
    from vjax.data.motion_builder import prepare_av_motion  # lazy: imports TFDS

    return prepare_av_motion


def _video_preparer(name: str) -> Callable[[], Callable[..., Any]]:
    """The preparer of a video dataset stored as whole videos of JPEG frames."""

    def get() -> Callable[..., Any]:
        from vjax.data.video_builder import prepare_videos  # lazy: imports TFDS

        return functools.partial(prepare_videos, name)

    return get


# name -> a function returning that dataset's ``prepare(data_dir, **fields) -> builder``.
_PREPARERS: dict[str, Callable[[], Callable[..., Any]]] = {
    "vjax_motion": _motion_preparer,
    "vjax_av_motion": _av_motion_preparer,
    **{
        name: _video_preparer(name)
        for name in (
            "video_folder",
            "kinetics",
            "ssv2",
            "ucf101",
            "hmdb51",
            "epic_kitchens",
            "charades",
            "vggsound",
            "kinetics_sounds",
            "audioset",
        )
    },
}


def check_dataset_name(name: str) -> None:
    """Raises a ConfigError naming the closest known datasets when ``name`` is unknown."""
    if name not in _PREPARERS:
        from vjax.config_utils import ConfigError

        raise ConfigError(f"unknown dataset {name!r}{closest_hint(name, _PREPARERS)}")


def preparer(name: str) -> Callable[..., Any]:
    """The ``prepare(data_dir, **fields) -> builder`` function of dataset ``name``."""
    check_dataset_name(name)
    return _PREPARERS[name]()


def planned_clip_shape(
    dataset_config: Mapping[str, Any], input_config: Mapping[str, Any] | None
) -> tuple[int, ...] | None:
    """The clip ``(T, H, W, C)`` the config will feed the model, known before the dataset is
    prepared (so a clip the model cannot take fails at once): ``vjax_motion`` stores fixed
    clips of its ``num_frames x height x width``; the video datasets cut what ``config.input``
    asks for. None when the config does not say."""
    if dataset_config.get("name") == "vjax_motion":
        sizes = [dataset_config.get(key) for key in ("num_frames", "height", "width")]
        return (*sizes, 3) if all(sizes) else None
    from vjax.data.transforms import InputOptions

    return InputOptions.from_config(input_config).clip_shape


def require_splits(builder, splits: Sequence[str], why: str = "") -> None:
    """Raises a UserError naming the closest (or every) available split when the prepared
    dataset lacks one of ``splits`` (e.g. ``--split=val``); ``why`` says what needs it."""
    from vjax.errors import UserError

    available = list(builder.info.splits)
    for split in splits:
        if split not in available:
            raise UserError(
                f"split {split!r} is not in the dataset prepared in {builder.data_dir}"
                f"{closest_hint(split, available)}" + (f"; {why}" if why else "")
            )


def load_dataset(dataset_config: Mapping[str, Any]):
    """Prepares (once) and returns the TFDS builder the config names.

    >>> builder = load_dataset({"name": "vjax_motion", "data_dir": "/tmp/tfds", "num_classes": 4})
    >>> source = builder.as_data_source("train")
    """
    from vjax.config_utils import unknown_key_error
    from vjax.errors import UserError

    kwargs = dict(dataset_config)
    name = kwargs.pop("name")
    prepare = preparer(name)
    valid = list(inspect.signature(prepare).parameters)
    for key in kwargs:
        if key not in valid:
            raise unknown_key_error(f"dataset.{key}", [f"dataset.{k}" for k in valid])
    if "src" in valid and not kwargs.get("src"):  # a recipe's dataset of videos on disk
        raise UserError(
            f"dataset {name!r} is prepared from its videos on disk: give their folder (or a "
            f"manifest) with --config.dataset.src=PATH"
        )
    kwargs["data_dir"] = os.path.expanduser(kwargs.get("data_dir") or "~/tensorflow_datasets")
    require_local_data_dir(kwargs["data_dir"])
    if os.path.isfile(kwargs["data_dir"]):  # TFDS's NotADirectoryError, after some set-up
        raise UserError(f"dataset.data_dir {kwargs['data_dir']!r} is a file; name a folder")
    return prepare(**kwargs)


def prepare_builder(builder: Any, data_dir: str, **download: Any) -> None:
    """``builder.download_and_prepare(**download)``, after checking that ``data_dir`` can be
    written when the dataset is not prepared yet (one line, not TFDS's PermissionError from a
    folder it makes); a prepared dataset is read from a read-only folder as it is."""
    from vjax import storage

    if not builder.is_prepared():  # TFDS's own reading of the folder: ~ and its default
        storage.require_writable(os.path.expanduser(data_dir or "~/tensorflow_datasets"))
    builder.download_and_prepare(**download)


def require_local_data_dir(data_dir: str) -> None:
    """Raises a UserError for a bucket's URL: ArrayRecord, the format datasets are prepared in
    (random access by index), opens local paths only (google/array_record#120: RuntimeError
    "open() failed" after the set-up). A bucket is read through a FUSE mount instead."""
    from vjax import storage
    from vjax.errors import UserError

    if not storage.is_remote(data_dir):
        return
    scheme, _, rest = data_dir.partition("://")
    bucket, _, folder = rest.partition("/")
    mounted = f"/mnt/{bucket}" + (f"/{folder}" if folder else "")
    how = f"gcsfuse --implicit-dirs {bucket} /mnt/{bucket}" if scheme == "gs" else "a FUSE mount"
    raise UserError(
        f"dataset.data_dir {data_dir!r} is in a bucket, and ArrayRecord, the format datasets "
        f"are prepared in, opens local paths only: mount the bucket on every host ({how}) and "
        f"give its path instead, {mounted}"
    )


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
        if "label" not in features:  # unlabelled videos
            return []
        label = features["label"]  # multi-label data: a sequence of class ids
        return list(label.feature.names if is_multilabel(builder) else label.names)
    return {task: list(features[task].names) for task in tasks}


def is_multilabel(builder) -> bool:
    """True for builders whose videos carry several classes at once (``MULTI_LABEL``, e.g.
    ``vjax_charades``): multi-hot labels, a sigmoid loss and mAP."""
    return bool(getattr(builder, "MULTI_LABEL", False))


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
