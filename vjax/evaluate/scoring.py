"""Scoring a split: one view per example from evaluation batches, or the multi-view test (N
temporal clips x crops per video, logits pooled per video), in chunks; then the metrics.

:func:`video_scores` runs ``apply`` on batches of exactly ``chunk_size`` views (the last one
padded), filled from consecutive videos' views as they are decoded one at a time; a video's
pooled logits come out once its last view is scored. Memory is ``chunk_size`` views however
many views a video has, and ``apply`` always sees one shape (one compilation).

Pure functions of an ``apply(videos uint8 (B, T, H, W, 3)) -> logits (B, K)`` callable (for a
vjax model: normalise with ``vjax.step.normalize_video`` inside it) and the data: a view
iterator (:func:`vjax.data.transforms.make_view_iterator`) or evaluation batches
(:func:`vjax.data.pipeline.eval_batch`). Multi-host: ``apply`` and the data are this
process's; ``gather`` concatenates the processes' arrays.

>>> views = make_view_iterator(InputOptions(test_num_clips=4, test_num_crops=3))
>>> scores, labels = video_scores(apply, (source[i] for i in range(len(source))), views, 32)
>>> metrics = evaluate_views(apply, source, config.input, 32)     # {"top1": ..., ...}
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from vjax.data.pipeline import stack, unstack
from vjax.evaluate.metrics import frame_level_scores, mean_average_precision, task_metrics
from vjax.evaluate.uncertainty import map_interval
from vjax.tasks import ClassNames

ENSEMBLES = ("mean", "max")


def _stack(values: list) -> Any:
    """Stacks a list of arrays, or of dicts of arrays key by key."""
    if isinstance(values[0], Mapping):
        return {key: np.stack([v[key] for v in values]) for key in values[0]}
    return np.stack(values)


def _take(values: Any, keep: np.ndarray) -> Any:
    """Rows ``keep`` of an array or of every array of a dict."""
    if isinstance(values, Mapping):
        return {key: np.asarray(v)[keep] for key, v in values.items()}
    return np.asarray(values)[keep]


def video_scores(
    apply: Callable[[np.ndarray], Any],
    examples: Iterable[Mapping[str, Any]],
    views: Callable[[Mapping[str, Any]], Iterator[np.ndarray]],
    chunk_size: int,
    label: Callable[[Mapping[str, Any]], Any] = lambda example: example["label"],
    ensemble: str = "mean",
) -> tuple[np.ndarray, Any]:
    """``(scores float32 (N, K), labels)``: each video's logits pooled over its views
    (``ensemble``: their ``"mean"``, or PySlowFast's ``"max"`` for Charades), and its
    ``label(example)`` (an int, a multi-hot vector, one label per task:
    :func:`vjax.data.transforms.label_reader`; or a dict holding ``"label"``, stacked key by
    key, when the label carries localisation targets, in which case ``scores`` are every
    view's ``(N, V, K)``)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if ensemble not in ENSEMBLES:
        raise ValueError(f"input.test_ensemble must be one of {ENSEMBLES}, got {ensemble!r}")
    per_video: list[list[np.ndarray]] = []  # each video's view logits (pooled, unless kept)
    labels: list[Any] = []
    buffer: list[np.ndarray] = []
    owners: list[int] = []
    keep_views = False
    pool = np.add if ensemble == "mean" else np.maximum

    def flush() -> None:
        padding = [_zeros_like(buffer[0])] * (chunk_size - len(buffer))
        batch = stack(buffer + padding)  # views with audio: a dict of stacked inputs
        logits = np.asarray(apply(batch), np.float32)[: len(buffer)]
        for owner, row in zip(owners, logits, strict=True):
            held = per_video[owner]
            if keep_views or not held:
                held.append(row.copy())
            else:
                held[0] = pool(held[0], row)
        buffer.clear()
        owners.clear()

    counts: list[int] = []
    for example in examples:
        video = len(labels)
        value = label(example)
        keep_views = isinstance(value, Mapping)
        labels.append(value if keep_views else np.asarray(value))
        per_video.append([])
        counts.append(0)
        for view in views(example):
            buffer.append(view)
            owners.append(video)
            counts[video] += 1
            if len(buffer) == chunk_size:
                flush()
    if buffer:
        flush()
    if not labels:
        raise ValueError("no videos to evaluate")
    if 0 in counts:
        raise ValueError(f"video {counts.index(0)} produced no views")
    if keep_views:
        return np.stack([np.stack(v) for v in per_video]).astype(np.float32), _stack(labels)
    pooled = [
        v[0] / c if ensemble == "mean" else v[0] for v, c in zip(per_video, counts, strict=True)
    ]
    return np.stack(pooled).astype(np.float32), np.stack(labels)


def _zeros_like(view: Any) -> Any:
    """A padding view: zeros shaped like ``view`` (an array, or a dict of them)."""
    if isinstance(view, Mapping):
        return {key: np.zeros_like(value) for key, value in view.items()}
    return np.zeros_like(view)


def pool_views(scores: np.ndarray, ensemble: str = "mean") -> np.ndarray:
    """Per-video scores ``(N, K)`` of every view's ``(N, V, K)``."""
    return scores.mean(axis=1) if ensemble == "mean" else scores.max(axis=1)


def localized_metrics(
    view_scores: np.ndarray,
    labels: Mapping[str, np.ndarray],
    class_names: ClassNames,
    ensemble: str,
) -> dict[str, Any]:
    """Video-level metrics of the pooled views (:func:`task_metrics`) and, beside them,
    ``frame_mAP`` / ``per_class_frame_ap`` (:func:`~vjax.evaluate.metrics.frame_level_map`)
    from the views' scores and ``labels``' localisation targets (``view_times``,
    ``frame_times``, ``frame_labels``), with ``frame_mAP_ci95``, a bootstrap interval that
    draws whole videos (:func:`~vjax.evaluate.uncertainty.map_interval`)."""
    metrics = task_metrics(pool_views(view_scores, ensemble), labels["label"], class_names)
    frame_labels = labels["frame_labels"]
    # frame_level_map's two steps, the frames scored once for the mAP and its interval
    scores = frame_level_scores(view_scores, labels["view_times"], labels["frame_times"])
    positives = frame_labels.reshape(scores.shape) > 0
    frame_map, frame_aps = mean_average_precision(scores, positives)
    interval = map_interval(
        scores, positives, video=np.repeat(np.arange(len(frame_labels)), frame_labels.shape[1])
    )
    return {
        **metrics,
        "frame_mAP": frame_map,
        "frame_mAP_ci95": interval,
        "per_class_frame_ap": frame_aps,
    }


class EvaluationInterrupted(Exception):
    """An evaluation stopped before its end because ``interrupted()`` said so (a preemption
    notice during training's validation: the state is saved, the scores are not needed)."""


def interruptible(
    number: int, interrupted: Callable[[], bool] | None, what: str = ""
) -> Iterator[int]:
    """Batch indices ``0 .. number - 1``, asking ``interrupted()`` before each (on every
    process alike) and raising :class:`EvaluationInterrupted` when it says so."""
    for index in range(number):
        if interrupted is not None and interrupted():
            raise EvaluationInterrupted(f"{what}stopped before batch {index + 1} of {number}")
        yield index


def evaluate_batches(
    apply: Callable[[np.ndarray], Any],
    batches: Callable[[int], Mapping[str, Any]],
    number: int,
    class_names: ClassNames = (),
    gather: Callable[[Any], Any] | None = None,
    score: Callable[[np.ndarray, np.ndarray, ClassNames], Any] = task_metrics,
    interrupted: Callable[[], bool] | None = None,
) -> Any:
    """``score(outputs, labels, class_names)`` (by default
    :func:`~vjax.evaluate.metrics.task_metrics`) of the real rows of evaluation batches
    ``0 .. number - 1`` (``batches(i)``: this process's ``video``, ``label`` and ``mask`` rows,
    and ``audio`` for audio data; masked rows are padding; ``index``, each row's example, when
    the batches may come from several processes), one view per example, scored in the split's
    order. ``apply`` takes this process's batch (it picks the model's inputs) and returns its
    outputs (logits) row for row with its own labels; ``gather`` concatenates the processes'
    ``(outputs, labels, masks, indices)``. ``interrupted()``, asked before each batch (on
    every process alike), ends it early with :class:`EvaluationInterrupted`."""
    logits, labels, masks, indices = [], [], [], []
    for batch in map(batches, interruptible(number, interrupted)):
        logits.append(np.asarray(apply(batch)))
        labels.append(np.asarray(batch["label"]))
        masks.append(np.asarray(batch["mask"]) > 0)
        if "index" in batch:
            indices.append(np.asarray(batch["index"]))
    local = [np.concatenate(x) for x in (logits, labels, masks, indices) if x]
    scores, labels_all, keep, *index = map(np.asarray, gather(local) if gather else local)
    order = _in_split_order(index[0], keep) if index else np.flatnonzero(keep)
    return score(scores[order], labels_all[order], class_names)


def _in_split_order(index: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The kept rows, ordered by their example's place in the split: the same order with any
    number of processes (gathered, process 0's rows come first), so that two results can be
    compared video by video (:func:`vjax.evaluate.uncertainty.paired_top1`). An example
    gathered from several processes (replicas of one share of the batch,
    :func:`vjax.parallel.data_shard`) counts once."""
    rows = np.flatnonzero(keep)
    _, first = np.unique(index[rows], return_index=True)  # sorted by example, first copy
    return rows[first]


def evaluate_views(
    apply: Callable[[np.ndarray], Any],
    source: Any,
    input_config: Mapping[str, Any] | None,
    chunk_size: int,
    process_index: int = 0,
    process_count: int = 1,
    gather: Callable[[Any], Any] | None = None,
    class_names: ClassNames = (),
    video_views: Callable[[int], Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The multi-view test of a whole random-access ``source`` (e.g.
    ``builder.as_data_source("test")``) with the views ``config.input`` asks for
    (``test_num_clips`` x ``test_num_crops``, pooled by ``test_ensemble``):
    :func:`~vjax.evaluate.metrics.task_metrics` of the per-video scores, plus the frame-level
    mAP for videos with timed actions (Charades: :func:`localized_metrics`).

    Multi-host: process ``p`` scores videos ``p, p + P, p + 2P, ...``, padded with a masked
    repeat so every process makes the same number of ``apply`` calls (``apply`` and
    ``chunk_size`` are per process); ``gather`` (e.g. ``multihost_utils.process_allgather(x,
    tiled=True)``) concatenates the processes' ``(scores, labels, valid, video indices)``, and
    the videos are scored in the split's order. ``class_names``
    a mapping ``{task: names}``: a multi-task source. ``video_views``:
    :func:`vjax.data.loaders.views_and_label` of the same source and process, computed
    elsewhere (e.g. in loader processes, :class:`vjax.data.pipeline.ProcessMap`); by default
    the views are decoded here, one at a time.

    >>> metrics = evaluate_views(lambda v: eval_logits(variables, v), source, config.input, 32)
    """
    from vjax.data.transforms import InputOptions, evaluation_label, make_view_iterator

    options = InputOptions.from_config(input_config)
    total = len(source)
    mine = np.arange(process_index, -(-total // process_count) * process_count, process_count)
    valid = mine < total
    if video_views is None:
        views = make_view_iterator(options)
        examples = (source[int(i) if i < total else 0] for i in mine)
        label = evaluation_label(options, class_names)
    else:
        examples = (video_views(k) for k in range(len(mine)))
        views, label = (lambda video: unstack(video["views"])), (lambda video: video["label"])
    scores, labels = video_scores(apply, examples, views, chunk_size, label, options.test_ensemble)
    if gather is not None:
        scores, labels, valid, mine = gather((scores, labels, valid, mine))
        valid, mine = np.asarray(valid), np.asarray(mine)
    order = _in_split_order(mine, valid)
    scores, labels = np.asarray(scores)[order], _take(labels, order)
    if isinstance(labels, Mapping):
        return localized_metrics(scores, labels, class_names, options.test_ensemble)
    return task_metrics(scores, labels, class_names)
