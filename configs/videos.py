"""Your own videos: a folder of class sub-folders (or a manifest) trained and tested as is.

Paper: none. ``get_config("SRC")`` reads ``SRC`` (a folder ``SRC/<class>/*.mp4``, optionally
under ``train/validation/test``, or a CSV/JSON manifest ``path,label[,start,end][,split]``); the
dataset is prepared on first use into ``dataset.data_dir``. Videos given no split are split per
class, ``dataset.split_fractions`` (train, validation, test) with ``dataset.split_seed``, once,
when the dataset is prepared (``prepare_report.json`` says how). The model is the demo's ViViT
(model 1) on 8-frame 112x112 clips; switch families with ``--config.model.name=...`` and
their fields. Training clips: random clip with stride 2, random resized crop, flip; test:
2 clips x 3 crops per video, logits averaged. Add ``,tiny`` for a seconds-long CPU run, and
``,audio`` to store each video's sound (16 kHz mono; ``dataset.audio_sample_rate``) and feed
each clip's log-mel spectrogram (``input.audio``: 128 bins, 25 ms windows every 10 ms, the
clip's 1.5 s = 150 frames; AST's AudioSet mean and std: measure yours with
``vjax.data.audio.log_mel_statistics``) to a model that takes audio (``model.name="mbt"`` or
``"ast"``).

Command:
  vjax prepare video_folder --src=~/videos --data_dir=~/tfds       # optional: prepare first
  vjax train --config=configs/videos.py:~/videos --workdir=runs/videos \\
      --config.dataset.data_dir=~/tfds
  vjax eval  --workdir=runs/videos --split=test    # with the config it trained with
"""

import os

import ml_collections

from vjax.config_utils import load_config

_DEMO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo.py")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    src, _, rest = (arg or "").partition(",")
    if not src:
        raise ValueError("configs/videos.py needs the videos: --config=configs/videos.py:SRC")
    variants = set(rest.split(",")) - {""}
    if variants - {"tiny", "audio"}:
        raise ValueError(f"unknown variant(s) {sorted(variants - {'tiny', 'audio'})}: tiny, audio")
    tiny, sound = "tiny" in variants, "audio" in variants
    c = load_config(f"{_DEMO}:{'tiny' if tiny else 'vivit'}")
    c.unlock()
    c.dataset = ml_collections.ConfigDict(
        dict(
            name="video_folder",
            data_dir="",
            src=os.path.expanduser(src),
            fps=10.0,
            short_side=16 if tiny else 128,
            split_fractions=(0.8, 0.1, 0.1),  # of each class, when the source names no split
            split_seed=0,
            num_workers=1 if tiny else None,  # None: every core
            audio_sample_rate=16000 if sound else 0,  # 0: the sound is not stored
        )
    )
    c.input.update(
        dict(
            global_batch_size=8 if tiny else 32,
            num_workers=0 if tiny else -1,  # loader processes (-1: one per core)
            mean=(0.45, 0.45, 0.45),
            std=(0.225, 0.225, 0.225),
        )
    )
    for key, value in dict(
        num_frames=4 if tiny else 8,
        frame_stride=2,
        crop_size=16 if tiny else 112,
        train_crop="random_resized",
        flip=True,
        test_num_clips=2,
        test_num_crops=3,
    ).items():
        c.input[key] = value
    if sound:  # the seconds of each clip's frames: 8 (tiny: 4) frames 2 apart at 10 fps
        c.input.audio = ml_collections.ConfigDict(
            dict(
                sample_rate=16000, mel_bins=32 if tiny else 128, window_ms=25.0, hop_ms=10.0,
                frames=70 if tiny else 150, mean=-4.27, std=4.57,
                spec_augment=dict(time_masks=2, time_width=16, freq_masks=2, freq_width=8),
            )
        )  # fmt: skip
    if not tiny:
        c.model.update(size="S/16x2", hidden_size=None, num_layers=None, num_heads=None,
                       mlp_dim=None, pooling="cls")  # fmt: skip
    c.lock()
    return c
