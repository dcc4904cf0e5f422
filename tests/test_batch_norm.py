"""vjax's BatchNorm against flax's ``nn.BatchNorm`` (the independent reference): the same
variables, outputs, running statistics and gradients, in float32 and bfloat16, in training
and evaluation mode; its sums are matrix-vector products on CPU and ``jnp.sum`` while a
quantizer intercepts lax's ops, with the same results."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vjax.models.batch_norm as batch_norm_module
from vjax.models.batch_norm import BatchNorm

SHAPE = (2, 3, 5, 4, 6)  # (batch, time, height, width, channels)


def _inputs(dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(SHAPE).astype(np.float32) * 3.0 + 2.0  # an offset: E[x^2] >> var
    cotangent = rng.standard_normal(SHAPE).astype(np.float32)
    variables = {
        "params": {"scale": np.linspace(0.5, 2.0, 6), "bias": np.linspace(-1, 1, 6)},
        "batch_stats": {"mean": np.linspace(-0.3, 0.4, 6), "var": np.linspace(0.5, 1.5, 6)},
    }
    variables = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), variables)
    return jnp.asarray(x, dtype), jnp.asarray(cotangent), variables


def _loss_and_grads(module: nn.Module, x, cotangent, variables):
    """A loss of the output and of the updated running statistics (so the statistics'
    gradients count too), its value, the new statistics, and its gradients."""

    def loss(params, x):
        y, state = module.apply(
            {"params": params, "batch_stats": variables["batch_stats"]}, x, mutable=["batch_stats"]
        )
        stats = state["batch_stats"]
        value = jnp.sum(y.astype(jnp.float32) * cotangent)
        return value + jnp.sum(stats["var"] ** 2 - 3.0 * stats["mean"]), (y, stats)

    grad = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)
    (value, (y, stats)), grads = jax.jit(grad)(variables["params"], x)
    return value, y, stats, grads


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("train", [True, False])
def test_matches_flax_batch_norm(dtype, train):
    x, cotangent, variables = _inputs(dtype)
    kwargs = dict(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype)
    ours, flax_bn = BatchNorm(**kwargs), nn.BatchNorm(**kwargs)
    shapes = lambda m: jax.tree.map(lambda a: (a.shape, a.dtype), m.init(jax.random.key(0), x))  # noqa: E731
    assert shapes(ours) == shapes(flax_bn)  # checkpoints and converted weights load unchanged

    got, want = (_loss_and_grads(m, x, cotangent, variables) for m in (ours, flax_bn))
    tol = 1e-5 if dtype == jnp.float32 else 1e-2
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
    assert got[1].dtype == want[1].dtype == dtype
    np.testing.assert_allclose(np.float32(got[1]), np.float32(want[1]), rtol=tol, atol=tol)
    close = np.testing.assert_allclose
    jax.tree.map(lambda a, b: close(a, b, rtol=1e-5, atol=1e-6), got[2], want[2])
    (params_got, x_got), (params_want, x_want) = got[3], want[3]
    jax.tree.map(lambda a, b: close(a, b, rtol=1e-4, atol=1e-4), params_got, params_want)
    assert x_got.dtype == dtype
    np.testing.assert_allclose(np.float32(x_got), np.float32(x_want), rtol=tol, atol=tol)
    if train:  # the statistics moved, and their gradient reached x and the parameters
        assert not np.allclose(got[2]["mean"], variables["batch_stats"]["mean"])


def _dot_count(module, x, variables) -> int:
    def loss(params, x):
        y, _ = module.apply({**variables, "params": params}, x, mutable=["batch_stats"])
        return jnp.sum(y * y)

    jaxpr = jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(variables["params"], x)
    return str(jaxpr).count("dot_general")


def test_sums_are_dots_on_cpu_and_plain_sums_under_a_quantizer(monkeypatch):
    """Two statistics forward and two sums backward are GEMVs on CPU; with a quantizer
    intercepting lax's ops (it would quantize any dot) they are ``jnp.sum``, same numbers."""
    x, cotangent, variables = _inputs(jnp.float32)
    module = BatchNorm(use_running_average=False, momentum=0.9)
    dots = _loss_and_grads(module, x, cotangent, variables)
    assert _dot_count(module, x, variables) == 4
    monkeypatch.setattr(batch_norm_module, "quantizer_intercepts", lambda: True)
    assert _dot_count(module, x, variables) == 0
    sums = _loss_and_grads(module, x, cotangent, variables)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), dots, sums)


def test_bfloat16_parameters_get_bfloat16_gradients():
    """``train.param_dtype="bfloat16"`` stores scale and bias in bfloat16: their gradients
    must come back in that dtype (a custom VJP must match its inputs)."""
    x, _, variables = _inputs(jnp.float32)
    params = jax.tree.map(lambda a: a.astype(jnp.bfloat16), variables["params"])
    module = BatchNorm(use_running_average=False, momentum=0.9)

    def loss(params):
        y, _ = module.apply({**variables, "params": params}, x, mutable=["batch_stats"])
        return jnp.sum(y**2)

    grads = jax.grad(loss)(params)
    assert {g.dtype for g in jax.tree.leaves(grads)} == {jnp.dtype(jnp.bfloat16)}


def test_statistics_of_many_rows_keep_float32_precision():
    """A layer1-sized batch (25,088 rows) with an offset (E[x^2] = 37 var): the variance as
    exact as jnp's float32 reduction (summing all rows in one product lost ~2 digits)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 8, 28, 28, 8)).astype(np.float32) * 0.5 + 3.0
    module = BatchNorm(use_running_average=False, momentum=0.0)  # the stats: this batch's
    variables = module.init(jax.random.key(0), jnp.zeros((1, 8)))
    _, state = jax.jit(lambda x: module.apply(variables, x, mutable=["batch_stats"]))(x)
    rows = x.reshape(-1, 8).astype(np.float64)
    np.testing.assert_allclose(state["batch_stats"]["mean"], rows.mean(0), rtol=1e-6)
    np.testing.assert_allclose(state["batch_stats"]["var"], rows.var(0), rtol=2e-5)
    assert batch_norm_module._blocks(rows.shape[0]) == 128  # 196 rows a block


@pytest.mark.parametrize("train", [True, False])
def test_epsilon_is_flaxs_for_a_non_default_value(train):
    """BatchNorm(epsilon=...) against flax's nn.BatchNorm with the same epsilon, on channels
    whose variance is comparable to it (the suite's case uses 1e-5 only, which a hard-coded
    1e-5 would pass)."""
    import flax.linen as nn
    import jax.numpy as jnp

    from vjax.models.batch_norm import BatchNorm

    x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 2, 3, 3, 5)) * 0.03, jnp.float32)
    variables = {
        "params": {"scale": jnp.ones(5), "bias": jnp.zeros(5)},
        "batch_stats": {"mean": jnp.zeros(5), "var": jnp.full(5, 1e-3)},
    }
    kwargs = dict(use_running_average=not train, momentum=0.9, epsilon=1e-3)
    got, want = (
        m.apply(variables, x, mutable=["batch_stats"])[0]
        for m in (BatchNorm(**kwargs), nn.BatchNorm(**kwargs))
    )
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
