"""VideoMAE masked-video pre-training (Tong et al., NeurIPS 2022): the VideoMAE encoder on the
visible tokens only, and a narrow decoder that predicts the pixels of the hidden tubelets.

The encoder is :class:`~vjax.models.videomae.VideoMAE`'s (same parameter names, so
``train.init_from`` moves it onto a ``videomae`` classifier): tubelet embedding plus the fixed
sinusoidal table over all tokens, then the encoder blocks over the visible ones (and a final
``encoder_norm`` with ``encoder_norm=True``, the paper's pre-training encoder). The decoder
projects those to its width (``encoder_to_decoder``, no bias), appends a learned
``mask_token`` for every hidden token, adds its own fixed sinusoidal positions, runs
``decoder_num_layers`` blocks (the paper's 4 at width 384 for ViT-B) and predicts each hidden
tubelet's ``pt * ph * pw * C`` pixels (:mod:`vjax.models.masking` layout). Which tokens are
hidden is an input (the ``reconstruction`` objective draws tube or random masks at
``mask_ratio`` from the step's key); ``norm_pix_loss`` says whether the targets are
normalised per tubelet, ``target`` whether they are the pixels (VideoMAE) or each frame's
change to the next inside its tubelet (``"frame_difference"``,
:func:`~vjax.models.masking.target_clip`).

>>> model = VideoMAEPretraining(num_classes=0)        # ViT-B/16x2, decoder 4 x 384
>>> mask = draw_mask(key, 1, (8, 196), 0.9, "tube")
>>> pixels = model.apply(variables, video, mask, train=False)   # (1, 1568 * 0.9, 1536)
"""

from __future__ import annotations

import math
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from vjax.models.layers import (
    Encoder,
    constrain,
    dense,
    layer_norm,
    learned_embedding,
    sinusoidal_table,
    torch_default_kernel,
)
from vjax.models.masking import (
    MASKINGS,
    TARGETS,
    check_frame_difference,
    check_masking,
    draw_mask,
    num_masked,
    split_tokens,
    take_tokens,
)
from vjax.models.registry import register
from vjax.models.video_transformer import VideoTransformer, token_grid

# VideoMAE's trunc_normal_(std=0.02) cuts at +-1 std (a = -std, b = std), not timm's +-2.
_MASK_TOKEN_INIT = nn.initializers.truncated_normal(0.02, lower=-1.0, upper=1.0)


@register("videomae_pretraining")
class VideoMAEPretraining(VideoTransformer):
    """VideoMAE's masked autoencoder; ``num_classes`` is unused (pre-training has no labels)."""

    OBJECTIVE: ClassVar[str] = "reconstruction"  # trained only by this objective

    qkv_bias: str = "qv"
    encoder_norm: bool = True
    decoder_hidden_size: int = 384
    decoder_num_layers: int = 4
    decoder_num_heads: int = 6
    decoder_mlp_dim: int = 1536
    decoder_norm_eps: float = 1e-6  # Hugging Face's decoder norm: torch's default, 1e-5
    mask_ratio: float = 0.9
    masking: str = "tube"
    norm_pix_loss: bool = True
    target: str = "pixels"  # or "frame_difference": what is reconstructed (masking.target_clip)
    # "videomae": from scratch as VideoMAE's official PretrainVisionTransformer (Hugging
    # Face's differs): Xavier over the fused q/k/v matrix, torch's default patch Conv3d and
    # encoder_to_decoder Linear, the mask token N(0, 0.02) cut at +-1 std (its own
    # trunc_normal_); the MLP biases stay N(0, 1e-6), not its zeros. "scenic": Xavier per
    # projection, LeCun patch conv, N(0, 0.02), as the other video transformers.
    weight_init: str = "videomae"
    WEIGHT_INITS: ClassVar[tuple[str, ...]] = ("scenic", "videomae")

    def check_input(self, input_shape: tuple[int, ...]) -> None:
        """Validates the clip, the masking and the decoder's width before any compilation."""
        super().check_input(input_shape)
        if self.masking not in MASKINGS:
            raise ValueError(f"masking must be one of {MASKINGS}, got {self.masking!r}")
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")
        if self.target == "frame_difference":
            check_frame_difference(self.tubelet)
        check_masking(token_grid(input_shape, self.tubelet), self.mask_ratio, self.masking)
        if self.decoder_hidden_size % self.decoder_num_heads:
            raise ValueError(
                f"decoder_hidden_size {self.decoder_hidden_size} is not divisible by "
                f"decoder_num_heads {self.decoder_num_heads}"
            )

    def num_masked(self, input_shape: tuple[int, ...]) -> int:
        """Tokens hidden per clip of ``input_shape`` at this model's ratio and masking."""
        return num_masked(token_grid(input_shape, self.tubelet), self.mask_ratio, self.masking)

    @nn.compact
    def __call__(
        self,
        video: jax.Array,
        mask: jax.Array | None = None,
        *,
        train: bool,
        hidden: int | None = None,
    ) -> jax.Array:
        """Predicted pixels ``(B, hidden, pt * ph * pw * C)`` of the hidden tokens in
        increasing token order. ``mask``: bool ``(B, tokens)``, True = hidden, ``hidden``
        tokens per clip (default: :meth:`num_masked`); None (initialisation) draws one from a
        fixed key."""
        self.check_input(video.shape)
        count = self.num_masked(video.shape) if hidden is None else hidden
        if mask is None:
            grid = token_grid(video.shape, self.tubelet)
            mask = draw_mask(jax.random.key(0), video.shape[0], grid, self.mask_ratio, self.masking)
        visible, masked = split_tokens(mask, count)

        x, _ = self.embed(video)
        x = x + sinusoidal_table(x.shape[1], x.shape[2]).astype(self.dtype)
        x = take_tokens(x, visible)
        x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
        x = self.encoder("encoder", final_norm=self.encoder_norm)(x, train=train)

        width = self.decoder_hidden_size
        official = self.videomae_init
        x = dense(
            width,
            (None, "embed"),
            self.dtype,
            "encoder_to_decoder",
            use_bias=False,
            kernel_init=torch_default_kernel if official else nn.initializers.xavier_uniform(),
        )(x)
        positions = sinusoidal_table(mask.shape[1], width).astype(self.dtype)
        positions = jnp.broadcast_to(positions, (x.shape[0], *positions.shape[1:]))
        token_init = _MASK_TOKEN_INIT if official else nn.initializers.normal(0.02)
        names = (None, None, "embed")
        token = learned_embedding(self, "mask_token", (1, 1, width), names, token_init)
        x = jnp.concatenate(
            [
                x + take_tokens(positions, visible),
                token.astype(self.dtype) + take_tokens(positions, masked),
            ],
            axis=1,
        )
        x = constrain(x, ("batch", "tokens", "embed"))
        x = Encoder(
            self.decoder_num_layers,
            self.decoder_num_heads,
            self.decoder_mlp_dim,
            dtype=self.dtype,
            options=self.options,
            final_norm=False,
            remat=self.remat,
            name="decoder",
        )(x, train=train)
        x = layer_norm("decoder_norm", self.dtype, self.decoder_norm_eps)(x[:, -count:])
        pixels = math.prod(self.tubelet) * video.shape[-1]
        out = dense(pixels, ("embed", None), self.dtype, "decoder_head")(x)
        return constrain(out.astype(jnp.float32), ("batch", "tokens", None))
