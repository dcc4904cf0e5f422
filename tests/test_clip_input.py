"""Every video model refuses a channels-first clip (naming the layout and the axis move that
fixes it) and uint8 frames (naming the normalisation), before anything is compiled. Before,
a conv net trained on a (B, C, T, H, W) clip as 112 "channels" and any model scored raw
pixels in 0..255."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import MODEL_FAMILIES

from vjax.models import build_model
from vjax.models.clip_input import check_video_shape


def _traced(model, inputs):
    """``model.init`` traced on abstract ``inputs`` (nothing computed or compiled)."""
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), inputs)


@pytest.mark.parametrize("family", MODEL_FAMILIES)
def test_channels_first_clips_are_named_with_the_move_that_fixes_them(family):
    config, (t, h, w) = MODEL_FAMILIES[family]
    model = build_model(config, num_classes=3)
    for axis, layout in ((1, "PyTorch's (B, C, T, H, W)"), (2, "Hugging Face's (B, T, C, H, W)")):
        shape = [2, t, h, w]
        shape.insert(axis, 3)
        named = rf"last axis, got {w} .*this looks like {re.escape(layout)}"
        with pytest.raises(ValueError, match=named):
            model.check_input(tuple(shape))
        with pytest.raises(ValueError, match=rf"jnp.moveaxis\(video, {axis}, -1\)"):
            _traced(model, jax.ShapeDtypeStruct(tuple(shape), jnp.float32))
        moved = jnp.moveaxis(jnp.zeros(shape, jnp.uint8), axis, -1)
        model.check_input(moved.shape)  # the hint's move gives a clip the model takes


@pytest.mark.parametrize("family", MODEL_FAMILIES)
def test_uint8_frames_are_refused_by_the_bare_module(family):
    config, (t, h, w) = MODEL_FAMILIES[family]
    model = build_model(config, num_classes=3)
    shape = (1, t, h, w, 3)
    with pytest.raises(ValueError, match="takes float clips normalised .* got uint8.*vjax.load"):
        _traced(model, jax.ShapeDtypeStruct(shape, jnp.uint8))
    abstract = _traced(model, jax.ShapeDtypeStruct(shape, jnp.bfloat16))  # any float is taken
    assert "params" in abstract


def test_mbt_checks_its_video_as_the_video_models_do():
    mbt = build_model({"name": "mbt", "size": "Ti/8x2", "hidden_size": 16, "num_layers": 2,
                       "num_heads": 2, "mlp_dim": 32, "fusion_layer": 1}, 4)  # fmt: skip
    audio = jax.ShapeDtypeStruct((1, 16, 16), jnp.float32)
    with pytest.raises(ValueError, match="looks like PyTorch's"):
        mbt.check_input({"video": (1, 3, 4, 16, 16), "audio": audio.shape})
    video = jax.ShapeDtypeStruct((1, 4, 16, 16, 3), jnp.uint8)
    with pytest.raises(ValueError, match="takes float clips normalised"):
        _traced(mbt, {"video": video, "audio": audio})


def test_a_clip_without_three_channels_anywhere_is_named_as_such():
    with pytest.raises(ValueError, match=r"got 1 \(shape \(2, 8, 32, 32, 1\)\); vjax takes"):
        check_video_shape((2, 8, 32, 32, 1), (1, 1, 1))  # a conv net's RGB
    check_video_shape(np.zeros((2, 8, 32, 32, 3)).shape, (1, 1, 1))


def test_a_transformer_takes_the_channel_count_it_was_converted_with():
    """HF configs set num_channels (the converter keeps it): 1 to 4 channels last are taken."""
    vivit = build_model(MODEL_FAMILIES["vivit_model1"][0], num_classes=3)
    for channels in (1, 2, 4):
        vivit.check_input((2, 4, 8, 8, channels))
    abstract = _traced(vivit, jax.ShapeDtypeStruct((2, 4, 8, 8, 2), jnp.float32))
    kernel = nn.meta.unbox(abstract)["params"]["embedding"]["conv"]["kernel"]
    assert kernel.shape == (2, 4, 4, 2, 8)  # tubelet (2, 4, 4), 2 channels in, width 8
