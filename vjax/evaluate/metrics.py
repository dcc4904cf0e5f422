"""Metrics of per-video scores against labels, in NumPy: what a researcher asks of a classifier.

Single-label (integer labels): loss, top-1/top-5 and mean class accuracy with their 95%
intervals, each video's label and prediction, per-class accuracy and the confusion matrix;
per-class precision, recall, F1 and support with macro and weighted averages (scikit-learn's
``classification_report`` conventions); the most confused class pairs; calibration (expected
calibration error over equal-width confidence bins, and the bins for a reliability diagram).
Multi-label (multi-hot labels): mean average precision (PySlowFast's ``get_map``: classes
without a positive are left out) with its 95% bootstrap interval, per-class AP,
precision/recall/F1 at probability 0.5, calibration of every class's sigmoid, and
precision-recall curves. Several tasks: each task's metrics plus the joint top-1/top-5
(:func:`task_metrics`). A row of scores with a NaN, a +inf or only -inf, and a label outside
the classes, are refused (:class:`MetricInputError`), not scored.

>>> m = classification_metrics(scores, labels)      # scores (N, K); labels (N,) or (N, K)
>>> m["top1"], m["macro"]["f1"], m["ece"]           # or m["mAP"] for multi-hot labels
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from vjax.errors import UserError
from vjax.evaluate.uncertainty import (
    map_interval,
    mean_class_accuracy_interval,
    wilson_interval,
)
from vjax.tasks import ClassNames, head_sizes, is_multitask, label_columns, split_classes

CALIBRATION_BINS = 15  # equal-width confidence bins (Guo et al. 2017)
MOST_CONFUSED = 20  # class pairs kept in a report
PR_POINTS = 101  # recall levels of the micro-averaged precision-recall curve
CLASS_PR_POINTS = 21  # and of each class's curve


class MetricInputError(UserError):
    """Scores or labels no metric can be computed from (non-finite logits, a label outside
    the classes); a command shows it as one line (:func:`vjax.errors.run_guarded`)."""


def check_scores(scores: np.ndarray) -> None:
    """Refuses rows without a finite maximum: a NaN anywhere, a +inf, or every entry -inf
    (their softmax is undefined, and a sort would rank them as confident predictions). A -inf
    beside a finite maximum (a masked class) is a valid logit."""
    bad = int(np.sum(~np.isfinite(scores.max(axis=1))))  # max is NaN if any entry is
    if bad:
        raise MetricInputError(
            f"{bad} of {len(scores)} videos have non-finite logits (NaN, +inf or all -inf): "
            "the model's evaluation output is broken; check the checkpoint for NaN/inf "
            "weights or batch statistics, or evaluate in float32 (--config.train.dtype=float32)"
        )


def check_labels(labels: np.ndarray, num_classes: int) -> None:
    """Refuses integer labels outside ``0 .. num_classes - 1`` (e.g. -1, an unlabelled video),
    which would index the wrong class or none."""
    outside = np.unique(labels[(labels < 0) | (labels >= num_classes)])
    if outside.size:
        shown = ", ".join(str(int(x)) for x in outside[:5])
        raise MetricInputError(
            f"label(s) {shown} outside the {num_classes} classes 0..{num_classes - 1}: "
            "every scored video needs a label of a class the model predicts (an unlabelled "
            "video, -1, cannot be scored; a dataset with more classes needs a matching head)"
        )


def log_softmax(scores: np.ndarray) -> np.ndarray:
    """Log-softmax over the last axis (the classes), computed stably."""
    shifted = scores - scores.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function, without overflow for large negative inputs."""
    return np.exp(-np.logaddexp(0.0, -x))


