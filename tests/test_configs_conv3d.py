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
        compiled = train_step.lower(state, batch, jax.random.key(0)).compile()
        # vjax/compile_options.py: nothing of the train step in YNNPACK on CPU.
        assert ynn_fusions(compiled) == 0
        new_state, metrics = compiled(state, batch, jax.random.key(0))
    assert np.isfinite(float(metrics["loss"])) and int(new_state.step) == 1


# The published values each recipe keeps: (recipe, dotted config key, value), each under its
# source's line. PYSLOWFAST: facebookresearch/SlowFast (slowfast/config/defaults.py and the
# recipe's yaml); TORCHVISION: pytorch/vision references/video_classification/train.py
# defaults and torchvision/models/video/README.md (64 GPUs).
HYPERPARAMETERS = [
    # PYSLOWFAST defaults.py: _C.SOLVER.NESTEROV = True, _C.SOLVER.MOMENTUM = 0.9 (no yaml
    # below sets either)
    *[(r, "optimizer.nesterov", True) for r in ("i3d_r50_k400", "slowfast_r50_k400",
                                                "x3d_m_k400", "slowfast_r50_charades")],
    *[(r, "optimizer.momentum", 0.9) for r in ("i3d_r50_k400", "slowfast_r50_charades")],
    # PYSLOWFAST configs/Kinetics/pytorchvideo/SLOWFAST_8x8_R50.yaml: BATCH_SIZE 64,
    # BASE_LR 0.1, WEIGHT_DECAY 1e-4, NUM_FRAMES 32, SAMPLING_RATE 2, DROPOUT_RATE 0.5
    ("slowfast_r50_k400", "input.global_batch_size", 64),
    ("slowfast_r50_k400", "optimizer.lr", 0.1),
    ("slowfast_r50_k400", "optimizer.weight_decay", 1e-4),
    ("slowfast_r50_k400", "input.num_frames", 32),
    ("slowfast_r50_k400", "input.frame_stride", 2),
    # PYSLOWFAST X3D_M.yaml: TRAIN.BATCH_SIZE 128, SOLVER.WEIGHT_DECAY 5e-5, NUM_FRAMES 16,
    # SAMPLING_RATE 5
    ("x3d_m_k400", "input.global_batch_size", 128),
    ("x3d_m_k400", "optimizer.weight_decay", 5e-5),
    ("x3d_m_k400", "input.frame_stride", 5),
    # PYSLOWFAST configs/Charades/SLOWFAST_16x8_R50.yaml: BATCH_SIZE 16, BASE_LR 0.0375,
    # WEIGHT_DECAY 1e-4, NUM_FRAMES 64, SAMPLING_RATE 2, TRAIN_JITTER_SCALES [256, 340],
    # DROPOUT_RATE 0.5, NUM_ENSEMBLE_VIEWS 10, NUM_SPATIAL_CROPS 3, ENSEMBLE_METHOD max,
    # NUM_BATCHES_PRECISE 200
    ("slowfast_r50_charades", "input.global_batch_size", 16),
    ("slowfast_r50_charades", "optimizer.lr", 0.0375),
    ("slowfast_r50_charades", "optimizer.weight_decay", 1e-4),
    ("slowfast_r50_charades", "input.num_frames", 64),
    ("slowfast_r50_charades", "input.frame_stride", 2),
    ("slowfast_r50_charades", "input.jitter_short_side", (256, 340)),
    ("slowfast_r50_charades", "model.dropout_rate", 0.5),
    ("slowfast_r50_charades", "input.test_num_clips", 10),
    ("slowfast_r50_charades", "input.test_num_crops", 3),
    ("slowfast_r50_charades", "input.test_ensemble", "max"),
    ("slowfast_r50_charades", "train.precise_bn_batches", 200),
    # TORCHVISION train.py: torch.optim.SGD(..., momentum=0.9, weight_decay=1e-4), no
    # nesterov; --lr 0.64 for 64 GPUs x --batch-size 24 (README: 0.01 per GPU), scaled
    # linearly to batch 64
    ("r2plus1d_18_k400", "optimizer.nesterov", False),
    ("r2plus1d_18_k400", "optimizer.momentum", 0.9),
    ("r2plus1d_18_k400", "optimizer.weight_decay", 1e-4),
    ("r2plus1d_18_k400", "input.global_batch_size", 64),
    ("r2plus1d_18_k400", "optimizer.lr", 0.64 * 64 / (64 * 24)),
    # TORCHVISION: --clip-len 16, --frame-rate 15, --clips-per-video 5 (5 test clips),
    # --train-resize-size / --val-resize-size (128, 171), --train-crop-size /
    # --val-crop-size (112, 112): a random 112 crop of the 128 short side, and the centre one
    ("r2plus1d_18_k400", "input.num_frames", 16),
    ("r2plus1d_18_k400", "input.fps", 15.0),
    ("r2plus1d_18_k400", "input.frame_stride", 1),  # consecutive frames at 15 fps
    ("r2plus1d_18_ucf101", "input.frame_stride", 1),
    ("lrcn_ucf101", "input.frame_stride", 1),
    ("r2plus1d_18_k400", "dataset.short_side", 128),
    ("r2plus1d_18_k400", "input.crop_size", 112),
    ("r2plus1d_18_k400", "input.train_crop", "scale_jitter"),
    ("r2plus1d_18_k400", "input.jitter_short_side", (128, 128)),
    ("r2plus1d_18_k400", "input.test_crop_fraction", 112 / 128),
    ("r2plus1d_18_k400", "input.test_num_clips", 5),
    ("r2plus1d_18_k400", "input.test_num_crops", 1),
    # TORCHVISION README: mean [0.43216, 0.394666, 0.37645], std [0.22803, 0.22145, 0.216989]
    ("r2plus1d_18_k400", "input.mean", (0.43216, 0.394666, 0.37645)),
    ("r2plus1d_18_k400", "input.std", (0.22803, 0.22145, 0.216989)),
]  # fmt: skip


@pytest.mark.parametrize("recipe,key,value", HYPERPARAMETERS)
def test_recipe_keeps_the_published_hyperparameter(recipe, key, value):
    config = load_config(f"{CONFIG}:{recipe}")
    section, field = key.split(".")
    got = config[section][field]
    if isinstance(value, str | bool):
        assert got == value, (recipe, key, got)
    else:
        assert got == pytest.approx(value), (recipe, key, got)


def test_r2plus1d_18_k400_sees_torchvisions_clips():
    # TORCHVISION: --epochs 45 and --lr-warmup-epochs 10, each epoch 5 random clips of every
    # video (RandomClipSampler(video_clips, args.clips_per_video)): 225 and 50 one-clip passes
    config = load_config(f"{CONFIG}:r2plus1d_18_k400")
    per_pass = 234619 / config.input.global_batch_size  # KINETICS_400_TRAIN
    assert config.train.num_steps == int(45 * 5 * per_pass)
    assert config.optimizer.warmup_steps == int(10 * 5 * per_pass)
