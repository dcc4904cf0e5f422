"""Initialisation surgery (vjax.convert.surgery) checked against hand computations."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import jit_logits

from vjax.convert.surgery import (
    SurgeryError,
    adapt_params,
    inflate_kernel,
    resize_linear,
    token_grid,
)
from vjax.models import build_model
from vjax.models.layers import TubeletEmbed

TINY = {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "mlp_dim": 24}


def _shapes(model, shape):
    init = lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False)  # noqa: E731
    return nn.meta.unbox(jax.eval_shape(init))["params"]


def _params(model, shape, seed=0, scale=0.2):
    """Random parameters of ``model``'s shapes (1 + noise for layer-norm scales), no init run."""
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        noise = rng.normal(size=leaf.shape).astype(np.float32) * scale
        return noise + 1.0 if jax.tree_util.keystr(path).endswith("['scale']") else noise

    return jax.tree_util.tree_map_with_path(fill, _shapes(model, shape))


@pytest.mark.parametrize("inflation", ["average", "central"])
def test_inflated_video_model_on_a_static_clip_equals_the_image_model(inflation):
    # An image ViT (single frame, 4x4 patches) and ViViT model 1 with 2x4x4 tubelets. On a clip
    # whose frames are all the same image, inflated kernels give each tubelet the image's patch
    # embedding, the tiled position table repeats the frame's, and attention over repeated
    # keys equals attention over one copy (average pooling: no class token, whose single copy
    # would weigh differently): the logits must be the image model's.
    gap = {**TINY, "pooling": "gap"}
    image_model = build_model({"name": "single_frame", "size": "Ti/4", **gap}, num_classes=3)
    video_model = build_model({"name": "vivit", "size": "Ti/4x2", **gap}, num_classes=3)
    image_params = _params(image_model, (1, 1, 8, 8, 3))
    grid = token_grid(video_model, (1, 4, 8, 8, 3))
    assert grid == (2, 2, 2)
    target = _shapes(video_model, (1, 4, 8, 8, 3))
    params, notes = adapt_params(image_params, target, inflation=inflation, target_grid=grid)
    assert any(
        "inflated embedding/conv/kernel (1, 4, 4, 3, 16) -> (2, 4, 4, 3, 16)" in n for n in notes
    )
    image = np.random.default_rng(2).normal(size=(2, 1, 8, 8, 3)).astype(np.float32)
    static = np.repeat(image, 4, axis=1)
    expected = jit_logits(image_model, {"params": image_params}, image)
    got = jit_logits(video_model, {"params": params}, static)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_central_inflation_sees_only_the_central_frame_of_each_tubelet():
    kernel = np.random.default_rng(0).normal(size=(1, 2, 2, 3, 5)).astype(np.float32)
    inflated = inflate_kernel(kernel, 3, "central")
    assert np.array_equal(inflated[1], kernel[0]) and not inflated[[0, 2]].any()
    module = TubeletEmbed(5, (3, 2, 2))
    params = {"conv": {"kernel": inflated, "bias": np.zeros(5, np.float32)}}
    video = np.random.default_rng(1).normal(size=(1, 3, 4, 4, 3)).astype(np.float32)
    changed = video.copy()
    changed[:, [0, 2]] += 1.0  # frames other than the central one
    a = module.apply({"params": params}, video)
    np.testing.assert_allclose(a, module.apply({"params": params}, changed), atol=1e-6)
    np.testing.assert_allclose(inflate_kernel(kernel, 4, "average"), np.repeat(kernel / 4, 4, 0))


def test_resized_position_ramp_stays_a_ramp_and_is_tiled_over_time():
    image_model = build_model({"name": "single_frame", "size": "Ti/4", **TINY}, num_classes=3)
    video_model = build_model({"name": "vivit", "size": "Ti/4x2", **TINY}, num_classes=3)
    source = _params(image_model, (1, 1, 12, 12, 3))  # 3x3 patches
    h, w = np.meshgrid(np.arange(3.0), np.arange(3.0), indexing="ij")
    ramp = 2.0 * h - 0.5 * w + 1.0  # a linear function of the patch position
    source["pos_embedding"] = np.repeat(ramp.reshape(1, 9, 1), 16, axis=2).astype(np.float32)
    shape = (1, 6, 20, 20, 3)  # 3 tubelet slices of 5x5 patches
    target = _shapes(video_model, shape)
    params, _ = adapt_params(source, target, target_grid=token_grid(video_model, shape))
    got = params["pos_embedding"].reshape(3, 5, 5, 16)
    # Corners aligned: target index i of 5 sits at source coordinate i * (3 - 1) / (5 - 1).
    h5, w5 = np.meshgrid(np.arange(5) * 0.5, np.arange(5) * 0.5, indexing="ij")
    expected = 2.0 * h5 - 0.5 * w5 + 1.0
    for t in range(3):
        np.testing.assert_allclose(got[t, :, :, 0], expected, atol=1e-5)
    assert got.dtype == np.float32


