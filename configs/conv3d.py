"""3D-CNN and recurrent recipes: Kinetics-400 (R(2+1)D-18, I3D R50, SlowFast R50 8x8, X3D-M),
UCF101 fine-tuning of R(2+1)D-18, LRCN on UCF101, and SlowFast R50 16x8 on Charades
(multi-label).

Sources: torchvision's ``R2Plus1D_18_Weights.KINETICS400_V1`` metadata and its reference
recipe (``references/video_classification``); pytorchvideo's model zoo (``model_zoo.md``,
Kinetics-400) and the PySlowFast configs it was trained with
(``configs/Kinetics/pytorchvideo/*.yaml``: SGD, momentum 0.9, cosine, scale jitter
[256, 320], crop 224, dropout 0.5, precise BN over 200 batches); Donahue et al., "Long-term
Recurrent Convolutional Networks" (CVPR 2015); PySlowFast's ``MODEL_ZOO.md`` (Multigrid
section, Charades) and ``configs/Charades/SLOWFAST_16x8_R50.yaml``. Views are temporal clips x
spatial crops.
GFLOPs are multiply-accumulates per view (``vjax parity conv3d`` prints ours next to them).

Recipes (``get_config("RECIPE")``; add ``,tiny`` for a seconds-long CPU run of the same model
family, narrow and one block per stage, on the embedded ``vjax_motion`` dataset):

  r2plus1d_18_k400   R(2+1)D-18, 16 frames at 15 fps, 112x112. Top-1 67.46 / top-5 86.18
                     (torchvision metadata; video-level, 5 clips x 1 crop). 31.51M params,
                     40.52 GFLOPs. torchvision's recipe (``torchvision/models/video/README.md``,
                     ``references/video_classification/train.py``): SGD momentum 0.9, weight
                     decay 1e-4, lr 0.01 x 64 GPUs = 0.64 for batch 24 x 64 = 1536 (scaled
                     linearly here to 0.64 x 64 / 1536 for batch 64), 45 epochs of 5 random
                     clips per video (``RandomClipSampler``: 225 passes of one clip here), 10
                     warm-up epochs (50 here); frames resized to 128 x 171, a random 112 crop
                     and a flip; the test's centre 112 crop.
  i3d_r50_k400       I3D R50 8x8. Top-1 73.27, 10x3 views (pytorchvideo zoo). 28.04M params,
                     37.53 GFLOPs per view as the zoo counts (ours 37.10: the zoo adds
                     training-mode BatchNorm FLOPs).
  slowfast_r50_k400  SlowFast R50 8x8 (32 fast frames, stride 2). Top-1 76.94, 10x3 views
                     (pytorchvideo zoo). 34.57M params, 65.71 GFLOPs.
  x3d_m_k400         X3D-M, 16 frames stride 5. Top-1 75.94, 10x3 views (pytorchvideo zoo).
                     3.79M params, 6.72 GFLOPs as the zoo counts at the 256 test crop (4.73
                     at 224, PySlowFast's figure, which ours matches).
  r2plus1d_18_ucf101 R(2+1)D-18 fine-tuned on UCF101 split 1 from torchvision's Kinetics
                     weights (``vjax convert --from=torchvision --arch=r2plus1d_18``, then
                     ``--config.train.init_from=DIR``: the 400-way head is replaced). No
                     published number for this exact recipe; Tran et al. (2018) report 96.8%
                     for Kinetics-pretrained R(2+1)D-34 (RGB).
  lrcn_ucf101        LRCN: ResNet-18 per frame + LSTM(512), UCF101 split 1. Donahue et al.
                     report 68.2% (RGB, CaffeNet frames; quoted, not reproduced).
  slowfast_r50_charades  SlowFast R50 16x8 (64 fast frames at 24 fps, stride 2; slow 16),
                     multi-label: 157 sigmoid outputs, binary cross-entropy, dropout 0.5,
                     fine-tuned from Kinetics-400 SlowFast R50 8x8 (``vjax convert
                     --from=pytorchvideo --arch=slowfast_r50``, then
                     ``--config.train.init_from=DIR``). mAP 38.9 on Charades v1 validation,
                     10 clips x 3 crops, max over the views (PySlowFast model zoo, "standard"
                     training). vjax reports it as ``mAP`` (video level: every action of a
                     video, classes without a positive left out, as PySlowFast's
                     ``get_map``) beside ``frame_mAP`` (Charades_v1_localize's 25 time points
                     per video, which PySlowFast does not report). Its tiny variant trains on
                     a small Charades-format folder (``dataset.src``), not the motion data.

SGD: PySlowFast's (``slowfast/config/defaults.py``: ``SOLVER.NESTEROV = True``, which no
yaml of these recipes overrides; ``BN.WEIGHT_DECAY = 0.0``) uses Nesterov momentum; the
torchvision-based recipes use plain momentum (``train.py``: ``torch.optim.SGD(...,
momentum=args.momentum, weight_decay=args.weight_decay)``).

Differences from the sources: test views of the zoo recipes are the short side's 3 square
crops resized to the training crop (the zoos test at 256 without resizing); warm-up starts
from 0, not PySlowFast's 0.01 (torchvision: 0.001 x lr); PySlowFast's cosine spans the whole
run, the warm-up ending on its value (0.093 for 34 of 196 epochs), here it starts from the
peak after the warm-up; weight decay applies to conv and dense kernels only (PySlowFast
also decays the head's bias; torchvision every parameter, BatchNorm included). R(2+1)D-18:
torchvision's steps (lr x0.1 at epochs 20, 30 and 40) are cosine here, and its frames are
resized to 128 x 171 whatever their aspect where here the short side goes to 128 (the
random 112 crop and the test's centre crop, 112 / 128 of the short side, as torchvision's).
The UCF101 optimiser values are ours (cosine SGD), not a published schedule. Charades' step
schedule (lr x0.1 at epochs 41 and 49 of 57) is cosine here, and PySlowFast reads Charades
as 24 fps JPEG frames (``Charades_v1_rgb``) where vjax decodes the videos at 24 fps.

Command (after ``vjax prepare kinetics|ucf101 --src=... --data_dir=...``):
  vjax train --config=configs/conv3d.py:slowfast_r50_k400 --workdir=runs/slowfast \\
    --config.dataset.src=~/data/kinetics400
  vjax eval  --workdir=runs/slowfast --split=test   # with the config it trained with
"""

