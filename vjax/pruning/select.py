"""Which units to keep, and the variables without the others.

Scores are compared within a kind of unit (heads with heads, channels with channels);
``ratio`` of each kind's units go, the lowest first. So a layer may end narrower than its
neighbours. An attention or MLP sublayer may lose every unit (:data:`REMOVABLE`: the block's
residual carries the tokens past it, and only its output bias is left); every other layer keeps
at least one unit per part. Weight magnitudes carry each layer's own scale, so each layer's are
divided by their mean first; Taylor scores estimate the change of the loss itself and are
compared as they are: layers differ in how much they matter. (The demo
ViViT: silencing one head of its first block raises the training loss by 0.09-0.21, one of its
last block by 0.002-0.01; normalised per layer, Taylor kept one head of the first block and
two of the last, and the pruned model tested at 0.809 against 0.909 unnormalised.)

With ``granularity="sublayer"`` (``vjax prune --granularity=sublayer``) attention and MLP
sublayers are kept or removed whole, the lowest summed scores first: narrowing a layer keeps
every one of its ops, and at small sizes an op's fixed cost, not its FLOPs, sets the latency.
The demo ViViT at batch 1 on 2 CPU cores: half its heads and MLP units pruned unit by unit
(the attention of its last two blocks, narrower MLPs) compiles to 79 fusions (original 115) and ran
1.41-1.48x faster over five timings; the same share removed as four whole sublayers (the same
FLOPs), 63 fusions and 1.56-1.63x. Magnitudes, which carry each layer's scale, do not rank
whole sublayers: this granularity takes Taylor scores.

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
# Kinds of unit whose layer may be removed whole: residual sublayers of a transformer block.
# (Half of the demo ViViT's 12 heads silenced: all six of its last two blocks, 96.1% of 512
# training clips right; two, two, one and one per block, 93.2%.)
REMOVABLE = ("heads", "mlp")
GRANULARITIES = ("unit", "sublayer")


def minimum_units(group: UnitGroup) -> int:
    """The fewest units ``group`` may keep: 0 for :data:`REMOVABLE` kinds, else one per part."""
    return 0 if group.kind in REMOVABLE else group.parts


def round_to_multiple(count: int, group: UnitGroup, multiple: int) -> int:
    """``count`` to the nearest multiple of ``multiple`` (at least one, at most the group's
    size). Heads, groups no larger than ``multiple`` and a removed layer (0) keep their count."""
    if multiple <= 1 or group.kind == "heads" or group.size <= multiple or count == 0:
        return count
    return min(group.size, max(multiple, multiple * round(count / multiple)))


def keep_counts(
    groups: Sequence[UnitGroup],
    scores: Sequence[np.ndarray],
    ratio: float,
    multiple: int = 1,
    per_layer: bool = True,
    granularity: str = "unit",
) -> list[int]:
    """How many units each group keeps when ``ratio`` of every kind's units are removed,
    rounded to a ``multiple`` (channels, MLP and recurrent units; see :data:`MULTIPLE`).
    ``per_layer``: each group's scores divided by their mean first (weight magnitudes).
    ``granularity="sublayer"``: :data:`REMOVABLE` groups keep all their units or none
    (:func:`whole_sublayers`)."""
    counts = [minimum_units(g) for g in groups]
    for kind in {g.kind for g in groups}:
        members = [i for i, g in enumerate(groups) if g.kind == kind]
        if granularity == "sublayer" and kind in REMOVABLE:
            kept = whole_sublayers(
                [groups[i] for i in members], [scores[i] for i in members], ratio
            )
            for i, count in zip(members, kept, strict=True):
                counts[i] = count
            continue
        total = sum(groups[i].size for i in members)
        budget = total - round(ratio * total) - sum(counts[i] for i in members)
        ranked = []
        for i in members:
            parts = groups[i].parts
            mean = scores[i].mean() if per_layer else 1.0
            normalised = scores[i] / mean if mean > 0 else np.zeros_like(scores[i])
            # A group of several parts (ViViT model 4's two head groups) keeps as many units
            # of each (kept_units): its candidates are blocks of the k-th best of every part,
            # scored by their mean, so rounding never drops units the ranking counted.
            best = np.sort(normalised.reshape(parts, -1), axis=1)[:, ::-1].mean(axis=0)
            # Every group's best ``counts[i]`` units are kept already; the rest compete.
            for block_score in best[counts[i] // parts :]:
                ranked.append((-block_score, i))
        for _, i in sorted(ranked):
            if budget >= groups[i].parts:
                counts[i] += groups[i].parts
                budget -= groups[i].parts
    whole = granularity == "sublayer"  # kept whole: no rounding narrows them afterwards
    counts = [
        c if whole and g.kind in REMOVABLE else round_to_multiple(c, g, multiple)
        for g, c in zip(groups, counts, strict=True)
    ]
    return [max(minimum_units(g), c - c % g.parts) for g, c in zip(groups, counts, strict=True)]


def whole_sublayers(
    groups: Sequence[UnitGroup], scores: Sequence[np.ndarray], ratio: float
) -> list[int]:
    """Units kept per group when groups go whole, the lowest sum of its units' scores first,
    each only if that brings the removed units strictly closer to ``ratio`` of all of them (so
    two equal sublayers at ratio 0.25 both stay). Summed Taylor scores rank sublayers by their
    units' squared gate derivatives, a proxy for, not the estimate of, removing them whole."""
    target = ratio * sum(g.size for g in groups)
    counts, removed = [g.size for g in groups], 0
    for i in sorted(range(len(groups)), key=lambda i: (float(np.sum(scores[i])), i)):
        if abs(removed + groups[i].size - target) < abs(removed - target):
            counts[i], removed = 0, removed + groups[i].size
    return counts


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
    """A copy of ``variables`` with only the ``kept`` units of each group; a group that keeps
    none loses those arrays altogether (its layer declares only its output bias)."""
    out = _plain(copy.copy(variables))
    for group, indices in kept.items():
        for s in group.slices:
            parent = get_path(out[s.collection], s.path[:-1])
            parent[s.path[-1]] = np.take(parent[s.path[-1]], indices, axis=s.axis)
    return _without_empty(out)


def _without_empty(tree: Any) -> Any:
    """``tree`` without its zero-size arrays and the mappings they leave empty."""
    if not isinstance(tree, Mapping):
        return tree
    out = {}
    for key, value in tree.items():
        value = _without_empty(value)
        if (isinstance(value, Mapping) and value) or (
            not isinstance(value, Mapping) and np.size(value)
        ):
            out[key] = value
    return out
