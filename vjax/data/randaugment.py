"""RandAugment (Cubuk et al. 2020) for clips: the same ops, with the same magnitudes, on every
frame of a clip, drawn from a numpy rng (so a batch stays a pure function of (seed, step)).

The op list and magnitude table are torchvision's ``transforms.v2.RandAugment`` (14 ops, 31
magnitude bins; signed ops flip sign with probability 1/2), and each op is torchvision's
functional op applied to the whole ``(T, C, H, W)`` clip at once. Needs torchvision (the
``vjax[torch]`` extra); only configs that set ``input.randaugment_ops > 0`` import it.

>>> clip = rand_augment(clip, np.random.default_rng([seed, step, row]), num_ops=2, magnitude=9)
"""

from __future__ import annotations

import math

import numpy as np

OPS = (
    "identity",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
    "rotate",
    "brightness",
    "color",
    "contrast",
    "sharpness",
    "posterize",
    "solarize",
    "autocontrast",
    "equalize",
)
SIGNED_OPS = {"shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness", "color",
           "contrast", "sharpness"}  # fmt: skip


def op_value(op: str, magnitude: int, num_bins: int, height: int, width: int) -> float | None:
    """The (unsigned) strength of ``op`` at bin ``magnitude`` of ``num_bins``
    (torchvision's table; ``None`` for ops without a strength)."""
    if not 0 <= magnitude < num_bins:
        raise ValueError(f"magnitude must be in [0, {num_bins}), got {magnitude}")
    f = magnitude / (num_bins - 1)  # position along a linspace(lo, hi, num_bins)
    table = {
        "shear_x": 0.3 * f,
        "shear_y": 0.3 * f,
        "translate_x": 150.0 / 331.0 * width * f,
        "translate_y": 150.0 / 331.0 * height * f,
        "rotate": 30.0 * f,
        "brightness": 0.9 * f,
        "color": 0.9 * f,
        "contrast": 0.9 * f,
        "sharpness": 0.9 * f,
        "posterize": float(int(round(8 - magnitude / ((num_bins - 1) / 4)))),
        "solarize": 255.0 * (1.0 - f),
    }
    if op not in OPS:
        raise ValueError(f"unknown RandAugment op {op!r}; valid: {OPS}")
    return table.get(op)


def apply_op(clip: np.ndarray, op: str, value: float | None) -> np.ndarray:
    """``op`` with signed strength ``value`` on a uint8 ``(T, H, W, 3)`` clip (all frames)."""
    import torch

    from vjax.torch_imports import import_torchvision

    F = import_torchvision().transforms.v2.functional

    if op == "identity":
        return clip
    video = torch.from_numpy(np.ascontiguousarray(clip)).permute(0, 3, 1, 2)
    nearest = F.InterpolationMode.NEAREST
    if op in ("shear_x", "shear_y"):
        degrees = math.degrees(math.atan(value))
        shear = [degrees, 0.0] if op == "shear_x" else [0.0, degrees]
        out = F.affine(video, 0.0, [0, 0], 1.0, shear, nearest, None, [0, 0])
    elif op in ("translate_x", "translate_y"):
        shift = [int(value), 0] if op == "translate_x" else [0, int(value)]
        out = F.affine(video, 0.0, shift, 1.0, [0.0, 0.0], nearest, None)
    elif op == "rotate":
        out = F.rotate(video, value, nearest, fill=None)
    elif op in ("brightness", "color", "contrast", "sharpness"):
        adjust = {
            "brightness": F.adjust_brightness,
            "color": F.adjust_saturation,
            "contrast": F.adjust_contrast,
            "sharpness": F.adjust_sharpness,
        }[op]
        out = adjust(video, 1.0 + value)
    elif op == "posterize":
        out = F.posterize(video, int(value))
    elif op == "solarize":
        out = F.solarize(video, value)
    elif op == "autocontrast":
        out = F.autocontrast(video)
    else:
        out = F.equalize(video)
    return out.permute(0, 2, 3, 1).numpy()


def rand_augment(
    clip: np.ndarray,
    rng: np.random.Generator,
    num_ops: int = 2,
    magnitude: int = 9,
    num_bins: int = 31,
) -> np.ndarray:
    """``num_ops`` uniformly drawn ops at strength ``magnitude``, each with a random sign when
    signed, applied in turn to every frame of the uint8 ``(T, H, W, 3)`` clip alike."""
    _, height, width, _ = clip.shape
    for _ in range(num_ops):
        op = OPS[int(rng.integers(len(OPS)))]
        value = op_value(op, magnitude, num_bins, height, width)
        if op in SIGNED_OPS and rng.integers(2):
            value = -value
        clip = apply_op(clip, op, value)
    return clip
