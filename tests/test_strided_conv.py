"""vjax.models.strided_conv: a strided conv's input gradient computed phase by phase equals
autodiff's (XLA's dilated conv, the independent reference) for kernels larger and smaller
than the stride, odd sizes and uneven padding; the kernel gradient is unchanged; the compiled
gradient has no dilated conv left; grouped and stride-1 convs are plain lax convs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vjax.models.strided_conv import DIMS_2D, conv_2d, phase_split_input_grad

# (height, width, kernel, strides, padding)
CASES = [
    (9, 8, (3, 3), (2, 2), ((1, 1), (1, 1))),  # ResNet's strided 3x3, odd height
    (7, 7, (1, 1), (2, 2), ((0, 0), (0, 0))),  # stride > kernel: odd positions get nothing
    (11, 6, (7, 3), (2, 1), ((3, 3), (1, 1))),  # a stem's 7-tap axis
    (8, 9, (3, 1), (2, 1), ((1, 1), (0, 0))),  # (2+1)D's temporal conv over (T, H * W)
    (10, 10, (4, 5), (3, 2), ((1, 2), (2, 0))),  # stride 3, uneven padding
    (5, 6, (2, 2), (2, 2), ((0, 0), (0, 0))),  # patches that do not overlap
    # Padding as wide as the kernel: phases whose padding is negative at one end and positive
    # at the other, which XLA:CPU miscomputed for 3+ taps (errors up to 1e38 before the crop).
    (8, 10, (2, 1), (1, 3), ((3, 0), (3, 3))),
    (5, 6, (3, 3), (1, 2), ((2, 2), (3, 1))),
    (2, 8, (2, 3), (1, 3), ((2, 0), (3, 1))),
    (9, 9, (3, 3), (2, 2), ((3, 3), (1, 1))),
]


def _lax(x, kernel, strides, padding):
    return jax.lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=DIMS_2D)


@pytest.mark.parametrize(("height", "width", "kernel_hw", "strides", "padding"), CASES)
def test_phase_split_gradients_equal_autodiffs(height, width, kernel_hw, strides, padding):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, height, width, 3)), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal((*kernel_hw, 3, 5)), jnp.float32)
    y_shape = jax.eval_shape(lambda x, k: _lax(x, k, strides, padding), x, kernel).shape
    dy = jnp.asarray(rng.standard_normal(y_shape), jnp.float32)

    @jax.jit  # one compilation per case: op-by-op dispatch compiles every op on its own
    def run(x, kernel, dy):
        y, reference_vjp = jax.vjp(lambda x, k: _lax(x, k, strides, padding), x, kernel)
        got = phase_split_input_grad(dy, kernel, x.shape, strides, padding)
        y_ours, vjp = jax.vjp(lambda x, k: conv_2d(x, k, strides, padding), x, kernel)
        return y, reference_vjp(dy), got, y_ours, vjp(dy)

    y, (want_dx, want_dk), got, y_ours, (got_dx, got_dk) = run(x, kernel, dy)
    np.testing.assert_allclose(got, want_dx, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(y_ours, y)  # the forward pass is lax's conv
    np.testing.assert_allclose(got_dx, want_dx, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_dk, want_dk, rtol=1e-5, atol=1e-5)


def test_compiled_gradient_has_no_dilated_conv():
    """What makes it faster on CPU: the input gradient is stride-1 convs, no lhs dilation."""
    x = jnp.ones((2, 9, 9, 4))
    kernel = jnp.ones((3, 3, 4, 6))

    def hlo(conv):
        grad = jax.grad(lambda x, k: jnp.sum(conv(x, k, (2, 2), ((1, 1), (1, 1))) ** 2), (0, 1))
        return jax.jit(grad).lower(x, kernel).compile().as_text()

    assert "lhs_dilate" in hlo(_lax)  # autodiff's form, so the check below can fail
    assert "lhs_dilate" not in hlo(conv_2d)


def test_wide_result_and_low_precision_input():
    """A bfloat16 conv summed in float32 (``preferred_element_type``, as the summed 3D form
    does): float32 out, bfloat16 input gradient, both equal to autodiff's."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((2, 8, 8, 3)), jnp.bfloat16)
    kernel = jnp.asarray(rng.standard_normal((3, 3, 3, 4)), jnp.bfloat16)
    args = ((2, 2), ((1, 1), (1, 1)))

    def reference(x, k):
        return jax.lax.conv_general_dilated(
            x, k, *args, dimension_numbers=DIMS_2D, preferred_element_type=jnp.float32
        )

    ours = lambda x, k: conv_2d(x, k, *args, preferred_element_type=jnp.float32)  # noqa: E731
    y, vjp = jax.vjp(ours, x, kernel)
    y_ref, vjp_ref = jax.vjp(reference, x, kernel)
    assert y.dtype == jnp.float32
    dy = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
    for got, want in zip(vjp(dy), vjp_ref(dy), strict=True):
        assert got.dtype == want.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.float32(got), np.float32(want), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize(
    ("strides", "groups", "backend", "split"),
    [((2, 2), 1, "cpu", True), ((1, 1), 1, "cpu", False), ((2, 2), 2, "cpu", False),
     ((2, 2), 1, "gpu", False)],
)  # fmt: skip
def test_only_strided_ungrouped_convs_on_cpu_take_the_phase_split(
    strides, groups, backend, split, monkeypatch
):
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    x = jnp.ones((1, 6, 6, 4))
    kernel = jnp.ones((3, 3, 4 // groups, 4))
    jaxpr = jax.make_jaxpr(lambda x: conv_2d(x, kernel, strides, ((1, 1), (1, 1)), groups))(x)
    assert ("custom_vjp_call" in str(jaxpr)) == split
