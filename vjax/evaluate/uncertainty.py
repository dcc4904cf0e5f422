"""How far a metric can be trusted: the 95% interval of one run's top-1, mean class accuracy
or mAP on a test set, and whether two runs scored on the same videos really differ (the
question after an ablation).

A test split is a sample of videos, so a top-1 of 0.752 on 2,000 of them is 0.733-0.770 at
95% (Wilson's score interval, which stays inside [0, 1] and is right for few videos too). Two
runs on the same videos are compared pair by pair: only the videos one model gets right and
the other wrong carry information, and McNemar's exact test says how likely so lopsided a
split of them would be if the models were equally good. Metrics without a formula (mAP, mean
class accuracy) get a bootstrap over the videos: 1,000 resamples, each video weighted by how
often it is drawn, and the basic interval; two runs are resampled alike for their difference.

>>> lo, hi = wilson_interval(1504, 2000)            # (0.733, 0.770)
>>> paired_top1(a["per_video"], b["per_video"])     # B - A, the discordant counts, p-value
>>> lo, hi = map_interval(scores, positives)        # scores, positives (N, K)
>>> paired_map(a["per_video"], b["per_video"])      # B - A of mAP and its interval
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from scipy import sparse

Z95 = 1.959963984540054  # the standard normal's 97.5th percentile


def wilson_interval(successes: int, total: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval (95% for the default ``z``) of a proportion: ``successes`` of
    ``total`` independent trials (videos right of the videos scored). ``(nan, nan)`` for none."""
    if total == 0:
        return math.nan, math.nan
    p = successes / total
    shrink = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / shrink
    half = z / shrink * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact_p(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: the chance, if both models were equally good, of a
    split of the ``only_a + only_b`` discordant videos at least as lopsided as this one
    (a binomial test of ``only_b`` against one half; 1.0 when no video is discordant).
    Summed in log space, so tens of thousands of videos are exact to float precision."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    terms = [
        math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
        for k in range(min(only_a, only_b) + 1)
    ]
    top = max(terms)
    log_tail = top + math.log(sum(math.exp(t - top) for t in terms)) - n * math.log(2)
    return min(1.0, 2 * math.exp(log_tail))


