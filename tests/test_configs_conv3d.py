"""configs/conv3d.py: every recipe builds its published model on its clip with valid keys, and
every tiny variant runs one train step through the trainer's own step."""

import jax
import numpy as np
import pytest
from conftest import REPO
from test_compile_options import ynn_fusions

from vjax import train
from vjax.config_utils import load_config
from vjax.flops import count_params
from vjax.models import build_model

CONFIG = f"{REPO}/configs/conv3d.py"
RECIPES = ["r2plus1d_18_k400", "i3d_r50_k400", "slowfast_r50_k400", "x3d_m_k400",
           "r2plus1d_18_ucf101", "lrcn_ucf101"]  # fmt: skip
# Published parameter counts of the Kinetics recipes (torchvision metadata, pytorchvideo zoo).
PARAMS = {"r2plus1d_18_k400": 31_505_325, "i3d_r50_k400": 28.04e6,
          "slowfast_r50_k400": 34.57e6, "x3d_m_k400": 3.79e6}  # fmt: skip


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_builds_its_model_on_its_clip(recipe):
    config = load_config(f"{CONFIG}:{recipe}")
    num_classes = 400 if "k400" in recipe else 101
    model = build_model(config.model, num_classes, config.train.dtype)
    clip = (1, config.input.num_frames, config.input.crop_size, config.input.crop_size, 3)
    model.check_input(clip)
    if recipe in PARAMS:
        assert count_params(model, clip) == pytest.approx(PARAMS[recipe], rel=0.01)
    assert config.train.num_steps > 1000 and config.dataset.name in ("kinetics", "ucf101")


@pytest.mark.parametrize("recipe", RECIPES)
def test_tiny_variant_trains_one_step(data_dir, recipe):
    config = load_config(f"{CONFIG}:{recipe},tiny")
    config.dataset.data_dir = data_dir
    exp = train.setup(config, devices=jax.devices()[:1])
    state = train.create_state(exp, seed=0)
    train_step, _ = train.compile_steps(exp)
    video = np.random.default_rng(0).integers(0, 255, exp.input_shape, dtype=np.uint8)
    batch = {"video": video, "label": np.arange(exp.input_shape[0]) % 4}
    with jax.set_mesh(exp.mesh):
        # vjax/compile_options.py: nothing of the train step in YNNPACK on CPU.
        assert ynn_fusions(train_step.lower(state, batch, jax.random.key(0)).compile()) == 0
        new_state, metrics = train_step(state, batch, jax.random.key(0))
    assert np.isfinite(float(metrics["loss"])) and int(new_state.step) == 1
