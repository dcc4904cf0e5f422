"""Multi-view testing: N temporal clips x crops per video, logits averaged per video, in chunks.

:func:`video_scores` runs ``apply`` on batches of exactly ``chunk_size`` views (the last one
padded), filled from consecutive videos' views as they are decoded one at a time; a video's
mean logits come out once its last view is scored. Memory is ``chunk_size`` views however many
views a video has, and ``apply`` always sees one shape (one compilation).
:func:`classification_metrics` turns per-video scores into top-1/top-5, mean class accuracy
and, for multi-label data, mean average precision.

Pure functions of an ``apply(videos uint8 (B, T, H, W, 3)) -> logits (B, K)`` callable (for a
vjax model: normalise with ``vjax.step.normalize_video`` inside it) and a view iterator
(:func:`vjax.data.transforms.make_view_iterator`).

>>> views = make_view_iterator(InputOptions(test_num_clips=4, test_num_crops=3))
>>> scores, labels = video_scores(apply, (source[i] for i in range(len(source))), views, 32)
>>> classification_metrics(scores, labels)    # {"top1": ..., "top5": ..., ...}
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from vjax.tasks import ClassNames, head_sizes, is_multitask, label_columns, split_classes


def video_scores(
    apply: Callable[[np.ndarray], Any],
    examples: Iterable[Mapping[str, Any]],
    views: Callable[[Mapping[str, Any]], Iterator[np.ndarray]],
    chunk_size: int,
    label: Callable[[Mapping[str, Any]], Any] = lambda example: example["label"],
) -> tuple[np.ndarray, np.ndarray]:
    """``(scores float32 (N, K), labels)``: each video's logits averaged over its views, and
    its ``label(example)`` (an int, a multi-hot vector for multi-label data, or one label per
    task: :func:`vjax.data.transforms.label_reader`)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    sums: list[np.ndarray | None] = []
    counts: list[int] = []
    labels: list[Any] = []
    buffer: list[np.ndarray] = []
    owners: list[int] = []

    def flush() -> None:
        batch = np.stack(buffer + [np.zeros_like(buffer[0])] * (chunk_size - len(buffer)))
        logits = np.asarray(apply(batch), np.float32)[: len(buffer)]
        for owner, row in zip(owners, logits, strict=True):
            current = sums[owner]
            sums[owner] = row.copy() if current is None else current + row
        buffer.clear()
        owners.clear()

    for example in examples:
        video = len(labels)
        labels.append(np.asarray(label(example)))
        sums.append(None)
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
    scores = np.stack([s / c for s, c in zip(sums, counts, strict=True)])
    return scores.astype(np.float32), np.stack(labels)


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """Area under the precision-recall curve as the mean of the precision at each positive's
    rank (scores sorted descending; ties broken by order). NaN without positives."""
    order = np.argsort(-scores, kind="stable")
    hits = positives[order].astype(bool)
    if not hits.any():
        return float("nan")
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].mean())