def discordant(a: Mapping[str, Any], b: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """Which videos only A and only B got right (two boolean rows), from two results'
    ``per_video`` as :func:`paired_top1` reads them; None when the labels differ."""
    labels = np.asarray(a["label"])
    if labels.shape != np.shape(b["label"]) or not np.array_equal(labels, b["label"]):
        return None
    right_a, right_b = (
        (np.asarray(run["predicted"]) == labels).reshape(len(labels), -1).all(axis=1)
        for run in (a, b)
    )
    return right_a & ~right_b, right_b & ~right_a


def paired_top1(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any] | None:
    """Two runs' top-1 compared video by video, from their results' ``per_video`` (``label``
    and ``predicted`` per video, in the split's order; or one row per video of several tasks'
    labels and predictions, right when every task is): ``videos``, ``difference`` (B - A),
    ``only_a`` / ``only_b`` (videos only A / only B got right) and McNemar's ``p_value``.
    None when the two did not score the same videos (other counts or labels)."""
    split = discordant(a, b)
    if split is None:
        return None
    only_a, only_b = (int(rows.sum()) for rows in split)
    return {
        "videos": len(split[0]),
        "difference": (only_b - only_a) / len(split[0]),
        "only_a": only_a,
        "only_b": only_b,
        "p_value": mcnemar_exact_p(only_a, only_b),
    }


BOOTSTRAP_RESAMPLES = 1000  # resamples of the test videos behind a bootstrap interval
BOOTSTRAP_SEED = 0  # fixed: the same result always gets the same interval


def resample_counts(
    videos: int, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> np.ndarray:
    """``(videos, resamples)`` float32: how many times each video is drawn when ``videos`` of
    them are drawn with replacement, once per bootstrap resample. A metric of a resample is the
    metric with each video weighted by its count (a video drawn twice is two tied copies).
    One resample's draws at a time: 64,000 videos take 0.26 GB, not all draws at once."""
    rng = np.random.default_rng(seed)
    counts = np.empty((videos, resamples), np.float32)  # exact integers below 2**24 videos
    for r in range(resamples):
        counts[:, r] = np.bincount(rng.integers(0, videos, videos), minlength=videos)
    return counts


def basic_interval(
    estimate: float, replicates: np.ndarray, low: float = 0.0, high: float = 1.0
) -> tuple[float, float]:
    """The basic (reverse-percentile) 95% bootstrap interval ``2 * estimate - q97.5 ..
    2 * estimate - q2.5`` of ``replicates`` (NaN ones, resamples where the metric is undefined,
    left out), clipped to the metric's range ``[low, high]``. Unlike the percentile interval it
    corrects for the metric's bias: average precision with few positives per class reads high
    on a test set, and higher still on a resample (its duplicated positives), so percentiles
    lie above the true mAP."""
    replicates = replicates[~np.isnan(replicates)]
    if replicates.size == 0 or math.isnan(estimate):
        return math.nan, math.nan
    lo, hi = np.percentile(replicates, [2.5, 97.5])
    return max(low, 2 * estimate - float(hi)), min(high, 2 * estimate - float(lo))


def weighted_average_precisions(
    scores: np.ndarray,
    positives: np.ndarray,
    counts: np.ndarray,
    video: np.ndarray | None = None,
) -> np.ndarray:
    """One class's average precision (as ``metrics.average_precision``: tied scores are one
    threshold) with video ``i`` counted ``counts[i, r]`` times, for every column ``r`` of
    ``counts (N, R)``: ``(R,)``, NaN where no positive is counted. Rows of ``scores`` are
    videos, or with ``video`` (each row's video) several rows per video (Charades' frames),
    all counted as often as their video. One sparse product sums the counts of the rows
    ranked between consecutive thresholds that hold a positive."""
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    hits = np.flatnonzero(np.asarray(positives, bool)[order])  # the positives' ranks
    if hits.size == 0:
        return np.full(counts.shape[1], np.nan)
    new = ranked[1:] != ranked[:-1]  # not np.diff: inf - inf is NaN
    group = np.r_[0, np.cumsum(new)]  # each rank's tie group
    group_end = np.r_[np.flatnonzero(new), len(ranked) - 1]
    hit_groups = group[hits]
    closes = group_end[np.unique(hit_groups)]  # last rank of each threshold with a positive
    thresholds = len(closes)
    segment = np.searchsorted(closes, np.arange(closes[-1] + 1))  # ranks up to the last one
    rows = np.r_[segment, thresholds + np.searchsorted(closes, group_end[hit_groups])]
    owner = order if video is None else np.asarray(video)[order]
    columns = np.r_[owner[: closes[-1] + 1], owner[hits]]
    pick = sparse.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, columns)),
        shape=(2 * thresholds, len(counts)),
    )
    sums = np.asarray(pick @ counts, np.float64)  # (2 * thresholds, R)
    seen = np.cumsum(sums[:thresholds], axis=0)  # videos at or above each threshold
    found = sums[thresholds:]  # positives at each threshold
    true_positives = np.cumsum(found, axis=0)
    precision = np.divide(true_positives, seen, out=np.zeros_like(seen), where=seen > 0)
    total = true_positives[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (found * precision).sum(axis=0) / total, np.nan)


