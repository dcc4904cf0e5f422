"""The video-transformer family (ViViT models 1-4 and baseline, TimeSformer, VideoMAE):
shapes, gradients, analytic parameter counts, logical axis names, and the factorised
attention patterns checked against NumPy references written out by hand."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vjax.models import build_model
from vjax.models.layers import ACTIVATIONS, Attention, EncoderBlock, sinusoidal_table

D, LAYERS, HEADS, MLP, CLASSES = 16, 2, 4, 24, 5
SMALL = {"size": "Ti/4x2", "hidden_size": D, "num_layers": LAYERS, "num_heads": HEADS}
SMALL["mlp_dim"] = MLP
CLIP = (2, 4, 8, 8, 3)  # grid: 2 tubelet slices x 4 patches (4x4 patches, time 2)

VIVIT = [
    {"name": "vivit", "variant": v}
    for v in (
        "spacetime",
        "factorised_encoder",
        "factorised_self_attention",
        "factorised_dot_product",
        "average_pool",
    )
]
DIVIDED = {"name": "timesformer", "size": "Ti/4", "attention_type": "divided_space_time"}
VARIANTS = [
    *VIVIT,
    {"name": "vivit", "variant": "factorised_self_attention", "attention_order": "space_time"},
    {"name": "vivit", "variant": "factorised_encoder", "pooling": "gap", "temporal_layers": 1},
    {"name": "vivit", "variant": "factorised_encoder", "temporal_pooling": "gap"},
    *(
        {"name": "timesformer", "size": "Ti/4", "attention_type": a}
        for a in ("divided_space_time", "joint_space_time", "space_only")
    ),
    {"name": "videomae"},
    {"name": "videomae", "pooling": "first", "activation": "gelu_fast", "qkv_bias": ""},
]


def _model(config):
    return build_model({**SMALL, **config}, num_classes=CLASSES)


def _init(model, shape=CLIP):
    return model.init(jax.random.key(0), jnp.zeros(shape), train=False)


def _random_params(module, *inputs, seed=0, scale=0.2, **kwargs):
    """Random parameters of the shapes ``module.init`` would make, without running init (fast):
    N(0, scale) everywhere, 1 + N(0, scale) for layer-norm scales, so no branch is zero."""
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), *inputs, **kwargs))
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        noise = rng.normal(size=leaf.shape).astype(np.float32) * scale
        return noise + 1.0 if jax.tree_util.keystr(path).endswith("['scale']") else noise

    return jax.tree_util.tree_map_with_path(fill, nn.meta.unbox(shapes)["params"])


def _video(seed=1, shape=CLIP):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _ids(config):
    return "-".join(map(str, config.values()))


@pytest.mark.parametrize(
    "config,dtype",
    [(c, "float32") for c in VARIANTS] + [(c, "bfloat16") for c in (VIVIT[1], VIVIT[3], DIVIDED)],
    ids=lambda x: _ids(x) if isinstance(x, dict) else x,
)
def test_output_shape_of_every_variant(config, dtype):
    model = build_model({**SMALL, **config}, num_classes=CLASSES, dtype=dtype)
    # init runs the forward pass: one trace gives the output and the variables.
    init = functools.partial(model.init_with_output, jax.random.key(0), train=False)
    logits, variables = jax.eval_shape(init, _video())
    assert {x.dtype for x in jax.tree.leaves(nn.meta.unbox(variables))} == {jnp.dtype("float32")}
    assert logits.shape == (CLIP[0], CLASSES) and logits.dtype == jnp.float32


@pytest.mark.parametrize("config", [VIVIT[1], VIVIT[3], DIVIDED], ids=_ids)
def test_gradients_are_finite_and_reach_every_stage(config):
    model = _model(
        {**config, "num_layers": 1, "temporal_layers": 1}
        if config["name"] == "vivit"
        else {**config, "num_layers": 1}
    )
    params = _random_params(model, _video(), train=False)

    @jax.jit
    def loss(p):
        return jnp.mean(model.apply({"params": p}, _video(), train=False) ** 2)

    grads = jax.grad(loss)(params)
    norms = {
        jax.tree_util.keystr(k): float(jnp.abs(g).max())
        for k, g in jax.tree_util.tree_flatten_with_path(grads)[0]
    }
    assert all(np.isfinite(list(norms.values())))
    # Every parameter except the class token of a stage whose cls is not read gets a gradient.
    assert all(v > 0 for v in norms.values()), [k for k, v in norms.items() if v == 0]


def _block(attention_params: int) -> int:
    """A pre-LN block: two layer norms, the attention sublayer(s), the MLP."""
    return 4 * D + attention_params + (D * MLP + MLP + MLP * D + D)


ATTN = 4 * D * D + 4 * D  # q, k, v, out kernels and biases
EMBED_3D = 2 * 4 * 4 * 3 * D + D
HEAD = D * CLASSES + CLASSES
TOKENS, SLICES, PATCHES = 8, 2, 4


@pytest.mark.parametrize(
    "config,expected",
    [
        (VIVIT[0], EMBED_3D + TOKENS * D + D + LAYERS * _block(ATTN) + 2 * D + HEAD),
        (
            VIVIT[1],
            EMBED_3D
            + (PATCHES * D + D + LAYERS * _block(ATTN) + 2 * D)  # spatial stage
            + (SLICES * D + D + 4 * _block(ATTN) + 2 * D)  # temporal stage, 4 layers
            + HEAD,
        ),
        (VIVIT[2], EMBED_3D + TOKENS * D + LAYERS * _block(2 * ATTN + 2 * D) + 2 * D + HEAD),
        (VIVIT[3], EMBED_3D + TOKENS * D + LAYERS * _block(ATTN) + 2 * D + HEAD),
        (VIVIT[4], EMBED_3D + PATCHES * D + D + LAYERS * _block(ATTN) + 2 * D + HEAD),
        (
            {"name": "timesformer", "size": "Ti/4"},
            (4 * 4 * 3 * D + D)
            + D  # cls
            + PATCHES * D
            + 4 * D  # space and time embeddings (4 frames)
            + LAYERS * _block(2 * ATTN + 2 * D + D * D + D)  # + temporal attention and fc
            + 2 * D
            + HEAD,
        ),
        ({"name": "videomae"}, EMBED_3D + LAYERS * _block(ATTN - D) + 2 * D + HEAD),
    ],
    ids=["m1", "m2", "m3", "m4", "avg_pool", "timesformer", "videomae"],
)
def test_parameter_counts_match_analytic_formulas(config, expected):
    shapes = jax.eval_shape(lambda: _init(_model(config)))["params"]
    assert sum(x.size for x in jax.tree.leaves(nn.meta.unbox(shapes))) == expected


@pytest.mark.parametrize("config", VARIANTS, ids=_ids)
def test_every_parameter_dim_has_a_logical_name_where_it_shards(config):
    boxed = jax.eval_shape(lambda: _init(_model(config)))["params"]
    specs = nn.get_partition_spec(boxed)
    flat = jax.tree_util.tree_flatten_with_path(boxed, is_leaf=lambda x: hasattr(x, "names"))[0]
    assert flat
    for path, leaf in flat:
        name = jax.tree_util.keystr(path)
        assert isinstance(leaf, nn.LogicallyPartitioned), name
        assert len(leaf.names) == leaf.value.ndim, name
        assert any(leaf.names), name  # every parameter shards along something
        named = [n for n in leaf.names if n]
        assert len(named) == len(set(named)), name  # flax refuses a repeated logical name
        if name.endswith(("query_kernel']", "key_kernel']", "value_kernel']")):
            assert leaf.names == ("embed", "heads", "kv"), name
        if name.endswith("out_kernel']"):
            assert leaf.names == ("heads", "kv", "embed"), name
        if "fc1" in name and name.endswith("kernel']"):
            assert leaf.names == ("embed", "mlp"), name
    assert jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))


# --- NumPy references, written out independently of the model code -----------------------


def _np_ln(x, p, eps=1e-6):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _np_heads(x, p, name):
    return np.einsum("nld,dhk->nhlk", x, p[f"{name}_kernel"]) + p[f"{name}_bias"][None, :, None]


def _np_attention(x, p, heads=None):
    """Self-attention of (n, length, embed) sequences; ``heads`` selects a subset of heads."""
    q, k, v = (_np_heads(x, p, n) for n in ("query", "key", "value"))
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    out = weights @ v  # (n, heads, length, kv)
    if heads is not None:
        return out[:, heads]
    return np.einsum("nhlk,hkd->nld", out, p["out_kernel"]) + p["out_bias"]


def _erf_gelu(h):
    from math import erf

    return 0.5 * h * (1 + np.vectorize(erf)(h / np.sqrt(2)))


def _np_mlp_exact(x, p):
    h = _erf_gelu(x @ p["fc1"]["kernel"] + p["fc1"]["bias"])
    return h @ p["fc2"]["kernel"] + p["fc2"]["bias"]


def _along_time(g, fn):
    """Applies ``fn`` to (n, length, embed) sequences along time of a (b, t, s, d) grid."""
    b, t, s, d = g.shape
    seq = g.transpose(0, 2, 1, 3).reshape(b * s, t, d)
    return fn(seq).reshape(b, s, t, -1).transpose(0, 2, 1, 3)


def _along_space(g, fn):
    b, t, s, d = g.shape
    return fn(g.reshape(b * t, s, d)).reshape(b, t, s, -1)


def test_model4_split_heads_equal_hand_made_time_and_space_attention():
    b, t, s = 2, 3, 5
    x = np.random.default_rng(0).normal(size=(b, t, s, D)).astype(np.float32)
    module = Attention(num_heads=HEADS, head_groups=((1,), (2,)))
    p = _random_params(module, x, seed=3)
    got = module.apply({"params": p}, x)

    # Heads 0-1 attend along time, heads 2-3 along space (first half, second half).
    def heads_along(along, heads):  # per-head results, heads flattened into the last dim
        return along(
            x,
            lambda seq: (
                _np_attention(seq, p, heads).transpose(0, 2, 1, 3).reshape(*seq.shape[:2], -1)
            ),
        ).reshape(b, t, s, len(heads), -1)

    heads_out = np.concatenate(
        [heads_along(_along_time, [0, 1]), heads_along(_along_space, [2, 3])], axis=-2
    )
    expected = np.einsum("btshk,hkd->btsd", heads_out, p["out_kernel"]) + p["out_bias"]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("order", [("time", "space"), ("space", "time")])
def test_model3_block_equals_hand_made_factorised_attention(order):
    b, t, s = 2, 3, 4
    x = np.random.default_rng(1).normal(size=(b, t * s, D)).astype(np.float32)
    block = EncoderBlock(HEADS, MLP, sublayers=order, grid=(t, s))
    p = _random_params(block, x, seed=4, scale=0.3, train=False)
    got = block.apply({"params": p}, x, train=False)

    g = x.reshape(b, t, s, D)
    for kind in order:
        if kind == "time":
            y = _np_ln(g, p["norm_time"])
            g = g + _along_time(y, lambda seq: _np_attention(seq, p["attention_time"]))
        else:
            y = _np_ln(g, p["norm1"])
            g = g + _along_space(y, lambda seq: _np_attention(seq, p["attention"]))
    g = g + _np_mlp_exact(_np_ln(g, p["norm2"]), p["mlp"])
    np.testing.assert_allclose(got, g.reshape(b, t * s, D), rtol=1e-4, atol=1e-4)


def test_divided_block_with_class_token_equals_hand_made_timesformer_rule():
    b, t, s = 2, 3, 4
    x = np.random.default_rng(2).normal(size=(b, 1 + t * s, D)).astype(np.float32)
    block = EncoderBlock(HEADS, MLP, sublayers=("time", "space"), grid=(t, s), time_projection=True)
    p = _random_params(block, x, seed=5, scale=0.3, train=False)
    got = block.apply({"params": p}, x, train=False)

    cls, g = x[:, :1], x[:, 1:].reshape(b, t, s, D)
    # Temporal attention over patches only, through the temporal fc; cls untouched.
    y = _np_ln(g, p["norm_time"])
    out = _along_time(y, lambda seq: _np_attention(seq, p["attention_time"]))
    g = g + out @ p["time_dense"]["kernel"] + p["time_dense"]["bias"]
    # Spatial attention per frame with the cls token in front; cls result averaged over frames.
    cls_y, g_y = _np_ln(cls, p["norm1"]), _np_ln(g, p["norm1"])
    cls_update = np.zeros_like(cls)
    g_update = np.zeros_like(g)
    for frame in range(t):
        seq = np.concatenate([cls_y, g_y[:, frame]], axis=1)
        out = _np_attention(seq, p["attention"])
        cls_update += out[:, :1] / t
        g_update[:, frame] = out[:, 1:]
    tokens = np.concatenate([cls + cls_update, (g + g_update).reshape(b, t * s, D)], axis=1)
    tokens = tokens + _np_mlp_exact(_np_ln(tokens, p["norm2"]), p["mlp"])
    np.testing.assert_allclose(got, tokens, rtol=1e-4, atol=1e-4)


def test_divided_block_drops_paths_as_timesformer_per_patch_over_time_per_frame_over_space():
    """TimeSformer's code drops the temporal branch per clip and patch position and the
    spatial one per clip and frame (its attention batches are the folded sequences), before
    the temporal fc (whose bias survives) and the class token's mean over frames; the MLP per
    clip. vjax dropped each whole branch per clip. Checked against the hand-made rule with
    the masks the block drew."""
    from flax import traverse_util

    b, t, s, rate = 2, 4, 8, 0.5
    x = np.random.default_rng(3).normal(size=(b, 1 + t * s, D)).astype(np.float32)
    block = EncoderBlock(HEADS, MLP, drop_path_rate=rate, sublayers=("time", "space"),
                         grid=(t, s), time_projection=True)  # fmt: skip
    p = _random_params(block, x, seed=5, scale=0.3, train=False)
    p["time_dense"]["bias"] = np.full(D, 0.5, np.float32)
    got, state = block.apply(
        {"params": p}, x, train=True, rngs={"dropout": jax.random.key(7)},
        capture_intermediates=lambda module, _: isinstance(module, nn.Dropout) and module.rate,
        mutable=["intermediates"],
    )  # fmt: skip
    captured = traverse_util.flatten_dict(state["intermediates"]).values()
    by_shape = {np.shape(v[0]): np.asarray(v[0]) != 0 for v in captured}
    time_keep, space_keep = by_shape[(b, t, s, D)], by_shape[(b, t, 1 + s, D)]
    mlp_keep = by_shape[(b, 1 + t * s, D)]
    assert (time_keep == time_keep[:, :1, :, :1]).all()  # one decision per clip and patch
    assert (space_keep == space_keep[:, :, :1, :1]).all()  # per clip and frame
    assert (mlp_keep == mlp_keep[:, :1, :1]).all()  # per clip
    assert len(np.unique(time_keep[:, 0, :, 0])) == len(np.unique(space_keep[:, :, 0, 0])) == 2

    cls, g = x[:, :1], x[:, 1:].reshape(b, t, s, D)
    out = _along_time(_np_ln(g, p["norm_time"]), lambda q: _np_attention(q, p["attention_time"]))
    out = out * time_keep / (1 - rate)
    g = g + out @ p["time_dense"]["kernel"] + p["time_dense"]["bias"]
    cls_y, g_y = _np_ln(cls, p["norm1"]), _np_ln(g, p["norm1"])
    cls_update, g_update = np.zeros_like(cls), np.zeros_like(g)
    for frame in range(t):
        out = _np_attention(np.concatenate([cls_y, g_y[:, frame]], axis=1), p["attention"])
        out = out * space_keep[:, frame] / (1 - rate)
        cls_update += out[:, :1] / t
        g_update[:, frame] = out[:, 1:]
    tokens = np.concatenate([cls + cls_update, (g + g_update).reshape(b, t * s, D)], axis=1)
    tokens = tokens + _np_mlp_exact(_np_ln(tokens, p["norm2"]), p["mlp"]) * mlp_keep / (1 - rate)
    np.testing.assert_allclose(got, tokens, rtol=1e-4, atol=1e-4)


def _np_patches(video, tubelet):
    """(B, T, H, W, C) -> (B, tokens, pt*ph*pw*C) tubelets in (time, row, column) order."""
    b, t, h, w, c = video.shape
    pt, ph, pw = tubelet
    x = video.reshape(b, t // pt, pt, h // ph, ph, w // pw, pw, c)
    return x.transpose(0, 1, 3, 5, 2, 4, 6, 7).reshape(b, -1, pt * ph * pw * c)


def _np_block(x, p, sublayers=("joint",), grid=None):
    for kind in sublayers:
        if kind == "joint":
            x = x + _np_attention(_np_ln(x, p["norm1"]), p["attention"])
            continue
        g = x.reshape(x.shape[0], *grid, -1)
        if kind == "time":  # every spatial position attends over the time steps
            y = _along_time(
                _np_ln(g, p["norm_time"]), lambda q: _np_attention(q, p["attention_time"])
            )
        else:  # every time step attends over its spatial positions
            y = _along_space(_np_ln(g, p["norm1"]), lambda q: _np_attention(q, p["attention"]))
        x = x + y.reshape(x.shape)
    return x + _np_mlp_exact(_np_ln(x, p["norm2"]), p["mlp"])


def _np_vivit(p, video, variant, tubelet, pooling, temporal_pooling=None, order=None):
    """ViViT written from the paper (Arnab et al. 2021, Sec. 3): model 1 (spacetime), 2
    (a spatial transformer per tubelet slice, then a temporal one over the slices), 3
    (factorised self-attention in ``order``) and the per-slice average-pool baseline."""
    p = jax.tree.map(np.asarray, p)
    b, t = video.shape[0], video.shape[1] // tubelet[0]
    conv = p["embedding"]["conv"]
    x = _np_patches(video, tubelet) @ conv["kernel"].reshape(-1, D) + conv["bias"]
    s = x.shape[1] // t

    def stage(x, prefix, pool, **kw):
        x = x + p[f"{prefix}pos_embedding"]
        if pool == "cls":
            x = np.concatenate([np.broadcast_to(p[f"{prefix}cls"], (x.shape[0], 1, D)), x], 1)
        encoder = p[f"{prefix}encoder"]
        for name in sorted(k for k in encoder if k.startswith("block")):
            x = _np_block(x, encoder[name], **kw)
        x = _np_ln(x, encoder["encoder_norm"])
        return x[:, 0] if pool == "cls" else x.mean(1)

    if variant == "spacetime":
        pooled = stage(x, "", pooling)
    elif variant == "factorised_self_attention":
        pooled = stage(x, "", pooling, sublayers=order, grid=(t, s))
    else:  # model 2 and the baseline: a spatial transformer on every tubelet slice
        per_slice = stage(x.reshape(b * t, s, D), "", pooling).reshape(b, t, D)
        if variant == "average_pool":
            pooled = per_slice.mean(1)
        else:
            pooled = stage(per_slice, "temporal_", temporal_pooling or pooling)
    return pooled @ p["classifier"]["head"]["kernel"] + p["classifier"]["head"]["bias"]


@pytest.mark.parametrize(
    "fields",
    [
        {"variant": "spacetime"},
        {"variant": "spacetime", "pooling": "gap"},
        {"variant": "factorised_encoder", "temporal_layers": 1},
        {"variant": "factorised_encoder", "temporal_layers": 1, "temporal_pooling": "gap"},
        {"variant": "average_pool"},
        {"variant": "factorised_self_attention"},
        {"variant": "factorised_self_attention", "attention_order": "space_time"},
    ],
    ids=_ids,
)
def test_vivit_variants_equal_a_numpy_vivit_written_from_the_paper(fields):
    """Whole models, not blocks: Hugging Face's ViViT is model 1 only, so model 2's slice
    order and pooling, model 3's attention order and the baseline's mean had no reference."""
    model = build_model({"name": "vivit", **SMALL, "num_layers": 1, **fields}, CLASSES)
    clip = _video(shape=(2, 6, 8, 8, 3))  # 3 tubelet slices x 4 patches
    params = _random_params(model, jnp.asarray(clip), train=False, seed=2, scale=0.3)
    got = jax.jit(lambda v: model.apply({"params": params}, v, train=False))(clip)
    order = {"time_space": ("time", "space"), "space_time": ("space", "time")}
    expected = _np_vivit(
        params, clip, fields["variant"], (2, 4, 4), model.resolved_pooling,
        fields.get("temporal_pooling"), order[fields.get("attention_order", "time_space")],
    )  # fmt: skip
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-4, atol=1e-4)


def test_model2_temporal_transformer_has_its_own_heads_and_mlp_width():
    """scenic's factorised encoder configures its temporal transformer apart
    (temporal_transformer.num_heads / mlp_dim): the parameter shapes follow them."""
    fields = {"variant": "factorised_encoder", "temporal_layers": 1}
    model = _model({"name": "vivit", **fields, "temporal_num_heads": 2, "temporal_mlp_dim": 40})
    params = nn.meta.unbox(jax.eval_shape(lambda: _init(model)))["params"]
    block = params["temporal_encoder"]["block00"]
    assert block["attention"]["query_kernel"].shape == (D, 2, D // 2)
    assert block["mlp"]["fc1"]["kernel"].shape == (D, 40)
    spatial = params["encoder"]["block00"]
    assert spatial["attention"]["query_kernel"].shape == (D, HEADS, D // HEADS)
    assert spatial["mlp"]["fc1"]["kernel"].shape == (D, MLP)


def _reverse_slices(video, step):
    t = video.shape[1] // step
    return video.reshape(video.shape[0], t, step, *video.shape[2:])[:, ::-1].reshape(video.shape)


@pytest.mark.parametrize(
    "config,step,invariant",
    [
        ({"name": "vivit", "variant": "average_pool"}, 2, True),
        ({"name": "vivit", "variant": "factorised_encoder"}, 2, False),
        ({"name": "vivit", "variant": "factorised_dot_product"}, 2, False),
        ({"name": "timesformer", "size": "Ti/4", "attention_type": "space_only"}, 1, True),
        ({"name": "timesformer", "size": "Ti/4"}, 1, False),
    ],
)
def test_only_time_blind_variants_ignore_the_order_of_tubelet_slices(config, step, invariant):
    model = _model(config)
    video = _video()
    params = {"params": _random_params(model, video, train=False)}
    apply = jax.jit(lambda v: model.apply(params, v, train=False))
    forward, backward = apply(video), apply(_reverse_slices(video, step))
    assert np.allclose(forward, backward, atol=1e-5) == invariant


def test_sinusoidal_table_matches_the_videomae_formula():
    length, dim = 7, 10
    expected = np.array(
        [[pos / np.power(10000, 2 * (j // 2) / dim) for j in range(dim)] for pos in range(length)]
    )
    expected[:, 0::2] = np.sin(expected[:, 0::2])
    expected[:, 1::2] = np.cos(expected[:, 1::2])
    np.testing.assert_allclose(sinusoidal_table(length, dim)[0], expected, atol=1e-5)


def test_activations_match_their_formulas():
    x = np.linspace(-4, 4, 41).astype(np.float32)
    tanh_form = 0.5 * x * (1 + np.tanh(0.7978845608 * (x + 0.044715 * x**3)))
    for name in ("gelu_fast", "gelu_new", "gelu_pytorch_tanh", "gelu_tanh"):
        np.testing.assert_allclose(ACTIVATIONS[name](x), tanh_form, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(ACTIVATIONS["gelu"](x), _erf_gelu(x), atol=1e-5)
    np.testing.assert_allclose(
        ACTIVATIONS["quick_gelu"](x), x / (1 + np.exp(-1.702 * x)), atol=1e-5
    )
    np.testing.assert_allclose(ACTIVATIONS["relu"](x), np.maximum(x, 0))


@pytest.mark.parametrize(
    "config,message",
    [
        ({"name": "vivit", "variant": "model5"}, "unknown ViViT variant 'model5'"),
        ({"name": "vivit", "variant": "factorised_self_attention", "pooling": "cls"}, "gap"),
        (
            {
                "name": "vivit",
                "variant": "factorised_dot_product",
                "num_heads": 3,
                "hidden_size": 15,
            },
            "num_heads=3 is not divisible by 2",
        ),
        ({"name": "vivit", "attention_order": "diagonal"}, "attention_order"),
        (
            {"name": "vivit", "variant": "factorised_encoder", "temporal_pooling": "max"},
            "temporal_pooling must be 'cls' or 'gap', got 'max'",
        ),
        ({"name": "vivit", "activation": "gelu_fastest"}, "unknown activation 'gelu_fastest'"),
        ({"name": "videomae", "qkv_bias": "qx"}, "qkv_bias"),
        ({"name": "videomae", "pooling": "cls"}, "pooling must be one of"),
        ({"name": "timesformer", "size": "Ti/4", "attention_type": "axial"}, "attention_type"),
        ({"name": "vivit", "attention_impl": "flash"}, "attention_impl"),
    ],
)
def test_bad_settings_fail_before_compilation_naming_the_problem(config, message):
    with pytest.raises(ValueError, match=message):
        _model(config).check_input(CLIP)
