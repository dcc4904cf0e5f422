"""configs/mbt.py: the published hyper-parameters each recipe keeps, pinned under their
sources' lines; the multi-label recipe's SGD makes scenic's updates although vjax averages
the sigmoid loss over the classes; AST builds on its 1024-frame spectrogram. (The MBT models,
their tiny variants and the recipes' model shapes: tests/test_mbt.py.)"""

import os

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO

from vjax.config_utils import load_config
from vjax.models import build_model

CONFIG = os.path.join(REPO, "configs", "mbt.py")
AUDIOSET_CLASSES = 527

# The published values each recipe keeps: (recipe, dotted config key, value), each under its
# source's line. SCENIC: google-research/scenic scenic/projects/mbt/configs/audioset/
# balanced_audioset_base.py (the VGGSound and Epic-Kitchens recipes take it too: the paper
# trains every dataset alike, Sec. 4.2); MBT_PAPER: Nagrani et al. 2021, Sec. 4.2; AST_RUN:
# YuanGongND/ast egs/audioset/run.sh (set=balanced); AST_SRC: YuanGongND/ast src/.
HYPERPARAMETERS = [
    # SCENIC: config.model.fusion_layer = 8, n_bottlenecks = 4, hidden_size = 768,
    # num_layers = 12, patches.size = [16, 16, 2], stochastic_droplayer_rate = 0.3
    *[(r, "model.fusion_layer", 8) for r in ("mbt_audioset_mini", "mbt_vggsound", "mbt_epic")],
    *[(r, "model.num_bottlenecks", 4) for r in ("mbt_audioset_mini", "mbt_vggsound")],
    ("mbt_audioset_mini", "model.size", "B/16x2"),
    ("mbt_audioset_mini", "model.drop_path_rate", 0.3),
    # SCENIC: num_frames = 32, stride = 2 ("AudioSet videos are extracted at 25fps"),
    # min_resize = 256, crop_size = 224, scale_min_factor 0.9 / scale_max_factor 1.33
    ("mbt_audioset_mini", "input.num_frames", 32),
    ("mbt_audioset_mini", "input.frame_stride", 2),
    ("mbt_audioset_mini", "dataset.fps", 25.0),
    ("mbt_vggsound", "dataset.fps", 25.0),
    ("mbt_audioset_mini", "input.crop_size", 224),
    ("mbt_audioset_mini", "input.jitter_short_side", (230, 340)),
    # SCENIC: augmentation_params.do_color_augment = True, prob_color_augment = 0.8,
    # prob_color_drop = 0.1 (DMVR's color_default_augm via scenic/dataset_lib/video_ops.py,
    # which audiovisual_tfrecord_dataset.py applies to the RGB frames)
    *[(r, "input.color_augment_prob", 0.8) for r in ("mbt_audioset_mini", "mbt_vggsound")],
    *[(r, "input.color_drop_prob", 0.1) for r in ("mbt_audioset_mini", "mbt_vggsound")],
    ("mbt_epic", "input.color_augment_prob", 0.8),
    ("mbt_epic", "input.color_drop_prob", 0.1),
    # SCENIC: num_test_clips = 4, no do_three_spatial_crops (audiovisual_tfrecord_dataset.py:
    # dataset_configs.get('do_three_spatial_crops', False) -> 1 spatial crop)
    ("mbt_audioset_mini", "input.test_num_clips", 4),
    ("mbt_audioset_mini", "input.test_num_crops", 1),
    ("mbt_epic", "input.test_num_crops", 1),
    # SCENIC: batch_size = 64, mixup.alpha = 0.5, num_training_epochs = 50
    ("mbt_audioset_mini", "input.global_batch_size", 64),
    ("mbt_audioset_mini", "input.mixup_alpha", 0.5),
    ("mbt_vggsound", "input.mixup_alpha", 0.5),
    # SCENIC: optimizer = 'momentum' (scenic/train_lib_deprecated/optimizers.py before its
    # removal in 38bb88c: momentum -> beta 0.9, nesterov=False), l2_decay_factor = 0,
    # base_learning_rate = 5e-1, max_grad_norm = 1, label_smoothing = 0.3
    ("mbt_vggsound", "optimizer.name", "sgd"),
    ("mbt_vggsound", "optimizer.momentum", 0.9),
    ("mbt_vggsound", "optimizer.nesterov", False),
    ("mbt_vggsound", "optimizer.weight_decay", 0.0),
    ("mbt_vggsound", "optimizer.lr", 0.5),
    ("mbt_vggsound", "optimizer.grad_clip_norm", 1.0),
    ("mbt_vggsound", "optimizer.label_smoothing", 0.3),
    ("mbt_epic", "optimizer.lr", 0.5),
    # SCENIC: base_learning_rate 0.5, max_grad_norm 1, label_smoothing 0.3, with its sigmoid
    # cross-entropy summed over the 527 classes (scenic/model_lib/base_models/model_utils.py
    # weighted_sigmoid_cross_entropy, apply_label_smoothing): objective multi_label_sum
    # (test_multi_label_sum_is_scenics_loss)
    ("mbt_audioset_mini", "optimizer.lr", 0.5),
    ("mbt_audioset_mini", "optimizer.grad_clip_norm", 1.0),
    ("mbt_audioset_mini", "optimizer.weight_decay", 0.0),
    ("mbt_audioset_mini", "optimizer.label_smoothing", 0.3),
    ("mbt_audioset_mini", "train.objective", "multi_label_sum"),
    # SCENIC: num_spec_frames = 8, spec_shape = (100, 128); MBT_PAPER: 128 mel bins, 25 ms
    # window, 10 ms hop
    ("mbt_audioset_mini", "input.audio.frames", 800),
    ("mbt_audioset_mini", "input.audio.mel_bins", 128),
    ("mbt_audioset_mini", "input.audio.window_ms", 25.0),
    ("mbt_audioset_mini", "input.audio.hop_ms", 10.0),
    # SCENIC: freq_mask_count = 1, freq_mask_max_bins = 48; time_mask_count = 4 with
    # time_mask_max_ratio = 0, which tensorflow/lingvo lingvo/core/spectrum_augmenter.py
    # (lingvo==0.11.0, scenic/projects/mbt/requirements.txt) _TimeMask reads as no masking
    ("mbt_audioset_mini", "input.audio.spec_augment.freq_masks", 1),
    ("mbt_audioset_mini", "input.audio.spec_augment.freq_width", 48),
    ("mbt_audioset_mini", "input.audio.spec_augment.time_masks", 0),
    # MBT_PAPER: Epic-Kitchens, 32 frames with stride 1
    ("mbt_epic", "input.num_frames", 32),
    ("mbt_epic", "input.frame_stride", 1),
    # AST_RUN: lr=5e-5, batch_size=12, freqm=48, timem=192, audio_length=1024,
    # fstride=tstride=10, dataset_mean=-4.2677393, dataset_std=4.5689974
    ("ast_audioset_mini", "optimizer.lr", 5e-5),
    ("ast_audioset_mini", "input.global_batch_size", 12),
    ("ast_audioset_mini", "input.audio.spec_augment.freq_masks", 1),
    ("ast_audioset_mini", "input.audio.spec_augment.freq_width", 48),
    ("ast_audioset_mini", "input.audio.spec_augment.time_masks", 1),
    ("ast_audioset_mini", "input.audio.spec_augment.time_width", 192),
    ("ast_audioset_mini", "input.audio.frames", 1024),
    ("ast_audioset_mini", "input.audio.mel_bins", 128),
    ("ast_audioset_mini", "model.patch_stride", 10),
    ("ast_audioset_mini", "input.audio.mean", -4.2677393),
    ("ast_audioset_mini", "input.audio.std", 4.5689974),
    # AST_SRC traintest.py: torch.optim.Adam(trainables, args.lr, weight_decay=5e-7,
    # betas=(0.95, 0.999)) (the coupled L2 left out: module docstring), no gradient
    # clipping, BCEWithLogitsLoss without smoothing; dataloader.py: np.random.beta(10, 10);
    # models/ast_models.py: timm.create_model('vit_deit_base_distilled_patch16_384') (drop
    # path 0); one evaluation of the whole clip
    ("ast_audioset_mini", "optimizer.name", "adamw"),
    ("ast_audioset_mini", "optimizer.b1", 0.95),
    ("ast_audioset_mini", "optimizer.b2", 0.999),
    ("ast_audioset_mini", "optimizer.grad_clip_norm", 0.0),
    ("ast_audioset_mini", "optimizer.label_smoothing", 0.0),
    ("ast_audioset_mini", "input.mixup_alpha", 10.0),
    ("ast_audioset_mini", "input.mixup_rate", 0.5),  # if random.random() < self.mixup
    ("ast_audioset_mini", "model.drop_path_rate", 0.0),
    ("ast_audioset_mini", "input.test_num_clips", 1),
    ("ast_audioset_mini", "input.test_num_crops", 1),
]