def map_replicates(
    scores: np.ndarray,
    positives: np.ndarray,
    counts: np.ndarray,
    video: np.ndarray | None = None,
) -> tuple[float, np.ndarray]:
    """``(mAP, its value on each resample of counts (N, R))`` of ``scores (N, K)`` against
    multi-hot ``positives (N, K)`` (rows: videos, or each row's ``video`` given): a resample's
    mAP is the mean over the classes with a positive in it, as
    ``metrics.mean_average_precision`` leaves out classes without one. The classes run on
    threads, one per usable core (the sparse products release the GIL; AudioSet's 20,000 x 527
    took ~22 s on one core), and are summed in class order: the same numbers on any machine."""
    whole = np.ones((len(counts), 1), np.float32)

    def one_class(k: int) -> tuple[float, np.ndarray]:
        column, hit = scores[:, k], positives[:, k]
        estimate = weighted_average_precisions(column, hit, whole, video)[0]
        return estimate, weighted_average_precisions(column, hit, counts, video)

    classes = np.flatnonzero(np.any(positives, axis=0))  # a class never positive is NaN always
    estimates, sums, valued_classes = [], np.zeros(counts.shape[1]), np.zeros(counts.shape[1])
    with ThreadPoolExecutor(max(1, min(len(classes), usable_cores()))) as pool:
        for estimate, aps in pool.map(one_class, classes):
            estimates.append(estimate)
            valued = ~np.isnan(aps)
            sums[valued] += aps[valued]
            valued_classes += valued
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.mean(estimates)) if estimates else math.nan, sums / valued_classes


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def map_interval(
    scores: np.ndarray,
    positives: np.ndarray,
    resamples: int = BOOTSTRAP_RESAMPLES,
    video: np.ndarray | None = None,
) -> tuple[float, float]:
    """95% bootstrap interval over videos (:func:`basic_interval`) of the mean average
    precision of ``scores (N, K)`` against multi-hot ``positives (N, K)``
    (:func:`map_replicates`). With ``video`` (each row's video index, e.g. the frames of
    Charades' localisation mAP) a video's rows are drawn together: they are not independent."""
    videos = len(scores) if video is None else int(np.max(video)) + 1
    counts = resample_counts(videos, resamples)
    return basic_interval(*map_replicates(scores, positives, counts, video))


def paired_map(
    a: Mapping[str, Any], b: Mapping[str, Any], resamples: int = BOOTSTRAP_RESAMPLES
) -> dict[str, Any] | None:
    """Two runs' mAP compared on the same videos, from their results' per-video ``scores``
    and multi-hot ``label`` arrays: ``videos``, ``difference`` (B - A) and ``ci95``, its 95%
    interval from the same resamples of the videos for both (:func:`basic_interval`): an
    interval that excludes 0 says B - A is more than the luck of which videos the test holds.
    None when the two did not score the same videos (other counts or labels)."""
    labels = np.asarray(a["label"], bool)
    if labels.shape != np.shape(b["label"]) or not np.array_equal(labels, b["label"]):
        return None
    counts = resample_counts(len(labels), resamples)
    (map_a, replicates_a), (map_b, replicates_b) = (
        map_replicates(np.asarray(run["scores"], np.float32), labels, counts) for run in (a, b)
    )
    difference = map_b - map_a
    return {
        "videos": len(labels),
        "difference": difference,
        "ci95": basic_interval(difference, replicates_b - replicates_a, -1.0, 1.0),
    }


def mean_class_accuracy_interval(
    correct: np.ndarray, labels: np.ndarray, num_classes: int,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> tuple[float, float]:  # fmt: skip
    """95% bootstrap interval over videos (:func:`basic_interval`) of the mean class accuracy:
    the mean, over the classes with a video (in the test set; in each resample), of the share
    of its videos ``correct``."""
    counts = resample_counts(len(labels), resamples)
    pick = sparse.csr_matrix(
        (np.ones(len(labels), np.float32), (labels, np.arange(len(labels)))),
        shape=(num_classes, len(labels)),
    )
    videos = np.asarray(pick @ counts, np.float64)  # (K, R)
    pick.data = np.asarray(correct, np.float32)[pick.indices]  # each class's videos right
    right = np.asarray(pick @ counts, np.float64)
    present = videos > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        replicates = np.where(present, right / videos, 0.0).sum(axis=0) / present.sum(axis=0)
    per_class = np.bincount(labels, weights=correct, minlength=num_classes)
    sizes = np.bincount(labels, minlength=num_classes)
    estimate = float(np.mean(per_class[sizes > 0] / sizes[sizes > 0]))
    return basic_interval(estimate, replicates)
