"""The demo: a video transformer learns motion on the embedded ``vjax_motion`` dataset.

Paper: none; this is vjax's embedded default. Classes differ only in how a textured object
moves (the demo's 6: right, left, down, up, rotate clockwise, rotate anticlockwise), never in
any single frame, so a model must use time. ViViT model 1 (spatio-temporal attention,
Arnab et al. 2021) at a CPU-sized width is compared with the same ViT on the middle frame only.

Expected (``make demo``, 2 CPU cores): ViViT >= 90% top-1 on the test split, single-frame
baseline near chance (1 / num_classes). Views: 1 clip x 1 crop.

Variants (``get_config(arg)``):
  vivit         ViViT model 1: 8x8 patches x 4 frames, width 96, 4 layers (default)
  single_frame  the same encoder on frame T//2 only
  r2plus1d      R(2+1)D-18's blocks, one per stage, 16 channels wide (a 3D CNN, BatchNorm)
  lrcn          a per-frame ResNet (one block per stage, 16 wide) + LSTM (64 units)
  tiny          a seconds-long run for tests (add ``,single_frame`` for that model)
  av            audio-visual: ``vjax_av_motion`` (an object moving right or left with a rising,
                falling or pulsed tone; 6 classes = motion x sound) read with its sound
                (``input.audio``: 48 log-mel frames x 32 bins per 1 s clip), fused by a small
                MBT (model.name="mbt", vjax/models/mbt.py); add ``,video_only`` or
                ``,audio_only`` for the single-modality baselines (caps: 1/3 and 1/2)

Command:
  python -m vjax.main --mode=train --config=configs/demo.py:vivit --workdir=runs/vivit
"""

import ml_collections

