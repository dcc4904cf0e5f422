"""Video transformer recipes: ViViT on Kinetics-400/600, Something-Something v2 and
Epic-Kitchens-100 (verb + noun heads), TimeSformer on Kinetics-400, VideoMAE fine-tuning on
Kinetics-400.

Papers: Arnab et al., "ViViT: A Video Vision Transformer" (ICCV 2021), hyper-parameters from
scenic's released configs (``scenic/projects/vivit/configs``); Bertasius et al., "Is
Space-Time Attention All You Need for Video Understanding?" (ICML 2021); Tong et al.,
"VideoMAE" (NeurIPS 2022). Views are temporal clips x spatial crops. GFLOPs are
multiply-accumulates per view; "ours" is ``vjax.flops`` on this config's model.

Recipes (``get_config("RECIPE")``; add ``,tiny`` for a seconds-long CPU run of the same model
family on the embedded ``vjax_motion`` dataset; Epic-Kitchens' tiny variant keeps its
two-headed dataset, so it needs ``dataset.src``):

  vivit_b_k400      ViViT-B/16x2 model 1, 32x224. Top-1 79.9 (scenic model zoo), 4x3 views.
                    Params 88.9M, GFLOPs 455.2 (paper Table 2); ours 88.95M, 451.5.
  vivit_b_fe_k400   ViViT-B/16x2 model 2 (factorised encoder, 4 temporal layers), 32x224.
                    Top-1 78.4 (scenic model zoo), 4x3 views. Params 115.1M, GFLOPs 284.4
                    (paper Table 2); ours 115.06M, 283.3.
  vivit_l_fe_k400   ViViT-L/16x2 factorised encoder, 32x224, 24 temporal layers (the temporal
                    depth of scenic's config that the zoo lists with this checkpoint; scenic's
                    SSv2 and Epic-Kitchens configs use 4). Top-1 80.3 (scenic model zoo), 4x3
                    views. Ours 606.8M params, 992.5 GFLOPs.
  vivit_l_fe_k600   As above on Kinetics-600 (24 temporal layers). Top-1 81.6 (scenic model
                    zoo), 4x3 views. Ours 607.0M params, 992.5 GFLOPs.
  vivit_l_fe_ssv2   ViViT-L/16x2 factorised encoder (4 temporal layers), 32x256 (scenic's SSv2
                    config: label smoothing 0.3, mixup 0.3, drop path 0.3), 4x3 views. Top-1:
                    see the paper's SSv2 table (scenic's zoo lists none). Ours 354.7M, 1301.0
                    GFLOPs.
  vivit_l_fe_epic   ViViT-L/16x2 factorised encoder (4 temporal layers), 32x224, frame stride
                    1, one head per task (97 verbs, 300 nouns; loss = verb + noun
                    cross-entropy). Top-1 action 44.0, verb 66.4, noun 56.8 on Epic-Kitchens-100
                    validation (paper's Epic table); 4x3 views (scenic's config). Ours 354.9M
                    params, 988.2 GFLOPs. scenic's config: RandAugment 2 ops at magnitude 15,
                    mixup 0.1, label smoothing 0.2, drop path 0.2, SGD lr 0.5 for 50 epochs. It
                    does not state the frame rate of its prepared clips; here videos are stored
                    at 30 fps (``dataset.fps``).
  timesformer_k400  TimeSformer-B/16 divided attention, 8x224, frames 1/32 apart. Top-1
                    78.0, 1x3 views; 121.4M params, 0.59 TFLOPs for the 3 views (paper
                    Table 5; the released, retrained model: 77.9); ours 121.57M, 195.8
                    GFLOPs per view. TimeSformer's released training: SGD with Nesterov
                    momentum, batch 64 (gradients accumulated to ``GLOBAL_BATCH_SIZE``), drop
                    path 0.1, no gradient clipping.
  videomae_b_k400   VideoMAE ViT-B/16x2 fine-tuning, 16x224 (dense sampling, stride 4).
                    Top-1 81.5 after 1600 epochs of VideoMAE pre-training, 5x3 views
                    (VideoMAE model zoo); 87M params, 180 GFLOPs per view (paper); ours
                    86.53M, 180.3. The recipe is ``configs/videomae.py:finetune_k400_1600``,
                    taken from that file: the authors' script for that checkpoint (batch 384,
                    lr 5e-4 per 256, 75 epochs, RandAugment 4 ops at timm's magnitude 7), with the
                    paper's 240k Kinetics-400 training videos for the step counts.

Initialisation: ViViT and TimeSformer start from an ImageNet-21k ViT and VideoMAE from its
self-supervised checkpoint. Convert one (``vjax convert --from=vit|hf``) and pass the folder
as ``--config.train.init_from=DIR``: its weights are moved onto the video model at start-up
(``train.init_inflation``: ``central``, scenic's choice for ViViT, or ``average``;
TimeSformer's temporal attention and its norm are copied from each block's spatial ones and
its temporal fc and time embedding start at zero, as TimeSformer's code does). Without
it a recipe trains from scratch (VideoMAE's pre-training and per-checkpoint fine-tuning
recipes: ``configs/videomae.py``).

Differences from the cited configurations:

  vivit_l_fe_ssv2   No horizontal flip: scenic's loader (``vivit/data/video_tfrecord_dataset.py``)
                    keeps DMVR's ``add_image`` default ``random_flip=True``, which mirrors clips
                    without swapping SSv2's left/right classes (``input.flip=True`` for scenic's
                    behaviour; add ``input.flip_label_map=left_right`` to swap those labels).
                    No RandAugment: scenic's 2 ops at magnitude 20 are on the 0-10 scale of its
                    own op set (see vivit_l_fe_epic), beyond what torchvision's table reaches.
  vivit_l_fe_epic   RandAugment is torchvision's (14 ops, geometric ones included, in 31
                    magnitude bins: 15 is half the top strength). scenic's video RandAugment
                    picks among 11 non-geometric ops (Cutout among them) or none, with levels on
                    a 0-10 scale, so its magnitude 15 is 1.5x its top level: the same numbers
                    give weaker, different distortions here.
  timesformer_k400  Cosine schedule instead of TimeSformer's steps (x0.1 at epochs 11 and 14).
                    Weight decay on weights only; TimeSformer decays every parameter
                    (biases, norms, position and time embeddings).
  videomae_b_k400   Those configs/videomae.py lists (e.g. no repeated augmentation).

Command (after ``vjax prepare`` of the dataset into ``dataset.data_dir``):
  vjax train --config=configs/video_transformers.py:vivit_b_k400 --workdir=runs/vivit_b_k400 \\
    --config.dataset.src=~/data/kinetics400
"""

