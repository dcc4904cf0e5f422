"""Command-line config overrides by hand (found by mutation testing): booleans, numbers
coerced to the field's type, text kept as typed, and recipe_config's merge."""

import os

import pytest


def _demo():
    from vjax.config_utils import RECIPES, load_config

    return load_config(os.path.join(RECIPES, "demo.py"))


# kills cu01, cu09
def test_boolean_overrides_and_no_boolean_into_a_number():
    """``--config.optimizer.nesterov=False`` is False (and ``no``/``0`` too; ``yes``/``1``
    True); a bool given to a float field is a ConfigError, not 1.0."""
    from vjax.config_utils import ConfigError, apply_overrides

    config = _demo()
    for text, value in (("True", True), ("False", False), ("no", False), ("1", True),
                        ("0", False), ("yes", True)):  # fmt: skip
        apply_overrides(config, {"optimizer.nesterov": text})
        assert config.optimizer.nesterov is value, text
    with pytest.raises(ConfigError, match="nesterov"):
        apply_overrides(config, {"optimizer.nesterov": "maybe"})
    with pytest.raises(ConfigError, match="optimizer.lr"):
        apply_overrides(config, {"optimizer.lr": "True"})
    for key in ("train.keep_checkpoints", "train.num_steps", "input.global_batch_size"):
        with pytest.raises(ConfigError, match=rf"--config.{key}: expected a int, got 'True'"):
            apply_overrides(config, {key: "True"})  # True is an int to Python: was kept 1


# kills cu02, cu03, cu04
def test_numeric_overrides_are_coerced_to_the_fields_type_and_checked():
    """``--config.optimizer.lr=1`` is the float 1.0; a list for a tuple field is a tuple; a
    float for an int field (``train.num_steps=7.5``) or a number for a tuple is an error."""
    from vjax.config_utils import ConfigError, apply_overrides

    config = _demo()
    apply_overrides(config, {"optimizer.lr": "1", "input.mean": "[0.1, 0.2, 0.3]"})
    assert config.optimizer.lr == 1.0 and isinstance(config.optimizer.lr, float)
    assert config.input.mean == (0.1, 0.2, 0.3) and isinstance(config.input.mean, tuple)
    for key, text in (
        ("train.num_steps", "7.5"),
        ("input.std", "0.5"),
        ("input.mean", "('a', 'b', 'c')"),
        ("input.std", "[0.5, None, 0.5]"),
    ):
        with pytest.raises(ConfigError, match=key):
            apply_overrides(config, {key: text})


def test_python_values_are_taken_as_the_command_line_would_write_them():
    """From Python, ``{"optimizer.lr": 1e-3}`` said "cannot parse 0.001 as a float" and a bool
    was an AttributeError; a value is read as its repr, with the same checks."""
    from vjax.config_utils import ConfigError, apply_overrides

    config = _demo()
    apply_overrides(config, {"optimizer.lr": 1e-3, "train.num_steps": 10, "model.name": "vivit",
                             "optimizer.nesterov": True, "input.mean": (0.5,) * 3})  # fmt: skip
    assert (config.optimizer.lr, config.train.num_steps, config.optimizer.nesterov) == (
        1e-3, 10, True
    )  # fmt: skip
    assert config.input.mean == (0.5, 0.5, 0.5) and config.model.name == "vivit"
    with pytest.raises(ConfigError, match="--config.train.num_steps: "):
        apply_overrides(config, {"train.num_steps": 7.5})
    # NumPy's values as their Python ones, a path as its text, None as None (not "None").
    import pathlib

    import numpy as np

    apply_overrides(config, {"optimizer.lr": np.float32(0.5), "train.num_steps": np.int64(7),
                             "input.std": np.array([0.25] * 3),
                             "dataset.data_dir": pathlib.Path("/data/tfds"),
                             "train.init_from": None})  # fmt: skip
    assert (config.optimizer.lr, config.train.num_steps, config.input.std) == (0.5, 7, (0.25,) * 3)
    assert config.dataset.data_dir == "/data/tfds" and config.train.init_from is None


