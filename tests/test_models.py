"""ViViT model 1 and the single-frame baseline: shapes, logical names, and numerics checked
against independent NumPy references."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import eval_apply, zero_variables

from vjax.models import build_model
from vjax.models.layers import Attention, TubeletEmbed
from vjax.models.sizes import parse_size

SMALL = {"size": "Ti/4x2", "hidden_size": 32, "num_layers": 2, "num_heads": 4, "mlp_dim": 64}


def _init(model, shape, seed=0):
    """``model.init`` compiled as one program (eagerly, XLA compiles every op on its own)."""
    return jax.jit(lambda key: model.init(key, jnp.zeros(shape), train=False))(jax.random.key(seed))


def _perturb(variables, seed=0, scale=0.1):
    """Random non-zero weights everywhere (the zero-initialised head would hide differences)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda p: p + rng.normal(size=p.shape).astype(np.float32) * scale, nn.meta.unbox(variables)
    )


def test_size_strings():
    b = parse_size("B/16x2")
    assert (b.hidden_size, b.num_layers, b.num_heads, b.mlp_dim) == (768, 12, 12, 3072)
    # ViT (Dosovitskiy et al. 2021, Table 1) and DeiT-Ti: (hidden, layers, heads, mlp)
    table = {"Ti": (192, 12, 3, 768), "S": (384, 12, 6, 1536), "B": (768, 12, 12, 3072),
             "L": (1024, 24, 16, 4096), "H": (1280, 32, 16, 5120)}  # fmt: skip
    for name, expected in table.items():
        size = parse_size(f"{name}/16")
        assert (size.hidden_size, size.num_layers, size.num_heads, size.mlp_dim) == expected
    assert (b.patch, b.tubelet_time) == (16, 2)
    assert parse_size("L/14").tubelet_time == 1
    with pytest.raises(ValueError, match="'X/16'"):
        parse_size("X/16")


@pytest.mark.parametrize("pooling", ["cls", "gap"])
def test_vivit_output_shape_and_token_count(pooling):
    model = build_model({"name": "vivit", "pooling": pooling, **SMALL}, num_classes=5)
    # Shapes only: traced, never compiled.
    variables = jax.eval_shape(lambda: _init(model, (2, 4, 8, 8, 3)))
    logits = jax.eval_shape(eval_apply(model), variables, jnp.ones((2, 4, 8, 8, 3)))
    assert logits.shape == (2, 5)
    # (4/2) * (8/4) * (8/4) = 8 tubelet tokens.
    assert nn.meta.unbox(variables)["params"]["pos_embedding"].shape == (1, 8, 32)
    assert ("cls" in variables["params"]) == (pooling == "cls")


def test_b16x2_parameter_count_matches_vivit_paper_model1():
    # ViViT-B/16x2 model 1 at 32x224x224 with 400 classes: 88.9M in the paper's Table 2.
    model = build_model({"name": "vivit", "size": "B/16x2"}, num_classes=400)
    shapes = jax.eval_shape(lambda: _init(model, (1, 32, 224, 224, 3)))
    count = sum(x.size for x in jax.tree.leaves(nn.meta.unbox(shapes)))
    assert abs(count - 88.9e6) / 88.9e6 < 0.01, count


def test_indivisible_clip_fails_before_compilation_naming_the_numbers():
    model = build_model({"name": "vivit", **SMALL}, num_classes=3)
    with pytest.raises(ValueError, match=r"frames \(5\).*\(2\)"):
        model.check_input((1, 5, 8, 8, 3))
    with pytest.raises(ValueError, match=r"height \(10\).*\(4\)"):
        _init(model, (1, 4, 10, 8, 3))


def test_every_parameter_has_logical_axis_names():
    model = build_model({"name": "vivit", **SMALL}, num_classes=3)
    boxed = jax.eval_shape(lambda: _init(model, (1, 4, 8, 8, 3)))["params"]
    leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
    assert leaves and all(isinstance(x, nn.LogicallyPartitioned) for x in leaves)
    for leaf in leaves:
        assert len(leaf.names) == len(leaf.value.shape)


def test_single_frame_sees_only_the_middle_frame():
    model = build_model({"name": "single_frame", **SMALL}, num_classes=3)
    variables = _init(model, (1, 6, 8, 8, 3))
    rng = np.random.default_rng(0)
    video = rng.normal(size=(1, 6, 8, 8, 3)).astype(np.float32)
    other = rng.normal(size=video.shape).astype(np.float32)
    other[:, 3] = video[:, 3]  # same middle frame (6 // 2 = 3), every other frame different
    variables = _perturb(variables)
    apply = eval_apply(model)
    a = apply(variables, video)
    b = apply(variables, other)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    changed = video.copy()
    changed[:, 3] += 1.0
    assert not np.allclose(a, apply(variables, changed))


