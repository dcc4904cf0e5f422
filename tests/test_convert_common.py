"""The converters' shared parts: checked assignment, tree comparison, the folder vjax.load opens."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import randomized

import vjax
from vjax.convert import ConversionError, assign, pretrained_config, save_converted
from vjax.convert.common import check_tree_matches
from vjax.models import build_model

MODEL = {"name": "vivit", "size": "Ti/8x2", "num_layers": 1, "hidden_size": 32, "num_heads": 2}


def test_assign_checks_shapes_and_double_assignment():
    tree: dict = {}
    assign(tree, "a/b/kernel", np.zeros((2, 3)), (2, 3))
    assert tree["a"]["b"]["kernel"].shape == (2, 3)
    with pytest.raises(
        ConversionError, match=r"a/b/bias: source has shape \(4,\), model expects \(3,\)"
    ):
        assign(tree, "a/b/bias", np.zeros(4), (3,))
    with pytest.raises(ConversionError, match="a/b/kernel: assigned twice"):
        assign(tree, "a/b/kernel", np.zeros((2, 3)))


def test_check_tree_matches_names_missing_extra_and_reshaped():
    expected = {
        "dense": {
            "kernel": jax.ShapeDtypeStruct((4, 2), jnp.float32),
            "bias": jax.ShapeDtypeStruct((2,), jnp.float32),
        }
    }
    check_tree_matches({"dense": {"kernel": np.zeros((4, 2)), "bias": np.zeros(2)}}, expected)
    with pytest.raises(ConversionError) as e:
        check_tree_matches({"dense": {"kernel": np.zeros((4, 3)), "extra": np.zeros(1)}}, expected)
    message = str(e.value)
    assert "dense/bias: missing (model expects (2,))" in message
    assert "dense/extra: not in the model (source has (1,))" in message
    assert "dense/kernel: source has shape (4, 3), model expects (4, 2)" in message


def test_saved_conversion_loads_back_and_predicts_the_same(tmp_path):
    model = build_model(MODEL, num_classes=5)
    video = jax.random.normal(jax.random.key(1), (2, 4, 16, 16, 3))
    init = jax.jit(lambda key: model.init(key, video, train=False))
    variables = randomized(jax.device_get(init(jax.random.key(0))))  # a fresh head is zero
    config = pretrained_config(MODEL, (4, 16, 16, 3), [f"c{i}" for i in range(5)], source="test")
    save_converted(str(tmp_path / "out"), config, variables)

    loaded_config, loaded_model, loaded = vjax.load(str(tmp_path / "out"))
    assert loaded_config.source == "test" and list(loaded_config.class_names)[-1] == "c4"
    # Each model's apply compiled as one program (the same program for equal models).
    logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, video)
    assert np.abs(logits).max() > 1e-2
    loaded_logits = jax.jit(lambda v, x: loaded_model.apply(v, x, train=False))(loaded, video)
    np.testing.assert_array_equal(loaded_logits, logits)


def test_convert_command_rejects_unknown_source(capsys):
    from vjax.cli import main

    assert main(["convert", "--from=caffe", "--src=x", "--out=y"]) == 2
    assert "invalid choice: 'caffe'" in capsys.readouterr().err


def test_check_tree_matches_refuses_a_transposed_array_of_the_same_size():
    """A kernel stored transposed (torch's (out, in) read as flax's (in, out)) has the right
    number of values but the wrong shape: refused, naming both shapes (the suite's case
    changes the size too, so it cannot tell a shape check from a size check)."""
    import jax
    import jax.numpy as jnp

    from vjax.convert import ConversionError
    from vjax.convert.common import check_tree_matches

    expected = {"dense": {"kernel": jax.ShapeDtypeStruct((4, 2), jnp.float32)}}
    with pytest.raises(
        ConversionError, match=r"dense/kernel: source has shape \(2, 4\), model expects \(4, 2\)"
    ):
        check_tree_matches({"dense": {"kernel": np.zeros((2, 4))}}, expected)


def test_a_conversion_that_does_not_fit_its_config_is_refused_before_writing(tmp_path):
    """Variables of another width, head or clip size were saved, and failed at the first call
    of the loaded model in Flax's parameter-shape check; a config without class names was an
    AttributeError."""
    model = build_model(MODEL, num_classes=5)
    init = jax.jit(lambda key: model.init(key, np.zeros((1, 4, 16, 16, 3)), train=False))
    variables = jax.device_get(init(jax.random.key(0)))
    names = [f"c{i}" for i in range(5)]
    cases = {
        "three classes": (pretrained_config(MODEL, (4, 16, 16, 3), names[:3]),
                          "classifier/head/bias: source has shape (5,), model expects (3,)"),
        "another clip": (pretrained_config(MODEL, (8, 16, 16, 3), names),
                         "pos_embedding: source has shape (1, 8, 32), model expects (1, 16, 32)"),
        "another width": (pretrained_config({**MODEL, "hidden_size": 64}, (4, 16, 16, 3), names),
                          "model expects"),
    }  # fmt: skip
    for case, (config, message) in cases.items():
        with pytest.raises(ConversionError, match=re.escape(message)):
            save_converted(str(tmp_path / case), config, variables)
        assert not (tmp_path / case).exists(), case
    config = pretrained_config(MODEL, (4, 16, 16, 3), names)
    del config["class_names"]
    with pytest.raises(ConversionError, match=r"the config lacks class_names: build it with"):
        save_converted(str(tmp_path / "no names"), config, variables)


def test_a_model_that_hears_saves_without_a_recorded_spectrogram_size(tmp_path):
    """An MBT config without input.audio (the spectrogram is given at the call) saved and
    loaded before the parameter check; it still does (its tree is not checked)."""
    mbt = {"name": "mbt", "size": "Ti/8x2", "hidden_size": 16, "num_layers": 2, "num_heads": 2,
           "mlp_dim": 32, "fusion_layer": 1}  # fmt: skip
    model = build_model(mbt, num_classes=3)
    inputs = {"video": np.zeros((1, 4, 16, 16, 3), np.float32), "audio": np.zeros((1, 16, 16))}
    variables = jax.device_get(jax.jit(lambda k: model.init(k, inputs, train=False))(
        jax.random.key(0)))  # fmt: skip
    config = pretrained_config(mbt, (4, 16, 16, 3), ["a", "b", "c"])
    save_converted(str(tmp_path / "mbt"), config, variables)
    assert vjax.load(str(tmp_path / "mbt")).modalities == ("video", "audio")
