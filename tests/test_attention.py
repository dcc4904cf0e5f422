"""The one attention function: every kernel path that runs on CPU agrees with plain attention.

On CPU we can run the XLA path, the padded-and-masked formulation the cuDNN path uses
(through XLA), and the Pallas splash kernel in interpret mode; the GPU and TPU kernels
themselves only run on their hardware.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from vjax.models.attention import (
    CUDNN_PAD,
    MIN_FUSED_LENGTH,
    batch_heads_spec,
    dot_product_attention,
    grid_attention,
    padded_attention,
    padded_length,
    resolve_implementation,
    sequence_lengths,
    set_interpret,
)


def _qkv(shape, seed=0):
    rng = np.random.default_rng(seed)
    return tuple(rng.normal(size=shape).astype(np.float32) for _ in range(3))


def _reference(q, k, v):
    """softmax(q k^T / sqrt(d)) v in NumPy, (batch, length, heads, dim) layout."""
    scores = np.einsum("blhd,bmhd->bhlm", q, k) / np.sqrt(q.shape[-1])
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return np.einsum("bhlm,bmhd->blhd", weights, v)


def test_xla_path_matches_numpy():
    q, k, v = _qkv((2, 9, 3, 8))
    got = dot_product_attention(q, k, v, implementation="xla")
    np.testing.assert_allclose(got, _reference(q, k, v), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("length", [37, CUDNN_PAD, 3137 % 200])
def test_padded_and_masked_formulation_equals_unpadded_attention(length):
    # 3137 = 16 * 14 * 14 + cls is a length cuDNN refuses; the padding makes it a multiple.
    q, k, v = _qkv((2, length, 2, 8), seed=length)
    got = padded_attention(q, k, v, implementation="xla")
    np.testing.assert_allclose(got, _reference(q, k, v), rtol=1e-5, atol=1e-5)


def test_padded_formulation_has_the_same_gradients():
    q, k, v = _qkv((1, 21, 2, 8), seed=3)
    plain = jax.jit(
        jax.grad(lambda q, k, v: jnp.sum(dot_product_attention(q, k, v) ** 2), (0, 1, 2))
    )
    padded = jax.jit(
        jax.grad(
            lambda q, k, v: jnp.sum(padded_attention(q, k, v, implementation="xla") ** 2),
            (0, 1, 2),
        )
    )
    for a, b in zip(plain(q, k, v), padded(q, k, v), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_padded_length_rounds_up_to_the_multiple():
    assert padded_length(3137) == 3200 and padded_length(3200) == 3200
    assert padded_length(3137, 128) == 3200 and padded_length(129, 128) == 256


def test_pallas_splash_kernel_in_interpret_mode_matches():
    q, k, v = _qkv((1, 37, 2, 64), seed=5)  # 37 tokens padded to 128 and masked
    with set_interpret():
        got = dot_product_attention(q, k, v, implementation="pallas")
    np.testing.assert_allclose(got, _reference(q, k, v), rtol=1e-4, atol=1e-4)


# 8 host devices: the batch over "data" (4), the heads over "tensor" (2), as the config's
# rules map them.
RULES = (("batch", ("data", "fsdp")), ("heads", "tensor"))


@pytest.fixture(scope="module")
def mesh():
    from vjax.parallel import make_mesh

    return make_mesh([("data", 4), ("fsdp", 1), ("tensor", 2)])


def _loss_and_grads(implementation: str):
    def loss(q, k, v):
        return jnp.sum(dot_product_attention(q, k, v, implementation=implementation) ** 2)

    return jax.value_and_grad(loss, (0, 1, 2))


def test_pallas_kernel_runs_per_shard_under_a_sharded_jit(mesh):
    """``pallas_call`` has no partitioning rule: without ``shard_map`` XLA gathers q, k, v onto
    every device (63 all-gathers in this step). Per shard, the compiled step has none, and
    its loss and gradients equal the unsharded XLA path's. The kernel it caches (one head per
    device) then still serves an unsharded call (it holds no tracer or manual-mesh array)."""
    q, k, v = _qkv((4, 37, 2, 64), seed=9)
    sharding = NamedSharding(mesh, PartitionSpec("data", None, "tensor", None))
    step = jax.jit(_loss_and_grads("pallas"), in_shardings=(sharding,) * 3)
    with set_interpret(), jax.set_mesh(mesh), nn.logical_axis_rules(RULES):
        assert batch_heads_spec(q.shape) == PartitionSpec(("data",), None, ("tensor",), None)
        args = [jax.device_put(x, sharding) for x in (q, k, v)]
        compiled = step.lower(*args).compile()
        loss, grads = compiled(*args)
    assert "all-gather" not in compiled.as_text()
    expected_loss, expected_grads = jax.jit(_loss_and_grads("xla"))(q, k, v)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
    for got, want in zip(grads, expected_grads, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    one_head = tuple(x[:, :, :1] for x in (q, k, v))
    with set_interpret():
        got = dot_product_attention(*one_head, implementation="pallas")
    np.testing.assert_allclose(got, _reference(*one_head), rtol=1e-4, atol=1e-4)


def test_cudnn_sequence_lengths_follow_the_batch_sharding(mesh):
    """The padded (cuDNN) formulation's per-example lengths are sharded like q's batch, so
    the data-sharded step needs no gather; heads that do not divide stay whole."""
    q = np.zeros((8, 37, 3, 8), np.float32)  # 3 heads: not divisible by tensor=2
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    with jax.set_mesh(mesh), nn.logical_axis_rules(RULES):
        assert batch_heads_spec(q.shape) == PartitionSpec(("data",), None, None, None)
        lengths = jax.jit(lambda q: sequence_lengths(q, 37), in_shardings=sharding)(q)
        step = jax.jit(_loss_and_grads_padded, in_shardings=(sharding,) * 3)
        compiled = step.lower(q, q, q).compile()
    assert lengths.sharding.spec == PartitionSpec(("data",)) and lengths.tolist() == [37] * 8
    assert "all-gather" not in compiled.as_text()
    assert batch_heads_spec(q.shape) is None  # outside a mesh nothing is constrained


def _loss_and_grads_padded(q, k, v):
    return jax.value_and_grad(
        lambda q, k, v: jnp.sum(padded_attention(q, k, v, implementation="xla") ** 2), (0, 1, 2)
    )(q, k, v)


def test_auto_picks_xla_on_cpu_and_rejects_unknown_kernels():
    assert jax.default_backend() == "cpu"
    assert resolve_implementation("auto", jnp.bfloat16) == "xla"
    assert resolve_implementation("auto", jnp.bfloat16, MIN_FUSED_LENGTH - 1) == "xla"
    assert resolve_implementation("cudnn", jnp.float32) == "cudnn"
    with pytest.raises(ValueError, match="'flash'"):
        resolve_implementation("flash", jnp.float32)
    with pytest.raises(ValueError, match=r"\(1, 4, 2, 8\)"):
        dot_product_attention(*_qkv((1, 4, 2, 8))[:2], np.zeros((1, 5, 2, 8)))


def test_grid_attention_attends_only_along_the_given_axes():
    b, t, s, h, d = 2, 3, 5, 2, 4
    q, k, v = _qkv((b, t, s, h, d), seed=7)
    along_time = grid_attention(q, k, v, axes=(1,))
    for pos in range(s):  # every spatial position: attention over its t tokens
        np.testing.assert_allclose(
            along_time[:, :, pos], _reference(q[:, :, pos], k[:, :, pos], v[:, :, pos]), atol=1e-5
        )
    joint = grid_attention(q, k, v)
    flat = (b, t * s, h, d)
    expected = _reference(q.reshape(flat), k.reshape(flat), v.reshape(flat))
    np.testing.assert_allclose(joint, expected.reshape(q.shape), atol=1e-5)
    with pytest.raises(ValueError, match="grid axes"):
        grid_attention(q, k, v, axes=(3,))


def test_models_pass_their_attention_impl_to_the_kernel(monkeypatch):
    from vjax.models import attention, build_model

    calls = []

    def recording(q, k, v):  # stands in for the TPU kernel, records the shapes it gets
        calls.append(q.shape)
        return jax.nn.dot_product_attention(q, k, v)

    monkeypatch.setattr(attention, "pallas_attention", recording)
    config = {"name": "vivit", "variant": "factorised_dot_product", "size": "Ti/4x2"}
    config.update(hidden_size=16, num_layers=1, num_heads=2, mlp_dim=8, attention_impl="pallas")
    model = build_model(config, num_classes=3)
    video = jax.ShapeDtypeStruct((2, 4, 8, 8, 3), jnp.float32)
    variables = jax.eval_shape(lambda v: model.init(jax.random.key(0), v, train=False), video)
    calls.clear()
    jax.eval_shape(lambda p, v: model.apply(p, v, train=False), variables, video)
    # Model 4 on a (2 slices x 4 patches) grid: one head along time, one along space.
    assert calls == [(2 * 4, 2, 1, 8), (2 * 2, 4, 1, 8)]


@pytest.mark.parametrize(
    "backend,dtype,length,expected",
    [
        ("gpu", jnp.bfloat16, 3137, "cudnn"),
        ("gpu", jnp.float16, MIN_FUSED_LENGTH, "cudnn"),
        ("gpu", jnp.float32, 3137, "xla"),  # cuDNN's fused kernel has no float32 mode
        ("gpu", jnp.bfloat16, 16, "xla"),  # e.g. temporal attention over 16 frames
        ("tpu", jnp.float32, 3137, "pallas"),
        ("cpu", jnp.bfloat16, 3137, "xla"),
    ],
)
def test_auto_dispatch_per_backend(monkeypatch, backend, dtype, length, expected):
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    assert resolve_implementation("auto", dtype, length) == expected
