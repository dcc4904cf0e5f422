"""Refitting the weights that read a pruned layer, so its output stays what it was.

Removing heads or MLP units takes their contribution out of the layer's output. The layer's
consumer (the attention's ``out_kernel``, the MLP's ``fc2``) is linear in what it reads, so the
kept units' weights and the bias can be solved for by least squares to reproduce the original
output on calibration clips: with ``a`` the consumer's input (every unit, plus a constant 1)
and ``G = E[a a^T]`` its Gram matrix, the refit weights of the kept set ``K`` are
``(G_KK + eps I)^-1 G_K: [W; b]`` (Kwon et al. 2022, "A Fast Post-Training Pruning Framework for
Transformers", mask tuning). Only ``G`` is kept, accumulated over batches, so memory does not
grow with the calibration set. Convolutional groups are not refit: their BatchNorm statistics
are measured again instead (:func:`vjax.pruning._recomputed_batch_stats`).

>>> grams = consumer_grams(apply_fn, variables, inputs)      # {group key: (n + 1, n + 1)}
>>> refit = refit_consumers(variables, groups, kept, grams)  # full-width arrays, refit
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vjax.pruning.units import UnitGroup, get_path

# Where Attention and Mlp sow their consumer's input, one row of features per token (only when
# this collection is mutable): ``COLLECTION/<layer path>/NAME``.
COLLECTION = "consumer_inputs"
NAME = "consumer_input"
# Ridge term relative to the Gram matrix's mean diagonal: keeps the solve well conditioned
# where kept units are nearly collinear, without pulling the weights measurably.
RIDGE = 1e-6


def consumer_grams(
    apply_fn: Callable[[Any, Any], Any], variables: Mapping, inputs: Iterable[Any]
) -> dict[str, np.ndarray]:
    """Per sown layer (``"encoder/block00/attention"``), the Gram matrix of its consumer's input
    with a constant 1 appended, averaged over every token of every clip of ``inputs``.
    ``apply_fn(variables, x)`` runs the model in eval mode with :data:`COLLECTION` mutable
    (``model.apply(variables, x, train=False, mutable=[COLLECTION])``); no layer sown: ``{}``."""

    @jax.jit
    def grams(variables, x):
        _, state = apply_fn(variables, x)
        out = {}
        for layer, values in _sown(state.get(COLLECTION, {})):
            a = jnp.concatenate([v.reshape(-1, v.shape[-1]) for v in values]).astype(jnp.float32)
            a = jnp.concatenate([a, jnp.ones((a.shape[0], 1), a.dtype)], axis=1)
            out[layer] = (a.T @ a, a.shape[0])
        return out

    totals: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for x in inputs:
        for layer, (gram, n) in jax.device_get(grams(variables, x)).items():
            totals[layer] = totals.get(layer, 0.0) + np.asarray(gram, np.float64)
            counts[layer] = counts.get(layer, 0) + int(n)
    return {layer: totals[layer] / counts[layer] for layer in totals}


def _sown(tree: Mapping, path: tuple[str, ...] = ()) -> Iterator[tuple[str, tuple]]:
    """``(layer path, its sown arrays)`` for every :data:`NAME` entry of a sown collection."""
    for key, value in tree.items():
        if key == NAME:
            yield "/".join(path), tuple(value)
        elif isinstance(value, Mapping):
            yield from _sown(value, (*path, key))


def refit_consumers(
    variables: Mapping,
    groups: Iterable[UnitGroup],
    kept: Mapping[UnitGroup, np.ndarray],
    grams: Mapping[str, np.ndarray],
) -> dict:
    """A copy of the full-width ``variables`` whose consumers of every group that lost units
    and has a Gram matrix are refit for the group's ``kept`` units (the removed units' rows are
    left as they were; :func:`vjax.pruning.select.remove_units` drops them next)."""
    params = jax.tree.map(np.array, dict(variables["params"]))
    for group in groups:
        if group.key not in grams or len(kept[group]) == group.size:
            continue  # not sown (a conv), or nothing removed: left exactly as it was
        consumer = next(s for s in group.slices if s.role == "consumer")
        original = get_path(params, consumer.path)
        kernel = np.asarray(original, np.float64)
        bias_path = _bias_path(consumer.path)
        bias = np.asarray(get_path(params, bias_path), np.float64)
        per_unit = int(np.prod(kernel.shape[1:-1]))
        stacked = np.concatenate([kernel.reshape(-1, kernel.shape[-1]), bias[None]], axis=0)
        rows = np.concatenate(
            [(kept[group][:, None] * per_unit + np.arange(per_unit)).ravel(), [len(stacked) - 1]]
        )
        gram = grams[group.key]
        if gram.shape[0] != len(stacked):
            raise ValueError(
                f"{group.key}: the calibration input has {gram.shape[0] - 1} features, its "
                f"consumer {'/'.join(consumer.path)} reads {len(stacked) - 1}"
            )
        lhs = gram[np.ix_(rows, rows)]
        lhs = lhs + RIDGE * np.trace(lhs) / len(rows) * np.eye(len(rows))
        solved = np.linalg.solve(lhs, gram[rows] @ stacked)
        new = stacked.copy()
        new[rows] = solved
        dtype = original.dtype
        get_path(params, consumer.path[:-1])[consumer.path[-1]] = (
            new[:-1].reshape(kernel.shape).astype(dtype)
        )
        get_path(params, bias_path[:-1])[bias_path[-1]] = new[-1].astype(dtype)
    return {**variables, "params": params}


def _bias_path(kernel_path: tuple[str, ...]) -> tuple[str, ...]:
    """The bias beside a consumer kernel: ``out_kernel`` -> ``out_bias``, ``fc2/kernel`` ->
    ``fc2/bias``."""
    last = kernel_path[-1]
    return (*kernel_path[:-1], "bias" if last == "kernel" else last.replace("_kernel", "_bias"))
