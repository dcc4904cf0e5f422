"""MBT recipes: audio-visual classification with attention bottlenecks on AudioSet, VGGSound
and Epic-Kitchens-100, and the AST audio-only model.

Papers: Nagrani et al., "Attention Bottlenecks for Multimodal Fusion" (NeurIPS 2021), with
hyper-parameters from scenic's released config (``scenic/projects/mbt/configs/audioset/
balanced_audioset_base.py``: MBT-B/16x2, 32 frames at stride 2, 224 crops, 8 s of audio as
800 x 128 log-mel frames in 16x16 patches, fusion layer 8, 4 bottlenecks, SGD lr 0.5 cosine,
50 epochs, batch 64, label smoothing 0.3, mixup 0.5, stochastic depth 0.3, SpecAugment 4 time
masks of <= 48 frames and 1 frequency mask of <= 48 bins); Gong et al., "AST: Audio
Spectrogram Transformer" (Interspeech 2021). Views: temporal clips x spatial crops.

Recipes (``get_config("RECIPE")``; add ``,tiny`` for a CPU-sized model of the same family on
the demo's tiny input with a 16 x 16 spectrogram; ``,video`` / ``,audio`` for the same model
on one modality, the paper's single-modality baselines):

  mbt_audioset_mini  MBT-B/16x2 on balanced AudioSet (AS-mini, 20,361 train clips, 527
                     classes, multi-label), 4 views. mAP 43.9 audio-visual, 30.9 audio-only,
                     27.0 video-only (scenic's model zoo, which lists the video and
                     audio-visual models as "FE" models); 52.3 audio-visual on AS-500K.
  mbt_vggsound       MBT-B/16x2 on VGGSound (309 classes, one per clip), scenic's recipe
                     with single-label cross-entropy. Paper: top-1 64.1, top-5 85.6
                     (audio-visual; the paper's VGGSound table, quoted from memory of the
                     paper, not re-checked here).
  mbt_epic           MBT-B/16x2 on Epic-Kitchens-100 with verb and noun heads (97 + 300),
                     frame stride 1. Paper: action top-1 43.4, verb 64.8 (audio-visual; the
                     paper's Epic-Kitchens table as listed by Papers with Code), noun 58.0
                     (from memory of the paper, not re-checked here).
  ast_audioset_mini  AST-B/16 (patch stride 10, overlap 6) on the 8 s spectrograms of
                     AS-mini, audio only; the AST paper trains on 10 s (1024 frames).

Params: MBT-B is two ViT-B encoders (no shared weights), one per modality, plus 4
bottleneck tokens and one classifier: ``vjax parity mbt`` prints ours beside the ViT
(86M per encoder, paper) sizes. Initialisation: from an ImageNet-21k ViT-B/16 converted with
``vjax convert --from=vit`` and given as ``--config.train.init_from=DIR`` (scenic's MBT
starts so): AST's patch kernel is summed over RGB and its position table resized to the
spectrogram's patch grid; MBT gets the ViT on each modality's encoder (video tubelets
inflated by ``train.init_inflation``, audio as AST), its bottlenecks as initialised.

Data: the ``audioset``, ``vggsound`` and ``epic_kitchens`` builders, prepared with their
sound (``dataset.audio_sample_rate=16000``), and ``config.input.audio`` set (vjax.data.audio:
``input.audio.mean``/``std`` are AST's AudioSet statistics; measure a dataset's own with
``vjax.data.audio.log_mel_statistics``); the model's input shapes are checked against it at
start-up. ``dataset.src``: where the builder reads the dataset (see its docs).

Command (after ``vjax prepare`` of the dataset with audio into ``dataset.data_dir``):
  vjax train --config=configs/mbt.py:mbt_vggsound --workdir=runs/mbt_vggsound \\
    --config.dataset.src=~/data/vggsound
"""

import os

import ml_collections

from vjax.config_utils import load_config, recipe_config

_HERE = os.path.dirname(os.path.abspath(__file__))
_DEMO = os.path.join(_HERE, "demo.py")
_VIDEO_TRANSFORMERS = os.path.join(_HERE, "video_transformers.py")
AUDIOSET_MINI_TRAIN = 20361  # scenic's count of balanced AudioSet; shrinks as videos leave
VGGSOUND_TRAIN = 183727  # the VGGSound paper's train split
EPIC_KITCHENS_TRAIN = 67217

