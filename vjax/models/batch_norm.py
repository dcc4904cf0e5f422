"""BatchNorm with flax's variables and numbers, whose batch statistics are sums over rows.

flax's ``nn.BatchNorm`` takes its batch statistics with ``jnp.mean`` and leaves their
gradients to autodiff. XLA:CPU (jaxlib 0.10) splits each of those reductions over the
``B * T * H * W`` rows into 32x32 reduce-windows: in R(2+1)D-18's train step (8x112x112,
batch 4, float32) they took about 0.4 s of 3.3. Summing the rows as a matrix-vector product
(``ones @ x``, a GEMV) runs at about twice their speed, so :class:`BatchNorm` computes, in
training mode, the mean and variance and the backward pass's two per-channel sums
(``sum(dy)``, ``sum(dy * x_hat)``) that way on CPU, with the standard BatchNorm gradient
written out (:func:`normalize_with_batch_statistics`; a custom VJP, so reverse-mode only:
``jax.jvp`` and ``jax.hessian`` do not go through it). On GPUs and TPUs (where a float32 dot
may run at reduced precision) and while a quantizer intercepts lax's ops, the sums are
``jnp.sum`` in float32 at least; the gradient is the same formula everywhere.

The variables (``params``: ``scale``, ``bias``; ``batch_stats``: ``mean``, ``var``), the
running-average update (``momentum`` as flax's), the fast variance ``E[x^2] - E[x]^2``
clipped at 0, and float32 statistics for low-precision inputs are flax's, so checkpoints and
converted weights load unchanged; ``tests/test_batch_norm.py`` checks outputs, statistics
and gradients against ``nn.BatchNorm``.

>>> y, state = BatchNorm(use_running_average=False).apply(variables, x, mutable=["batch_stats"])
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vjax.models.conv import quantizer_intercepts


class BatchNorm(nn.Module):
    """BatchNorm over every axis but the last (channels): batch statistics, updating the
    running ``batch_stats``, unless ``use_running_average``; the result in ``dtype``."""

    use_running_average: bool
    momentum: float = 0.99
    epsilon: float = 1e-5
    dtype: Any = jnp.float32
    scale_init: Callable = nn.initializers.ones
    bias_init: Callable = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = (x.shape[-1],)
        running_mean = self.variable("batch_stats", "mean", jnp.zeros, channels, jnp.float32)
        running_var = self.variable("batch_stats", "var", jnp.ones, channels, jnp.float32)
        scale = self.param("scale", self.scale_init, channels, jnp.float32)
        bias = self.param("bias", self.bias_init, channels, jnp.float32)
        if self.use_running_average:
            mean, var = running_mean.value, running_var.value
            y = _normalize(x.astype(_wide(x)), mean, var, scale, bias, self.epsilon)
            return y.astype(self.dtype)
        y, mean, var = normalize_with_batch_statistics(x, scale, bias, self.epsilon)
        if not self.is_initializing():
            rate = 1.0 - self.momentum
            running_mean.value = self.momentum * running_mean.value + rate * mean
            running_var.value = self.momentum * running_var.value + rate * var
        return y.astype(self.dtype)


def _wide(x: jax.Array) -> jnp.dtype:
    """The dtype statistics are taken in: float32 at least (float64 stays float64)."""
    return jnp.promote_types(x.dtype, jnp.float32)


def _column_sums(rows: jax.Array) -> jax.Array:
    """The sum over the rows of ``(N, C)`` ``rows``: on CPU (see the module docstring) as
    matrix-vector products over ``k`` blocks of rows, then the ``k`` partial sums added, which
    keeps float32 round-off near ``jnp.sum``'s (one product over all 100k rows of R(2+1)D's
    layer1 lost two digits of a variance); ``jnp.sum`` elsewhere, or where ``N`` has no
    divisor to block by."""
    blocks = _blocks(rows.shape[0])
    if jax.default_backend() == "cpu" and not quantizer_intercepts() and blocks >= 8:
        blocked = rows.reshape(blocks, -1, rows.shape[-1])
        ones = jnp.ones(blocked.shape[:2], rows.dtype)
        partial = jax.lax.dot_general(ones, blocked, (((1,), (1,)), ((0,), (0,))))
        return jnp.sum(partial, axis=0)
    return jnp.sum(rows, axis=0)


@functools.cache
def _blocks(n: int) -> int:
    """The largest divisor of ``n`` up to ``sqrt(n)``: blocks of about ``sqrt(n)`` rows."""
    return max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0) if n else 1


def _normalize(x, mean, var, scale, bias, epsilon: float) -> jax.Array:
    """``(x - mean) / sqrt(var + epsilon) * scale + bias``, in flax's order of operations."""
    return (x - mean) * (jax.lax.rsqrt(var + epsilon) * scale) + bias


def _moments(rows: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-column mean and (biased, fast: ``E[x^2] - E[x]^2`` clipped at 0) variance."""
    mean = _column_sums(rows) / rows.shape[0]
    return mean, jnp.maximum(0.0, _column_sums(rows * rows) / rows.shape[0] - mean * mean)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def normalize_with_batch_statistics(
    x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``((x - mean) / sqrt(var + epsilon) * scale + bias, mean, var)``, the statistics taken
    over every axis of ``x`` but the last, in float32 at least (the result too)."""
    rows = x.reshape(-1, x.shape[-1]).astype(_wide(x))
    mean, var = _moments(rows)
    return _normalize(rows, mean, var, scale, bias, epsilon).reshape(x.shape), mean, var


def _forward(x, scale, bias, epsilon):
    out = normalize_with_batch_statistics(x, scale, bias, epsilon)
    return out, (x, scale, bias, out[1], out[2])


def _backward(epsilon, residuals, cotangents):
    """BatchNorm's gradient: with ``x_hat = (x - mean) * inv``, ``inv = 1 / sqrt(var + eps)``,
    ``dx = scale * inv * (dy - mean(dy) - x_hat * mean(dy * x_hat))``, plus what reaches
    ``mean`` and ``var`` directly (the running averages: usually nothing)."""
    x, scale, bias, mean, var = residuals
    dy, dmean, dvar = cotangents
    n, channels = x.size // x.shape[-1], x.shape[-1]
    rows = x.reshape(n, channels).astype(_wide(x))
    dy = dy.reshape(n, channels).astype(rows.dtype)
    inv = jax.lax.rsqrt(var + epsilon)
    centred = rows - mean
    x_hat = centred * inv
    dbias = _column_sums(dy)
    dscale = _column_sums(dy * x_hat)
    dx = scale * inv * (dy - dbias / n - x_hat * (dscale / n))
    dx = dx + dmean / n + centred * (2.0 * dvar / n)
    dx = dx.reshape(x.shape).astype(x.dtype)
    return dx, dscale.astype(scale.dtype), dbias.astype(bias.dtype)


normalize_with_batch_statistics.defvjp(_forward, _backward)
