"""Fields and checks shared by every video transformer (ViViT, TimeSformer, VideoMAE).

Each model is a subclass of :class:`VideoTransformer`: a size string such as ``"B/16x2"``
with optional width/depth overrides, regularisation, and the per-layer options
(:class:`vjax.models.layers.TransformerOptions`) a converter sets to match a checkpoint.
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from vjax.models.clip_input import check_video_dtype, check_video_shape
from vjax.models.layers import (
    Encoder,
    NumClasses,
    TransformerOptions,
    TubeletEmbed,
    check_remat,
    constrain,
    learned_embedding,
    prepend,
)
from vjax.models.sizes import TransformerSize, parse_size


def check_divisible(input_shape: tuple[int, ...], tubelet: tuple[int, int, int]) -> None:
    """Raises a ValueError naming the numbers unless a clip ``(batch, time, height, width,
    channels)`` (any count: a converted model keeps its own) can be cut into whole tubelets."""
    check_video_shape(input_shape, (1, 1, 1), channels=None)
    for axis, size, step in zip(
        ("frames", "height", "width"), input_shape[1:4], tubelet, strict=True
    ):
        if size % step:
            raise ValueError(
                f"{axis} ({size}) is not divisible by the tubelet size along it ({step}); "
                f"tubelet (time, height, width) = {tubelet}, clip shape = {tuple(input_shape)}. "
                f"Change the clip size or the model size string."
            )


def token_grid(input_shape: tuple[int, ...], tubelet: tuple[int, int, int]) -> tuple[int, int]:
    """``(time, space)`` token grid of a clip: tubelets along time, patches per frame."""
    t, h, w = (size // step for size, step in zip(input_shape[1:4], tubelet, strict=True))
    return t, h * w


def class_token(module: nn.Module, name: str, width: int) -> jax.Array:
    """A zero-initialised ``(1, 1, width)`` class token parameter of ``module``."""
    init = nn.with_logical_partitioning(nn.initializers.zeros, (None, None, "embed"))
    return module.param(name, init, (1, 1, width))


class VideoTransformer(nn.Module):
    """Base of the video transformers: size, regularisation and layer options (no __call__)."""

    num_classes: NumClasses
    size: str = "B/16x2"
    # Explicit overrides of the size string's width and depth (None keeps the size's value).
    hidden_size: int | None = None
    num_layers: int | None = None
    num_heads: int | None = None
    mlp_dim: int | None = None
    dropout_rate: float = 0.0
    drop_path_rate: float = 0.0
    # Layer options a converter sets to match a checkpoint (see TransformerOptions).
    layer_norm_eps: float = 1e-6
    activation: str = "gelu"
    qkv_bias: str = "qkv"
    attention_impl: str = "auto"  # "auto", "xla", "cudnn" or "pallas"
    # Per-layer widths of a pruned model (vjax.models.widths): heads / MLP units by layer path.
    widths: Any = None
    # Rematerialisation of each encoder block (layers.REMAT_POLICIES): "none", "block", "dots".
    remat: str = "none"
    dtype: Any = jnp.float32
    # How a model trained from scratch starts (converted weights replace it): "scenic" (its
    # ViT: Xavier per q/k/v projection, LeCun patch conv); the pre-training model also takes
    # "videomae" (WEIGHT_INITS).
    weight_init: str = "scenic"
    WEIGHT_INITS: ClassVar[tuple[str, ...]] = ("scenic",)

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

    @property
    def videomae_init(self) -> bool:
        """Whether the weights start as VideoMAE's official code starts them (``weight_init``
        "videomae": fused q/k/v Xavier, torch's default patch conv), not as scenic's ViT."""
        return self.weight_init == "videomae"

    @property
    def options(self) -> TransformerOptions:
        return TransformerOptions(
            self.layer_norm_eps,
            self.activation,
            self.qkv_bias,
            self.attention_impl,
            "fused" if self.videomae_init else "per_projection",
        )

    def check_input(self, input_shape: tuple[int, ...]) -> None:
        """Validates a clip shape and the options before any compilation."""
        check_divisible(input_shape, self.tubelet)
        self.check_options()

    def check_options(self) -> None:
        """Validates the layer options and that the width splits into the heads."""
        self.options.validate()
        if self.weight_init not in self.WEIGHT_INITS:
            raise ValueError(
                f"weight_init must be one of {self.WEIGHT_INITS} for {type(self).__name__}, "
                f"got {self.weight_init!r}"
            )
        check_remat(self.remat)
        size = self.resolved_size()
        if size.hidden_size % size.num_heads:
            raise ValueError(
                f"hidden_size {size.hidden_size} is not divisible by num_heads {size.num_heads}; "
                f"make model.hidden_size a multiple of model.num_heads"
            )

    def embed(self, video: jax.Array, name: str = "embedding") -> tuple[jax.Array, tuple[int, int]]:
        """Tubelet tokens ``(batch, time * space, hidden)`` and their ``(time, space)`` grid."""
        check_video_dtype(video)
        video = constrain(video.astype(self.dtype), ("batch", "time", None, None, None))
        size = self.resolved_size()
        conv_init = "torch" if self.videomae_init else "lecun"
        x = TubeletEmbed(
            size.hidden_size, self.tubelet, dtype=self.dtype, conv_init=conv_init, name=name
        )(video)
        return x, token_grid(video.shape, self.tubelet)

    def stage(
        self,
        x: jax.Array,
        prefix: str,
        depth: tuple[int, int, int],
        *,
        train: bool,
        pooling: str = "cls",
        sublayers: tuple[str, ...] = ("joint",),
        grid: tuple[int, int] | None = None,
    ) -> jax.Array:
        """Position embedding, optional class token (``pooling="cls"``), encoder and pooling
        of the tokens ``x``; parameters ``{prefix}pos_embedding``, ``{prefix}cls``,
        ``{prefix}encoder``."""
        pos = learned_embedding(
            self, f"{prefix}pos_embedding", (1, *x.shape[1:]), (None, "tokens", "embed")
        )
        x = x + pos.astype(self.dtype)
        if pooling == "cls":
            x = prepend(class_token(self, f"{prefix}cls", x.shape[-1]), x)
        x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
        x = self.encoder(f"{prefix}encoder", depth, sublayers=sublayers, grid=grid)(x, train=train)
        return x[:, 0] if pooling == "cls" else x.mean(axis=1)

    def encoder(self, name: str, depth: tuple[int, int, int] | None = None, **fields) -> Encoder:
        """An :class:`Encoder` of this model's depth (or ``(layers, heads, mlp_dim)``), dropout
        and layer options; ``fields`` set its attention pattern (``sublayers``, ``grid``...)."""
        size = self.resolved_size()
        layers, heads, mlp = depth or (size.num_layers, size.num_heads, size.mlp_dim)
        return Encoder(
            layers,
            heads,
            mlp,
            self.dropout_rate,
            self.drop_path_rate,
            dtype=self.dtype,
            options=self.options,
            remat=self.remat,
            name=name,
            **fields,
        )