def _value(config, key: str):
    for part in key.split("."):
        config = config[part]
    return config


@pytest.mark.parametrize("recipe,key,value", HYPERPARAMETERS)
def test_recipe_keeps_the_published_hyperparameter(recipe, key, value):
    got = _value(load_config(f"{CONFIG}:{recipe}"), key)
    if isinstance(value, str | bool):
        assert got == value, (recipe, key, got)
    else:
        assert got == pytest.approx(value, rel=1e-3), (recipe, key, got)


@pytest.mark.parametrize(
    "recipe, batch, epochs, warmup_steps",
    [
        # SCENIC: steps_per_epoch = AUDIOSET_TRAIN_SIZE // batch_size, warmup_steps = 2.5 x it
        ("mbt_audioset_mini", 64, 50, 795),
        # AST_RUN: epoch=25; AST_SRC traintest.py: warm-up over global_step <= 1000
        ("ast_audioset_mini", 12, 25, 1000),
    ],
)
def test_schedule_lengths(recipe, batch, epochs, warmup_steps):
    config = load_config(f"{CONFIG}:{recipe}")
    assert config.train.num_steps == epochs * 20361 // batch
    assert config.optimizer.warmup_steps == warmup_steps


def test_multi_label_sum_is_scenics_loss():
    """scenic's sigmoid cross-entropy written out: targets smoothed to ``(1 - ls) t + ls / K``,
    ``-(t log p + (1 - t) log(1 - p))`` summed over the K classes, averaged over examples;
    the mean form (PySlowFast's, objective multi_label) is the same entries' mean."""
    from vjax.objectives import get

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 6)).astype(np.float32)
    labels = (rng.uniform(size=(4, 6)) < 0.3).astype(np.int32)
    batch = {"label": jnp.asarray(labels)}
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    t = 0.7 * labels + 0.3 / 6

    def entries(t):
        return -(t * np.log(p) + (1 - t) * np.log(1 - p))

    summed, _ = get("multi_label_sum").losses(jnp.asarray(logits), batch, 0.3)
    assert float(summed) == pytest.approx(entries(t).sum(axis=1).mean(), rel=1e-5)
    mean, _ = get("multi_label").losses(jnp.asarray(logits), batch, 0.3)
    assert float(mean) == pytest.approx(entries(0.7 * labels + 0.15).mean(), rel=1e-5)


def test_ast_recipe_builds_on_its_spectrogram():
    # AST_SRC models/ast_models.py get_shape(fstride=10, tstride=10, 128, 1024): 12 x 101.
    config = load_config(f"{CONFIG}:ast_audioset_mini")
    model = build_model(config.model, AUDIOSET_CLASSES, config.train.dtype)
    shape = (1, config.input.audio.frames, config.input.audio.mel_bins)
    model.check_input(shape)
    assert model.patch_grid(shape) == (1, 12, 101)