import os

import ml_collections

from vjax.config_utils import config_module, load_config, recipe_config

_HERE = os.path.dirname(os.path.abspath(__file__))
_DEMO = os.path.join(_HERE, "demo.py")
KINETICS_400_TRAIN = 214834  # scenic's count; Kinetics shrinks as videos leave YouTube
KINETICS_600_TRAIN = 363213  # scenic's count (kinetics600/vivit_large_factorised_encoder.py)
SSV2_TRAIN = 168913
EPIC_KITCHENS_TRAIN = 67217  # scenic's count of Epic-Kitchens-100 train segments

_VIVIT_INPUT = dict(
    num_frames=32,
    frame_stride=2,
    crop_size=224,
    train_crop="scale_jitter",
    jitter_short_side=(230, 340),  # scenic: short side 256 x [0.9, 1.33]
    # scenic's Kinetics configs: do_color_augment, prob_color_augment=0.8, prob_color_drop=0.1
    # (DMVR's colour augmentation; vjax.data.augment.dmvr_color_augment)
    color_augment_prob=0.8,
    color_drop_prob=0.1,
    test_num_clips=4,
    test_num_crops=3,
    mean=(0.5, 0.5, 0.5),  # scenic's zero-centring: pixels to [-1, 1]
    std=(0.5, 0.5, 0.5),
)
_SGD = dict(name="sgd", momentum=0.9, nesterov=False, weight_decay=0.0, grad_clip_norm=1.0)


