"""C3D (Tran et al., ICCV 2015): eight 3x3x3 convs (64, 128, 256x2, 512x2, 512x2) with
biases and ReLU, five max-pools (the first spatial only), fc6/fc7 of 4096 with dropout.

The last pool pads height and width by one, as the Caffe model and its PyTorch ports do, so
a 16x112x112 clip ends in a 1x4x4x512 map (8192 features into fc6).

>>> model = build_model({"name": "c3d"}, num_classes=101)   # 78.4M parameters at 16x112²
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vjax.models.clip_input import check_video_shape
from vjax.models.conv_blocks import ConvUnit, max_pool3d, start
from vjax.models.layers import ClassifierHead, NumClasses, constrain
from vjax.models.registry import register

# (block name, conv widths) between pools.
BLOCKS = (("1", (64,)), ("2", (128,)), ("3", (256, 256)), ("4", (512, 512)), ("5", (512, 512)))


@register("c3d")
class C3D(nn.Module):
    """C3D. Children: ``conv1a``, ``conv2a``, ``conv3a``/``3b``, ..., ``fc6``, ``fc7``,
    ``classifier``. Needs at least 16 frames (four pools halve time)."""

    num_classes: NumClasses
    hidden: int = 4096
    dropout_rate: float = 0.5
    dtype: Any = jnp.float32

    def check_input(self, input_shape: Sequence[int]) -> None:
        """Validates a clip shape before any compilation."""
        check_video_shape(input_shape, (16, 16, 16))

    @nn.compact
    def __call__(self, video: jax.Array, *, train: bool) -> jax.Array:
        x, _ = start(self, video, train)  # C3D has no BatchNorm
        for i, (block, widths) in enumerate(BLOCKS):
            for width, suffix in zip(widths, "ab", strict=False):
                conv = ConvUnit(
                    width,
                    (3, 3, 3),
                    norm=False,
                    use_bias=True,
                    dtype=self.dtype,
                    name=f"conv{block}{suffix}",
                )
                x = conv(x, train=train)
            window = (1, 2, 2) if i == 0 else (2, 2, 2)
            padding = ((0, 0), (1, 1), (1, 1)) if i == len(BLOCKS) - 1 else ((0, 0),) * 3
            x = max_pool3d(x, window, window, padding)
        x = x.reshape(x.shape[0], -1)
        for name, names in (("fc6", (None, "mlp")), ("fc7", ("mlp", "embed"))):
            x = nn.Dense(
                self.hidden,
                dtype=self.dtype,
                kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_uniform(), names),
                bias_init=nn.with_logical_partitioning(nn.initializers.zeros, names[1:]),
                name=name,
            )(x)
            x = constrain(nn.relu(x), ("batch", names[1]))
            x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
        return ClassifierHead(self.num_classes, name="classifier")(x)
