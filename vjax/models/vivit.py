"""ViViT model 1 (spatio-temporal attention, Arnab et al. 2021) and the single-frame baseline.

Input is ``(batch, time, height, width, channels)``; the video is cut into tubelets, every
tubelet attends to every other one, and a class token or global average pool feeds the head.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vjax.models.layers import ClassifierHead, Encoder, TubeletEmbed, constrain
from vjax.models.registry import register
from vjax.models.sizes import TransformerSize, parse_size


def check_divisible(input_shape: tuple[int, ...], tubelet: tuple[int, int, int]) -> None:
    """Raises a ValueError naming the numbers when a clip cannot be cut into whole tubelets."""
    if len(input_shape) != 5:
        raise ValueError(
            f"expected video of shape (batch, time, height, width, channels), got "
            f"{tuple(input_shape)}"
        )
    for axis, size, step in zip(
        ("frames", "height", "width"), input_shape[1:4], tubelet, strict=True
    ):
        if size % step:
            raise ValueError(
                f"{axis} ({size}) is not divisible by the tubelet size along it ({step}); "
                f"tubelet (time, height, width) = {tubelet}, clip shape = {tuple(input_shape)}. "
                f"Change the clip size or the model size string."
            )


@register("vivit")
class ViViT(nn.Module):
    """ViViT model 1: joint space-time attention over all tubelet tokens.

    >>> model = ViViT(num_classes=400, size="B/16x2")
    >>> variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 224, 224, 3)), train=False)
    """

    num_classes: int
    size: str = "B/16x2"
    # Explicit overrides of the size string's width and depth (None keeps the size's value).
    hidden_size: int | None = None
    num_layers: int | None = None
    num_heads: int | None = None
    mlp_dim: int | None = None
    pooling: str = "cls"  # "cls" or "gap"
    dropout_rate: float = 0.0
    drop_path_rate: float = 0.0
    dtype: Any = jnp.float32

    def resolved_size(self) -> TransformerSize:
        """The size string with any explicit width/depth overrides applied."""
        size = parse_size(self.size)
        overrides = {
            k: getattr(self, k)
            for k in ("hidden_size", "num_layers", "num_heads", "mlp_dim")
            if getattr(self, k) is not None
        }
        return TransformerSize(**{**size.__dict__, **overrides})

    @property
    def tubelet(self) -> tuple[int, int, int]:
        size = self.resolved_size()
        return (size.tubelet_time, size.patch, size.patch)

    def check_input(self, input_shape: tuple[int, ...]) -> None:
        """Validates a clip shape before any compilation (called by the trainer and __call__)."""
        check_divisible(input_shape, self.tubelet)
        if self.pooling not in ("cls", "gap"):
            raise ValueError(f"pooling must be 'cls' or 'gap', got {self.pooling!r}")

    @nn.compact
    def __call__(self, video: jax.Array, *, train: bool) -> jax.Array:
        self.check_input(video.shape)
        size = self.resolved_size()
        video = constrain(video.astype(self.dtype), ("batch", "time", None, None, None))
        x = TubeletEmbed(size.hidden_size, self.tubelet, dtype=self.dtype, name="embedding")(video)
        pos = self.param(
            "pos_embedding",
            nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, "tokens", "embed")),
            (1, x.shape[1], size.hidden_size),
        )
        x = x + pos.astype(self.dtype)
        if self.pooling == "cls":
            cls = self.param(
                "cls",
                nn.with_logical_partitioning(nn.initializers.zeros, (None, None, "embed")),
                (1, 1, size.hidden_size),
            )
            x = jnp.concatenate(
                [jnp.broadcast_to(cls, (x.shape[0], 1, x.shape[2])).astype(x.dtype), x], axis=1
            )
        x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
        x = Encoder(
            size.num_layers,
            size.num_heads,
            size.mlp_dim,
            self.dropout_rate,
            self.drop_path_rate,
            dtype=self.dtype,
            name="encoder",
        )(x, train=train)
        pooled = x[:, 0] if self.pooling == "cls" else x.mean(axis=1)
        return ClassifierHead(self.num_classes, name="classifier")(pooled)


@register("single_frame")
class SingleFrame(ViViT):
    """The same ViT on the middle frame only: a baseline that cannot see motion.

    It shares every layer with :class:`ViViT` and differs only in its input: frame ``T // 2``
    cut into 2D patches (tubelet time 1), so any gap to ViViT is what temporal modelling buys.
    """

    @property
    def tubelet(self) -> tuple[int, int, int]:
        patch = self.resolved_size().patch
        return (1, patch, patch)

    def __call__(self, video: jax.Array, *, train: bool) -> jax.Array:
        middle = video.shape[1] // 2
        return super().__call__(video[:, middle : middle + 1], train=train)
