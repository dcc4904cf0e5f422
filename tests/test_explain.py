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
    with pytest.raises(ValueError, match="no joint space-time attention"):
        explain.spacetime_rollout(model, variables, video)


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
