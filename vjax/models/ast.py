"""AST, the Audio Spectrogram Transformer (Gong et al., Interspeech 2021): a ViT over the
patches of a log-mel spectrogram, on the layers of the video transformers.

The input is a normalised log-mel spectrogram ``(batch, frames, mel_bins)`` (time first, as
``batch["audio"]``). It is laid out as AST does, as a one-channel image with the mel bins as
height and time as width, i.e. a one-frame "clip" ``(batch, 1, mel_bins, frames, 1)``, and cut
into ``patch x patch`` patches every ``patch_stride`` bins (the paper: 16x16 patches with stride
10, an overlap of 6, on 128 mel bins x 1024 frames: 12 x 101 patches). A class token, learned
position embeddings, the shared :class:`~vjax.models.layers.Encoder` and a linear classifier
follow, with the parameter names of ViViT model 1 and the single-frame ViT (``embedding``,
``pos_embedding``, ``cls``, ``encoder``, ``classifier``), so an image ViT initialises it through
the same surgery (:mod:`vjax.convert.surgery`: the patch kernel summed over the RGB channels,
the position table resized to the patch grid).

>>> model = AST(num_classes=527, size="B/16", patch_stride=10)
>>> variables = model.init(jax.random.key(0), jnp.zeros((1, 1024, 128)), train=False)
"""

from __future__ import annotations

from collections.abc import Sequence

import einops
import flax.linen as nn
import jax

from vjax.models.layers import ClassifierHead, TubeletEmbed, constrain
from vjax.models.registry import register
from vjax.models.video_transformer import VideoTransformer

__all__ = ["AST", "check_spectrogram", "patch_grid", "spectrogram_tokens"]


def patch_grid(input_shape: Sequence[int], patch: int, stride: int) -> tuple[int, int, int]:
    """``(1, mel patches, time patches)``: the token grid of a spectrogram of shape
    ``(batch, frames, mel_bins)`` or ``(frames, mel_bins)`` (a surgery-style (time, height,
    width) grid; partial patches at the edges are dropped, as AST's convolution does)."""
    frames, mels = input_shape[-2:]
    return (1, (mels - patch) // stride + 1, (frames - patch) // stride + 1)


def check_spectrogram(input_shape: Sequence[int], patch: int, stride: int) -> None:
    """Raises a ValueError naming the numbers when a spectrogram cannot be patched."""
    if len(input_shape) != 3:
        raise ValueError(
            f"expected a spectrogram of shape (batch, frames, mel_bins), got {tuple(input_shape)}"
        )
    if not 0 < stride <= patch:
        raise ValueError(f"the patch stride ({stride}) must be in 1..patch size ({patch})")
    frames, mels = input_shape[1:]
    if frames < patch or mels < patch:
        raise ValueError(
            f"a spectrogram of {frames} frames x {mels} mel bins is smaller than one "
            f"{patch}x{patch} patch: raise input.audio.frames / mel_bins or use a smaller patch "
            f"(the model size string's /PATCH)"
        )


def spectrogram_tokens(
    module: VideoTransformer, audio: jax.Array, stride: int, name: str
) -> jax.Array:
    """Patch tokens ``(batch, patches, hidden)`` of a spectrogram ``(batch, frames, mel_bins)``
    for ``module`` (its width, patch size and dtype), by a strided tubelet embedding ``name``
    over the one-channel image with mel bins as height and time as width."""
    size = module.resolved_size()
    image = einops.rearrange(audio.astype(module.dtype), "b t f -> b 1 f t 1")
    image = constrain(image, ("batch", None, None, None, None))
    patch = (1, size.patch, size.patch)
    embed = TubeletEmbed(
        size.hidden_size, patch, dtype=module.dtype, strides=(1, stride, stride), name=name
    )
    return embed(image)


@register("ast")
class AST(VideoTransformer):
    """Audio Spectrogram Transformer: a ViT over (possibly overlapping) spectrogram patches.

    ``patch_stride``: None for non-overlapping patches, 10 for the paper's 16x16 patches with
    an overlap of 6. ``pooling``: ``"cls"`` (the paper) or ``"gap"``.
    """

    size: str = "B/16"
    patch_stride: int | None = None
    pooling: str = "cls"

    modalities = ("audio",)  # the model input: batch["audio"]

    @property
    def stride(self) -> int:
        return self.patch_stride or self.resolved_size().patch

    def patch_grid(self, input_shape: Sequence[int]) -> tuple[int, int, int]:
        """The ``(1, mel patches, time patches)`` token grid of a spectrogram shape."""
        return patch_grid(input_shape, self.resolved_size().patch, self.stride)

    def check_input(self, input_shape: tuple[int, ...]) -> None:
        """Validates a spectrogram shape and the options before any compilation."""
        check_spectrogram(input_shape, self.resolved_size().patch, self.stride)
        if self.resolved_size().tubelet_time != 1:
            raise ValueError(f"AST takes a 2D patch size such as 'B/16', not {self.size!r}")
        if self.pooling not in ("cls", "gap"):
            raise ValueError(f"pooling must be 'cls' or 'gap', got {self.pooling!r}")
        self.check_options()

    @nn.compact
    def __call__(self, audio: jax.Array, *, train: bool) -> jax.Array:
        self.check_input(audio.shape)
        size = self.resolved_size()
        x = spectrogram_tokens(self, audio, self.stride, "embedding")
        depth = (size.num_layers, size.num_heads, size.mlp_dim)
        pooled = self.stage(x, "", depth, train=train, pooling=self.pooling)
        return ClassifierHead(self.num_classes, name="classifier")(pooled)