def test_video_checkpoint_moves_to_another_resolution_and_clip_length():
    model = build_model({"name": "vivit", "size": "Ti/4x2", **TINY}, num_classes=3)
    source = _params(model, (1, 4, 8, 8, 3))  # grid (2, 2, 2)
    t, h, w = np.meshgrid(np.arange(2.0), np.arange(2.0), np.arange(2.0), indexing="ij")
    ramp = (3.0 * t + h - 2.0 * w).reshape(1, 8, 1)
    source["pos_embedding"] = np.repeat(ramp, 16, axis=2).astype(np.float32)
    shape = (1, 8, 12, 12, 3)  # grid (4, 3, 3)
    target = _shapes(model, shape)
    params, notes = adapt_params(
        source, target, source_grid=(2, 2, 2), target_grid=token_grid(model, shape)
    )
    assert notes == ["resized pos_embedding grid (2, 2, 2) -> (4, 3, 3)"]
    t4, h3, w3 = np.meshgrid(np.arange(4) / 3, np.arange(3) / 2, np.arange(3) / 2, indexing="ij")
    expected = 3.0 * t4 + h3 - 2.0 * w3
    np.testing.assert_allclose(params["pos_embedding"][0, :, 0], expected.reshape(-1), atol=1e-5)
    np.testing.assert_array_equal(
        params["encoder"]["block00"]["mlp"]["fc1"]["kernel"],
        source["encoder"]["block00"]["mlp"]["fc1"]["kernel"],
    )
    apply = lambda p, x: model.apply({"params": p}, x, train=False)  # noqa: E731
    logits = jax.eval_shape(apply, params, np.ones(shape, np.float32))  # the shapes fit
    assert logits.shape == (1, 3)


def test_head_is_reset_for_another_class_count_and_model3_copies_spatial_attention_to_time():
    image_model = build_model({"name": "single_frame", "size": "Ti/4", **TINY}, num_classes=3)
    source = _params(image_model, (1, 1, 8, 8, 3))
    target_model = build_model(
        {"name": "vivit", "size": "Ti/4x2", "variant": "factorised_self_attention", **TINY},
        num_classes=7,
    )
    target = _params(target_model, (1, 4, 8, 8, 3), seed=5)
    params, notes = adapt_params(source, target, target_grid=(2, 2, 2))
    np.testing.assert_array_equal(
        params["classifier"]["head"]["kernel"], target["classifier"]["head"]["kernel"]
    )
    block, src_block = params["encoder"]["block00"], source["encoder"]["block00"]
    np.testing.assert_array_equal(
        block["attention"]["query_kernel"], src_block["attention"]["query_kernel"]
    )
    # Model 3's temporal attention starts as a copy of the spatial one (scenic's ViViT
    # init_encoderblock); its layer norm keeps its initial value (scenic's default).
    for name in ("query_kernel", "out_kernel", "value_bias"):
        np.testing.assert_array_equal(block["attention_time"][name], src_block["attention"][name])
    np.testing.assert_array_equal(
        block["norm_time"]["scale"], target["encoder"]["block00"]["norm_time"]["scale"]
    )
    assert "reset classifier/head/kernel (16, 3) -> (16, 7) (class count differs)" in notes
    assert "dropped cls (not in target)" in notes  # model 3 pools by average
    assert (
        "encoder/block00/attention_time/query_kernel from encoder/block00/attention/query_kernel "
        "(temporal attention as the image model's)" in notes
    )
    assert (
        "kept the target's initial encoder/block00/norm_time/scale (16,) (not in source)" in notes
    )


