"""TimeSformer (Bertasius et al., "Is Space-Time Attention All You Need for Video
Understanding?", ICML 2021) on the shared transformer layers.

Frames are cut into 2D patches (``size="B/16"``: tubelet time 1); every patch gets a spatial
position embedding and a per-frame time embedding; a class token goes in front.
``attention_type`` follows the paper (and Hugging Face's ``TimesformerConfig``):

* ``"divided_space_time"``: in each block, temporal attention of every patch with the
  patches at the same position in the other frames (its output through a linear
  ``time_dense``), then spatial attention within each frame, which the class token joins in
  every frame (its result averaged over frames), then the MLP.
* ``"joint_space_time"``: every token attends to every other one.
* ``"space_only"``: each frame on its own with its own class token and no time embedding;
  the class tokens' normalised outputs are averaged over frames. (The original code averages
  before the final norm; averaging after it equals averaging the per-frame predictions,
  which is what Hugging Face's per-frame ``space_only`` logits give.)

Initialised as TimeSformer's code does: the time embedding and each block's temporal fc
(``time_dense``) at zero, so that a new model, or one made from an image ViT
(:mod:`vjax.convert.surgery` copies each block's spatial attention into its temporal one),
starts as the image model on every frame.

Parameter names: ``embedding``, ``cls``, ``pos_embedding`` (spatial, ``(1, patches, D)``),
``time_embedding`` (``(1, frames, D)``), ``encoder`` (blocks with ``norm_time``,
``attention_time``, ``time_dense``, ``norm1``, ``attention``, ``norm2``, ``mlp``; then
``encoder_norm``), and
``classifier``. A checkpoint whose position table includes the class token folds that row
into ``cls`` (they are added before any layer).
"""

from __future__ import annotations

import flax.linen as nn
import jax
from einops import rearrange
from flax.linen.initializers import zeros

from vjax.models.layers import (
    ClassifierHead,
    learned_embedding,
    prepend,
)
from vjax.models.registry import register
from vjax.models.video_transformer import VideoTransformer

ATTENTION_TYPES = {
    "divided_space_time": ("time", "space"),
    "joint_space_time": ("joint",),
    "space_only": ("joint",),
}


@register("timesformer")
class TimeSformer(VideoTransformer):
    """TimeSformer with divided, joint or space-only attention.

    >>> model = TimeSformer(num_classes=400, size="B/16", attention_type="divided_space_time")
    >>> variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 224, 224, 3)), train=False)
    """

    size: str = "B/16"
    attention_type: str = "divided_space_time"

    def check_input(self, input_shape: tuple[int, ...]) -> None:
        """Validates the clip shape and attention type before any compilation."""
        if self.attention_type not in ATTENTION_TYPES:
            raise ValueError(
                f"unknown attention_type {self.attention_type!r}; valid: {list(ATTENTION_TYPES)}"
            )
        super().check_input(input_shape)

    @nn.compact
    def __call__(self, video: jax.Array, *, train: bool) -> jax.Array:
        self.check_input(video.shape)
        x, (time, space) = self.embed(video)
        dim = x.shape[-1]
        x = rearrange(x, "b (t s) d -> b t s d", t=time)
        x = x + learned_embedding(self, "pos_embedding", (1, space, dim), (None, "tokens", "embed"))
        cls = learned_embedding(self, "cls", (1, 1, dim), (None, None, "embed"))
        space_only = self.attention_type == "space_only"
        if space_only:
            x = prepend(cls, rearrange(x, "b t s d -> (b t) s d"))  # one sequence per frame
        else:
            times = learned_embedding(  # zeros, TimeSformer's: frames start alike
                self, "time_embedding", (1, time, dim), (None, "time", "embed"), zeros
            )
            x = prepend(cls, rearrange(x + times[:, :, None], "b t s d -> b (t s) d"))
        x = nn.Dropout(self.dropout_rate)(x.astype(self.dtype), deterministic=not train)
        x = self.encoder(
            "encoder",
            sublayers=ATTENTION_TYPES[self.attention_type],
            grid=None if space_only else (time, space),
            time_projection=True,
        )(x, train=train)
        pooled = x[:, 0]
        if space_only:
            pooled = rearrange(pooled, "(b t) d -> b t d", t=time).mean(axis=1)
        return ClassifierHead(self.num_classes, name="classifier")(pooled)