def binary_cross_entropy(logits: np.ndarray, targets: np.ndarray) -> float:
    """Mean sigmoid binary cross-entropy over every (example, class) entry of 0/1 ``targets``:
    ``-log sigmoid(x)`` of a positive, ``-log sigmoid(-x)`` of a negative (so a -inf logit
    of a negative costs 0, not NaN)."""
    x = np.asarray(logits, np.float64)
    return float(
        np.mean(np.where(np.asarray(targets) > 0, np.logaddexp(0.0, -x), np.logaddexp(0.0, x)))
    )


def _ranked_counts(scores: np.ndarray, positives: np.ndarray):
    """Cumulative true and false positives at each distinct score, highest first."""
    order = np.argsort(-scores, kind="stable")
    scores, hits = scores[order], positives[order].astype(bool)
    # End of each tie group (not np.diff: inf - inf is NaN, which would split a tie at inf).
    last = np.r_[np.flatnonzero(scores[1:] != scores[:-1]), len(scores) - 1]
    tp = np.cumsum(hits)[last]
    return tp, (last + 1) - tp


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """Area under the precision-recall curve, ``sum_n (R_n - R_{n-1}) P_n`` over the distinct
    scores from the highest (tied scores form one threshold, as in scikit-learn's
    ``average_precision_score``). NaN without positives."""
    total = int(np.sum(positives))
    if total == 0:
        return float("nan")
    tp, fp = _ranked_counts(np.asarray(scores), np.asarray(positives))
    recall = np.r_[0.0, tp / total]
    return float(np.sum(np.diff(recall) * tp / (tp + fp)))


def interpolated_precision(scores: np.ndarray, positives: np.ndarray, points: int) -> list:
    """Precision at ``points`` recall levels ``0..1``: the highest precision reached at that
    recall or beyond (the curve a PR plot draws). None without positives."""
    total = int(np.sum(positives))
    if total == 0:
        return None
    tp, fp = _ranked_counts(np.asarray(scores), np.asarray(positives))
    recall, precision = tp / total, tp / (tp + fp)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]  # max precision at recall >= r
    # i / (points - 1), not np.linspace: its 12/20 is above 3/5 and would skip recall 0.6.
    levels = np.arange(points) / (points - 1)
    at = np.searchsorted(recall, levels, side="left")
    return [float(envelope[i]) for i in np.minimum(at, len(envelope) - 1)]


def mean_average_precision(scores: np.ndarray, labels: np.ndarray) -> tuple[float, list]:
    """``(mAP, per-class AP)``: the mean over the classes with at least one positive (the others
    are NaN and left out, as PySlowFast's ``get_map`` does)."""
    aps = [average_precision(scores[:, k], labels[:, k]) for k in range(scores.shape[1])]
    valid = [ap for ap in aps if not np.isnan(ap)]
    return (float(np.mean(valid)) if valid else float("nan")), aps


def precision_recall_f1(
    tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, counted: np.ndarray
) -> dict[str, Any]:
    """``per_class_precision``, ``per_class_recall``, ``per_class_f1`` (None for classes not
    ``counted``), ``per_class_support`` (true count) and the ``macro`` (unweighted) and
    ``weighted`` (by support) means of the first three over the ``counted`` classes. A ratio
    with a zero denominator is 0 (scikit-learn's default)."""
    tp, fp, fn = (np.asarray(x, np.float64) for x in (tp, fp, fn))

    def ratio(num, den):
        return np.divide(num, den, out=np.zeros_like(num), where=den > 0)

    values = {
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
    }
    support = tp + fn
    out: dict[str, Any] = {
        f"per_class_{name}": [float(x) if c else None for x, c in zip(v, counted, strict=True)]
        for name, v in values.items()
    }
    out["per_class_support"] = [int(s) for s in support]
    weights = support[counted]
    out["macro"] = {name: float(v[counted].mean()) for name, v in values.items()}
    out["weighted"] = {
        name: float(np.sum(v[counted] * weights) / weights.sum()) if weights.sum() else 0.0
        for name, v in values.items()
    }
    return out


