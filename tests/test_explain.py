"""Attention maps and rollout (vjax.explain): the probabilities a layer sows are the ones its
attention applies, rollout matches a plain loop, and the space-time and temporal relevance of
tiny ViViT models (1, 2 and 3) cover their tubelets and time steps."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from vjax import explain
from vjax.models import build_model
from vjax.models.attention import attention_weights, grid_attention


def test_sown_weights_are_the_applied_attention():
    q, k, v = np.asarray(jax.random.normal(jax.random.key(0), (3, 2, 3, 5, 2, 4)))  # b t s h d
    for axes, pattern in (
        (None, None),  # all 15 tokens jointly
        ((1,), "bshqk,bkshd->bqshd"),  # time at each spatial position: (b, space, h, t, t)
        ((2,), "bthqk,btkhd->btqhd"),  # space within each frame: (b, time, h, s, s)
    ):
        weights = np.asarray(jax.jit(attention_weights, static_argnums=2)(q, k, axes))
        out = np.asarray(jax.jit(grid_attention, static_argnums=3)(q, k, v, axes))
        if axes is None:
            expected = np.einsum("bhqk,bkhd->bqhd", weights, v.reshape(2, 15, 2, 4))
        else:
            expected = np.einsum(pattern, weights, v)
        np.testing.assert_allclose(out, expected.reshape(out.shape), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)


def test_rollout_matches_a_plain_loop():
    rng = np.random.default_rng(0)
    layers = [rng.dirichlet(np.ones(5), size=(2, 3, 5)) for _ in range(3)]  # (b, heads, L, L)
    expected = []
    for b in range(2):
        r = np.eye(5)
        for a in layers:
            mixed = 0.5 * np.eye(5) + 0.5 * a[b].mean(axis=0)
            r = (mixed / mixed.sum(1, keepdims=True)) @ r
        expected.append(r)
    np.testing.assert_allclose(explain.rollout(layers), expected)


def _model(variant, **fields):
    config = dict(
        name="vivit",
        size="Ti/8x2",
        hidden_size=16,
        num_layers=2,
        num_heads=2,
        mlp_dim=32,
        variant=variant,
        temporal_layers=1,
        **fields,
    )
    return _random(build_model(config, 3))


def _random(model):
    """``(model, random weights of its shapes, a video)``: weights drawn on the host, no init
    to compile."""
    video = jax.random.normal(jax.random.key(1), (2, 4, 16, 16, 3))
    shapes = nn.meta.unbox(
        jax.eval_shape(lambda: model.init(jax.random.key(2), video, train=False))
    )
    rng = np.random.default_rng(0)
    variables = jax.tree.map(lambda s: rng.normal(0.0, 0.3, s.shape).astype(s.dtype), shapes)
    return model, variables, video


def test_rollout_of_tiny_vivits():
    model, variables, video = _model("spacetime", pooling="gap")
    assert "attention" not in variables  # only sown when asked for, never into a train state
    maps = explain.attention_maps(model, variables, video)
    assert list(maps) == ["encoder/block00/attention", "encoder/block01/attention"]
    assert maps["encoder/block00/attention"][0].shape == (2, 2, 8, 8)  # 2 x 2 x 2 tubelets
    relevance = explain.spacetime_rollout(model, variables, video)
    assert relevance.shape == (2, 2, 2, 2)
    np.testing.assert_allclose(relevance.sum(axis=(1, 2, 3)), 1.0)
    clip = np.zeros((4, 16, 16, 3), np.uint8)
    shown = explain.overlay(clip, relevance[0], model.tubelet)
    hottest = np.unravel_index(relevance[0].argmax(), (2, 2, 2))
    t, i, j = (2 * hottest[0], 8 * hottest[1], 8 * hottest[2])
    assert shown.shape == clip.shape and shown[t, i, j].sum() == shown.max(axis=(0, 1, 2)).sum()

    for variant in ("factorised_encoder", "factorised_self_attention"):
        model, variables, video = _model(variant)
        over_time = explain.temporal_rollout(model, variables, video)
        assert over_time.shape == (2, 2)
        np.testing.assert_allclose(over_time.sum(axis=1), 1.0)
        assert explain.overlay(clip, over_time[0], model.tubelet).shape == clip.shape


def _dense(kind, groups, time, space, prefix):
    """The head-averaged token-to-token matrix ``(B, P + t*s, P + t*s)`` of one attention
    sublayer, written out entry by entry: time attention at each spatial position (class
    tokens pass through), space attention within each frame (class tokens attend in every
    frame and average their rows over frames), model 4's heads half of each, or joint."""
    maps = [np.asarray(g, np.float64).mean(axis=-3) for g in groups]
    n = prefix + time * space
    out = np.zeros((len(maps[0]), n, n))

    def token(frame, j):  # j over [class tokens, the frame's cells]
        return j if j < prefix else prefix + frame * space + j - prefix

    def over_time(a, share):
        for i in range(space):
            for f in range(time):
                for g in range(time):
                    out[:, token(f, prefix + i), token(g, prefix + i)] += share * a[:, i, f, g]
        for c in range(prefix):
            out[:, c, c] += share

    def over_space(a, share):
        for f in range(time):
            for r in range(prefix + space):
                weight = share / time if r < prefix else share
                for c in range(prefix + space):
                    out[:, token(f, r), token(f, c)] += weight * a[:, f, r, c]

    if kind == "joint":
        return maps[0]
    if kind == "time":
        over_time(maps[0], 1.0)
    elif kind == "space":
        over_space(maps[0], 1.0)
    else:
        over_time(maps[0], 0.5)
        over_space(maps[1], 0.5)
    return out