def test_vivit_uses_time_order():
    model = build_model({"name": "vivit", **SMALL}, num_classes=3)
    variables = _perturb(_init(model, (1, 4, 8, 8, 3)))
    video = np.random.default_rng(1).normal(size=(1, 4, 8, 8, 3)).astype(np.float32)
    apply = eval_apply(model)
    forward = apply(variables, video)
    backward = apply(variables, video[:, ::-1])
    assert not np.allclose(forward, backward, atol=1e-4)


def test_attention_matches_numpy_reference():
    x = np.random.default_rng(0).normal(size=(2, 5, 12)).astype(np.float32)
    module = Attention(num_heads=3)
    params = nn.meta.unbox(jax.jit(module.init)(jax.random.key(0), x))["params"]
    params = _perturb(params, seed=1)
    got = jax.jit(module.apply)({"params": params}, x)

    p = jax.tree.map(np.asarray, params)
    q, k, v = (
        np.einsum("btd,dhk->bhtk", x, p[f"{n}_kernel"]) + p[f"{n}_bias"][None, :, None]
        for n in ("query", "key", "value")
    )
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    out = np.einsum("bhtk,hkd->btd", weights @ v, p["out_kernel"]) + p["out_bias"]
    np.testing.assert_allclose(got, out, rtol=1e-4, atol=1e-5)


def test_tubelet_embedding_matches_numpy_patch_projection():
    video = np.random.default_rng(0).normal(size=(1, 4, 8, 8, 3)).astype(np.float32)
    module = TubeletEmbed(hidden_size=6, tubelet=(2, 4, 4))
    params = nn.meta.unbox(jax.jit(module.init)(jax.random.key(0), video))["params"]
    got = jax.jit(module.apply)({"params": params}, video)
    kernel = np.asarray(params["conv"]["kernel"]).reshape(-1, 6)  # (2*4*4*3, 6)
    bias = np.asarray(params["conv"]["bias"])
    # Cut into (t, h, w) tubelets in time-major, then row-major order, and project each one.
    patches = video.reshape(1, 2, 2, 2, 4, 2, 4, 3).transpose(0, 1, 3, 5, 2, 4, 6, 7)
    expected = patches.reshape(1, 8, -1) @ kernel + bias
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_bfloat16_compute_keeps_float32_parameters():
    model = build_model({"name": "vivit", **SMALL}, num_classes=3, dtype="bfloat16")
    variables = nn.meta.unbox(_init(model, (1, 4, 8, 8, 3)))
    assert {x.dtype for x in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    logits = eval_apply(model)(variables, jnp.ones((1, 4, 8, 8, 3)))
    assert logits.dtype == jnp.float32 and bool(jnp.isfinite(logits).all())


def test_drop_path_and_dropout_are_active_only_in_training():
    model = build_model(
        {"name": "vivit", **SMALL, "drop_path_rate": 0.5, "dropout_rate": 0.2}, num_classes=3
    )
    variables = _perturb(_init(model, (2, 4, 8, 8, 3)))
    video = jnp.ones((2, 4, 8, 8, 3))
    apply = eval_apply(model)
    eval_a = apply(variables, video)
    np.testing.assert_array_equal(eval_a, apply(variables, video))
    train = jax.jit(lambda v, x, key: model.apply(v, x, train=True, rngs={"dropout": key}))
    train_a = train(variables, video, jax.random.key(1))
    train_b = train(variables, video, jax.random.key(2))
    assert not np.allclose(train_a, train_b)


def test_new_transformer_parameters_start_as_vit_does():
    """ViT / scenic initialisation: zero classifier (uniform logits at step 0), zero class
    token, position tables N(0, 0.02)."""
    model = build_model({"name": "vivit", **SMALL, "hidden_size": 64}, num_classes=5)

    @jax.jit  # only these leave the compiled init: XLA drops the other parameters' draws
    def init(key):
        params = nn.meta.unbox(model.init(key, jnp.zeros((1, 8, 32, 32, 3)), train=False))
        params = params["params"]
        return {k: params[k] for k in ("classifier", "cls", "pos_embedding")}

    params = init(jax.random.key(0))
    np.testing.assert_array_equal(params["classifier"]["head"]["kernel"], 0)
    np.testing.assert_array_equal(params["cls"], 0)
    pos = np.asarray(params["pos_embedding"])  # 4 x 64 tokens x 64 = 16384 draws
    assert abs(pos.std() - 0.02) < 0.001 and abs(pos.mean()) < 0.001


def test_drop_path_grows_linearly_over_depth_and_drops_whole_examples():
    """Stochastic depth (Huang et al. 2016) as scenic and timm schedule it: block i of L
    drops its residual branches with probability rate * i / (L - 1), a whole example at once."""
    model = build_model({"name": "vivit", **SMALL, "num_layers": 3, "drop_path_rate": 0.4}, 3)
    video = jnp.zeros((2, 4, 8, 8, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), video, train=False))
    seen = {}

    def record(next_fun, args, kwargs, context):
        module = context.module
        if isinstance(module, nn.Dropout) and module.broadcast_dims:
            seen.setdefault(module.scope.path[-2], set()).add(
                (module.rate, tuple(module.broadcast_dims))
            )
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):  # traced only: the rates are set at trace time
        jax.eval_shape(
            lambda v: model.apply(v, video, train=True, rngs={"dropout": jax.random.key(1)}),
            variables,
        )
    assert seen == {f"block{i:02d}": {(0.4 * i / 2, (1, 2))} for i in range(3)}