def most_confused(confusion: np.ndarray, k: int = MOST_CONFUSED) -> list[dict[str, Any]]:
    """The ``k`` largest off-diagonal cells of a confusion matrix (rows = truth), largest
    count first (ties: row-major order): ``{"true", "predicted", "count", "fraction"}`` with
    ``fraction`` the share of the true class's videos given that prediction."""
    off = np.array(confusion, np.int64)
    np.fill_diagonal(off, 0)
    flat = np.argsort(-off, axis=None, kind="stable")[:k]
    rows = off.sum(axis=1) + np.diag(confusion)
    pairs = []
    for i, j in zip(*np.unravel_index(flat, off.shape), strict=True):
        if off[i, j] == 0:
            break
        pairs.append(
            {
                "true": int(i),
                "predicted": int(j),
                "count": int(off[i, j]),
                "fraction": float(off[i, j] / rows[i]),
            }
        )
    return pairs


def calibration(
    confidence: np.ndarray, correct: np.ndarray, num_bins: int = CALIBRATION_BINS
) -> dict[str, Any]:
    """Expected calibration error ``sum_b n_b / N * |accuracy_b - confidence_b|`` over
    ``num_bins`` equal-width bins of ``confidence`` (bin ``b`` holds ``(b/B, (b+1)/B]``, the
    first also 0, as scikit-learn's ``calibration_curve`` bins), and per bin its ``count``,
    mean ``confidence`` and ``accuracy`` (None when empty): a reliability diagram."""
    confidence = np.asarray(confidence, np.float64).ravel()
    correct = np.asarray(correct, np.float64).ravel()
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    bins = np.searchsorted(edges[1:-1], confidence)
    count = np.bincount(bins, minlength=num_bins)
    sums = np.bincount(bins, weights=confidence, minlength=num_bins)
    hits = np.bincount(bins, weights=correct, minlength=num_bins)
    full = count > 0
    mean_conf = np.divide(sums, count, out=np.zeros(num_bins), where=full)
    accuracy = np.divide(hits, count, out=np.zeros(num_bins), where=full)
    ece = float(np.sum(count * np.abs(accuracy - mean_conf)) / max(len(confidence), 1))
    return {
        "ece": ece,
        "calibration": {
            "edges": edges.tolist(),
            "count": count.tolist(),
            "confidence": [float(c) if f else None for c, f in zip(mean_conf, full, strict=True)],
            "accuracy": [float(a) if f else None for a, f in zip(accuracy, full, strict=True)],
        },
    }