# 8 s of audio as scenic's MBT: 25 ms windows every 10 ms, 128 mel bins -> 800 frames.
_AUDIO = dict(
    sample_rate=16000,
    mel_bins=128,
    window_ms=25.0,
    hop_ms=10.0,
    frames=800,
    mean=-4.27,  # AST's AudioSet log-mel statistics
    std=4.57,
    spec_augment=dict(time_masks=4, time_width=48, freq_masks=1, freq_width=48),
)
# ViViT's Kinetics input (configs/video_transformers.py, as scenic's MBT: 32 frames at stride
# 2, 224 crops of a scale-jittered short side, colour jitter, 4x3 test views) with mixup 0.5
# and the audio.
_INPUT = dict(mixup_alpha=0.5, global_batch_size=64, audio=_AUDIO)
_SGD = dict(name="sgd", momentum=0.9, nesterov=False, weight_decay=0.0, grad_clip_norm=1.0)
_OPTIMIZER = dict(_SGD, lr=0.5, epochs=50, warmup_epochs=2.5, label_smoothing=0.3)
_MBT = dict(
    name="mbt", size="B/16x2", fusion_layer=8, num_bottlenecks=4, drop_path_rate=0.3
)  # fmt: skip


def _dataset(name: str, num_classes, train_size: int, **fields) -> dict:
    return dict(
        name=name, num_classes=num_classes, train_size=train_size, audio_sample_rate=16000,
        **fields,
    )  # fmt: skip


RECIPES = {
    "mbt_audioset_mini": dict(
        dataset=_dataset("audioset", 527, AUDIOSET_MINI_TRAIN),
        input=_INPUT,
        model=_MBT,
        optimizer=_OPTIMIZER,
        train=dict(objective="multi_label"),
    ),
    "mbt_vggsound": dict(
        dataset=_dataset("vggsound", 309, VGGSOUND_TRAIN),
        input=_INPUT,
        model=_MBT,
        optimizer=_OPTIMIZER,
    ),
    "mbt_epic": dict(
        dataset=_dataset("epic_kitchens", {"verb": 97, "noun": 300}, EPIC_KITCHENS_TRAIN, fps=30.0),
        input=dict(_INPUT, frame_stride=1, color_jitter=0.0),
        model=_MBT,
        optimizer=_OPTIMIZER,
    ),
    "ast_audioset_mini": dict(
        dataset=_dataset("audioset", 527, AUDIOSET_MINI_TRAIN),
        input=_INPUT,
        model=dict(name="ast", size="B/16", patch_stride=10, drop_path_rate=0.1),
        optimizer=_OPTIMIZER,
        train=dict(objective="multi_label"),
    ),
}

# CPU size: 2 layers of width 32 (fusion after the first), 2x8x8 tubelets on the demo's tiny
# 4 x 16 x 16 clips, 4x4 spectrogram patches on 16 frames x 16 mel bins.
_TINY_MODEL = dict(size="Ti/8x2", hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64)
_TINY_AUDIO = dict(_AUDIO, mel_bins=16, frames=16, spec_augment=dict(time_masks=1, time_width=4))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    parts = [p for p in (arg or "mbt_vggsound").split(",") if p]
    options = {p for p in parts if p in ("tiny", "video", "audio")}
    names = [p for p in parts if p not in options] or ["mbt_vggsound"]
    if len(names) != 1 or names[0] not in RECIPES:
        raise ValueError(f"unknown recipe {','.join(names)!r}; valid: {', '.join(RECIPES)}")
    recipe = dict(RECIPES[names[0]], model=dict(RECIPES[names[0]]["model"]))
    vivit = load_config(f"{_VIDEO_TRANSFORMERS}:vivit_b_k400").input.to_dict()
    recipe["input"] = {**vivit, **recipe["input"]}
    single = [m for m in ("video", "audio") if m in options]
    if single and recipe["model"]["name"] != "mbt" or len(single) > 1:
        raise ValueError("',video' / ',audio' choose one modality of an MBT recipe")
    if single:
        recipe["model"]["modalities"] = (single[0],)
    tiny_model = None
    if "tiny" in options:
        tiny_model = {k: v for k, v in recipe["model"].items() if k != "drop_path_rate"}
        tiny_model.update(_TINY_MODEL)
        if tiny_model["name"] == "mbt":
            tiny_model["fusion_layer"] = 1
        else:
            tiny_model.update(size="Ti/4", patch_stride=2)
    base = load_config(f"{_DEMO}:{'tiny' if tiny_model else 'vivit'}")
    config = recipe_config(base, recipe, tiny_model)
    if tiny_model:  # the demo's tiny input, with a spectrogram of CPU size
        with config.unlocked():
            config.input.audio = ml_collections.ConfigDict(_TINY_AUDIO)
    return config
