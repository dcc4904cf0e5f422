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


def precise_batch_stats(
    model: nn.Module, variables: Mapping[str, Any], batches: Iterable[jax.Array]
) -> dict[str, Any]:
    """``variables`` with ``batch_stats`` set to the average, over ``batches`` (normalised
    input clips), of every BatchNorm layer's batch mean and (biased) batch variance.

    The model runs in training mode (each BatchNorm normalises with its batch's statistics,
    as in training; ``frozen_bn`` is switched off for this pass), from zeroed running
    statistics, so one step's update is exactly ``(1 - momentum) x`` the batch's statistics.
    Parameters are untouched.
    """
    if "batch_stats" not in variables:
        raise ValueError("the model has no BatchNorm statistics (no 'batch_stats' collection)")
    if getattr(model, "frozen_bn", False):
        model = model.clone(frozen_bn=False)
    zeros = jax.tree.map(jnp.zeros_like, variables["batch_stats"])
    rate = 1.0 - BN_MOMENTUM

    @jax.jit
    def batch_statistics(variables: Mapping[str, Any], video: jax.Array) -> Any:
        inputs = {**variables, "batch_stats": zeros}
        _, state = model.apply(
            inputs, video, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)}
        )
        return jax.tree.map(lambda x: x / rate, state["batch_stats"])

    total, count = None, 0
    for video in batches:  # variables are an argument, not constants baked into the program
        stats = batch_statistics(variables, video)
        total = stats if total is None else jax.tree.map(jnp.add, total, stats)
        count += 1
    if count == 0:
        raise ValueError("precise_batch_stats needs at least one batch")
    return {**variables, "batch_stats": jax.tree.map(lambda x: x / count, total)}
