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
    unknown = variants - {"tiny", *MODELS}
    if unknown:
        raise ValueError(
            f"unknown demo variant(s) {sorted(unknown)}; valid: {', '.join(MODELS)}, tiny"
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
    if tiny:
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