def test_timesformer_from_an_image_vit_starts_as_the_image_model_on_every_frame():
    """TimeSformer's own initialisation: temporal attention and its norm copied from the
    block's spatial ones (its load_pretrained), temporal fc and time embedding at zero (its
    model's init): on a clip of one repeated frame the new model's logits are the image
    model's. Before, random temporal layers and time embedding perturbed every block."""
    image_model = build_model({"name": "single_frame", "size": "Ti/4", **TINY}, num_classes=3)
    video_model = build_model({"name": "timesformer", "size": "Ti/4", **TINY}, num_classes=3)
    image_params = _params(image_model, (1, 1, 8, 8, 3))
    shape = (1, 4, 8, 8, 3)
    init = jax.jit(lambda k: video_model.init(k, jnp.zeros(shape), train=False))(jax.random.key(1))
    target = nn.meta.unbox(init)["params"]
    assert (
        not target["time_embedding"].any()
        and not target["encoder"]["block00"]["time_dense"]["kernel"].any()
    )
    params, _ = adapt_params(image_params, target, target_grid=token_grid(video_model, shape))
    block, src_block = params["encoder"]["block00"], image_params["encoder"]["block00"]
    np.testing.assert_array_equal(block["norm_time"]["scale"], src_block["norm1"]["scale"])
    np.testing.assert_array_equal(
        block["attention_time"]["key_kernel"], src_block["attention"]["key_kernel"]
    )
    image = np.random.default_rng(2).normal(size=(2, 1, 8, 8, 3)).astype(np.float32)
    expected = jit_logits(image_model, {"params": image_params}, image)
    got = jit_logits(video_model, {"params": params}, np.repeat(image, 4, axis=1))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_unadaptable_parameters_name_the_parameter_and_both_shapes():
    small = build_model({"name": "vivit", "size": "Ti/4x2", **TINY}, num_classes=3)
    wide = build_model({"name": "vivit", "size": "Ti/8x2", **TINY}, num_classes=3)
    source = _params(small, (1, 4, 8, 8, 3))
    target = _shapes(wide, (1, 4, 8, 8, 3))
    with pytest.raises(
        SurgeryError,
        match=r"embedding/conv/kernel: source shape \(2, 4, 4, 3, 16\), "
        r"target shape \(2, 8, 8, 3, 16\)",
    ):
        adapt_params(source, target)
    m3 = build_model(
        {"name": "vivit", "size": "Ti/4x2", "variant": "factorised_self_attention", **TINY},
        num_classes=3,
    )
    abstract = _shapes(m3, (1, 4, 8, 8, 3))
    with pytest.raises(SurgeryError, match="norm_time.*initialised target parameters"):
        adapt_params(source, abstract, target_grid=(2, 2, 2))
    with pytest.raises(SurgeryError, match=r"pos_embedding of shape \(1, 8, 16\).*source_grid"):
        adapt_params(source, _params(small, (1, 8, 8, 8, 3)))
    with pytest.raises(ValueError, match="inflation must be one of"):
        adapt_params(source, target, inflation="tile")
    conv = build_model({"name": "r2plus1d_18", "layers": (1, 1, 1, 1), "width": 8}, num_classes=3)
    with pytest.raises(SurgeryError, match="none of the target's .* weight matrices below"):
        adapt_params(_params(conv, (1, 4, 8, 8, 3)), source)  # another family: nothing copied


def test_resize_linear_tiles_a_single_entry():
    x = np.arange(3.0).reshape(1, 3)
    np.testing.assert_array_equal(resize_linear(x, 0, 2), np.repeat(x, 2, axis=0))
    np.testing.assert_allclose(resize_linear(x, 1, 5), [[0, 0.5, 1, 1.5, 2]])


# (vjax/convert/surgery.py)


# kills su06, su10
def test_position_table_resize_equals_scipy_zoom_on_a_non_square_grid():
    """Trilinear, corners aligned, as scenic's scipy.ndimage.zoom(order=1), on random values."""
    from scipy import ndimage

    from vjax.convert.surgery import resize_pos_embedding

    table = np.random.default_rng(0).standard_normal((1, 2 * 3 * 4, 5)).astype(np.float32)
    got = resize_pos_embedding(table, (2, 3, 4), (3, 5, 7))
    want = ndimage.zoom(table.reshape(2, 3, 4, 5).astype(np.float64), (3 / 2, 5 / 3, 7 / 4, 1),
                        order=1, grid_mode=False)  # fmt: skip
    np.testing.assert_allclose(got.reshape(3, 5, 7, 5), want, atol=1e-5)


# kills su04
def test_inflating_a_multi_frame_kernel_keeps_its_response_to_a_static_clip():
    """A 2-frame tubelet inflated to 4 frames: its frames sum to the source's frames' sum."""
    from vjax.convert.surgery import inflate_kernel

    kernel = np.random.default_rng(0).standard_normal((2, 3, 3, 2, 4))
    for how in ("average", "central"):
        np.testing.assert_allclose(inflate_kernel(kernel, 4, how).sum(0), kernel.sum(0), atol=1e-12)


# kills su07
def test_a_spatial_table_of_a_factorised_model_moves_onto_a_new_grid():
    """ViViT model 2's spatial table (h*w rows of a (t, h, w) grid) is resized as one frame."""
    from scipy import ndimage

    from vjax.convert.surgery import adapt_params

    table = np.random.default_rng(0).standard_normal((1, 4, 3)).astype(np.float32)
    params, _ = adapt_params({"pos_embedding": table}, {"pos_embedding": np.zeros((1, 9, 3))},
                             source_grid=(2, 2, 2), target_grid=(2, 3, 3))  # fmt: skip
    want = ndimage.zoom(table.reshape(2, 2, 3).astype(np.float64), (1.5, 1.5, 1), order=1,
                        grid_mode=False)  # fmt: skip
    np.testing.assert_allclose(params["pos_embedding"].reshape(3, 3, 3), want, atol=1e-5)


# kills su08, su11
def test_time_embedding_is_resized_in_order_and_keeps_the_target_dtype():
    """TimeSformer's time_embedding: linear over time, corners aligned, in the target's dtype."""
    from vjax.convert.surgery import adapt_params

    source = np.random.default_rng(0).standard_normal((1, 4, 3)).astype(np.float32)
    params, _ = adapt_params({"time_embedding": source},
                             {"time_embedding": np.zeros((1, 7, 3), np.float32)})  # fmt: skip
    got = params["time_embedding"]
    want = np.stack([[np.interp(np.linspace(0, 3, 7), np.arange(4), source[0, :, d])
                      for d in range(3)]], 0).transpose(0, 2, 1)  # fmt: skip
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-6)
