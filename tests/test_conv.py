"""vjax.models.conv.Conv computes each conv as a matmul or a 2D conv where its kernel allows:
every form equals ``lax.conv_general_dilated``'s 3D conv of the same parameters (values and
gradients), the cheaper form is the one compiled, and under qwix's quantizers every conv runs
as declared."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vjax.models.conv import Conv

# (kernel, strides, padding, groups, the primitive the lowered form must use or lack)
CASES = {
    "tubelet_drops_the_remainder": ((2, 4, 4), (2, 4, 4), ((0, 0),) * 3, 1, "dot_general"),
    "spatial_strided": ((1, 3, 3), (2, 2, 2), ((0, 0), (1, 1), (1, 1)), 1, "2d"),
    "pointwise_bottleneck": ((1, 1, 1), (1, 1, 1), ((0, 0),) * 3, 1, "dot_general"),
    "pointwise_shortcut": ((1, 1, 1), (2, 2, 2), ((0, 0),) * 3, 1, "2d"),
    "depthwise_spatial": ((1, 3, 3), (1, 1, 1), ((0, 0), (1, 1), (1, 1)), 8, "2d"),
    "temporal_strided": ((3, 1, 1), (2, 1, 1), ((1, 1), (0, 0), (0, 0)), 1, "2d"),
    "temporal_grouped": ((3, 1, 1), (1, 1, 1), ((1, 1), (0, 0), (0, 0)), 2, "2d"),
    "full_3d_strided": ((3, 3, 3), (2, 2, 2), ((1, 1),) * 3, 1, "summed"),
    "stem_depthwise": ((5, 3, 3), (1, 2, 2), ((2, 2), (1, 1), (1, 1)), 8, "summed"),
}


def _reference(x, kernel, bias, strides, padding, groups):
    out = jax.lax.conv_general_dilated(
        x, kernel, strides, padding, dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
        feature_group_count=groups, precision=jax.lax.Precision.HIGHEST,
    )  # fmt: skip
    return out + bias


def conv_ranks(jaxpr) -> list[int]:
    """The operand rank of every conv in a jaxpr, nested calls included."""
    ranks = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "conv_general_dilated":
            ranks.append(eqn.invars[0].aval.ndim)
        for value in eqn.params.values():
            inner = getattr(value, "jaxpr", value)
            if hasattr(inner, "eqns"):
                ranks += conv_ranks(inner)
    return ranks


# Every case on CPU; the full kernels also traced as if for a GPU, where they stay 3D (the
# other forms do not depend on the backend).
RUNS = [(case, "cpu") for case in CASES] + [
    (case, "gpu") for case, spec in CASES.items() if spec[-1] == "summed"
]


@pytest.mark.parametrize(("case", "backend"), RUNS)
def test_each_form_equals_the_3d_conv_and_is_the_one_compiled(case, backend, monkeypatch):
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    kernel_size, strides, padding, groups, form = CASES[case]
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 5, 10, 9, 8)), jnp.float32)
    conv = Conv(16, kernel_size, strides, padding, groups)
    variables = jax.jit(conv.init)(jax.random.key(0), x)
    variables = {"params": {**variables["params"], "bias": jnp.arange(16.0) / 16}}

    # Gradients (training) of both the input and the parameters.
    def loss(fn):
        return lambda v, x: jnp.sum(jnp.sin(fn(v, x)))

    def ref(v, x):
        return _reference(x, v["params"]["kernel"], v["params"]["bias"], strides, padding, groups)

    @jax.jit  # the reference's values and gradients as one program, not op by op
    def reference(v, x):
        return ref(v, x), jax.grad(loss(ref), argnums=(0, 1))(v, x)

    want, want_grads = reference(variables, x)
    got = jax.jit(conv.apply)(variables, x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

    got_grads = jax.jit(jax.grad(loss(conv.apply), argnums=(0, 1)))(variables, x)
    for g, w in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)

    ranks = conv_ranks(jax.make_jaxpr(conv.apply)(variables, x).jaxpr)
    summed = [4] * kernel_size[0] if backend == "cpu" else [5]
    expected = {"dot_general": [], "2d": [4], "summed": summed}[form]
    assert ranks == expected, f"{case}: convs of rank {ranks}, expected {expected}"


class _ThreeConvs(nn.Module):
    """A spatial, a temporal and a full conv: each of the lowered forms."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = Conv(8, (1, 3, 3), padding=((0, 0), (1, 1), (1, 1)))(x)
        x = Conv(8, (3, 1, 1), padding=((1, 1), (0, 0), (0, 0)))(nn.relu(x))
        return Conv(4, (3, 3, 3), padding=((1, 1),) * 3)(nn.relu(x))


def test_under_a_quantizer_convs_run_as_declared_and_quantization_aware_training_works():
    """qwix quantizes each conv as its op declares it (one kernel, one activation scale per
    clip), so while it intercepts lax's conv every form is the 3D conv, and quantization-aware
    training's gradients reach the kernels; afterwards the plain model compiles the cheap
    forms again."""
    pytest.importorskip("qwix", reason="qwix is not installed (pip install -e .[deploy])")
    from vjax.deploy.quantize import qat_model

    model = _ThreeConvs()
    qat = qat_model(model, "int8")
    x = jnp.asarray(np.random.default_rng(2).standard_normal((2, 4, 8, 8, 3)), jnp.float32)
    variables = jax.jit(qat.init)(jax.random.key(0), x)

    def loss(params, x):
        return jnp.sum(qat.apply({**variables, "params": params}, x) ** 2)

    grads = jax.jit(jax.grad(loss))(variables["params"], x)
    for g in jax.tree.leaves(grads):
        assert bool(jnp.isfinite(g).all()) and float(jnp.abs(g).max()) > 0
    assert conv_ranks(jax.make_jaxpr(loss)(variables["params"], x).jaxpr) == [5, 5, 5]
    plain = jax.make_jaxpr(model.apply)(variables, x).jaxpr
    assert conv_ranks(plain) == [4, 4, 4, 4, 4]  # one over frames, one over time, 3 summed


def test_short_clips_and_bfloat16():
    """A clip shorter than a full kernel gives lax's empty output; bfloat16 stays bfloat16."""
    x = jnp.ones((1, 2, 6, 6, 4), jnp.float32)

    def output(conv):  # shapes and dtypes only: traced, not compiled
        return jax.eval_shape(lambda: conv.apply(conv.init(jax.random.key(0), x), x))

    conv = Conv(8, (3, 3, 3), padding=((0, 0), (1, 1), (1, 1)))
    assert output(conv).shape == (1, 0, 6, 6, 8)
    half = Conv(8, (3, 3, 3), padding=((1, 1),) * 3, dtype=jnp.bfloat16)
    assert output(half).dtype == jnp.bfloat16