import os

import ml_collections

from vjax.config_utils import load_config, recipe_config

_DEMO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo.py")
KINETICS_400_TRAIN = 234619  # the official list; every copy is missing some of it
UCF101_TRAIN = 9537  # split 1
CHARADES_TRAIN = 7985  # Charades_v1_train.csv

_K400 = dict(name="kinetics", num_classes=400, train_size=KINETICS_400_TRAIN)
_UCF101 = dict(name="ucf101", num_classes=101, train_size=UCF101_TRAIN, fold=1)
_ZOO_INPUT = dict(
    global_batch_size=64,
    train_crop="scale_jitter",
    jitter_short_side=(256, 320),
    crop_size=224,
    test_num_clips=10,
    test_num_crops=3,
    mean=(0.45, 0.45, 0.45),
    std=(0.225, 0.225, 0.225),
)
# PySlowFast's SGD (slowfast/config/defaults.py: SOLVER.NESTEROV = True, MOMENTUM = 0.9)
# and the pytorchvideo Kinetics yamls' schedule (BASE_LR 0.1, MAX_EPOCH 196, WARMUP_EPOCHS 34).
_ZOO_SGD = dict(
    name="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4, grad_clip_norm=0.0,
    label_smoothing=0.0, epochs=196, warmup_epochs=34,
)  # fmt: skip
# torchvision's references/video_classification/train.py: plain momentum, wd 1e-4.
_TORCHVISION_SGD = dict(_ZOO_SGD, nesterov=False)
# torchvision's clip count: 5 random clips per video each epoch (--clips-per-video 5).
_TORCHVISION_CLIPS_PER_VIDEO = 5
_PRECISE_BN = dict(precise_bn_batches=200)
_TORCHVISION_INPUT = dict(
    num_frames=16,  # consecutive frames at 15 fps (--clip-len 16 --frame-rate 15)
    frame_stride=1,
    fps=15.0,
    crop_size=112,
    train_crop="random_resized",
    test_num_clips=5,
    test_num_crops=1,
    mean=(0.43216, 0.394666, 0.37645),
    std=(0.22803, 0.22145, 0.216989),
)

