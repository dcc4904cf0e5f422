"""How much each unit matters: ``magnitude`` (weights only) or ``taylor`` (weights and the
training loss's gradients).

* ``magnitude``: the norm of what computes the unit (its BatchNorm scale where it has one, as
  a BatchNorm makes the conv filter's own norm meaningless; else its producing weights) times
  the norm of the weights that read it. A unit whose output nothing reads scores 0.
* ``taylor`` (Molchanov et al. 2019): the squared first-order change of the training loss when
  the unit is switched off, ``(sum over its reading weights of grad * weight)^2``, which is
  ``(dL/dm)^2`` for a gate ``m`` on the unit's output, averaged over training batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import numpy as np

from vjax.pruning.units import Slice, UnitGroup, get_path

CRITERIA = ("magnitude", "taylor")


def per_unit(array: Any, axis: int, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``fn`` over every axis but ``axis`` of ``array`` (moved first and flattened)."""
    moved = np.moveaxis(np.asarray(array, np.float64), axis, 0)
    return fn(moved.reshape(moved.shape[0], -1))


def _sum_squares(tree: Mapping, slices: Iterable[Slice], size: int) -> np.ndarray:
    total = np.zeros(size)
    for s in slices:
        total += per_unit(get_path(tree[s.collection], s.path), s.axis, lambda a: (a**2).sum(1))
    return total


def magnitude(variables: Mapping, group: UnitGroup) -> np.ndarray:
    """Per-unit ``||scale or producer|| * ||consumer||`` of one group."""
    by_role = {
        r: [s for s in group.slices if s.role == r] for r in ("producer", "scale", "consumer")
    }
    source = by_role["scale"] or by_role["producer"]
    return np.sqrt(_sum_squares(variables, source, group.size)) * np.sqrt(
        _sum_squares(variables, by_role["consumer"], group.size)
    )


def gate_derivative(variables: Mapping, grads: Mapping, group: UnitGroup) -> np.ndarray:
    """Per-unit ``sum(grad * weight)`` over the group's consumer slices: ``dL/dm`` of a gate
    ``m`` (at 1) scaling the unit's output."""
    total = np.zeros(group.size)
    for s in group.slices:
        if s.role == "consumer":
            w, g = get_path(variables[s.collection], s.path), get_path(grads, s.path)
            total += per_unit(np.asarray(w) * np.asarray(g), s.axis, lambda a: a.sum(1))
    return total


def taylor(
    variables: Mapping,
    groups: list[UnitGroup],
    loss: Callable[[Any, Any], jax.Array],
    batches: Iterable[Any],
) -> list[np.ndarray]:
    """Per group, the per-unit Taylor importance averaged over ``batches``; ``loss(params,
    batch)`` is the training loss (the checkpoint's objective, in training mode)."""
    grad_fn = jax.jit(jax.grad(loss))
    totals = [np.zeros(g.size) for g in groups]
    count = 0
    for batch in batches:
        grads = jax.device_get(grad_fn(variables["params"], batch))
        for total, group in zip(totals, groups, strict=True):
            total += gate_derivative(variables, grads, group) ** 2
        count += 1
    if not count:
        raise ValueError("taylor scores need at least one training batch")
    return [t / count for t in totals]
