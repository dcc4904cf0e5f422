"""This process's input as a function of an integer, built from a config: training batches by
step, evaluation batches by number, the multi-view test's views by video. The trainer calls
:func:`data_function` in its own process, or :func:`worker_data_function` runs it in loader
processes (:class:`~vjax.data.pipeline.ProcessMap`), which rebuild the dataset from the
config's JSON and import only the data stack (no model or training code).

>>> batches = data_function(builder, config, "train", "train", index=0, count=1)
>>> batch = batches(step)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import ml_collections

from vjax.data.datasets import dataset_class_names, load_dataset
from vjax.data.pipeline import TrainBatches, eval_batch
from vjax.data.transforms import (
    InputOptions,
    evaluation_label,
    make_view_sampler,
    transforms_for,
)
from vjax.tasks import ClassNames

KINDS = ("train", "eval", "views")


def host_batches(
    builder: Any, config: ml_collections.ConfigDict, index: int, count: int
) -> TrainBatches:
    """Process ``index`` of ``count``'s rows of every training batch: ``TrainBatches`` with
    the clip sampling and augmentation ``config.input`` asks for."""
    transforms = transforms_for(builder, config.input)
    return TrainBatches(
        builder.as_data_source("train"),
        config.input.global_batch_size,
        config.seed,
        index,
        count,
        transform=transforms["transform"],
        batch_transform=transforms["batch_transform"],
    )


def data_function(
    builder: Any, config: ml_collections.ConfigDict, kind: str, split: str, index: int, count: int
) -> Callable[[int], Any]:
    """Process ``index`` of ``count``'s input as a function of an integer: ``"train"``
    batches by step, ``"eval"`` batches of ``split`` by number
    (:func:`~vjax.data.pipeline.eval_batch`), or ``"views"``: the multi-view test's views by
    video (:func:`views_and_label`)."""
    if kind not in KINDS:
        raise ValueError(f"unknown input kind {kind!r}; valid: {KINDS}")
    if kind == "train":
        return host_batches(builder, config, index, count)
    source = builder.as_data_source(split)
    if kind == "views":
        names = dataset_class_names(builder)
        return views_and_label(source, config.input, names, index, count)
    transform = transforms_for(builder, config.input)["eval_transform"]
    size = config.input.global_batch_size
    return functools.partial(eval_batch, source, size, process_index=index,
                             process_count=count, transform=transform)  # fmt: skip


def views_and_label(
    source: Any,
    input_config: Any,
    class_names: ClassNames = (),
    process_index: int = 0,
    process_count: int = 1,
) -> Callable[[int], dict[str, Any]]:
    """``f(k) -> {"views": uint8 (V, T, S, S, 3), "label"}``: the test views and label
    (:func:`~vjax.data.transforms.evaluation_label`) of the ``k``-th video process
    ``process_index`` scores in :func:`vjax.evaluate.scoring.evaluate_views` (video
    ``process_index + k * process_count``; past the end, video 0 as padding), decoded at once
    (for loader processes)."""
    options = InputOptions.from_config(input_config)
    views = make_view_sampler(options)
    read_label = evaluation_label(options, class_names)

    def video(k: int) -> dict[str, Any]:
        index = process_index + k * process_count
        example = source[index if index < len(source) else 0]
        return {"views": views(example), "label": read_label(example)}

    return video


def worker_data_function(config_json: str, *args: Any) -> Callable[[int], Any]:
    """:func:`data_function` inside a loader process, its builder rebuilt (prepared already,
    so only opened) from the config's JSON."""
    from vjax.config_utils import config_from_json

    config = config_from_json(config_json)
    return data_function(load_dataset(config.dataset), config, *args)


def training_batches(
    config: ml_collections.ConfigDict, count: int, data_dir: str | None = None
) -> Iterator[Any]:
    """The first ``count`` training batches of a run's config (one process, no loader
    workers), e.g. to calibrate or score a trained model; ``data_dir`` if the data moved."""
    config = config.copy_and_resolve_references()
    with config.unlocked():
        if data_dir:
            config.dataset.data_dir = data_dir
        config.input.num_workers = 0
    make_batch = data_function(load_dataset(config.dataset), config, "train", "train", 0, 1)
    for step in range(count):
        yield make_batch(step)
