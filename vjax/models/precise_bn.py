"""Precise BatchNorm (Wu & Johnson 2021; PySlowFast's ``precise_bn``): before evaluating,
replace the running averages in ``batch_stats`` with the exact mean over N batches of each
BatchNorm layer's batch statistics, measured with the final weights.

The running averages mix statistics of weights from many steps ago; recomputing them removes
that lag (it matters most for short schedules and large learning rates).

>>> batches = (normalize_video(b["video"], mean, std, jnp.float32) for b in train_batches)
>>> variables = precise_batch_stats(model, variables, itertools.islice(batches, 200))
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vjax.models.conv_blocks import BN_MOMENTUM


def _backbone(model: nn.Module) -> dict[str, Any]:
    """The config section of the backbone inside a model (``recurrent_over``), else ``{}``."""
    section = getattr(model, "backbone", None)
    return dict(section) if hasattr(section, "get") else {}


def has_frozen_bn(model: nn.Module) -> bool:
    """Whether the model, or the backbone inside it (``recurrent_over``), keeps its BatchNorm
    statistics fixed (``frozen_bn``)."""
    nested = bool(_backbone(model).get("frozen_bn", False))
    return bool(getattr(model, "frozen_bn", False)) or nested


def unfrozen(model: nn.Module) -> nn.Module:
    """``model`` with ``frozen_bn`` off, its backbone's too: every BatchNorm then measures."""
    if getattr(model, "frozen_bn", False):
        model = model.clone(frozen_bn=False)
    backbone = _backbone(model)
    if backbone.get("frozen_bn", False):
        model = model.clone(backbone={**backbone, "frozen_bn": False})
    return model


def precise_batch_stats(
    model: nn.Module, variables: Mapping[str, Any], batches: Iterable[jax.Array]
) -> dict[str, Any]:
    """``variables`` with ``batch_stats`` set to every BatchNorm layer's population statistics
    over ``batches`` (normalised input clips): the mean of the batch means, and the variance
    about it, ``E[var_b + mean_b^2] - mean^2`` (fvcore's ``update_bn_stats``, which
    PySlowFast calls; the mean of the batch variances alone misses the spread of the batch
    means, about ``var / batch`` too low).

    The model runs in training mode (each BatchNorm normalises with its batch's statistics,
    as in training; ``frozen_bn`` is switched off for this pass, a backbone's too: a frozen
    layer never wrote the zeroed statistics it started from), so one step's update is
    exactly ``(1 - momentum) x`` the batch's statistics. Parameters are untouched.
    """
    if "batch_stats" not in variables:
        raise ValueError("the model has no BatchNorm statistics (no 'batch_stats' collection)")
    model = unfrozen(model)
    zeros = jax.tree.map(jnp.zeros_like, variables["batch_stats"])
    rate = 1.0 - BN_MOMENTUM

    @jax.jit
    def batch_statistics(variables: Mapping[str, Any], video: jax.Array) -> Any:
        inputs = {**variables, "batch_stats": zeros}
        _, state = model.apply(
            inputs, video, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)}
        )
        return _per_layer(_second_moment, jax.tree.map(lambda x: x / rate, state["batch_stats"]))

    total, count = None, 0
    for video in batches:  # variables are an argument, not constants baked into the program
        stats = batch_statistics(variables, video)
        total = stats if total is None else jax.tree.map(jnp.add, total, stats)
        count += 1
    if count == 0:
        raise ValueError("precise_batch_stats needs at least one batch")
    averaged = jax.tree.map(lambda x: x / count, total)
    return {**variables, "batch_stats": _per_layer(_variance, averaged)}


def _per_layer(fn: Any, stats: Any) -> Any:
    """``fn`` applied to each BatchNorm layer's ``{"mean", "var"}`` of a statistics tree."""
    if isinstance(stats, Mapping) and {"mean", "var"} <= set(stats):
        return fn(stats)
    return {k: _per_layer(fn, v) for k, v in stats.items()}


def _second_moment(layer: Mapping[str, Any]) -> dict[str, Any]:
    """A batch's ``{"mean", "var"}`` with ``var`` replaced by ``E[x^2] = var + mean^2``."""
    return {**layer, "var": layer["var"] + jnp.square(layer["mean"])}


def _variance(layer: Mapping[str, Any]) -> dict[str, Any]:
    """The averaged ``{"mean", E[x^2]}`` back to ``{"mean", "var"}``."""
    return {**layer, "var": jnp.maximum(layer["var"] - jnp.square(layer["mean"]), 0.0)}
