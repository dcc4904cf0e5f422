"""VideoMAE-style ViT (Tong et al., "VideoMAE: Masked Autoencoders are Data-Efficient Learners
for Self-Supervised Video Pre-Training", NeurIPS 2022), the fine-tuning encoder.

2x16x16 tubelets (``size="B/16x2"``), a fixed sinusoidal position table (no parameters),
joint space-time attention whose query and value projections carry a bias but the key's
does not (``qkv_bias="qv"``), and a mean-pooling head: tokens averaged, then ``fc_norm``,
then the classifier. ``pooling="first"`` is Hugging Face's ``use_mean_pooling=False``: a
final encoder norm and the first token.

>>> model = VideoMAE(num_classes=400)
>>> variables = model.init(jax.random.key(0), jnp.zeros((1, 16, 224, 224, 3)), train=False)
"""

from __future__ import annotations

import flax.linen as nn
import jax

from vjax.models.layers import ClassifierHead, layer_norm, sinusoidal_table
from vjax.models.registry import register
from vjax.models.video_transformer import VideoTransformer

POOLINGS = ("mean", "first")


@register("videomae")
class VideoMAE(VideoTransformer):
    """VideoMAE ViT encoder with a mean-pooling (``fc_norm``) classification head."""

    qkv_bias: str = "qv"
    pooling: str = "mean"
    fc_norm_eps: float = 1e-6  # Hugging Face's fc_norm uses torch's default, 1e-5

    def check_input(self, input_shape: tuple[int, ...]) -> None:
        """Validates the clip shape and pooling before any compilation."""
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        super().check_input(input_shape)

    @nn.compact
    def __call__(self, video: jax.Array, *, train: bool) -> jax.Array:
        self.check_input(video.shape)
        x, _ = self.embed(video)
        x = x + sinusoidal_table(x.shape[1], x.shape[2]).astype(self.dtype)
        x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
        mean = self.pooling == "mean"
        x = self.encoder("encoder", final_norm=not mean)(x, train=train)
        pooled = layer_norm("fc_norm", self.dtype, self.fc_norm_eps)(x.mean(1)) if mean else x[:, 0]
        return ClassifierHead(self.num_classes, name="classifier")(pooled)
