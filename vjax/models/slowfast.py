"""SlowFast (Feichtenhofer et al., ICCV 2019) as pytorchvideo builds it.

Two ResNet-50 pathways see one clip: the fast one every frame with ``1 / beta_inv`` of the
channels, the slow one every ``alpha``-th frame at full width. After the stem and stages
1-3 a lateral connection (a ``fusion_kernel`` x 1 x 1 conv, stride ``alpha`` in time,
``fusion_ratio`` x the fast width, BN, ReLU) carries fast features into the slow pathway by
concatenation. The head concatenates both globally pooled pathways.

The model input is ONE clip ``(batch, T, H, W, 3)`` of the fast pathway's ``T`` frames
(``T`` divisible by ``alpha``). ``slow_sampling`` picks the slow frames: ``"stride"``
(``video[:, ::alpha]``, frames 0, alpha, 2 alpha...) or ``"linspace"`` (pytorchvideo's
``PackPathway`` transform: ``T // alpha`` indices ``linspace(0, T - 1)`` truncated, which
ends on the last frame). Weights trained either way load into either; pick the one the
checkpoint was trained with (pytorchvideo's zoo: ``"linspace"``).

Presets: ``slowfast_r50`` (8x8: alpha 4, 32 frames in), ``slowfast_r50_4x16`` (alpha 8,
fusion kernel 5, 32 frames in), ``slowfast_r101`` (8x8 R101, fusion kernel 5).

>>> model = build_model({"name": "slowfast_r50"}, num_classes=400)
>>> logits = model.apply(variables, video, train=False)   # video: (B, 32, 256, 256, 3)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vjax.models.clip_input import check_video_shape
from vjax.models.conv_blocks import (
    ConvUnit,
    classify,
    global_average,
    register_preset,
    start,
)
from vjax.models.layers import NumClasses
from vjax.models.registry import register
from vjax.models.resnet3d import RESNET_DEPTHS, bottleneck_stage, resnet_stem


def slow_frame_indices(num_frames: int, alpha: int, sampling: str) -> np.ndarray:
    """Which of the fast pathway's ``num_frames`` frames the slow pathway sees."""
    if sampling == "stride":
        return np.arange(0, num_frames, alpha)
    if sampling == "linspace":
        return np.linspace(0, num_frames - 1, num_frames // alpha).astype(np.int64)
    raise ValueError(f"slow_sampling must be 'stride' or 'linspace', got {sampling!r}")


@register("slowfast")
class SlowFast(nn.Module):
    """SlowFast ResNet. Children: ``slow_stem``, ``fast_stem``, ``fuse0``..``fuse3``,
    ``slow_stage1``..4, ``fast_stage1``..4, ``classifier``."""

    num_classes: NumClasses
    depth: int = 50
    width: int = 64  # slow stem channels (the fast pathway has width / beta_inv)
    alpha: int = 4
    beta_inv: int = 8
    fusion_kernel: int = 7
    fusion_ratio: int = 2
    slow_sampling: str = "stride"
    slow_conv_a_kernels: Sequence[Any] = ((1, 1, 1), (1, 1, 1), (3, 1, 1), (3, 1, 1))
    fast_conv_a_kernels: Sequence[Any] = ((3, 1, 1),) * 4
    dropout_rate: float = 0.5
    frozen_bn: bool = False
    dtype: Any = jnp.float32

    def check_input(self, input_shape: Sequence[int]) -> None:
        """Validates a clip shape (frames divisible by ``alpha``) before any compilation."""
        check_video_shape(input_shape, (self.alpha, 1, 1))
        if input_shape[1] % self.alpha:
            raise ValueError(
                f"frames ({input_shape[1]}) must be divisible by alpha ({self.alpha}): the fast "
                f"pathway sees every frame, the slow one every alpha-th"
            )
        slow_frame_indices(input_shape[1], self.alpha, self.slow_sampling)
        if self.depth not in RESNET_DEPTHS:
            raise ValueError(f"depth must be one of {sorted(RESNET_DEPTHS)}, got {self.depth}")

    def _fuse(self, slow: jax.Array, fast: jax.Array, bn_train: bool, name: str) -> jax.Array:
        lateral = ConvUnit(
            fast.shape[-1] * self.fusion_ratio,
            (self.fusion_kernel, 1, 1),
            (self.alpha, 1, 1),
            dtype=self.dtype,
            name=name,
        )(fast, train=bn_train)
        return jnp.concatenate([slow, lateral.astype(slow.dtype)], axis=-1)

    @nn.compact
    def __call__(self, video: jax.Array, *, train: bool) -> jax.Array:
        fast, bn_train = start(self, video, train)
        slow = fast[:, slow_frame_indices(video.shape[1], self.alpha, self.slow_sampling)]
        slow = resnet_stem(slow, self.width, (1, 7, 7), True, bn_train, self.dtype, "slow_stem")
        fast_width = self.width // self.beta_inv
        fast = resnet_stem(fast, fast_width, (5, 7, 7), True, bn_train, self.dtype, "fast_stem")
        slow = self._fuse(slow, fast, bn_train, "fuse0")
        depths = RESNET_DEPTHS[self.depth]
        for i, depth in enumerate(depths):
            inner, s = self.width * 2**i, 1 if i == 0 else 2
            for path, kernels, div in (
                ("slow", self.slow_conv_a_kernels, 1),
                ("fast", self.fast_conv_a_kernels, self.beta_inv),
            ):
                stage = bottleneck_stage(
                    depth,
                    inner // div,
                    4 * inner // div,
                    (1, s, s),
                    kernels[i],
                    self.dtype,
                    f"{path}_stage{i + 1}",
                )
                if path == "slow":
                    slow = stage(slow, train=bn_train)
                else:
                    fast = stage(fast, train=bn_train)
            if i < len(depths) - 1:
                slow = self._fuse(slow, fast, bn_train, f"fuse{i + 1}")
        pooled = jnp.concatenate([global_average(slow), global_average(fast)], axis=-1)
        return classify(pooled, self.num_classes, self.dropout_rate, train)


register_preset("slowfast_r50", SlowFast, "SlowFast R50 8x8 (pytorchvideo slowfast_r50)")
register_preset(
    "slowfast_r50_4x16",
    SlowFast,
    "SlowFast R50 4x16 (alpha 8, fusion kernel 5; PySlowFast SLOWFAST_4x16_R50)",
    alpha=8,
    fusion_kernel=5,
)
register_preset(
    "slowfast_r101",
    SlowFast,
    "SlowFast R101 8x8 (pytorchvideo slowfast_r101)",
    depth=101,
    fusion_kernel=5,
)