def single_label_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Metrics of ``scores (N, K)`` against integer ``labels (N,)``: ``loss`` (softmax
    cross-entropy), ``top1``, ``top5`` (top-min(5, K); tied scores rank the lower class id
    first, as ``np.argmax``) and their 95% intervals ``top1_ci95``,
    ``top5_ci95`` (:func:`~vjax.evaluate.uncertainty.wilson_interval`), ``per_video`` (each
    row's ``label`` and ``predicted`` class, for paired comparisons, and the softmax
    probability of the prediction, ``confidence``: confidently wrong videos are where to look
    for label noise), ``mean_class_accuracy``
    with its bootstrap interval ``mean_class_accuracy_ci95``
    (:func:`~vjax.evaluate.uncertainty.mean_class_accuracy_interval`) and
    ``per_class_accuracy`` (NaN for absent classes), ``confusion_matrix`` (rows = truth),
    :func:`precision_recall_f1` over the classes in the truth or the predictions,
    :func:`most_confused` and :func:`calibration` of the top softmax probability. Refuses
    non-finite rows (:func:`check_scores`) and labels outside the classes (:func:`check_labels`)."""
    num_classes = scores.shape[1]
    check_scores(scores)
    check_labels(labels, num_classes)
    k = min(5, num_classes)
    ranked = np.argsort(-scores, axis=1, kind="stable")
    predicted = ranked[:, 0]
    top1 = predicted == labels
    topk = (ranked[:, :k] == labels[:, None]).any(axis=1)
    per_class = np.full(num_classes, np.nan)
    for c in np.unique(labels):
        per_class[c] = top1[labels == c].mean()
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    log_probs = log_softmax(scores)
    confidence = np.exp(log_probs.max(axis=1))  # the predicted class's softmax probability
    tp = np.diag(confusion)
    counted = (confusion.sum(axis=0) + confusion.sum(axis=1)) > 0
    prf = precision_recall_f1(tp, confusion.sum(axis=0) - tp, confusion.sum(axis=1) - tp, counted)
    return {
        "num_videos": len(scores),
        "loss": float(-log_probs[np.arange(len(labels)), labels].mean()),
        "top1": float(top1.mean()),
        "top5": float(topk.mean()),
        "top1_ci95": wilson_interval(int(top1.sum()), len(labels)),
        "top5_ci95": wilson_interval(int(topk.sum()), len(labels)),
        "mean_class_accuracy": float(np.nanmean(per_class)),
        "mean_class_accuracy_ci95": mean_class_accuracy_interval(top1, labels, num_classes),
        "per_class_accuracy": per_class.tolist(),
        "confusion_matrix": confusion.tolist(),
        **prf,
        "most_confused": most_confused(confusion),
        **calibration(confidence, top1),
        "per_video": {
            "label": labels.tolist(),
            "predicted": predicted.tolist(),
            "confidence": np.round(confidence.astype(np.float64), 6).tolist(),  # 0.916717
        },
    }


def multi_label_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Metrics of logits ``scores (N, K)`` against multi-hot ``labels (N, K)``: ``loss``
    (sigmoid binary cross-entropy), ``mAP`` and ``per_class_ap``
    (:func:`mean_average_precision`), ``mAP_ci95`` (a bootstrap interval over videos,
    :func:`~vjax.evaluate.uncertainty.map_interval`), ``top1`` (the top class is a positive;
    a video with no positive counts as a miss, ties go to the lower class id) and its Wilson
    interval ``top1_ci95``,
    :func:`precision_recall_f1` of ``sigmoid > 0.5`` over every class (scikit-learn's
    multi-label convention), :func:`calibration` of every entry's sigmoid, ``per_video``
    (the ``label`` and ``scores`` arrays, for paired comparisons) and ``pr_curves``:
    micro-averaged and per-class precision at evenly spaced recalls. Refuses
    non-finite rows (:func:`check_scores`)."""
    check_scores(scores)
    labels = np.asarray(labels) > 0
    m_ap, aps = mean_average_precision(scores, labels)
    predicted = scores > 0.0  # sigmoid > 0.5
    tp = (predicted & labels).sum(axis=0)
    fp = (predicted & ~labels).sum(axis=0)
    fn = (~predicted & labels).sum(axis=0)
    prf = precision_recall_f1(tp, fp, fn, np.ones(scores.shape[1], bool))
    top_hits = labels[np.arange(len(scores)), np.argmax(scores, axis=1)]  # top class positive
    return {
        "num_videos": len(scores),
        "loss": binary_cross_entropy(scores, labels),
        "mAP": m_ap,
        "mAP_ci95": map_interval(scores, labels),
        "per_class_ap": aps,
        "top1": float(top_hits.mean()),
        "top1_ci95": wilson_interval(int(top_hits.sum()), len(top_hits)),
        **prf,
        **calibration(sigmoid(scores), labels),
        "per_video": {"label": labels, "scores": scores},  # arrays; written apart (report.py)
        "pr_curves": {
            "micro": interpolated_precision(scores.ravel(), labels.ravel(), PR_POINTS),
            "per_class": [
                interpolated_precision(scores[:, k], labels[:, k], CLASS_PR_POINTS)
                for k in range(scores.shape[1])
            ],
        },
    }


