"""MBT recipes: audio-visual classification with attention bottlenecks on AudioSet, VGGSound
and Epic-Kitchens-100, and the AST audio-only model.

Papers: Nagrani et al., "Attention Bottlenecks for Multimodal Fusion" (NeurIPS 2021), with
hyper-parameters from scenic's released config (``scenic/projects/mbt/configs/audioset/
balanced_audioset_base.py``: MBT-B/16x2, 32 frames at stride 2 of 25 fps video, 224 crops,
8 s of audio as 800 x 128 log-mel frames in 16x16 patches, fusion layer 8, 4 bottlenecks, SGD
(momentum 0.9) lr 0.5 cosine with 2.5 warm-up epochs, 50 epochs, batch 64, no weight decay,
gradient clipping at norm 1, label smoothing 0.3, mixup 0.5, stochastic depth 0.3, 1
frequency mask of <= 48 bins, 4 x 1 test views); Gong et al., "AST: Audio Spectrogram
Transformer" (Interspeech 2021), with the authors' balanced-AudioSet recipe
(``YuanGongND/ast`` ``egs/audioset/run.sh`` with ``set=balanced``, ``src/run.py``,
``src/traintest.py``). Views: temporal clips x spatial crops. scenic releases no VGGSound or
Epic-Kitchens config; the paper trains every dataset with the same hyper-parameters ("All
models (across datasets) are trained with a batch size of 64, ...", Sec. 4.2), so those
recipes take the AudioSet one with single-label cross-entropy.

Recipes (``get_config("RECIPE")``; add ``,tiny`` for a CPU-sized model of the same family on
the demo's tiny input with a 16 x 16 spectrogram; ``,video`` / ``,audio`` for the same model
on one modality, the paper's single-modality baselines):

  mbt_audioset_mini  MBT-B/16x2 on balanced AudioSet (AS-mini, 20,361 train clips, 527
                     classes, multi-label), 4 x 1 views. mAP 43.9 audio-visual, 30.9
                     audio-only, 27.0 video-only; 52.3 audio-visual on AS-500K (scenic's
                     model zoo, ``scenic/projects/mbt/README.md``, "MBT-B").
  mbt_vggsound       MBT-B/16x2 on VGGSound (309 classes, one per clip), the AudioSet recipe
                     with single-label cross-entropy. Paper: top-1 64.1, top-5 85.6
                     (audio-visual; the paper's VGGSound table, quoted from memory of the
                     paper, not re-checked here).
  mbt_epic           MBT-B/16x2 on Epic-Kitchens-100 with verb and noun heads (97 + 300),
                     32 frames at stride 1, and the image augmentation of the other datasets
                     (paper Sec. 4.2: random crop, flip, colour jitter for every dataset).
                     Paper: action top-1 43.4, verb 64.8 (audio-visual; the paper's
                     Epic-Kitchens table as listed by Papers with Code), noun 58.0 (from
                     memory of the paper, not re-checked here).
  ast_audioset_mini  AST-B/16 (patch stride 10, overlap 6: 12 x 101 patches) on 1024 log-mel
                     frames (10.24 s, AST's ``audio_length``) of AS-mini, audio only: Adam
                     (betas 0.95, 0.999) lr 5e-5 for batch 12, 25 epochs, 1000 warm-up steps,
                     mixup weights from Beta(10, 10), SpecAugment 1 time mask of <= 192
                     frames and 1 frequency mask of <= 48 bins, no label smoothing, no drop
                     path, one view. mAP 34.99 (the authors' released balanced-set model,
                     ``egs/audioset/exp/test-balanced-f10-t10-pTrue-b12-lr5e-5/README.md``).
                     Ours 86.59M params, 130.4 GFLOPs (``vjax.flops``, 527 classes).

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

Differences from the cited configurations:

  MBT (all)          Classifier: the paper's (each modality's class token through one
                     shared linear layer, logits averaged), trained as scenic's ``model.py``
                     trains that classifier (``classifier = 'token'``): one loss per
                     modality's logits, averaged (``if not train: return x_pool``;
                     ``loss_function`` over the dict). scenic's released config sets
                     ``config.model.classifier = 'gap'``, which its ``model.py`` reads as one
                     LayerNorm over both modalities' tokens, their mean, one classifier.
                     Stochastic depth rescales kept branches by 1 / (1 - p) (timm); scenic's
                     ``EncoderBlock`` drops without rescaling (``x * (1.0 - drop_pattern) +
                     inputs``); both grow linearly from 0 to 0.3 over the layers.
                     ``num_bottlenecks=4`` is 4 shared tokens, the paper's B = 4; scenic's
                     ``model.py`` adds one to ``n_bottlenecks`` with the token classifier
                     (5). Each modality has its own final LayerNorm (scenic: one shared
                     ``encoder_norm``). Checked against scenic's code with the same weights:
                     equal logits for bottleneck, early, late and cross fusion.
                     SpecAugment as scenic's runs: the config lists 4 time masks of <= 48
                     frames but sets ``time_mask_max_ratio = 0``, which lingvo's
                     ``SpectrumAugmenter`` (``lingvo==0.11.0``, the project's
                     ``requirements.txt``) reads as no time masking (``_TimeMask`` returns its
                     input when the ratio is <= 0; ``time_warp_max_ratio = 0`` likewise turns
                     time warping off), so only the frequency mask is kept; the paper (Sec.
                     4.2) states time masks of <= 192 frames "following AST".
                     The paper (Sec. 4.2) samples 8 frames over the 8 s window on AudioSet and
                     VGGSound and uses mixup alpha 0.3; the released config, followed here, 32
                     frames at stride 2 (2x16x16 tubelets) and alpha 0.5.
                     Spectrograms: vjax's log-mel (periodic Hann window, TF's mel filterbank)
                     normalised as AST with AST's statistics; scenic reads precomputed log-mels
                     (paper: 25 ms Hamming window, 10 ms hop, 128 bins) normalised by
                     ``(x - 1.102) / 2.762`` (``spec_mean``, ``spec_stddev``).
  mbt_epic           Stored at 30 fps as ``vivit_l_fe_epic`` (no released MBT config states
                     Epic-Kitchens' frame rate); 4 x 1 views as scenic's audio-visual loader.
  ast_audioset_mini  AST trains the balanced set on PSLA's enhanced labels (``run.sh``:
                     ``balanced_train_data_type1_2_mean.json``); here the dataset's own.
                     AST starts from DeiT-B/384 distilled (ImageNet-1k; the class and
                     distillation tokens averaged, ``src/models/ast_models.py``); here an
                     ImageNet-21k ViT-B/16 and its class token. AST's schedule: warm-up in
                     steps of 50 to 5e-5, then x0.5 every 5 epochs from epoch 10
                     (``lrscheduler_start=10``, ``_step=5``, ``_decay=0.5``) and the weights
                     of epochs 6-25 averaged (``wa``); here cosine, no averaging. torch Adam's
                     L2 of 5e-7 (``traintest.py``) is left out (AdamW without decay). AST
                     mixes a random half of the examples (``mixup=0.5`` is a rate), each with
                     a random partner and a Beta(10, 10) weight of its own, on the waveforms;
                     vjax mixes a random half too (``input.mixup_rate=0.5``), each with its own
                     Beta(10, 10) weight, with the example at the other end of the batch, on
                     the spectrograms. AST masks the log fbank with 0 before normalising; here
                     the normalised spectrogram is set to 0. AST pads a 10 s track's 998
                     frames to 1024 with log fbank 0 (0.47 once normalised); here the
                     waveform is padded with silence (log of the floor: -1.04 normalised).

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
AUDIOSET_CLASSES = 527
VGGSOUND_TRAIN = 183727  # the VGGSound paper's train split
EPIC_KITCHENS_TRAIN = 67217

# 8 s of audio as scenic's MBT: 25 ms windows every 10 ms, 128 mel bins -> 800 frames
# (num_spec_frames=8 x spec_shape=(100, 128)). SpecAugment as it runs in scenic (see the
# module docstring): one frequency mask of <= 48 bins (freq_mask_count=1,
# freq_mask_max_bins=48); the listed time masks are off (time_mask_max_ratio=0).
_AUDIO = dict(
    sample_rate=16000,
    mel_bins=128,
    window_ms=25.0,
    hop_ms=10.0,
    frames=800,
    mean=-4.27,  # AST's AudioSet log-mel statistics
    std=4.57,
    spec_augment=dict(time_masks=0, time_width=0, freq_masks=1, freq_width=48),
)
# ViViT's Kinetics input (configs/video_transformers.py, as scenic's MBT: 32 frames at stride
# 2, 224 crops of a scale-jittered short side, DMVR's colour augmentation: prob_color_augment
# 0.8, prob_color_drop 0.1) with mixup 0.5, the audio, and 4 clips x 1 centre crop at test
# (scenic's audio-visual loader makes no three-crop views).
_INPUT = dict(mixup_alpha=0.5, global_batch_size=64, test_num_crops=1, audio=_AUDIO)
_SGD = dict(name="sgd", momentum=0.9, nesterov=False, weight_decay=0.0, grad_clip_norm=1.0)
_OPTIMIZER = dict(_SGD, lr=0.5, epochs=50, warmup_epochs=2.5, label_smoothing=0.3)
_MBT = dict(
    name="mbt", size="B/16x2", fusion_layer=8, num_bottlenecks=4, drop_path_rate=0.3
)  # fmt: skip
# AST (egs/audioset/run.sh, set=balanced): 1024 frames, freqm=48, timem=192 (one torchaudio
# mask each), mixup weights Beta(10, 10) (src/dataloader.py), batch 12, one view of the
# whole clip (the 10.24 s window covers the 10 s track from its start).
_AST_BATCH = 12
_AST_AUDIO = dict(
    _AUDIO,
    frames=1024,
    spec_augment=dict(time_masks=1, time_width=192, freq_masks=1, freq_width=48),
)
_AST_INPUT = dict(
    _INPUT,
    global_batch_size=_AST_BATCH,
    mixup_alpha=10.0,
    mixup_rate=0.5,  # src/dataloader.py: each example mixed with probability 0.5
    test_num_clips=1,
    test_num_crops=1,
    audio=_AST_AUDIO,
)
# src/traintest.py: torch.optim.Adam(lr, betas=(0.95, 0.999)), BCEWithLogitsLoss (mean, as
# vjax's), no gradient clipping, 1000 warm-up steps; run.sh: lr=5e-5, epoch=25.
_AST_OPTIMIZER = dict(
    name="adamw",
    lr=5e-5,
    b1=0.95,
    b2=0.999,
    weight_decay=0.0,
    grad_clip_norm=0.0,
    label_smoothing=0.0,
    epochs=25,
    warmup_epochs=1000 * _AST_BATCH / AUDIOSET_MINI_TRAIN,
)


def _dataset(name: str, num_classes, train_size: int, **fields) -> dict:
    return dict(
        name=name, num_classes=num_classes, train_size=train_size, audio_sample_rate=16000,
        **fields,
    )  # fmt: skip


RECIPES = {
    "mbt_audioset_mini": dict(
        dataset=_dataset("audioset", AUDIOSET_CLASSES, AUDIOSET_MINI_TRAIN, fps=25.0),
        input=_INPUT,
        model=_MBT,
        optimizer=_OPTIMIZER,
        # scenic's weighted_sigmoid_cross_entropy: summed over the 527 classes, label
        # smoothing towards 1/527 (apply_label_smoothing)
        train=dict(objective="multi_label_sum"),
    ),
    "mbt_vggsound": dict(
        dataset=_dataset("vggsound", 309, VGGSOUND_TRAIN, fps=25.0),
        input=_INPUT,
        model=_MBT,
        optimizer=_OPTIMIZER,
    ),
    "mbt_epic": dict(
        dataset=_dataset("epic_kitchens", {"verb": 97, "noun": 300}, EPIC_KITCHENS_TRAIN, fps=30.0),
        input=dict(_INPUT, frame_stride=1),
        model=_MBT,
        optimizer=_OPTIMIZER,
    ),
    "ast_audioset_mini": dict(
        dataset=_dataset("audioset", AUDIOSET_CLASSES, AUDIOSET_MINI_TRAIN, fps=25.0),
        input=_AST_INPUT,
        # timm's vit_deit_base_distilled_patch16_384 as AST builds it: drop path 0.
        model=dict(name="ast", size="B/16", patch_stride=10, drop_path_rate=0.0),
        optimizer=_AST_OPTIMIZER,
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