def test_a_field_takes_what_its_code_declares_where_the_recipe_wrote_a_narrower_value():
    """``input.frame_stride`` is a float (fractional strides resample): 2.5 is taken where a
    recipe writes 2, as where it names no stride; ``None`` where the field takes it
    (``model.hidden_size: int | None``, ``model.pooling``) is None, not an error or 'None'.
    A field that takes no None still refuses it."""
    from vjax.config_utils import RECIPES, ConfigError, apply_overrides, load_config

    for spec in ("video_transformers.py:vivit_b_k400", "conv3d.py:slowfast_r50_k400", "demo.py"):
        config = load_config(os.path.join(RECIPES, spec))
        apply_overrides(config, {"input.frame_stride": "2.5"})
        assert config.input.frame_stride == 2.5, spec
    config = load_config(os.path.join(RECIPES, "videomae.py:finetune_motion"))
    assert isinstance(config.model.hidden_size, int)
    apply_overrides(config, {"model.hidden_size": "None"})
    assert config.model.hidden_size is None
    config = load_config(os.path.join(RECIPES, "video_transformers.py:vivit_b_k400"))
    assert config.model.pooling == "cls"
    apply_overrides(config, {"model.pooling": "None"})
    assert config.model.pooling is None
    with pytest.raises(ConfigError, match="--config.input.num_frames: expected a int"):
        apply_overrides(config, {"input.num_frames": "None"})
    # input.mixup_rate is float | None: written as an int, it still takes 0.5, not text
    apply_overrides(config, {"input.mixup_rate": "1"})
    apply_overrides(config, {"input.mixup_rate": "0.5"})
    assert config.input.mixup_rate == 0.5
    apply_overrides(config, {"input.mixup_rate": "None"})
    assert config.input.mixup_rate is None
    with pytest.raises(ConfigError, match="--config.input.mixup_rate: cannot parse 'half'"):
        apply_overrides(config, {"input.mixup_rate": "half"})


# kills cu05, cu06
def test_text_overrides_are_kept_as_typed_and_a_none_field_takes_text():
    """A string field keeps the text exactly (a path's case matters); a model field whose
    default is None takes a plain word as a string (``model.temporal_pooling=gap``)."""
    from vjax.config_utils import apply_overrides

    config = _demo()
    apply_overrides(config, {"dataset.data_dir": "/Data/My Runs/K400",
                             "model.temporal_pooling": "gap"})  # fmt: skip
    assert config.dataset.data_dir == "/Data/My Runs/K400"
    assert config.model.temporal_pooling == "gap"


# kills cu13, cu14, cu16, cu17 (and cu12, cu15)
def test_recipe_config_by_hand():
    """A recipe of 2 epochs (0.5 warmup) of 1,000 videos at batch 10 is 200 steps with 50 of
    warmup; the recipe's end_lr is kept (0 when it names none); its dataset fields (fps) are
    kept beside the defaults; its train.objective is kept, also by the tiny variant, whose
    recipe ``tiny`` sections replace the demo's."""
    from vjax.config_utils import RECIPES, load_config, recipe_config

    recipe = {
        "dataset": {"name": "kinetics400", "num_classes": 3, "train_size": 1000, "fps": 15.0},
        "input": {"global_batch_size": 10},
        "model": {"name": "vivit", "size": "Ti/8x2"},
        "optimizer": {"name": "sgd", "lr": 0.1, "epochs": 2, "warmup_epochs": 0.5,
                      "end_lr": 0.001},
        "train": {"objective": "multi_label"},
        "tiny": {"dataset": {"name": "charades", "fps": 8.0}},
    }  # fmt: skip
    c = recipe_config(load_config(os.path.join(RECIPES, "demo.py")), recipe, None)
    assert c.train.num_steps == 200 and c.optimizer.warmup_steps == 50
    assert c.optimizer.end_lr == 0.001 and c.optimizer.lr == 0.1
    assert c.dataset.fps == 15.0 and c.dataset.name == "kinetics400"
    assert c.dataset.short_side == 256 and "num_classes" not in c.dataset
    assert c.train.objective == "multi_label"
    no_end = {**recipe, "optimizer": {k: v for k, v in recipe["optimizer"].items()
                                      if k != "end_lr"}}  # fmt: skip
    assert recipe_config(load_config(os.path.join(RECIPES, "demo.py")), no_end, None
                         ).optimizer.end_lr == 0.0  # fmt: skip
    tiny = recipe_config(load_config(os.path.join(RECIPES, "demo.py") + ":tiny"), recipe,
                         {"name": "vivit", "size": "Ti/8x2", "hidden_size": 16})  # fmt: skip
    assert tiny.train.objective == "multi_label" and tiny.model.hidden_size == 16
    assert dict(tiny.dataset) == {"name": "charades", "fps": 8.0}


