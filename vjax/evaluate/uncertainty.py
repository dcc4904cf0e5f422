"""How far an accuracy can be trusted: the 95% interval of one run's top-1 on a test set, and
whether two runs scored on the same videos really differ (the question after an ablation).

A test split is a sample of videos, so a top-1 of 0.752 on 2,000 of them is 0.733-0.771 at
95% (Wilson's score interval, which stays inside [0, 1] and is right for few videos too). Two
runs on the same videos are compared pair by pair: only the videos one model gets right and
the other wrong carry information, and McNemar's exact test says how likely so lopsided a
split of them would be if the models were equally good.

>>> lo, hi = wilson_interval(1504, 2000)            # (0.733, 0.771)
>>> paired_top1(a["per_video"], b["per_video"])     # B - A, the discordant counts, p-value
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

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


def paired_top1(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any] | None:
    """Two runs' top-1 compared video by video, from their results' ``per_video`` (``label``
    and ``predicted`` per video, in the split's order): ``videos``, ``difference`` (B - A),
    ``only_a`` / ``only_b`` (videos only A / only B got right) and McNemar's ``p_value``.
    None when the two did not score the same videos (other counts or labels)."""
    labels = np.asarray(a["label"])
    if labels.shape != np.shape(b["label"]) or not np.array_equal(labels, b["label"]):
        return None
    right_a = np.asarray(a["predicted"]) == labels
    right_b = np.asarray(b["predicted"]) == labels
    only_a, only_b = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
    return {
        "videos": len(labels),
        "difference": (only_b - only_a) / len(labels),
        "only_a": only_a,
        "only_b": only_b,
        "p_value": mcnemar_exact_p(only_a, only_b),
    }
