"""X3D (Feichtenhofer, CVPR 2020) as pytorchvideo builds it: a ResNet whose bottlenecks
expand ``bottleneck_factor``x into a depthwise 3x3x3 conv with squeeze-excitation (every
other block) and swish, widened by ``width_factor`` and deepened by ``depth_factor``.

Presets ``x3d_xs``, ``x3d_s``, ``x3d_m`` share one network (they differ only in the clip:
4x160², 13x160², 16x224²); ``x3d_l`` is deeper (``depth_factor=5``, 16x312²).

>>> model = build_model({"name": "x3d_m"}, num_classes=400)
>>> logits = model.apply(variables, video, train=False)   # video: (B, 16, 224, 224, 3)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vjax.models.clip_input import check_video_shape
from vjax.models.conv_blocks import (
    BottleneckBlock,
    ConvUnit,
    ResStage,
    classify,
    global_average,
    register_preset,
    start,
)
from vjax.models.layers import NumClasses
from vjax.models.registry import register

STAGE_DEPTHS = (1, 2, 5, 3)


def round_width(width: float, multiplier: float, min_width: int = 8, divisor: int = 8) -> int:
    """Channel count ``width * multiplier`` rounded to a multiple of ``divisor`` (pytorchvideo's
    ``round_width``: nearest multiple, at least ``min_width``, never below 90%)."""
    width *= multiplier
    out = max(min_width, int(width + divisor / 2) // divisor * divisor)
    return int(out + divisor if out < 0.9 * width else out)


def round_repeats(repeats: int, multiplier: float) -> int:
    """Blocks in a stage after the depth expansion: ``ceil(repeats * multiplier)``."""
    return int(math.ceil(multiplier * repeats))


@register("x3d")
class X3D(nn.Module):
    """X3D: stem (1x3x3 conv then depthwise 5x1x1, BN, ReLU), four stages of
    :class:`BottleneckBlock` (depthwise ``conv_b``, SE on blocks 0, 2, 4..., swish), then
    the head: 1x1x1 conv + BN + ReLU, global average, a ``head_width`` linear layer + ReLU,
    dropout and the classifier. Children: ``stem``, ``stage1``..``stage4``, ``head_conv``,
    ``head_proj``, ``classifier``.
    """

    num_classes: NumClasses
    width_factor: float = 2.0
    depth_factor: float = 2.2
    bottleneck_factor: float = 2.25
    stem_width: int = 12
    se_ratio: float = 0.0625
    head_width: int = 2048
    dropout_rate: float = 0.5
    frozen_bn: bool = False
    dtype: Any = jnp.float32

    def check_input(self, input_shape: Sequence[int]) -> None:
        """Validates a clip shape before any compilation."""
        check_video_shape(input_shape, (1, 1, 1))

    @nn.compact
    def __call__(self, video: jax.Array, *, train: bool) -> jax.Array:
        x, bn_train = start(self, video, train)
        width = round_width(self.stem_width, self.width_factor)
        x = ConvUnit(
            width,
            (5, 3, 3),
            (1, 2, 2),
            factorise="spatial_first",
            mid_features=width,
            mid_norm=False,
            second_groups=width,
            dtype=self.dtype,
            name="stem",
        )(x, train=bn_train)
        stage_width = self.stem_width
        inner = width
        for i, depth in enumerate(STAGE_DEPTHS):
            if i:
                stage_width = round_width(stage_width, 2.0)
            features = round_width(stage_width, self.width_factor)
            inner = int(self.bottleneck_factor * features)
            depth = round_repeats(depth, self.depth_factor)
            se = round_width(inner, self.se_ratio) if self.se_ratio > 0 else 0
            block = functools.partial(
                BottleneckBlock,
                inner,
                features,
                kernel_b=(3, 3, 3),
                depthwise=True,
                inner_act="swish",
                shortcut_norm_on_stride=False,
                dtype=self.dtype,
            )
            per_block = [{"se_reduced": se if b % 2 == 0 else 0} for b in range(depth)]
            x = ResStage(block, depth, (1, 2, 2), per_block, name=f"stage{i + 1}")(
                x, train=bn_train
            )
        x = ConvUnit(inner, (1, 1, 1), dtype=self.dtype, name="head_conv")(x, train=bn_train)
        x = nn.Dense(
            self.head_width,
            use_bias=False,
            dtype=self.dtype,
            kernel_init=nn.with_logical_partitioning(
                nn.initializers.lecun_uniform(), ("conv_in", "embed")
            ),
            name="head_proj",
        )(global_average(x))
        return classify(nn.relu(x), self.num_classes, self.dropout_rate, train)


register_preset("x3d_xs", X3D, "X3D-XS (pytorchvideo x3d_xs; clip 4x160x160)")
register_preset("x3d_s", X3D, "X3D-S (pytorchvideo x3d_s; clip 13x160x160)")
register_preset("x3d_m", X3D, "X3D-M (pytorchvideo x3d_m; clip 16x224x224)")
register_preset("x3d_l", X3D, "X3D-L (pytorchvideo x3d_l; clip 16x312x312)", depth_factor=5.0)
