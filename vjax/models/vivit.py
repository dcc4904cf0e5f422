"""ViViT (Arnab et al., ICCV 2021): all four models and the spatial average-pool baseline,
plus the single-frame baseline, on one shared set of layers.

``variant`` selects the model of the paper:

* ``"spacetime"`` - model 1: every tubelet attends to every other one.
* ``"factorised_encoder"`` - model 2: a spatial transformer on each tubelet time-slice, its
  per-slice representation (cls or average: ``pooling``) fed to a temporal transformer of
  ``temporal_layers`` blocks (4 in the paper's Table 2), pooled by ``temporal_pooling``
  (default: the same as ``pooling``).
* ``"factorised_self_attention"`` - model 3: each block attends along time, then along
  space (``attention_order="space_time"`` swaps them), then its MLP.
* ``"factorised_dot_product"`` - model 4: one attention layer per block whose heads are
  split, half attending along time and half along space.
* ``"average_pool"`` - the paper's baseline: the spatial transformer of model 2 on every
  slice, its outputs averaged over time (no temporal transformer).

Models 3 and 4 pool by global average (``pooling="gap"``, their default) as in scenic, the
reference implementation; the others default to a class token. Parameter names are shared
so that surgery and converters treat every variant alike: ``embedding``,
``pos_embedding``, ``cls``, ``encoder`` (the spatial or only transformer, with image-ViT
block names), ``temporal_*`` for model 2's second stage, ``classifier``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
from einops import rearrange

from vjax.models.layers import ClassifierHead, divisible_heads
from vjax.models.registry import register
from vjax.models.video_transformer import VideoTransformer, check_divisible

__all__ = ["VARIANTS", "SingleFrame", "ViViT", "check_divisible"]

# variant -> (paper model, default pooling)
VARIANTS = {
    "spacetime": ("model 1", "cls"),
    "factorised_encoder": ("model 2", "cls"),
    "factorised_self_attention": ("model 3", "gap"),
    "factorised_dot_product": ("model 4", "gap"),
    "average_pool": ("spatial average-pool baseline", "cls"),
}
_ORDERS = {"time_space": ("time", "space"), "space_time": ("space", "time")}


@register("vivit")
class ViViT(VideoTransformer):
    """ViViT models 1-4 and the average-pool baseline, selected by ``variant``.

    >>> model = ViViT(num_classes=400, size="B/16x2", variant="factorised_encoder")
    >>> variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 224, 224, 3)), train=False)
    """

    variant: str = "spacetime"
    pooling: str | None = None  # "cls" or "gap"; None: the variant's default
    attention_order: str = "time_space"  # model 3: "time_space" or "space_time"
    temporal_layers: int = 4  # model 2's temporal transformer
    temporal_num_heads: int | None = None  # None: as the spatial transformer
    temporal_mlp_dim: int | None = None
    temporal_pooling: str | None = None  # model 2's temporal stage; None: as ``pooling``

    @property
    def resolved_pooling(self) -> str:
        return self.pooling or VARIANTS[self.variant][1]

    def _pooling(self, prefix: str) -> str:
        """The pooling of a stage: ``temporal_pooling`` for model 2's temporal stage."""
        if prefix == "temporal_" and self.temporal_pooling:
            return self.temporal_pooling
        return self.resolved_pooling

    def check_input(self, input_shape: tuple[int, ...]) -> None:
        """Validates a clip shape and the variant's settings before any compilation."""
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown ViViT variant {self.variant!r}; valid: {list(VARIANTS)}")
        super().check_input(input_shape)
        for name, value in (
            ("pooling", self.resolved_pooling),
            ("temporal_pooling", self._pooling("temporal_")),
        ):
            if value not in ("cls", "gap"):
                raise ValueError(f"{name} must be 'cls' or 'gap', got {value!r}")
        if self.resolved_pooling == "cls" and VARIANTS[self.variant][1] == "gap":
            raise ValueError(
                f"variant {self.variant!r} has no class token (its tokens form a time x space "
                f"grid); use pooling='gap'"
            )
        if self.attention_order not in _ORDERS:
            raise ValueError(
                f"attention_order must be one of {list(_ORDERS)}, got {self.attention_order!r}"
            )
        if self.variant == "factorised_dot_product":
            divisible_heads(self.resolved_size().num_heads, 2, "factorised_dot_product")

    def _stage(self, x: jax.Array, prefix: str, depth: tuple[int, int, int], **kw) -> jax.Array:
        """:meth:`VideoTransformer.stage` with this stage's pooling."""
        return self.stage(x, prefix, depth, pooling=self._pooling(prefix), **kw)

    @nn.compact
    def __call__(self, video: jax.Array, *, train: bool) -> jax.Array:
        self.check_input(video.shape)
        size = self.resolved_size()
        depth = (size.num_layers, size.num_heads, size.mlp_dim)
        x, (time, space) = self.embed(video)
        if self.variant in ("factorised_encoder", "average_pool"):
            frames = rearrange(x, "b (t s) d -> (b t) s d", t=time)  # each frame on its own
            pooled = self._stage(frames, "", depth, train=train)
            pooled = rearrange(pooled, "(b t) d -> b t d", t=time)
            if self.variant == "average_pool":
                pooled = pooled.mean(axis=1)
            else:
                temporal = (
                    self.temporal_layers,
                    self.temporal_num_heads or size.num_heads,
                    self.temporal_mlp_dim or size.mlp_dim,
                )
                pooled = self._stage(pooled, "temporal_", temporal, train=train)
        else:
            sublayers = {
                "spacetime": ("joint",),
                "factorised_self_attention": _ORDERS[self.attention_order],
                "factorised_dot_product": ("split",),
            }[self.variant]
            pooled = self._stage(x, "", depth, train=train, sublayers=sublayers, grid=(time, space))
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
        self.check_input(video.shape)  # the whole clip's layout, before cutting its middle out
        middle = video.shape[1] // 2
        return super().__call__(video[:, middle : middle + 1], train=train)