# Model sections of the other families, CPU-sized like the ViViT (0.36M-0.78M vs 0.53M params).
MODELS = {
    "vivit": None,
    "single_frame": None,
    "r2plus1d": dict(name="r2plus1d_18", layers=(1, 1, 1, 1), width=16),
    "lrcn": dict(name="lrcn", frame_layers=(1, 1, 1, 1), frame_width=16, hidden_size=64),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variants = set((arg or "vivit").split(","))
    unknown = variants - {"tiny", *MODELS, *AV_VARIANTS}
    if unknown:
        raise ValueError(
            f"unknown demo variant(s) {sorted(unknown)}; valid: {', '.join(MODELS)}, tiny, "
            f"{', '.join(AV_VARIANTS)}"
        )
    tiny = "tiny" in variants
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.dataset = ml_collections.ConfigDict(
        dict(
            name="vjax_motion",
            data_dir="",  # "" = TFDS's default (~/tensorflow_datasets)
            num_classes=6,
            num_frames=16,
            height=32,
            width=32,
            num_train=4000,
            num_validation=400,
            num_test=800,
            seed=0,
        )
    )
    c.input = ml_collections.ConfigDict(
        dict(
            global_batch_size=32,
            mean=(0.5, 0.5, 0.5),
            std=(0.25, 0.25, 0.25),
            num_workers=0,  # loader processes; 0: the trainer's prefetch thread, -1: one per core
            # Mixup / cutmix of each training batch (soft labels; a distilled student's teacher
            # sees the same mixed clips): Beta(alpha, alpha) mixing weights, 0 = off.
            mixup_alpha=0.0,
            cutmix_alpha=0.0,
        )
    )
    c.model = ml_collections.ConfigDict(
        dict(
            name="single_frame" if "single_frame" in variants else "vivit",
            size="Ti/8x4",
            hidden_size=96,  # None: the size string's value
            num_layers=4,
            num_heads=3,
            mlp_dim=384,
            pooling="gap",
            dropout_rate=0.0,
            drop_path_rate=0.0,
        )
    )
    c.optimizer = ml_collections.ConfigDict(
        dict(
            name="adamw",
            lr=1e-3,
            end_lr=1e-5,
            warmup_steps=100,
            b1=0.9,
            b2=0.999,
            momentum=0.9,  # sgd only
            nesterov=False,  # sgd only
            weight_decay=0.05,
            grad_clip_norm=1.0,
            label_smoothing=0.1,
            # Layer-wise learning-rate decay of a ViT-style encoder (encoder/blockNN): block i
            # of L trains at lr * layer_decay ** (L - i); 1.0 = off (VideoMAE fine-tunes at 0.75).
            layer_decay=1.0,
            # Parameters not trained: a regular expression searched in each parameter's path
            # ("encoder/block00/mlp/fc1/kernel"); "" trains all. "^(?!classifier/)" trains only
            # the classifier head (a linear probe through the training loop). BatchNorm
            # statistics are not parameters: they still follow the batches.
            freeze="",
        )
    )
    c.train = ml_collections.ConfigDict(
        dict(
            # What the step minimises (vjax/objectives.py): "classification", "multi_label"
            # (several classes per video), or "reconstruction" (masked-video pre-training of
            # model.name="videomae_pretraining").
            objective="classification",
            num_steps=800,
            log_every=50,
            eval_every=200,
            checkpoint_every=200,
            keep_checkpoints=2,
            # "bfloat16": bf16 compute, f32 parameters and optimiser state; "float16" adds
            # dynamic loss scaling (GPUs without bfloat16)
            dtype="float32",
            # Parameters and optimiser state: "float32", or "bfloat16" (half the memory, for
            # a larger batch; updates rounded stochastically; BatchNorm statistics stay f32).
            param_dtype="float32",
            # BatchNorm models: recompute statistics on this many train batches before each
            # evaluation (precise BN); 0 keeps the running averages.
            precise_bn_batches=0,
            # Start from a pretrained model: a workdir or a `vjax convert` folder; its weights
            # are moved onto this model (tubelets inflated by init_inflation, "central" or
            # "average"; position tables resized; a new head if the classes differ).
            init_from="",
            init_inflation="central",
            # Quantization-aware training (vjax.deploy.quantize, qwix): "" (off),
            # "int8_weights" or "int8" (int8 kernels and activations, fake-quantized).
            quantization="",
            # Knowledge distillation (vjax/distill.py): teacher = a workdir or `vjax convert`
            # folder with the same classes ("" = off); loss = alpha * T^2 * KL(teacher_T ||
            # student_T) + (1 - alpha) * the task loss, T = temperature (4, as is usual).
            distill=ml_collections.ConfigDict(dict(teacher="", temperature=4.0, alpha=0.5)),
        )
    )
    c.sharding = ml_collections.ConfigDict(
        dict(
            # Named mesh axes and sizes; one may be -1 (all remaining devices). fsdp > 1 shards
            # parameters and optimiser state (ZeRO-3); tensor > 1 splits heads and MLPs.
            mesh=(("data", -1), ("fsdp", 1), ("tensor", 1)),
            # Multi-slice (TPU pods of several slices, or GPU nodes): how many slices each
            # axis spans over the slower DCN links, e.g. (("data", 2),); ``mesh`` is then the
            # per-slice shape. () = one slice.
            dcn_mesh=(),
            # logical axis -> mesh axis; every name the models use appears here. A mesh axis
            # already taken by an earlier dimension of the same array is skipped (so "embed"
            # of an activation stays whole while "batch" holds fsdp).
            rules=(
                ("batch", ("data", "fsdp")),
                ("time", None),
                ("tokens", None),
                ("embed", "fsdp"),
                ("heads", "tensor"),
                ("kv", None),
                ("mlp", "tensor"),
                ("classes", None),
                ("space", None),  # per-frame token axis of factorised transformers
                ("conv_in", None),  # conv kernels: split output channels like "embed"
                ("conv_out", "fsdp"),
                ("rnn", "tensor"),  # recurrent hidden units
            ),
            # On a mesh with fsdp or tensor > 1, a tensor this large held whole by every
            # device is an error (a logical name mapped to None by mistake).
            max_replicated_mib=4.0,
        )
    )

    family = next((v for v in variants if v in MODELS and v not in ("vivit", "single_frame")), None)
    if family:  # another model family on the same data, loop and schedule
        c.model = ml_collections.ConfigDict(MODELS[family])
    if variants & set(AV_VARIANTS):
        audio_visual(c, variants)
    elif tiny:
        c.dataset.update(
            num_classes=4,
            num_frames=4,
            height=16,
            width=16,
            num_train=64,
            num_validation=16,
            num_test=16,
        )
        c.input.global_batch_size = 8
        if not family:
            c.model.update(size="Ti/8x2", hidden_size=32, num_layers=1, num_heads=2, mlp_dim=64)
        c.optimizer.warmup_steps = 2
        c.train.update(num_steps=6, log_every=2, eval_every=3, checkpoint_every=3)
    c.lock()
    return c


AV_VARIANTS = ("av", "video_only", "audio_only")


def audio_visual(c: ml_collections.ConfigDict, variants: set[str]) -> None:
    """The ``av`` variants: ``vjax_av_motion`` with its sound, a small MBT (fusion from layer
    1 of 2 through 4 bottlenecks) or its one-modality baselines; ``tiny`` for tests."""
    if "av" not in variants or variants & (set(MODELS) - {"vivit"}):
        raise ValueError("video_only / audio_only go with av (e.g. av,video_only); av takes MBT")
    if {"video_only", "audio_only"} <= variants:
        raise ValueError("choose one of video_only, audio_only")
    tiny = "tiny" in variants
    c.dataset = ml_collections.ConfigDict(
        dict(
            name="vjax_av_motion",
            data_dir="",
            num_frames=8,
            height=32,
            width=32,
            fps=8.0,
            sample_rate=16000,
            num_train=48 if tiny else 600,
            num_validation=12 if tiny else 120,
            num_test=12 if tiny else 240,
            seed=0,
        )
    )
    # Each stored video is one 1 s clip: all 8 frames, uncropped, unflipped (a mirror would
    # swap right and left), and its whole sound: 48 frames of 20 ms hops x 32 mel bins,
    # normalised by the training split's log-mel mean and std (measured: 1.1, 1.7).
    c.input.update(
        num_frames=8,
        frame_stride=1,
        crop_size=32,
        train_crop="centre",
        flip=False,
        audio=ml_collections.ConfigDict(
            dict(
                sample_rate=16000,
                mel_bins=32,
                window_ms=25.0,
                hop_ms=20.0,
                frames=48,
                mean=1.1,
                std=1.7,
                spec_augment=dict(time_masks=1, time_width=6, freq_masks=1, freq_width=4),
            )
        ),
    )
    modalities = ("video", "audio")
    if "video_only" in variants:
        modalities = ("video",)
    if "audio_only" in variants:
        modalities = ("audio",)
    c.model = ml_collections.ConfigDict(
        dict(
            name="mbt",
            size="Ti/8x4",
            hidden_size=64,
            num_layers=2,
            num_heads=2,
            mlp_dim=128,
            fusion_layer=1,
            num_bottlenecks=4,
            modalities=modalities,
        )
    )
    c.train.update(num_steps=4 if tiny else 400, eval_every=4 if tiny else 100)
    c.train.update(log_every=2 if tiny else 50, checkpoint_every=4 if tiny else 100)
    if tiny:
        c.input.global_batch_size = 8
        c.optimizer.warmup_steps = 2