def _steps(epochs: float, train_size: int, batch: int) -> int:
    return int(epochs * train_size // batch)


def _vivit(size: str, variant: str, **model) -> dict:
    return dict(name="vivit", size=size, variant=variant, pooling="cls", **model)


_K400 = dict(name="kinetics", num_classes=400, train_size=KINETICS_400_TRAIN)
_K600 = dict(name="kinetics", num_classes=600, train_size=KINETICS_600_TRAIN)


def _vivit_recipe(
    size: str, variant: str, dataset: dict, lr: float, temporal_layers: int = 4
) -> dict:
    """scenic's Kinetics recipe: SGD, cosine from ``lr`` (its ``base_learning_rate``), 2.5
    warm-up epochs of 30, batch 64; ``temporal_layers`` for the factorised encoder."""
    extra = {"temporal_layers": temporal_layers} if variant == "factorised_encoder" else {}
    return dict(
        dataset=dataset,
        input=dict(_VIVIT_INPUT, global_batch_size=64),
        model=_vivit(size, variant, **extra),
        optimizer=dict(_SGD, lr=lr, epochs=30, warmup_epochs=2.5, label_smoothing=0.0),
    )


def _sibling_recipes(name: str) -> dict:
    """``RECIPES`` of another recipe file in this folder (the one place its numbers live)."""
    return config_module(os.path.join(_HERE, f"{name}.py")).RECIPES


# scenic/projects/vivit/configs/<dataset>/<config>.py: lr_configs.base_learning_rate and
# model.temporal_transformer.num_layers.
RECIPES = {
    "vivit_b_k400": _vivit_recipe("B/16x2", "spacetime", _K400, lr=0.1),  # vivit_base_k400
    "vivit_b_fe_k400": _vivit_recipe("B/16x2", "factorised_encoder", _K400, lr=0.05),
    "vivit_l_fe_k400": _vivit_recipe(
        "L/16x2", "factorised_encoder", _K400, lr=0.1, temporal_layers=24
    ),
    "vivit_l_fe_k600": _vivit_recipe(
        "L/16x2", "factorised_encoder", _K600, lr=0.05, temporal_layers=24
    ),
    "vivit_l_fe_ssv2": dict(
        dataset=dict(name="ssv2", num_classes=174, train_size=SSV2_TRAIN),
        input=dict(
            _VIVIT_INPUT,
            global_batch_size=64,
            frame_stride=1,
            crop_size=256,
            jitter_short_side=(259, 383),  # short side 288 x [0.9, 1.33]
            color_augment_prob=0.0,  # scenic: do_color_augment = False
            color_drop_prob=0.0,
            flip=False,  # left/right matter in SSv2 labels
            mixup_alpha=0.3,
        ),
        model=_vivit("L/16x2", "factorised_encoder", temporal_layers=4, drop_path_rate=0.3),
        optimizer=dict(_SGD, lr=0.4, epochs=35, warmup_epochs=2.5, label_smoothing=0.3),
    ),
    "vivit_l_fe_epic": dict(
        dataset=dict(
            name="epic_kitchens",
            num_classes={"verb": 97, "noun": 300},
            train_size=EPIC_KITCHENS_TRAIN,
            fps=30.0,
        ),
        tiny=dict(  # the tiny variant's own two-headed data: a small Epic-Kitchens layout
            dataset=dict(name="epic_kitchens", data_dir="", src="", fps=10.0, short_side=32),
            input=dict(
                num_frames=4,
                frame_stride=1,
                crop_size=16,
                global_batch_size=8,
                mixup_alpha=0.1,
                mean=(0.5, 0.5, 0.5),
                std=(0.5, 0.5, 0.5),
            ),  # fmt: skip
        ),
        input=dict(
            _VIVIT_INPUT,
            global_batch_size=64,
            frame_stride=1,
            color_augment_prob=0.0,  # scenic: do_color_augment = False
            color_drop_prob=0.0,
            randaugment_ops=2,
            randaugment_magnitude=15,
            mixup_alpha=0.1,
        ),
        model=_vivit("L/16x2", "factorised_encoder", temporal_layers=4, drop_path_rate=0.2),
        optimizer=dict(_SGD, lr=0.5, epochs=50, warmup_epochs=2.5, label_smoothing=0.2),
    ),
    "timesformer_k400": dict(
        dataset=_K400,
        input=dict(
            num_frames=8,
            frame_stride=32,
            crop_size=224,
            train_crop="scale_jitter",
            jitter_short_side=(256, 320),
            test_num_clips=1,
            test_num_crops=3,
            global_batch_size=64,
            mean=(0.45, 0.45, 0.45),
            std=(0.225, 0.225, 0.225),
        ),
        # timesformer/models/vit.py: vit_base_patch16_224(..., drop_path_rate=0.1).
        model=dict(
            name="timesformer", size="B/16", attention_type="divided_space_time", drop_path_rate=0.1
        ),
        # configs/Kinetics/TimeSformer_divST_8x32_224.yaml's SOLVER over the defaults of
        # timesformer/config/defaults.py (SOLVER.NESTEROV = True); tools/train_net.py does not
        # clip gradients.
        optimizer=dict(
            _SGD,
            lr=0.005,
            nesterov=True,
            grad_clip_norm=0.0,
            epochs=15,
            warmup_epochs=0,
            weight_decay=1e-4,
            label_smoothing=0.0,
        ),
    ),
    # The authors' fine-tuning of the 1600-epoch checkpoint (81.5), kept in configs/videomae.py.
    "videomae_b_k400": _sibling_recipes("videomae")["finetune_k400_1600"],
}

# The same families at CPU size for the tiny variants (4 frames of 16x16 on vjax_motion).
_TINY_WIDTH = dict(hidden_size=32, num_layers=1, num_heads=2, mlp_dim=64)
_TINY_SIZE = {"vivit": "Ti/8x2", "timesformer": "Ti/8", "videomae": "Ti/8x2"}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    parts = [p for p in (arg or "vivit_b_k400").split(",") if p]
    tiny = "tiny" in parts
    names = [p for p in parts if p != "tiny"] or ["vivit_b_k400"]
    if len(names) != 1 or names[0] not in RECIPES:
        raise ValueError(f"unknown recipe {','.join(names)!r}; valid: {', '.join(RECIPES)}")
    recipe = RECIPES[names[0]]
    tiny_model = None
    if tiny:  # demo's tiny data, input, optimiser and schedule; the recipe's model family
        tiny_model = {k: v for k, v in recipe["model"].items() if k != "drop_path_rate"}
        tiny_model.update(_TINY_WIDTH, size=_TINY_SIZE[tiny_model["name"]])
        if tiny_model.get("variant") == "factorised_encoder":
            tiny_model["temporal_layers"] = 1
    base = load_config(f"{_DEMO}:{'tiny' if tiny else 'vivit'}")
    return recipe_config(base, recipe, tiny_model)
