"""pytorchvideo's model-zoo nets -> vjax: X3D (XS/S/M/L), SlowFast R50 (8x8, 4x16) / R101,
Slow / C2D / I3D R50, R(2+1)D R50 and CSN R101.

pytorchvideo's ``Net`` is a list ``blocks``: a stem, four stages of ``res_blocks`` (with a
parameter-free temporal pool between stages 1 and 2 in C2D/I3D) and a head; SlowFast wraps
each step in ``multipathway_blocks`` (slow, fast) plus a ``multipathway_fusion``. The ResNets'
depth and stem width are read from the checkpoint, so e.g. ``create_csn(model_depth=50,
stem_dim_out=8)`` converts as ``{"name": "csn_r101", "depth": 50, "width": 8}``. Weights are
read in with :class:`vjax.convert.torchvision.TorchWeights` (checked: every key used once,
every shape as the model expects).

The zoo's heads average-pool with a kernel fixed to the training size and (X3D, R(2+1)D)
end in a softmax; vjax's heads pool globally and return logits, which equals the zoo's
output before its softmax at the training size.

>>> state = torch.load("X3D_M.pyth", weights_only=True)["model_state"]
>>> config, variables = from_pytorchvideo(state, "x3d_m")

Command: ``vjax convert --from=pytorchvideo --arch=x3d_m --src=X3D_M.pyth --out=weights/x3d_m``
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from vjax.convert.common import ConversionError, pretrained_config
from vjax.convert.torchvision import (
    TorchWeights,
    expected_variables,
    kinetics400_classes,
    load_state_dict,
)
from vjax.models import build_model
from vjax.models.resnet3d import RESNET_DEPTHS

MEAN = (0.45, 0.45, 0.45)
STD = (0.225, 0.225, 0.225)
# The clip each zoo net was trained on (frames of the model input, crop).
CLIPS = {
    "x3d_xs": (4, 160, 160, 3),
    "x3d_s": (13, 160, 160, 3),
    "x3d_m": (16, 224, 224, 3),
    "x3d_l": (16, 312, 312, 3),
    "slowfast_r50": (32, 224, 224, 3),
    "slowfast_r50_4x16": (32, 224, 224, 3),
    "slowfast_r101": (32, 224, 224, 3),
    "slow_r50": (8, 224, 224, 3),
    "c2d_r50": (8, 224, 224, 3),
    "i3d_r50": (8, 224, 224, 3),
    "r2plus1d_r50": (16, 224, 224, 3),
    "csn_r101": (32, 224, 224, 3),
}
# Their frames' stride, the zoo's "frame length x sample rate" (model_zoo.md; the hub's names:
# SLOW_8x8_R50, SLOWFAST_8x8_R101, CSN_32x2_R101, R2PLUS1D_16x4_R50); SlowFast's is the fast
# pathway's, the clip vjax takes.
FRAME_STRIDES = {
    "x3d_xs": 12, "x3d_s": 6, "x3d_m": 5, "x3d_l": 5,
    "slowfast_r50": 2, "slowfast_r50_4x16": 2, "slowfast_r101": 2,
    "slow_r50": 8, "c2d_r50": 8, "i3d_r50": 8, "r2plus1d_r50": 4, "csn_r101": 2,
}  # fmt: skip


def _block_indices(w: TorchWeights, prefix: str = "blocks") -> list[int]:
    """Indices ``i`` of ``prefix.i`` that hold tensors (parameter-free pools are skipped)."""
    start = len(prefix) + 1
    found = {int(k[start:].split(".")[0]) for k in w.tensors if k.startswith(f"{prefix}.")}
    return sorted(found)


def _bottleneck(w: TorchWeights, src: str, dst: str, factorised_b: bool = False) -> None:
    """A ``ResBlock`` of a ``BottleneckBlock`` -> :class:`~vjax.models.conv_blocks.
    BottleneckBlock` (``branch1_*`` is the shortcut, ``branch2.conv_{a,b,c}`` the body)."""
    body = f"{src}.branch2"
    w.conv_unit(f"{body}.conv_a", f"{body}.norm_a", f"{dst}/conv_a")
    if factorised_b:  # pytorchvideo's Conv2plus1d: conv_t -> norm -> act -> conv_xy
        w.conv(f"{body}.conv_b.conv_t", f"{dst}/conv_b/conv/conv_1")
        w.norm(f"{body}.conv_b.norm", f"{dst}/conv_b/conv/norm_1")
        w.conv(f"{body}.conv_b.conv_xy", f"{dst}/conv_b/conv/conv_2")
    else:
        w.conv(f"{body}.conv_b", f"{dst}/conv_b/conv")
    if w.has(f"{body}.norm_b.0.weight"):  # X3D: Sequential(BatchNorm3d, SqueezeExcitation)
        w.norm(f"{body}.norm_b.0", f"{dst}/conv_b/norm")
        if w.has(f"{body}.norm_b.1.block.0.weight"):
            w.dense(f"{body}.norm_b.1.block.0", f"{dst}/se/reduce")
            w.dense(f"{body}.norm_b.1.block.2", f"{dst}/se/expand")
    else:
        w.norm(f"{body}.norm_b", f"{dst}/conv_b/norm")
    w.conv_unit(f"{body}.conv_c", f"{body}.norm_c", f"{dst}/conv_c")
    if w.has(f"{src}.branch1_conv.weight"):
        norm = f"{src}.branch1_norm" if w.has(f"{src}.branch1_norm.weight") else None
        w.conv_unit(f"{src}.branch1_conv", norm, f"{dst}/shortcut")


def _stage(w: TorchWeights, src: str, dst: str, factorised_b: bool = False) -> None:
    """A ``ResStage`` (``src.res_blocks.i``) -> :class:`~vjax.models.conv_blocks.ResStage`."""
    for b in _block_indices(w, f"{src}.res_blocks"):
        _bottleneck(w, f"{src}.res_blocks.{b}", f"{dst}/block{b}", factorised_b)


def _resnet_size(w: TorchWeights, stem: int, stages: list[int], arch: str) -> dict[str, int]:
    """The :class:`~vjax.models.resnet3d.ResNet3D` ``depth`` (from the blocks per stage) and
    ``width`` (the stem's channels) of a checkpoint, where they differ from ``arch``'s."""
    blocks = tuple(len(_block_indices(w, f"blocks.{i}.res_blocks")) for i in stages)
    depth = next((d for d, per_stage in RESNET_DEPTHS.items() if per_stage == blocks), None)
    if depth is None:
        raise ConversionError(
            f"blocks per stage {blocks} match no ResNet depth; valid: {RESNET_DEPTHS}"
        )
    width = int(np.shape(w.tensors[f"blocks.{stem}.conv.weight"])[0])
    preset = build_model({"name": arch}, 1)
    return {k: v for k, v in (("depth", depth), ("width", width)) if v != getattr(preset, k)}


def _resnet(w: TorchWeights, arch: str) -> dict[str, int]:
    """Fills a :class:`~vjax.models.resnet3d.ResNet3D`; returns its size fields that differ
    from ``arch``'s (:func:`_resnet_size`)."""
    stem, *stages, head = _block_indices(w)
    if len(stages) != 4:
        raise ConversionError(f"expected a stem, 4 stages and a head, got blocks {stages}")
    w.conv_unit(f"blocks.{stem}.conv", f"blocks.{stem}.norm", "stem")
    for i, index in enumerate(stages):
        _stage(w, f"blocks.{index}", f"stage{i + 1}", factorised_b=arch == "r2plus1d_r50")
    w.dense(f"blocks.{head}.proj", "classifier/head")
    return _resnet_size(w, stem, stages, arch)


def _x3d(w: TorchWeights) -> None:
    stem, *stages, head = _block_indices(w)
    # pytorchvideo names X3D's stem convs the other way round: its ``conv_t`` is the 1x3x3
    # spatial conv (applied first), ``conv_xy`` the depthwise 5x1x1 temporal one.
    w.conv(f"blocks.{stem}.conv.conv_t", "stem/conv/conv_1")
    w.conv(f"blocks.{stem}.conv.conv_xy", "stem/conv/conv_2")
    w.norm(f"blocks.{stem}.norm", "stem/norm")
    for i, index in enumerate(stages):
        _stage(w, f"blocks.{index}", f"stage{i + 1}")
    w.conv_unit(f"blocks.{head}.pool.pre_conv", f"blocks.{head}.pool.pre_norm", "head_conv")
    w.dense(f"blocks.{head}.pool.post_conv", "head_proj", bias=False)
    w.dense(f"blocks.{head}.proj", "classifier/head")


def _slowfast(w: TorchWeights) -> None:
    *steps, head = _block_indices(w)
    paths = ("slow", "fast")
    for i, index in enumerate(steps):
        src = f"blocks.{index}"
        for p, path in enumerate(paths):
            block = f"{src}.multipathway_blocks.{p}"
            if i == 0:
                w.conv_unit(f"{block}.conv", f"{block}.norm", f"{path}_stem")
            else:
                _stage(w, block, f"{path}_stage{i}")
        fusion = f"{src}.multipathway_fusion"
        if w.has(f"{fusion}.conv_fast_to_slow.weight"):
            w.conv_unit(f"{fusion}.conv_fast_to_slow", f"{fusion}.norm", f"fuse{i}")
    w.dense(f"blocks.{head}.proj", "classifier/head")


def from_pytorchvideo(state_dict: Mapping[str, Any], arch: str):
    """``(config, variables)`` for a pytorchvideo zoo net's state dict (``model_state`` of
    its ``.pyth`` file). ``arch``: one of :data:`CLIPS`. Raises ConversionError naming the
    parameter and both shapes when the checkpoint does not fit ``arch``.

    >>> config, variables = from_pytorchvideo(hub.x3d_m(pretrained=True).state_dict(), "x3d_m")
    """
    if arch not in CLIPS:
        raise ConversionError(f"unknown pytorchvideo arch {arch!r}; valid: {', '.join(CLIPS)}")
    w = TorchWeights(state_dict)
    if not _block_indices(w) or not any(k.endswith(".proj.weight") for k in w.tensors):
        some = ", ".join(list(w.tensors)[:3])
        raise ConversionError(
            f"not a pytorchvideo zoo checkpoint: no blocks.N.* layers and .proj head (it has "
            f"e.g. {some}); --from=torchvision reads torchvision's video ResNets"
        )
    model: dict[str, Any] = {"name": arch}
    if arch.startswith("x3d"):
        _x3d(w)
    elif arch.startswith("slowfast"):
        _slowfast(w)
    else:
        model.update(_resnet(w, arch))
    head = max(k for k in w.tensors if k.endswith(".proj.weight"))
    num_classes = int(np.shape(w.tensors[head])[0])
    if arch.startswith("slowfast"):
        model["slow_sampling"] = "linspace"  # the zoo's PackPathway transform
    variables = w.finish(expected_variables(model, num_classes, (8, 32, 32, 3)))
    config = pretrained_config(
        model,
        CLIPS[arch],
        kinetics400_classes(num_classes),
        mean=MEAN,
        std=STD,
        source=f"pytorchvideo {arch}",
        frame_stride=FRAME_STRIDES[arch],
    )
    return config, variables


def from_cli(src: str, arch: str | None, config: str | None):
    """``vjax convert --from=pytorchvideo --arch=x3d_m --src=X3D_M.pyth``."""
    del config
    if arch is None:
        raise ConversionError(f"--arch is required for pytorchvideo; one of {', '.join(CLIPS)}")
    return from_pytorchvideo(load_state_dict(src), arch)