def _transformer(name, **fields):
    return _random(build_model(dict(name=name, hidden_size=16, num_layers=2, num_heads=2,
                                    mlp_dim=32, **fields), 3))  # fmt: skip


@pytest.mark.parametrize(
    "build, sublayers, prefix",
    [
        (lambda: _model("factorised_self_attention"), ("time", "space"), 0),
        (lambda: _model("factorised_self_attention", attention_order="space_time"),
         ("space", "time"), 0),
        (lambda: _model("factorised_dot_product"), ("split",), 0),
        (lambda: _model("spacetime"), ("joint",), 1),
        (lambda: _transformer("timesformer", size="Ti/8"), ("time", "space"), 1),
        (lambda: _transformer("timesformer", size="Ti/8", attention_type="joint_space_time"),
         ("joint",), 1),
        (lambda: _transformer("videomae", size="Ti/8x2"), ("joint",), 0),
    ],
    ids=["vivit3", "vivit3_space_time", "vivit4", "vivit1", "timesformer", "timesformer_joint",
         "videomae"],
)  # fmt: skip
def test_rollout_equals_the_product_of_the_dense_token_matrices(build, sublayers, prefix):
    """The exact rollout of every one-encoder model, factorised ones included (time and space
    sublayers, TimeSformer's class token in every frame's spatial attention), equals the
    plain product of each sublayer's full token matrix, built entry by entry, in call order."""
    model, variables, video = build()
    time, h, w = (n // k for n, k in zip(video.shape[1:4], model.tubelet, strict=True))
    maps = explain.attention_maps(model, variables, video)
    names = {"time": "attention_time"}
    layers = [
        _dense(kind, maps[f"encoder/block0{b}/{names.get(kind, 'attention')}"], time, h * w,
               prefix)[:, None]
        for b in (0, 1)
        for kind in sublayers
    ]  # fmt: skip
    rolled = explain.rollout(layers)
    row = rolled[:, 0, prefix:] if prefix else rolled.mean(axis=1)
    expected = (row / row.sum(-1, keepdims=True)).reshape(2, time, h, w)
    relevance = explain.spacetime_rollout(model, variables, video)
    np.testing.assert_allclose(relevance, expected, rtol=1e-6)  # float32 rows sum to 1 +- 1e-7
    np.testing.assert_allclose(
        explain.temporal_rollout(model, variables, video), expected.sum(axis=(2, 3)), rtol=1e-6
    )


@pytest.mark.parametrize(
    "build",
    [
        lambda: _model("factorised_encoder"),
        lambda: _model("average_pool", pooling="gap"),
        lambda: _transformer("timesformer", size="Ti/8", attention_type="space_only"),
    ],
    ids=["vivit2", "average_pool", "timesformer_space_only"],
)
def test_rollout_through_per_frame_encoders(build):
    """Models that encode each frame alone: each frame's share is the temporal encoder's
    rollout (ViViT model 2) or 1/t (a mean over frames), times the frame encoder's row over
    its tubelets; class tokens' shares are left out."""
    model, variables, video = build()
    time, h, w = (n // k for n, k in zip(video.shape[1:4], model.tubelet, strict=True))
    maps = explain.attention_maps(model, variables, video)

    def output_row(stage, tokens):  # the class token's row without its own share, or the mean
        rolled = explain.rollout([v[0] for k, v in sorted(maps.items()) if k.startswith(stage)])
        return rolled[:, 0, 1:] if rolled.shape[-1] > tokens else rolled.mean(axis=1)

    frames = output_row("encoder/", h * w)
    over_time = np.full((2, time), 1.0 / time)
    if any(k.startswith("temporal_encoder/") for k in maps):
        over_time = output_row("temporal_encoder/", time)
    cells = over_time[:, :, None] * frames.reshape(2, time, h * w)
    expected = (cells / cells.sum(axis=(1, 2), keepdims=True)).reshape(2, time, h, w)
    np.testing.assert_allclose(explain.spacetime_rollout(model, variables, video), expected)


def test_rollout_of_a_video_only_mbt():
    """MBT names its blocks ``video_block00`` (no encoder folder): rolled out as one stage."""
    model, variables, video = _transformer(
        "mbt", size="Ti/8x2", modalities=("video",), fusion_layer=1
    )
    maps = explain.attention_maps(model, variables, video)
    rolled = explain.rollout([maps[f"video_block0{i}/attention"][0] for i in (0, 1)])
    row = rolled[:, 0, 1:]  # the class token's draw on the 2 x 2 x 2 tubelets
    expected = (row / row.sum(-1, keepdims=True)).reshape(2, 2, 2, 2)
    np.testing.assert_allclose(explain.spacetime_rollout(model, variables, video), expected, 1e-6)


def test_a_model_whose_attention_misses_the_clip_is_refused():
    model, variables, video = _model("spacetime")
    model = build_model(dict(name="single_frame", size="Ti/8x2", hidden_size=16, num_layers=2,
                             num_heads=2, mlp_dim=32), 3)  # fmt: skip
    with pytest.raises(ValueError, match="do not cover the clip"):
        explain.spacetime_rollout(model, _random(model)[1], video)


@pytest.mark.parametrize("pooling", ["mean", "first"])
def test_videomae_rollout_follows_the_token_its_head_reads(pooling):
    """VideoMAE has no class token: mean pooling reads every token (the mean row), Hugging
    Face's use_mean_pooling=False the first token (its row; the mean row was used)."""
    model, variables, video = _random(build_model(dict(
        name="videomae", size="Ti/8x2", hidden_size=16, num_layers=2, num_heads=2, mlp_dim=32,
        pooling=pooling), 3))  # fmt: skip
    maps = explain.attention_maps(model, variables, video)
    rolled = explain.rollout([maps[f"encoder/block0{i}/attention"][0] for i in (0, 1)])
    row = rolled[:, 0] if pooling == "first" else rolled.mean(axis=1)
    expected = (row / row.sum(-1, keepdims=True)).reshape(2, 2, 2, 2)
    np.testing.assert_allclose(explain.spacetime_rollout(model, variables, video), expected)


def test_a_loaded_model_is_rolled_out_on_its_uint8_clip_and_a_cnn_is_named(tmp_path):
    """vjax.load's model (the object a user holds) was an AttributeError ('LoadedModel' has no
    'tubelet'), a CNN one deep in Flax; uint8 frames to a module were rolled out unnormalised,
    and float frames to overlay drawn over black."""
    from test_predict_contracts import CLIP, random_vivit, write_model

    from vjax.loaded import load

    _, variables = random_vivit(22)
    loaded = load(write_model(str(tmp_path / "model"), variables))
    video = np.random.default_rng(23).integers(0, 256, (2, *CLIP), np.uint8)
    by_module = explain.spacetime_rollout(loaded.module, loaded.variables, loaded.normalize(video))
    np.testing.assert_allclose(
        explain.spacetime_rollout(loaded, loaded.variables, video), by_module, rtol=1e-6
    )
    with pytest.raises(ValueError, match=r"the video is uint8 frames: give the module its"):
        explain.spacetime_rollout(loaded.module, loaded.variables, video)
    cnn = build_model({"name": "r2plus1d_18", "layers": (1, 1, 1, 1), "width": 8}, 3)
    with pytest.raises(ValueError, match="needs a video transformer .* has no attention"):
        explain.spacetime_rollout(cnn, {}, video.astype(np.float32))
    with pytest.raises(ValueError, match=r"overlay's frames must be uint8 \(0..255\), got float64"):
        explain.overlay(video[0] / 255.0, by_module[0], loaded.module.tubelet)
