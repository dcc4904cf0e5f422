"""Dynamic loss scaling for float16 compute (``train.dtype="float16"``), by flax's maintained
``DynamicScale``.

float16 has 5 exponent bits: small gradients underflow to zero and large ones overflow. The
loss is multiplied by a scale before differentiation and the gradients divided by it after.
A step whose gradients are not finite is skipped (parameters, optimiser and BatchNorm state
stay as they were) and the scale halves; after :data:`GROWTH_INTERVAL` finite steps in a row
it doubles. The scale and its count of finite steps live in the train state, so checkpoints
keep them and a resumed run continues exactly. bfloat16 has float32's range and needs none of
this.

>>> scale = initial_loss_scale(jnp.float16)            # None for float32 / bfloat16
>>> scale, finite, (loss, aux), grads = scaled_value_and_grad(loss_fn, scale)(params)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax.training.dynamic_scale import DynamicScale

INITIAL_SCALE = 2.0**15
GROWTH_INTERVAL = 2000  # finite steps in a row before the scale doubles (PyTorch AMP's default)


def initial_loss_scale(dtype: Any, growth_interval: int = GROWTH_INTERVAL) -> DynamicScale | None:
    """A fresh loss scale for float16 compute; None for any other dtype (no scaling)."""
    if jnp.dtype(dtype) != jnp.dtype(jnp.float16):
        return None
    return DynamicScale(
        # flax doubles on the finite step after growth_interval of them (fin_steps ==
        # growth_interval), PyTorch's GradScaler and jmp on the growth_interval-th
        growth_interval=growth_interval - 1,
        fin_steps=jnp.zeros((), jnp.int32),
        scale=jnp.asarray(INITIAL_SCALE, jnp.float32),
    )


def scaled_value_and_grad(
    loss_fn: Callable[[Any], tuple[jax.Array, Any]], loss_scale: DynamicScale | None
) -> Callable[[Any], tuple[DynamicScale | None, jax.Array, tuple[jax.Array, Any], Any]]:
    """``jax.value_and_grad(loss_fn, has_aux=True)`` through ``loss_scale``: returns
    ``f(params) -> (new loss_scale, finite, (loss, aux), grads)`` with unscaled loss and
    gradients; without a scale, plain differentiation and ``finite`` always True.

    The gradients have the dtypes of ``params`` either way. flax unscales them in float32,
    which for bfloat16 parameters (``train.param_dtype``) would turn the optimiser's moments
    float32 after one step: twice the memory, a second compilation of the step, and a
    checkpoint whose moments no longer match the state a resumed run restores them into."""
    if loss_scale is None:

        def plain(params):
            value, grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            return None, jnp.array(True), value, grads

        return plain

    scaled = loss_scale.value_and_grad(loss_fn, has_aux=True)

    def in_param_dtypes(params: Any) -> tuple[DynamicScale, jax.Array, tuple[jax.Array, Any], Any]:
        new_scale, finite, value, grads = scaled(params)
        grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, params)
        return new_scale, finite, value, grads

    return in_param_dtypes


def keep_if_finite(finite: jax.Array, new: Any, old: Any) -> Any:
    """``new`` where the step's gradients were finite, else ``old`` (leaf by leaf; no
    branch, so the step compiles once)."""
    return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