def classification_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Metrics of per-video ``scores (N, K)``.

    Integer ``labels (N,)``: ``loss`` (softmax cross-entropy of the scores), ``top1``, ``top5``
    (top-min(5, K)), ``mean_class_accuracy`` (mean over classes present of their top-1 recall),
    ``per_class_accuracy`` (NaN for absent classes), ``confusion_matrix`` (rows = truth).
    Multi-hot ``labels (N, K)``: ``mAP`` (mean over classes with a positive of
    :func:`average_precision`) and ``top1`` (the top class is one of the positives).
    """
    scores = np.asarray(scores, np.float32)
    num_classes = scores.shape[1]
    if labels.ndim == 2:
        aps = [average_precision(scores[:, k], labels[:, k]) for k in range(num_classes)]
        valid = [ap for ap in aps if not np.isnan(ap)]
        top = np.argmax(scores, axis=1)
        return {
            "num_videos": len(scores),
            "mAP": float(np.mean(valid)) if valid else float("nan"),
            "per_class_ap": aps,
            "top1": float(labels[np.arange(len(top)), top].mean()),
        }
    k = min(5, num_classes)
    ranked = np.argsort(-scores, axis=1, kind="stable")
    top1 = ranked[:, 0] == labels
    topk = (ranked[:, :k] == labels[:, None]).any(axis=1)
    per_class = np.full(num_classes, np.nan)
    for c in np.unique(labels):
        per_class[c] = top1[labels == c].mean()
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (labels, ranked[:, 0]), 1)
    log_probs = log_softmax(scores)
    return {
        "num_videos": len(scores),
        "loss": float(-log_probs[np.arange(len(labels)), labels].mean()),
        "top1": float(top1.mean()),
        "top5": float(topk.mean()),
        "mean_class_accuracy": float(np.nanmean(per_class)),
        "per_class_accuracy": per_class.tolist(),
        "confusion_matrix": confusion.tolist(),
    }


def task_metrics(scores: np.ndarray, labels: np.ndarray, class_names: ClassNames) -> dict:
    """:func:`classification_metrics` for one task (``class_names`` a list). Several tasks
    (``{task: names}``; ``scores`` concatenated over the tasks' classes, ``labels`` one column
    per task): each task's metrics under ``tasks``, the summed ``loss``, and ``top1`` / ``top5``
    of the joint prediction (Epic-Kitchens' action accuracy: a video counts when every task is
    right; the top 5 are the most likely label combinations under the product of the tasks'
    softmaxes)."""
    if not is_multitask(class_names):
        return classification_metrics(scores, labels)
    sizes = head_sizes(class_names)
    per_task = split_classes(np.asarray(scores, np.float32), sizes)
    columns = label_columns(np.asarray(labels), sizes)
    tasks = {t: classification_metrics(per_task[t], columns[t]) for t in sizes}
    return {
        "num_videos": len(scores),
        "loss": float(sum(m["loss"] for m in tasks.values())),
        "top1": joint_topk_accuracy(per_task, columns, 1),
        "top5": joint_topk_accuracy(per_task, columns, 5),
        "tasks": tasks,
    }


def joint_topk_accuracy(
    scores: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray], k: int
) -> float:
    """Fraction of videos whose true label combination is among the ``k`` most likely under
    the product of the tasks' softmaxes. Only each task's own top ``k`` can take part in the
    joint top ``k`` (the product is increasing in every factor), so the search is ``k^tasks``
    combinations per video, not every combination of classes."""
    hits = []
    log_probs = {t: log_softmax(s) for t, s in scores.items()}
    for i in range(len(next(iter(labels.values())))):
        candidates = [(0.0, ())]
        for lp in log_probs.values():
            best = np.argsort(-lp[i], kind="stable")[:k]
            candidates = [(p + lp[i, c], combo + (c,)) for p, combo in candidates for c in best]
        candidates.sort(key=lambda pc: -pc[0])  # stable: ties keep class order
        truth = tuple(int(labels[t][i]) for t in log_probs)
        hits.append(truth in [combo for _, combo in candidates[:k]])
    return float(np.mean(hits))


def log_softmax(scores: np.ndarray) -> np.ndarray:
    """Log-softmax over the last axis (the classes), computed stably."""
    shifted = scores - scores.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def views_and_label(
    source: Any,
    input_config: Mapping[str, Any] | None,
    class_names: ClassNames = (),
    process_index: int = 0,
    process_count: int = 1,
) -> Callable[[int], dict[str, Any]]:
    """``f(k) -> {"views": uint8 (V, T, S, S, 3), "label"}``: the test views and label of the
    ``k``-th video process ``process_index`` scores in :func:`evaluate_views` (video
    ``process_index + k * process_count``; past the end, video 0 as padding), decoded at once
    (for loader processes)."""
    from vjax.data.transforms import InputOptions, label_reader, make_view_sampler

    views = make_view_sampler(InputOptions.from_config(input_config))
    read_label = label_reader(class_names)

    def video(k: int) -> dict[str, Any]:
        index = process_index + k * process_count
        example = source[index if index < len(source) else 0]
        return {"views": views(example), "label": read_label(example)}

    return video


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
    (``test_num_clips`` x ``test_num_crops``): :func:`classification_metrics` of the per-video
    averaged logits.

    Multi-host: process ``p`` scores videos ``p, p + P, p + 2P, ...``, padded with a masked
    repeat so every process makes the same number of ``apply`` calls (``apply`` and
    ``chunk_size`` are per process); ``gather`` (e.g. ``multihost_utils.process_allgather(x,
    tiled=True)``) concatenates the processes' ``(scores, labels, valid)``. ``class_names``
    a mapping ``{task: names}``: a multi-task source, scored by :func:`task_metrics`.
    ``video_views``: :func:`views_and_label` of the same source and process, computed
    elsewhere (e.g. in loader processes, :class:`vjax.data.pipeline.ProcessMap`); by default
    the views are decoded here, one at a time.

    >>> metrics = evaluate_views(lambda v: eval_logits(variables, v), source, config.input, 32)
    """
    from vjax.data.transforms import InputOptions, label_reader, make_view_iterator

    total = len(source)
    mine = np.arange(process_index, -(-total // process_count) * process_count, process_count)
    valid = mine < total
    if video_views is None:
        views = make_view_iterator(InputOptions.from_config(input_config))
        examples = (source[int(i) if i < total else 0] for i in mine)
        label = label_reader(class_names)
    else:
        examples = (video_views(k) for k in range(len(mine)))
        views, label = (lambda video: iter(video["views"])), (lambda video: video["label"])
    scores, labels = video_scores(apply, examples, views, chunk_size, label)
    if gather is not None:
        scores, labels, valid = gather((scores, labels, valid))
    return task_metrics(scores[valid], labels[valid], class_names)