def test_videomae_default_has_videomaes_query_and_value_biases_only():
    """VideoMAE's attention (and HF's VideoMAESelfAttention, qkv_bias=True by default) learns
    query and value biases and no key bias: a vjax videomae built without qkv_bias has the same."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    transformers = pytest.importorskip("transformers", reason="transformers is not installed "
                                       "(pip install -e .[torch])")  # fmt: skip
    from flax import traverse_util

    from vjax.models import build_model

    hf = transformers.VideoMAEModel(
        transformers.VideoMAEConfig(
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            image_size=16,
            patch_size=8,
            num_frames=2,
            tubelet_size=2,
        )
    )
    keys = [k for k in hf.state_dict() if ".attention.attention." in k]
    assert any(k.endswith("query.bias") for k in keys) and any(
        k.endswith("value.bias") for k in keys
    )
    assert not any(k.endswith("key.bias") for k in keys)
    model = build_model(
        {
            "name": "videomae",
            "size": "Ti/8x2",
            "hidden_size": 16,
            "num_layers": 1,
            "num_heads": 2,
            "mlp_dim": 32,
        },
        3,
    )
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, 2, 16, 16, 3)), train=False)
    )
    leaves = traverse_util.flatten_dict(nn.meta.unbox(shapes)["params"], sep="/")
    biases = {k.rsplit("/", 1)[-1] for k in leaves if "/attention/" in k and "bias" in k}
    assert {"query_bias", "value_bias"} <= biases and "key_bias" not in biases


def test_recurrent_over_logits_with_a_non_zero_classifier_equal_head_on_captured_features():
    """The suite's recurrent_over test compares logits through the zero-initialised classifier
    kernel, so any features give the same logits (bias only). With a random kernel: the head
    reads the spatial mean of layer4's map, computed from the standalone backbone."""
    import flax.linen as nn
    import jax

    from vjax.models import build_model
    from vjax.models.recurrent import RecurrentHead

    small_r3d = {"name": "r3d_18", "layers": (1, 1, 1, 1), "width": 8}
    model = build_model({"name": "recurrent_over", "backbone": small_r3d, "hidden_size": 8}, 4)
    video = jax.random.normal(jax.random.key(0), (2, 8, 32, 32, 3))
    variables = nn.meta.unbox(
        jax.jit(lambda key: model.init(key, video, train=False))(jax.random.key(1))
    )
    kernel = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    variables["params"]["classifier"]["head"]["kernel"] = kernel
    backbone = build_model(small_r3d, num_classes=1)
    bb_vars = {k: v["backbone_model"] for k, v in variables.items()}
    # The standalone backbone's own head (absent from the recurrent model) never reaches
    # layer4: zeros of its shapes, not an init to compile.
    full = zero_variables(backbone, video)
    bb_vars["params"] = {**full["params"], **bb_vars["params"]}
    capture = jax.jit(
        lambda v, x: backbone.apply(
            v,
            x,
            train=False,
            mutable=["intermediates"],
            capture_intermediates=lambda m, _: m.name == "layer4",
        )
    )
    _, state = capture(bb_vars, video)
    features = np.asarray(state["intermediates"]["layer4"]["__call__"][0]).mean(axis=(2, 3))
    head = RecurrentHead("lstm", 8)
    hidden = jax.jit(head.apply)({"params": variables["params"]["head"]}, features)
    want = np.asarray(hidden) @ kernel + np.asarray(
        variables["params"]["classifier"]["head"]["bias"]
    )
    got = eval_apply(model)(variables, video)
    assert np.abs(want).max() > 1e-3
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)