RECIPES = {
    "r2plus1d_18_k400": dict(
        dataset=dict(_K400, short_side=128),
        # Resize (128, 171) + RandomCrop(112) + flip; eval: Resize + CenterCrop(112).
        input=dict(
            _TORCHVISION_INPUT,
            global_batch_size=64,
            train_crop="scale_jitter",
            jitter_short_side=(128, 128),
            test_crop_fraction=112 / 128,
        ),
        model=dict(name="r2plus1d_18"),
        # --lr 0.64 for 64 GPUs x --batch-size 24, scaled to 64; --epochs 45 and
        # --lr-warmup-epochs 10 of 5 clips per video; steps (20, 30, 40) -> cosine.
        optimizer=dict(
            _TORCHVISION_SGD,
            lr=0.64 * 64 / (64 * 24),
            epochs=45 * _TORCHVISION_CLIPS_PER_VIDEO,
            warmup_epochs=10 * _TORCHVISION_CLIPS_PER_VIDEO,
        ),
    ),
    "i3d_r50_k400": dict(
        dataset=_K400,
        input=dict(_ZOO_INPUT, num_frames=8, frame_stride=8),
        model=dict(name="i3d_r50"),
        optimizer=_ZOO_SGD,
        train=_PRECISE_BN,
    ),
    "slowfast_r50_k400": dict(
        dataset=_K400,
        input=dict(_ZOO_INPUT, num_frames=32, frame_stride=2),
        model=dict(name="slowfast_r50"),
        optimizer=_ZOO_SGD,
        train=_PRECISE_BN,
    ),
    "x3d_m_k400": dict(
        dataset=_K400,
        input=dict(_ZOO_INPUT, global_batch_size=128, num_frames=16, frame_stride=5),
        model=dict(name="x3d_m"),
        optimizer=dict(_ZOO_SGD, weight_decay=5e-5, epochs=300, warmup_epochs=35),
        train=_PRECISE_BN,
    ),
    "r2plus1d_18_ucf101": dict(
        dataset=dict(_UCF101, short_side=128),
        input=dict(_TORCHVISION_INPUT, global_batch_size=32, test_num_clips=10),
        model=dict(name="r2plus1d_18", dropout_rate=0.5),
        optimizer=dict(_TORCHVISION_SGD, lr=0.01, epochs=30, warmup_epochs=2, weight_decay=5e-4),
        train=dict(init_from="", init_inflation="central"),  # set to the converted folder
    ),
    "slowfast_r50_charades": dict(
        dataset=dict(name="charades", num_classes=157, train_size=CHARADES_TRAIN, fps=24.0),
        input=dict(
            _ZOO_INPUT,
            global_batch_size=16,
            num_frames=64,
            frame_stride=2,
            jitter_short_side=(256, 340),
            test_ensemble="max",
        ),
        model=dict(name="slowfast_r50", slow_sampling="linspace", dropout_rate=0.5),
        optimizer=dict(_ZOO_SGD, lr=0.0375, epochs=57, warmup_epochs=4),
        # Several actions per video: sigmoid cross-entropy per class (PySlowFast's bce_logit).
        train=dict(
            _PRECISE_BN, objective="multi_label", init_from="", init_inflation="central"
        ),  # init_from: the K400 SlowFast
        tiny=dict(  # the tiny variant's own multi-label data: a small Charades-format folder
            dataset=dict(
                name="charades", data_dir="", src="", fps=8.0, short_side=16, num_workers=1
            ),
            input=dict(
                num_frames=8,
                frame_stride=1,
                crop_size=16,
                global_batch_size=8,
                test_num_clips=2,
                test_ensemble="max",
                mean=(0.45, 0.45, 0.45),
                std=(0.225, 0.225, 0.225),
            ),
        ),
    ),  # fmt: skip
    "lrcn_ucf101": dict(
        dataset=dict(_UCF101, short_side=128),
        input=dict(_TORCHVISION_INPUT, global_batch_size=32, test_num_clips=10),
        model=dict(name="lrcn", cell="lstm", hidden_size=512, pooling="mean", dropout_rate=0.5),
        optimizer=dict(_TORCHVISION_SGD, lr=0.01, epochs=30, warmup_epochs=2, weight_decay=5e-4),
    ),
}

# The same families, narrow and one block per stage, for the tiny variants (4x16x16 clips).
TINY_MODELS = {
    "r2plus1d_18": dict(layers=(1, 1, 1, 1), width=8),
    "i3d_r50": dict(depth=14, width=8),
    "slowfast_r50": dict(depth=14, width=16),
    "x3d_m": dict(width_factor=1.0, depth_factor=0.2, stem_width=4, head_width=32),
    "lrcn": dict(frame_layers=(1, 1, 1, 1), frame_width=8, hidden_size=16),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    parts = [p for p in (arg or "slowfast_r50_k400").split(",") if p]
    tiny = "tiny" in parts
    names = [p for p in parts if p != "tiny"] or ["slowfast_r50_k400"]
    if len(names) != 1 or names[0] not in RECIPES:
        raise ValueError(f"unknown recipe {','.join(names)!r}; valid: {', '.join(RECIPES)}")
    recipe = RECIPES[names[0]]
    tiny_model = None
    if tiny:
        model = recipe["model"]
        tiny_model = dict(model, **TINY_MODELS[model["name"]])
    base = load_config(f"{_DEMO}:{'tiny' if tiny else 'vivit'}")
    return recipe_config(base, recipe, tiny_model)
