"""Which units to keep, and the variables without the others.

Scores are compared within a kind of unit (heads with heads, channels with channels), each
layer's divided by its mean so that layers of different scale compete fairly (Molchanov et al.
2019 normalise per layer likewise); ``ratio`` of each kind's units go, the lowest first, and
every layer keeps at least one unit per part. So a layer may end narrower than its neighbours.

Widths are then rounded to a multiple of 8 (:data:`MULTIPLE`, ``vjax prune --multiple``):
CPU and GPU kernels run fastest on such channel counts. Measured on 2 CPU cores, the demo
R(2+1)D pruned by half ran at 27-44 ms per clip with the exact counts (no faster than the
40-45 ms of the original) and at 19-20 ms rounded to multiples of 8.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vjax.pruning.units import UnitGroup, get_path

MULTIPLE = 8


def round_to_multiple(count: int, group: UnitGroup, multiple: int) -> int:
    """``count`` to the nearest multiple of ``multiple`` (at least one, at most the group's
    size). Heads and groups no larger than ``multiple`` keep their count."""
    if multiple <= 1 or group.kind == "heads" or group.size <= multiple:
        return count
    return min(group.size, max(multiple, multiple * round(count / multiple)))


def keep_counts(
    groups: Sequence[UnitGroup], scores: Sequence[np.ndarray], ratio: float, multiple: int = 1
) -> list[int]:
    """How many units each group keeps when ``ratio`` of every kind's units are removed,
    rounded to a ``multiple`` (channels, MLP and recurrent units; see :data:`MULTIPLE`)."""
    counts = [g.parts for g in groups]
    for kind in {g.kind for g in groups}:
        members = [i for i, g in enumerate(groups) if g.kind == kind]
        total = sum(groups[i].size for i in members)
        budget = total - round(ratio * total) - sum(counts[i] for i in members)
        ranked = []
        for i in members:
            mean = scores[i].mean()
            normalised = scores[i] / mean if mean > 0 else np.zeros_like(scores[i])
            # Every group's best ``parts`` units are kept already; the rest compete.
            for unit_score in np.sort(normalised)[::-1][groups[i].parts :]:
                ranked.append((-unit_score, i))
        for _, i in sorted(ranked)[: max(budget, 0)]:
            counts[i] += 1
    counts = [round_to_multiple(c, g, multiple) for g, c in zip(groups, counts, strict=True)]
    return [max(g.parts, c - c % g.parts) for g, c in zip(groups, counts, strict=True)]


def kept_units(group: UnitGroup, score: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` best units of ``group`` (the best ``count / parts`` of each part), in
    their original order."""
    per_part, part_size = count // group.parts, group.size // group.parts
    kept = []
    for p in range(group.parts):
        part = np.arange(p * part_size, (p + 1) * part_size)
        order = sorted(part, key=lambda j: (-score[j], j))
        kept.extend(sorted(order[:per_part]))
    return np.asarray(kept, np.int64)


def _plain(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {k: _plain(v) for k, v in tree.items()}
    return np.asarray(tree)


def remove_units(variables: Mapping, kept: Mapping[UnitGroup, np.ndarray]) -> dict:
    """A copy of ``variables`` with only the ``kept`` units of each group."""
    out = _plain(copy.copy(variables))
    for group, indices in kept.items():
        for s in group.slices:
            parent = get_path(out[s.collection], s.path[:-1])
            parent[s.path[-1]] = np.take(parent[s.path[-1]], indices, axis=s.axis)
    return out
