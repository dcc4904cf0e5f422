"""A 3D convolution with ``nn.Conv``'s parameters, computed as the cheapest equivalent op.

XLA:CPU runs 3D convolutions far slower than the same work as 2D convolutions or a matmul
(2 cores, float32, measured side by side): a ``(1, 3, 3)`` conv over 8 frames of 32x32x16 took
27 ms as a 3D conv and 4 ms as a 2D conv over the frames, a ``(3, 1, 1)`` one 8.6 and 2.2 ms,
and the demo ViViT's tubelet embedding (a conv whose stride is its kernel) 0.28 ms against
0.06 ms as one matmul over the patches. So :class:`Conv` keeps ``nn.Conv``'s parameters
(``kernel`` ``(k_t, k_h, k_w, C_in / groups, C_out)``, ``bias``), which every converter and
checkpoint relies on, and picks the computation from the kernel's shape:

* patches that do not overlap (stride = kernel, no padding, no groups): one ``dot_general``;
* ``k_t = 1`` (spatial, pointwise and strided shortcut convs): a 2D conv over the frames;
* ``k_h = k_w = 1`` at spatial stride 1 ((2+1)D's temporal convs): a 2D conv over
  ``(time, height * width)``;
* anything else (``3x3x3``, the stems): on CPU, ``k_t`` 2D convs of the frames ``dt`` steps
  on, summed (forward 2.5-5x and gradients 2.6-12x faster than XLA:CPU's 3D conv for a
  3x3x3 kernel at 16-64 channels); on GPUs and TPUs the 3D conv, which the sums would add
  memory traffic to.

The 2D convs take a strided conv's input gradient phase by phase on CPU
(:mod:`vjax.models.strided_conv`).

Every form sums the same products; only the order of the float additions may differ (the
summed form adds its partial sums in float32 at least). The choice is made when the function
is traced, for ``jax.default_backend()``: a model exported from a CPU host carries the CPU
forms. While a quantizer intercepts lax's conv (qwix: ``train.quantization``,
``vjax quantize``, an int8 model), every conv runs as declared, which is what it quantizes.

>>> y, variables = Conv(64, (1, 3, 3), padding=((0, 0), (1, 1), (1, 1))).init_with_output(
...     key, video)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vjax.models.strided_conv import conv_2d

Triple = tuple[int, int, int]
Padding = Sequence[tuple[int, int]]
_NO_PADDING = ((0, 0), (0, 0), (0, 0))
DIMS_3D = ("NDHWC", "DHWIO", "NDHWC")  # the layout of the conv Conv declares


class Conv(nn.Module):
    """``nn.Conv`` over ``(batch, time, height, width, channels)`` with a 3D kernel and explicit
    ``(low, high)`` padding per axis, lowered as the module docstring says."""

    features: int
    kernel_size: Triple
    strides: Triple = (1, 1, 1)
    padding: Padding = _NO_PADDING
    feature_group_count: int = 1
    use_bias: bool = True
    dtype: Any = jnp.float32
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape = (*self.kernel_size, x.shape[-1] // self.feature_group_count, self.features)
        kernel = self.param("kernel", self.kernel_init, shape, jnp.float32)
        bias = None
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        conv = _conv_3d if quantizer_intercepts() else cheapest_conv
        y = conv(x, kernel, self.strides, self.padding, self.feature_group_count)
        return y if bias is None else y + bias


_LAX_CONV = jax.lax.conv_general_dilated
_LAX_CONV_CODE = _LAX_CONV.__code__


def quantizer_intercepts() -> bool:
    """Whether a quantizer (qwix, :mod:`vjax.deploy.quantize`) has replaced lax's conv, as it
    does while a quantized or quantization-aware model runs: it then gets the conv as declared,
    which is what it quantizes (one kernel of the declared shape, one activation scale per
    clip), stores, and for ``int8_weights`` hands back to :func:`cheapest_conv`."""
    conv = jax.lax.conv_general_dilated  # qwix swaps the function, or its code object
    return conv is not _LAX_CONV or conv.__code__ is not _LAX_CONV_CODE


def cheapest_conv(
    x: jax.Array, kernel: jax.Array, strides: Triple, padding: Padding, groups: int = 1
) -> jax.Array:
    """``lax.conv_general_dilated`` of ``(B, T, H, W, C)`` and a ``DHWIO`` kernel with explicit
    padding, in the cheapest equivalent form (see the module docstring); also what
    ``int8_weights`` runs its dequantized kernels through (:mod:`vjax.deploy.quantize`)."""
    strides, padding = tuple(strides), tuple(tuple(p) for p in padding)
    (kt, kh, kw), (st, sh, sw) = kernel.shape[:3], strides
    if groups == 1 and strides == (kt, kh, kw) and padding == _NO_PADDING:
        return _patches(x, kernel)
    if kt == 1 and padding[0] == (0, 0):
        return _over_frames(x[:, ::st], kernel, (sh, sw), padding[1:], groups)
    if (kh, kw, sh, sw) == (1, 1, 1, 1) and padding[1:] == _NO_PADDING[1:]:
        return _over_time(x, kernel, st, padding[0], groups)
    if jax.default_backend() == "cpu":
        return _summed_over_time(x, kernel, strides, padding, groups)
    return _conv_3d(x, kernel, strides, padding, groups)


def _conv_3d(x, kernel, strides, padding, groups) -> jax.Array:
    return jax.lax.conv_general_dilated(
        x, kernel, strides, padding, dimension_numbers=DIMS_3D, feature_group_count=groups
    )


def _patches(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Non-overlapping ``(t, h, w)`` patches times the kernel; frames or pixels past the last
    whole patch are dropped, as a ``VALID`` conv drops them."""
    (batch, frames, height, width, channels), (t, h, w) = x.shape, kernel.shape[:3]
    grid = (frames // t, height // h, width // w)
    x = x[:, : grid[0] * t, : grid[1] * h, : grid[2] * w]
    # At most 6 dimensions at a time (TFLite's transpose takes no more): (B T', t, H', h,
    # W', w C) -> (B T', H', W', t, h, w C) -> one row of (t, h, w, C) per patch.
    patches = x.reshape(batch * grid[0], t, grid[1], h, grid[2], w * channels)
    patches = patches.transpose(0, 2, 4, 1, 3, 5).reshape(-1, t, h, w, channels)
    out = jax.lax.dot_general(patches, kernel, (((1, 2, 3, 4), (0, 1, 2, 3)), ((), ())))
    return out.reshape(batch, *grid, kernel.shape[-1])


def _over_frames(x, kernel, strides, padding, groups, wide: bool = False) -> jax.Array:
    """A ``(1, k_h, k_w)`` conv as a 2D conv of every frame (the batch holds the frames);
    ``wide``: the result in float32 at least (a partial sum)."""
    batch, frames = x.shape[:2]
    y = conv_2d(
        x.reshape(batch * frames, *x.shape[2:]),
        kernel.reshape(kernel.shape[1:]),
        strides,
        padding,
        groups,
        preferred_element_type=jnp.promote_types(x.dtype, jnp.float32) if wide else None,
    )
    return y.reshape(batch, frames, *y.shape[1:])


def _summed_over_time(x, kernel, strides, padding, groups) -> jax.Array:
    """A full ``(k_t, k_h, k_w)`` conv as ``k_t`` 2D convs of the frames ``dt`` steps on, summed.
    XLA:CPU only: elsewhere the sums would add memory traffic that the 3D conv does not have."""
    kt, (st, *spatial) = kernel.shape[0], strides
    x = jnp.pad(x, ((0, 0), padding[0], (0, 0), (0, 0), (0, 0)))
    if x.shape[1] < kt:  # no whole window: the (empty) 3D conv
        return _conv_3d(x, kernel, strides, ((0, 0), *padding[1:]), groups)
    last = (x.shape[1] - kt) // st * st  # the first frame of the last window
    out = None
    for dt in range(kt):  # partial sums in float32 at least, rounded once at the end
        frames = x[:, dt : dt + last + 1 : st]
        y = _over_frames(frames, kernel[dt : dt + 1], tuple(spatial), padding[1:], groups, True)
        out = y if out is None else out + y
    return out.astype(x.dtype)


def _over_time(x, kernel, stride, padding, groups) -> jax.Array:
    """A ``(k_t, 1, 1)`` conv as a ``(k_t, 1)`` 2D conv over ``(time, height * width)``."""
    batch, frames, height, width, channels = x.shape
    y = conv_2d(
        x.reshape(batch, frames, height * width, channels),
        kernel.reshape(kernel.shape[0], 1, *kernel.shape[3:]),
        (stride, 1),
        (padding, (0, 0)),
        groups,
    )
    return y.reshape(batch, y.shape[1], height, width, y.shape[-1])
