"""Shared transformer layers with logical axis names on every parameter and large activation.

Logical names used here: ``batch``, ``tokens`` (a flattened token sequence), ``embed``,
``heads``, ``kv`` (per-head features), ``mlp``, ``classes``. The sharding rules in the config
map them onto mesh axes; model code never names a mesh axis.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any
_xavier = nn.initializers.xavier_uniform()
# Xavier over the (embed) x (heads * kv) matrix the 3D attention kernels stand for.
_xavier_heads = nn.initializers.variance_scaling(
    1.0, "fan_avg", "uniform", in_axis=0, out_axis=(1, 2)
)


def _logical(init, names: tuple[str | None, ...]):
    return nn.with_logical_partitioning(init, names)


def constrain(x: jax.Array, names: tuple[str | None, ...]) -> jax.Array:
    """Annotates an activation with logical axis names (a no-op outside a mesh)."""
    return nn.with_logical_constraint(x, names)


class Attention(nn.Module):
    """Multi-head self-attention over ``(batch, tokens, embed)``.

    Projections are explicit ``(embed, heads, kv)`` kernels so their logical names shard heads
    directly (flax's DenseGeneral would initialise a flattened 2D kernel instead).
    """

    num_heads: int
    dtype: Dtype = jnp.float32

    def _param(self, name: str, init, shape: tuple[int, ...], names: tuple[str, ...]):
        return self.param(name, _logical(init, names), shape).astype(self.dtype)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        embed = x.shape[-1]
        if embed % self.num_heads:
            raise ValueError(f"hidden size {embed} is not divisible by num_heads {self.num_heads}")
        heads, head_dim = self.num_heads, embed // self.num_heads
        x = x.astype(self.dtype)

        def project(name: str) -> jax.Array:
            kernel = self._param(
                f"{name}_kernel", _xavier_heads, (embed, heads, head_dim), ("embed", "heads", "kv")
            )
            bias = self._param(
                f"{name}_bias", nn.initializers.zeros, (heads, head_dim), ("heads", "kv")
            )
            return jnp.einsum("btd,dhk->bthk", x, kernel) + bias

        q, k, v = project("query"), project("key"), project("value")
        out = jax.nn.dot_product_attention(q, k, v)
        out = constrain(out, ("batch", "tokens", "heads", "kv"))
        kernel = self._param(
            "out_kernel", _xavier_heads, (heads, head_dim, embed), ("heads", "kv", "embed")
        )
        bias = self._param("out_bias", nn.initializers.zeros, (embed,), ("embed",))
        return jnp.einsum("bthk,hkd->btd", out, kernel) + bias


class Mlp(nn.Module):
    """Two-layer GELU MLP of a transformer block."""

    mlp_dim: int
    dropout_rate: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        embed = x.shape[-1]
        bias_init = nn.initializers.normal(stddev=1e-6)
        y = nn.Dense(
            self.mlp_dim,
            dtype=self.dtype,
            kernel_init=_logical(_xavier, ("embed", "mlp")),
            bias_init=_logical(bias_init, ("mlp",)),
            name="fc1",
        )(x)
        y = constrain(nn.gelu(y, approximate=False), ("batch", "tokens", "mlp"))
        y = nn.Dropout(self.dropout_rate)(y, deterministic=not train)
        y = nn.Dense(
            embed,
            dtype=self.dtype,
            kernel_init=_logical(_xavier, ("mlp", "embed")),
            bias_init=_logical(bias_init, ("embed",)),
            name="fc2",
        )(y)
        return nn.Dropout(self.dropout_rate)(y, deterministic=not train)


def layer_norm(name: str, dtype: Dtype) -> nn.LayerNorm:
    """Pre-LN layer norm with logically named scale and bias."""
    return nn.LayerNorm(
        epsilon=1e-6,
        dtype=dtype,
        scale_init=_logical(nn.initializers.ones, ("embed",)),
        bias_init=_logical(nn.initializers.zeros, ("embed",)),
        name=name,
    )


class EncoderBlock(nn.Module):
    """Pre-LN transformer block with stochastic depth (drop-path) on both residual branches."""

    num_heads: int
    mlp_dim: int
    dropout_rate: float = 0.0
    drop_path_rate: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        # Drop-path: drop the whole residual branch per example (broadcast over tokens, embed).
        drop_path = nn.Dropout(self.drop_path_rate, broadcast_dims=(1, 2))
        y = layer_norm("norm1", self.dtype)(x)
        y = Attention(self.num_heads, dtype=self.dtype, name="attention")(y)
        y = nn.Dropout(self.dropout_rate)(y, deterministic=not train)
        x = x + drop_path(y, deterministic=not train)
        y = layer_norm("norm2", self.dtype)(x)
        y = Mlp(self.mlp_dim, self.dropout_rate, dtype=self.dtype, name="mlp")(y, train=train)
        x = x + drop_path(y, deterministic=not train)
        return constrain(x, ("batch", "tokens", "embed"))


class Encoder(nn.Module):
    """A stack of encoder blocks; stochastic depth grows linearly from 0 to ``drop_path_rate``."""

    num_layers: int
    num_heads: int
    mlp_dim: int
    dropout_rate: float = 0.0
    drop_path_rate: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        for i in range(self.num_layers):
            rate = self.drop_path_rate * i / max(self.num_layers - 1, 1)
            x = EncoderBlock(
                self.num_heads,
                self.mlp_dim,
                self.dropout_rate,
                rate,
                dtype=self.dtype,
                name=f"block{i:02d}",
            )(x, train=train)
        return layer_norm("encoder_norm", self.dtype)(x)


class TubeletEmbed(nn.Module):
    """Non-overlapping 3D patches ("tubelets") projected to ``hidden_size`` by a strided conv."""

    hidden_size: int
    tubelet: tuple[int, int, int]
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, video: jax.Array) -> jax.Array:
        x = nn.Conv(
            self.hidden_size,
            kernel_size=self.tubelet,
            strides=self.tubelet,
            padding="VALID",
            dtype=self.dtype,
            kernel_init=_logical(nn.initializers.lecun_normal(), (None, None, None, None, "embed")),
            bias_init=_logical(nn.initializers.zeros, ("embed",)),
            name="conv",
        )(video)
        batch, t, h, w, d = x.shape
        return constrain(x.reshape(batch, t * h * w, d), ("batch", "tokens", "embed"))


class ClassifierHead(nn.Module):
    """Linear classifier, zero-initialised as in ViT so training starts from uniform logits."""

    num_classes: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        logits = nn.Dense(
            self.num_classes,
            dtype=jnp.float32,
            kernel_init=_logical(nn.initializers.zeros, ("embed", "classes")),
            bias_init=_logical(nn.initializers.zeros, ("classes",)),
            name="head",
        )(x)
        return constrain(logits, ("batch", "classes"))