def test_every_clip_and_preparation_option_can_be_set_where_the_recipe_does_not_name_it():
    """``--config.input.FIELD`` for any of the input pipeline's options (the module docstring
    of vjax/data/transforms.py lists them as optional) and ``--config.dataset.FIELD`` for any
    of the dataset's preparation settings, as ``--config.model.FIELD`` for a model's: the demo
    names neither ``test_num_clips`` nor ``frame_stride``, and asking for a multi-view test of
    it was an unknown key, as was ``dataset.fps`` on the Kinetics recipes. Each value is parsed
    to the option's type and reaches the pipeline; a misspelt one is still an error naming the
    closest options."""
    from vjax.config_utils import ConfigError, apply_overrides
    from vjax.data.transforms import InputOptions

    config = _demo()
    assert "test_num_clips" not in config.input and "frame_stride" not in config.input
    apply_overrides(config, {"input.test_num_clips": "4", "input.frame_stride": "1.5",
                             "input.flip_label_map": "left_right", "input.fps": "30",
                             "input.crop_area": "(0.2, 1.0)"})  # fmt: skip
    options = InputOptions.from_config(config.input)
    assert options.test_num_clips == 4 and options.frame_stride == 1.5 and options.fps == 30.0
    assert options.flip_label_map == "left_right" and options.crop_area == (0.2, 1.0)
    with pytest.raises(ConfigError, match=r"input.test_num_clips: cannot parse 'four' as an int"):
        apply_overrides(config, {"input.test_num_clips": "four"})
    with pytest.raises(ConfigError) as error:
        apply_overrides(config, {"input.test_num_clip": "4"})
    message = str(error.value)
    assert "did you mean input.test_num_clips, input.test_num_crops" in message
    assert message.count("input.test_num_clips") == 1  # named once, set or not
    with pytest.raises(ConfigError, match="unknown config key 'optimizer.test_num_clips'"):
        apply_overrides(config, {"optimizer.test_num_clips": "4"})  # only the input section

    from vjax.config_utils import RECIPES, load_config

    kinetics = load_config(os.path.join(RECIPES, "conv3d.py") + ":r2plus1d_18_k400")
    assert "fps" not in kinetics.dataset and "num_workers" not in kinetics.dataset
    apply_overrides(kinetics, {"dataset.fps": "25", "dataset.num_workers": "8",
                               "dataset.beam_runner": "DirectRunner"})  # fmt: skip
    assert kinetics.dataset.fps == 25.0 and isinstance(kinetics.dataset.fps, float)
    assert kinetics.dataset.num_workers == 8 and kinetics.dataset.beam_runner == "DirectRunner"
    with pytest.raises(ConfigError, match="dataset.min_frames: expected a int, got '8.5'"):
        apply_overrides(kinetics, {"dataset.min_frames": "8.5"})
    with pytest.raises(ConfigError, match="'dataset.fpss'; did you mean dataset.fps"):
        apply_overrides(kinetics, {"dataset.fpss": "25"})