def classification_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """:func:`single_label_metrics` of integer ``labels (N,)``, :func:`multi_label_metrics`
    of multi-hot ``labels (N, K)``. Raises :class:`MetricInputError` for a row of ``scores``
    with a NaN, a +inf or only -inf (:func:`check_scores`), or an integer label outside
    ``0 .. K - 1`` (:func:`check_labels`)."""
    scores = np.asarray(scores, np.float32)
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape != scores.shape:  # e.g. a (N, 1) column of ids
        raise MetricInputError(
            f"labels of shape {labels.shape} for scores {scores.shape}: give class ids (N,) or "
            f"multi-hot labels of the scores' shape"
        )
    if labels.ndim == 1 and not np.array_equal(labels, np.round(labels)):
        raise MetricInputError(f"single-label labels are class ids, got {labels[:5]}...")
    if labels.ndim == 2:
        return multi_label_metrics(scores, labels)
    return single_label_metrics(scores, labels.astype(np.int64))


def task_metrics(scores: np.ndarray, labels: np.ndarray, class_names: ClassNames) -> dict:
    """:func:`classification_metrics` for one task (``class_names`` a list). Several tasks
    (``{task: names}``; ``scores`` concatenated over the tasks' classes, ``labels`` one column
    per task): each task's metrics under ``tasks``, the summed ``loss``, and ``top1`` / ``top5``
    of the joint prediction (Epic-Kitchens' action accuracy: a video counts when every task is
    right; the top 5 are the most likely label combinations under the product of the tasks'
    softmaxes) with their 95% intervals (``top1_ci95``, ``top5_ci95``)."""
    if not is_multitask(class_names):
        return classification_metrics(scores, labels)
    sizes = head_sizes(class_names)
    per_task = split_classes(np.asarray(scores, np.float32), sizes)
    columns = label_columns(np.asarray(labels), sizes)
    tasks = {t: _one_task(t, per_task[t], columns[t]) for t in sizes}
    joint = {f"top{k}": joint_topk_accuracy(per_task, columns, k) for k in (1, 5)}
    n = len(scores)
    return {
        "num_videos": n,
        "loss": float(sum(m["loss"] for m in tasks.values())),
        **joint,
        **{f"{key}_ci95": wilson_interval(round(value * n), n) for key, value in joint.items()},
        "tasks": tasks,
    }


def _one_task(task: str, scores: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """:func:`classification_metrics` of one task of several; its input errors name the task."""
    try:
        return classification_metrics(scores, labels)
    except MetricInputError as e:
        raise MetricInputError(f"task {task!r}: {e}") from e


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


def frame_level_scores(
    view_scores: np.ndarray, view_times: np.ndarray, frame_times: np.ndarray
) -> np.ndarray:
    """``(N * F, K)``: each of ``F`` frames of every video scored by the test view(s) whose
    centre is nearest to it (the highest over the crops at that time), video by video.
    ``view_scores (N, V, K)``, ``view_times (N, V)`` and ``frame_times (N, F)`` seconds."""
    distance = np.abs(frame_times[:, :, None] - view_times[:, None, :])  # (N, F, V)
    nearest = np.isclose(distance, distance.min(axis=2, keepdims=True))
    scores = np.where(nearest[..., None], view_scores[:, None], -np.inf).max(axis=2)
    return scores.reshape(-1, view_scores.shape[-1])


def frame_level_map(
    view_scores: np.ndarray,
    view_times: np.ndarray,
    frame_times: np.ndarray,
    frame_labels: np.ndarray,
) -> tuple[float, list]:
    """Charades' localisation mAP (``Charades_v1_localize``): every video is scored at
    ``F`` evenly spaced frames (:func:`frame_level_scores`) against the actions under way at
    that frame, ``frame_labels (N, F, K)`` multi-hot; :func:`mean_average_precision` over all
    ``N * F`` frames."""
    scores = frame_level_scores(view_scores, view_times, frame_times)
    return mean_average_precision(scores, frame_labels.reshape(scores.shape))
