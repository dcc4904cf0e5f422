"""A 2D conv (``NHWC``/``HWIO``) whose input gradient, when it is strided, is computed one
output phase at a time on CPU.

Autodiff gives a stride-``s`` conv's input gradient as a conv of the output gradient dilated
by ``s`` (``lhs_dilation``). XLA:CPU runs that form slowly: in R(2+1)D-18's train step
(8x112x112, batch 4) the input gradients of layer2's first spatial and temporal convs took
65 and 34 ms in isolation. Split by phase instead: input position ``s*m + r`` is reached only
by the taps ``t = (r + pad) mod s, t + s, ...``, so each of the ``s_h * s_w`` phases is a
stride-1 conv of the output gradient with that sub-kernel (flipped, input and output features
swapped), and the phases interleave into the gradient (45 and 12 ms for the same two). Same
products, summed in another order. The kernel gradient is autodiff's.

Only for ``feature_group_count == 1`` and on CPU; elsewhere this is
``lax.conv_general_dilated``, and so is the forward pass everywhere. The phase split is a
custom VJP: reverse-mode only (``jax.jvp`` does not go through a strided conv on CPU).

>>> y = conv_2d(x, kernel, (2, 2), ((1, 1), (1, 1)))  # x (N, H, W, C), kernel (kh, kw, C, O)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

Pairs = tuple[tuple[int, int], ...]
DIMS_2D = ("NHWC", "HWIO", "NHWC")


def conv_2d(
    x: jax.Array,
    kernel: jax.Array,
    strides: Sequence[int],
    padding: Sequence[Sequence[int]],
    groups: int = 1,
    preferred_element_type: jnp.dtype | None = None,
) -> jax.Array:
    """``lax.conv_general_dilated`` in ``NHWC``/``HWIO`` with explicit ``(low, high)`` padding;
    a strided, ungrouped one on CPU gets the phase-split input gradient."""
    strides, padding = tuple(strides), tuple(tuple(p) for p in padding)
    if groups == 1 and max(strides) > 1 and jax.default_backend() == "cpu":
        return _phase_split_conv(x, kernel, strides, padding, preferred_element_type)
    return _lax_conv(x, kernel, strides, padding, groups, preferred_element_type)


def _lax_conv(x, kernel, strides, padding, groups=1, preferred=None) -> jax.Array:
    return jax.lax.conv_general_dilated(
        x, kernel, strides, padding, dimension_numbers=DIMS_2D,
        feature_group_count=groups, preferred_element_type=preferred,
    )  # fmt: skip


def _crop_negative_padding(x: jax.Array, pads: Pairs) -> tuple[jax.Array, list]:
    """``(x, pads)`` with each negative padding of the two spatial axes turned into a slice
    of ``x``: XLA:CPU (jaxlib 0.10) miscomputes a conv of 3 or more taps whose padding is
    negative at one end and positive at the other (errors up to 1e38)."""
    starts, stops, kept = [0, 0, 0, 0], list(x.shape), []
    for axis, (low, high) in enumerate(pads, start=1):
        starts[axis], stops[axis] = max(-low, 0), x.shape[axis] - max(-high, 0)
        kept.append((max(low, 0), max(high, 0)))
    return jax.lax.slice(x, starts, stops), kept


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _phase_split_conv(x, kernel, strides: tuple, padding: Pairs, preferred) -> jax.Array:
    return _lax_conv(x, kernel, strides, padding, 1, preferred)


def _forward(x, kernel, strides, padding, preferred):
    return _lax_conv(x, kernel, strides, padding, 1, preferred), (x, kernel)


def _backward(strides, padding, preferred, residuals, dy):
    x, kernel = residuals  # the conv is linear in the kernel: its gradient is the transpose
    kernel_grad = jax.linear_transpose(
        lambda k: _lax_conv(x, k, strides, padding, 1, preferred), kernel
    )
    dx = phase_split_input_grad(dy, kernel.astype(dy.dtype), x.shape, strides, padding)
    return dx.astype(x.dtype), kernel_grad(dy)[0]


_phase_split_conv.defvjp(_forward, _backward)


def _phase(size: int, taps: int, stride: int, low: int, r: int) -> tuple[int, int, int, int]:
    """For the input positions ``stride * m + r`` along one axis: the first kernel tap that
    reaches them, how many taps do (every ``stride``-th), the output-gradient offset ``c``
    (``dx[stride*m + r] = sum_u w[first + stride*u] dy[m + c - u]``), and how many there are."""
    first = (r + low) % stride
    reaching, offset = len(range(first, taps, stride)), (r + low - first) // stride
    return first, reaching, offset, len(range(r, size, stride))


def phase_split_input_grad(
    dy: jax.Array, kernel: jax.Array, x_shape: Sequence[int], strides: Sequence[int], padding: Pairs
) -> jax.Array:
    """The gradient, for input shape ``x_shape``, of an ungrouped ``NHWC`` conv with ``kernel``
    (``HWIO``), ``strides`` and ``padding``, given its output gradient ``dy``: one stride-1 conv
    per phase, interleaved (see the module docstring)."""
    batch, channels = dy.shape[0], kernel.shape[2]
    counts = [math.ceil(x_shape[1 + a] / strides[a]) for a in (0, 1)]
    rows = []
    for rh in range(strides[0]):
        row = []
        for rw in range(strides[1]):
            axes = [
                _phase(x_shape[1 + a], kernel.shape[a], strides[a], padding[a][0], r)
                for a, r in ((0, rh), (1, rw))
            ]
            (fh, nh, _, mh), (fw, nw, _, mw) = axes
            if nh == 0 or nw == 0:  # no tap reaches this phase (stride > kernel)
                phase = jnp.zeros((batch, mh, mw, channels), dy.dtype)
            else:
                sub = kernel[fh :: strides[0], fw :: strides[1]][::-1, ::-1].swapaxes(2, 3)
                # phase[m] = sum_v sub[v] dy[m + c - (n - 1) + v]: the needed rows of dy,
                # as (possibly negative) padding at both ends.
                pads = [
                    (n - 1 - c, m - 1 + c - (dy.shape[1 + a] - 1))
                    for a, (_, n, c, m) in enumerate(axes)
                ]
                cropped, pads = _crop_negative_padding(dy, pads)
                phase = _lax_conv(cropped, sub, (1, 1), pads)
            row.append(jnp.pad(phase, ((0, 0), (0, counts[0] - mh), (0, counts[1] - mw), (0, 0))))
        rows.append(jnp.stack(row, 3))  # (N, Mh, Mw, sw, C)
    full = jnp.stack(rows, 2)  # (N, Mh, sh, Mw, sw, C): position (m, r) is s * m + r
    full = full.reshape(batch, counts[0] * strides[0], counts[1] * strides[1], channels)
    return full[:, : x_shape[1], : x_shape[2]]
