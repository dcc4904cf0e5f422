"""Shared transformer layers for the whole video-transformer family (ViViT 1-4, TimeSformer,
VideoMAE), with logical axis names on every parameter and large activation.

One block (:class:`EncoderBlock`) covers every attention pattern the family uses, chosen by
its ``sublayers``: ``"joint"`` attention over all tokens, ``"time"`` / ``"space"`` attention
along one axis of the ``(time, space)`` token grid (ViViT model 3, TimeSformer's divided
attention), and ``"split"``, heads split between time and space inside one attention layer
(ViViT model 4). Layer options that differ between checkpoints (layer-norm epsilon,
activation, which of q/k/v carry a bias, the attention kernel) live in
:class:`TransformerOptions` so converters can reproduce any configuration.

Logical names used here: ``batch``, ``tokens`` (a flattened token sequence), ``time``,
``space`` (the spatial tokens of one frame), ``embed``, ``heads``, ``kv`` (per-head features),
``mlp``, ``classes``. The sharding rules in the config map them onto mesh axes; model code
never names a mesh axis.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from einops import rearrange

from vjax.models.attention import IMPLEMENTATIONS, attention_weights, grid_attention
from vjax.models.conv import Conv
from vjax.models.widths import layer_width

Dtype = Any
_xavier = nn.initializers.xavier_uniform()
_embedding_init = nn.initializers.normal(0.02)
# Xavier over the (embed) x (heads * kv) matrix the 3D attention kernels stand for.
_xavier_heads = nn.initializers.variance_scaling(
    1.0, "fan_avg", "uniform", in_axis=0, out_axis=(1, 2)
)
_xavier_heads_out = nn.initializers.variance_scaling(
    1.0, "fan_avg", "uniform", in_axis=(0, 1), out_axis=2
)
# Xavier over the fused (embed) x (3 * embed) q/k/v matrix of VideoMAE's official code.
_xavier_fused_qkv = nn.initializers.variance_scaling(
    0.5, "fan_avg", "uniform", in_axis=0, out_axis=(1, 2)
)
QKV_INITS = {"per_projection": _xavier_heads, "fused": _xavier_fused_qkv}
PATCH_INITS = ("lecun", "torch")
# torch's default for nn.Linear / nn.Conv weights: U(+-1 / sqrt(fan_in)).
torch_default_kernel = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def torch_default_bias(fan_in: int) -> nn.initializers.Initializer:
    """torch's default nn.Linear / nn.Conv bias: U(+-1 / sqrt(fan_in)) of its kernel's fan-in."""
    bound = 1 / math.sqrt(fan_in)

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _gelu_exact(x: jax.Array) -> jax.Array:
    return nn.gelu(x, approximate=False)


def _gelu_tanh(x: jax.Array) -> jax.Array:
    return nn.gelu(x, approximate=True)


def _quick_gelu(x: jax.Array) -> jax.Array:
    return x * nn.sigmoid(1.702 * x)


# Activation names, including Hugging Face's spellings of the same functions (its "gelu_fast",
# "gelu_new", "gelu_pytorch_tanh" and "gelu_accurate" are all the tanh approximation).
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": _gelu_exact,
    "gelu_python": _gelu_exact,
    "gelu_tanh": _gelu_tanh,
    "gelu_fast": _gelu_tanh,
    "gelu_new": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "gelu_python_tanh": _gelu_tanh,
    "gelu_accurate": _gelu_tanh,
    "quick_gelu": _quick_gelu,
    "relu": nn.relu,
    "relu6": nn.relu6,
    "silu": nn.silu,
    "swish": nn.silu,
}
SUBLAYERS = ("joint", "time", "space", "split")
# model.remat: what the backward pass of each block keeps from the forward pass. "none": every
# activation; "block": only the block's input (the rest is recomputed); "dots": the outputs of
# the weight matmuls (projections, MLP), the rest (attention scores, norms, GELU) recomputed.
REMAT_POLICIES = {
    "none": None,
    "block": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def check_remat(remat: str) -> None:
    """Raises a ValueError naming the valid ``model.remat`` policies."""
    if remat not in REMAT_POLICIES:
        raise ValueError(f"unknown remat {remat!r}; valid: {', '.join(REMAT_POLICIES)}")


def remat_block(cls: type[nn.Module], remat: str) -> type[nn.Module]:
    """``cls`` itself, or rematerialised with the policy ``remat`` names; the wrapped
    block takes ``train`` as its second positional argument (a static one)."""
    check_remat(remat)
    if remat == "none":
        return cls
    return nn.remat(cls, static_argnums=(2,), policy=REMAT_POLICIES[remat])


@dataclasses.dataclass(frozen=True)
class TransformerOptions:
    """Per-layer options that differ between published checkpoints.

    ``qkv_bias`` names the projections that carry a bias: ``"qkv"`` (ViT, ViViT,
    TimeSformer), ``"qv"`` (VideoMAE: no key bias), ``""`` (none). ``qkv_init``: Xavier
    over each projection (``"per_projection"``, scenic's ViT) or over the fused q/k/v matrix
    (``"fused"``, VideoMAE's official code: 1/sqrt(2) of the former's scale).
    """

    layer_norm_eps: float = 1e-6
    activation: str = "gelu"
    qkv_bias: str = "qkv"
    attention_impl: str = "auto"
    qkv_init: str = "per_projection"

    def validate(self) -> None:
        """Raises a ValueError naming the bad option (called before any compilation)."""
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {self.activation!r}; valid: {', '.join(ACTIVATIONS)}"
            )
        if not set(self.qkv_bias) <= set("qkv") or len(set(self.qkv_bias)) != len(self.qkv_bias):
            raise ValueError(
                f"qkv_bias must name the biased projections among 'q', 'k', 'v' (e.g. 'qkv', "
                f"'qv', ''), got {self.qkv_bias!r}"
            )
        if self.attention_impl not in IMPLEMENTATIONS:
            raise ValueError(
                f"attention_impl must be one of {IMPLEMENTATIONS}, got {self.attention_impl!r}"
            )
        if self.qkv_init not in QKV_INITS:
            raise ValueError(f"qkv_init must be one of {tuple(QKV_INITS)}, got {self.qkv_init!r}")


def _logical(init, names: tuple[str | None, ...]):
    return nn.with_logical_partitioning(init, names)


def constrain(x: jax.Array, names: tuple[str | None, ...]) -> jax.Array:
    """Annotates an activation with logical axis names (a no-op outside a mesh)."""
    return nn.with_logical_constraint(x, names)


def token_names(ndim: int, last: tuple[str | None, ...] = ("embed",)) -> tuple[str | None, ...]:
    """Logical names of a token array: ``(batch, tokens, ...)`` or ``(batch, time, space, ...)``."""
    grid = {2: ("tokens",), 3: ("time", "space")}[ndim - len(last)]
    return ("batch", *grid, *last)


def learned_embedding(
    module: nn.Module,
    name: str,
    shape: tuple[int, ...],
    names: tuple[str | None, ...],
    init: nn.initializers.Initializer = _embedding_init,
) -> jax.Array:
    """A learned additive embedding (position, time, class token), by default N(0, 0.02)
    initialised."""
    return module.param(name, _logical(init, names), shape)


def prepend(token: jax.Array, x: jax.Array) -> jax.Array:
    """Puts a ``(1, n, embed)`` token (e.g. cls) in front of every ``(batch, tokens, embed)``."""
    token = jnp.broadcast_to(token, (x.shape[0], *token.shape[1:])).astype(x.dtype)
    return jnp.concatenate([token, x], axis=1)


def residual_bias(module: nn.Module, name: str, x: jax.Array) -> jax.Array:
    """What a residual sublayer pruned to zero width (``model.widths`` 0) outputs: its output
    bias, broadcast over the tokens ``x``; the block's residual connection carries ``x`` on."""
    bias = module.param(
        name, _logical(nn.initializers.zeros, ("embed",)), (x.shape[-1],), jnp.float32
    )
    return jnp.broadcast_to(bias.astype(module.dtype), x.shape)


class _Bias(nn.Module):
    """An MLP pruned to zero units: the ``bias`` of its ``fc2``."""

    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return residual_bias(self, "bias", x)


def sow_consumer_input(module: nn.Module, features: jax.Array) -> None:
    """Records what a layer's output projection reads (one row per token) when the
    ``consumer_inputs`` collection is mutable: pruning refits that projection from it
    (:mod:`vjax.pruning.refit`). Free otherwise."""
    if module.is_mutable_collection("consumer_inputs") and not module.is_initializing():
        module.sow("consumer_inputs", "consumer_input", features)


# The collection in which a model of several modalities leaves each one's training logits.
MODALITY_LOGITS = "modality_logits"


def sow_modality_logits(module: nn.Module, logits: list[Any]) -> None:
    """Records each modality's logits (a list, one per modality, beside the averaged logits
    the model returns) when the ``modality_logits`` collection is mutable: a labelled
    objective then averages one loss per modality (:func:`vjax.objectives.scored_logits`).
    Free otherwise."""
    if module.is_mutable_collection(MODALITY_LOGITS) and not module.is_initializing():
        module.sow(MODALITY_LOGITS, "logits", tuple(logits))


class Attention(nn.Module):
    """Multi-head self-attention over ``(batch, *grid, embed)`` token arrays.

    Projections are explicit ``(embed, heads, kv)`` kernels so their logical names shard heads
    directly (flax's DenseGeneral would initialise a flattened 2D kernel instead).
    ``head_groups`` splits the heads into equal groups, each attending over its own grid axes
    (None: all of them); ``((1,), (2,))`` on ``(batch, time, space, embed)`` is ViViT model 4.
    Each head is ``embed // num_heads`` wide; a pruned model (``model.widths``) may keep fewer
    heads than ``num_heads``.
    """

    num_heads: int
    dtype: Dtype = jnp.float32
    qkv_bias: str = "qkv"
    head_groups: tuple[tuple[int, ...] | None, ...] = (None,)
    implementation: str = "auto"
    qkv_init: str = "per_projection"  # TransformerOptions.qkv_init

    def _param(self, name: str, init, shape: tuple[int, ...], names: tuple[str, ...]):
        value = self.param(name, _logical(init, names), shape)
        # Cast only when needed: an int8-quantized kernel (vjax.deploy.quantize) has the
        # compute dtype already and cannot be cast as a whole.
        return value if value.dtype == self.dtype else value.astype(self.dtype)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        embed = x.shape[-1]
        if embed % self.num_heads:
            raise ValueError(f"hidden size {embed} is not divisible by num_heads {self.num_heads}")
        if self.num_heads % len(self.head_groups):
            raise ValueError(
                f"num_heads {self.num_heads} cannot be split evenly into "
                f"{len(self.head_groups)} head groups"
            )
        heads, head_dim = layer_width(self, self.num_heads), embed // self.num_heads
        if heads == 0:  # pruned away: only the output bias is left (the residual carries x)
            return residual_bias(self, "out_bias", x)
        if heads % len(self.head_groups):
            raise ValueError(
                f"{'/'.join(self.path)} keeps {heads} heads, which cannot be split evenly into "
                f"{len(self.head_groups)} head groups (model.widths)"
            )
        x = x.astype(self.dtype)

        def project(name: str) -> jax.Array:
            kernel = self._param(
                f"{name}_kernel",
                QKV_INITS[self.qkv_init],
                (embed, heads, head_dim),
                ("embed", "heads", "kv"),
            )
            y = jnp.einsum("...d,dhk->...hk", x, kernel)
            if name[0] in self.qkv_bias:
                y = y + self._param(
                    f"{name}_bias", nn.initializers.zeros, (heads, head_dim), ("heads", "kv")
                )
            return y

        q, k, v = project("query"), project("key"), project("value")
        per_group = heads // len(self.head_groups)
        groups = [
            (axes, *(t[..., i * per_group : (i + 1) * per_group, :] for t in (q, k, v)))
            for i, axes in enumerate(self.head_groups)
        ]
        # Inspection only (vjax.explain): applied with mutable=["attention"], never in init.
        if self.is_mutable_collection("attention") and not self.is_initializing():
            for axes, qg, kg, _ in groups:
                self.sow("attention", "weights", attention_weights(qg, kg, axes))
        outs = [
            grid_attention(qg, kg, vg, axes, implementation=self.implementation)
            for axes, qg, kg, vg in groups
        ]
        out = constrain(jnp.concatenate(outs, axis=-2), token_names(x.ndim + 1, ("heads", "kv")))
        sow_consumer_input(self, out.reshape(*out.shape[:-2], heads * head_dim))
        kernel = self._param(
            "out_kernel", _xavier_heads_out, (heads, head_dim, embed), ("heads", "kv", "embed")
        )
        bias = self._param("out_bias", nn.initializers.zeros, (embed,), ("embed",))
        return jnp.einsum("...hk,hkd->...d", out, kernel) + bias


def dense(
    features: int,
    names: tuple[str | None, str | None],
    dtype: Dtype,
    name: str,
    bias_std: float = 0.0,
    use_bias: bool = True,
    kernel_init: nn.initializers.Initializer = _xavier,
):
    """A Dense layer with (by default) Xavier kernel and logically named parameters (``names``
    of the kernel's input and output dims; the bias takes the output's)."""
    bias_init = nn.initializers.normal(stddev=bias_std) if bias_std else nn.initializers.zeros
    return nn.Dense(
        features,
        dtype=dtype,
        use_bias=use_bias,
        kernel_init=_logical(kernel_init, names),
        bias_init=_logical(bias_init, names[1:]),
        name=name,
    )


class Mlp(nn.Module):
    """Two-layer MLP of a transformer block (``activation`` from :data:`ACTIVATIONS`); a pruned
    model (``model.widths``) may give it fewer hidden units than ``mlp_dim``."""

    mlp_dim: int
    dropout_rate: float = 0.0
    dtype: Dtype = jnp.float32
    activation: str = "gelu"

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        embed = x.shape[-1]
        units = layer_width(self, self.mlp_dim)
        if units == 0:  # pruned away: only fc2's bias is left (the residual carries x)
            return _Bias(self.dtype, name="fc2")(x)
        y = dense(units, ("embed", "mlp"), self.dtype, "fc1", bias_std=1e-6)(x)
        y = constrain(ACTIVATIONS[self.activation](y), token_names(y.ndim, ("mlp",)))
        y = nn.Dropout(self.dropout_rate)(y, deterministic=not train)
        sow_consumer_input(self, y)
        y = dense(embed, ("mlp", "embed"), self.dtype, "fc2", bias_std=1e-6)(y)
        return nn.Dropout(self.dropout_rate)(y, deterministic=not train)


def layer_norm(name: str, dtype: Dtype, epsilon: float = 1e-6) -> nn.LayerNorm:
    """Pre-LN layer norm with logically named scale and bias."""
    return nn.LayerNorm(
        epsilon=epsilon,
        dtype=dtype,
        scale_init=_logical(nn.initializers.ones, ("embed",)),
        bias_init=_logical(nn.initializers.zeros, ("embed",)),
        name=name,
    )


class EncoderBlock(nn.Module):
    """Pre-LN transformer block over ``(batch, tokens, embed)``: attention sublayer(s), then MLP.

    ``sublayers`` lists the attention sublayers in order, each with its own layer norm and
    residual: ``"joint"`` (all tokens), ``"time"`` / ``"space"`` (along one axis of the
    ``grid = (time, space)`` token grid), ``"split"`` (heads half over time, half over space).
    Tokens beyond the grid at the front (a class token) skip temporal attention and join the
    spatial attention of every frame, their result averaged over frames (TimeSformer's rule).
    The ``"time"`` sublayer's parameters are ``norm_time``/``attention_time`` (plus
    ``time_dense`` with ``time_projection``, TimeSformer's temporal fc, initialised to zero
    as TimeSformer's, so a new block starts as its image ViT block); every other attention
    sublayer uses ``norm1``/``attention``, the names of an image ViT block, so image weights
    load into the spatial part of every variant unchanged.
    """

    num_heads: int
    mlp_dim: int
    dropout_rate: float = 0.0
    drop_path_rate: float = 0.0
    dtype: Dtype = jnp.float32
    options: TransformerOptions = TransformerOptions()
    sublayers: tuple[str, ...] = ("joint",)
    grid: tuple[int, int] | None = None
    time_projection: bool = False

    def _attention(self, name: str, head_groups) -> Attention:
        return Attention(
            self.num_heads,
            dtype=self.dtype,
            qkv_bias=self.options.qkv_bias,
            head_groups=head_groups,
            implementation=self.options.attention_impl,
            qkv_init=self.options.qkv_init,
            name=name,
        )

    def _attend(self, kind: str, y: jax.Array, train: bool) -> jax.Array:
        """The attention sublayer ``kind``'s residual branch; ``"time"`` and ``"space"`` apply
        their own drop path, on the folded sequences as TimeSformer's code does (one decision
        per clip and patch position over time, per clip and frame over space), before the
        temporal fc (whose bias survives a drop) and the class token's mean over frames."""
        if kind == "joint":
            return self._attention("attention", (None,))(y)
        if self.grid is None:
            raise ValueError(f"the {kind!r} attention sublayer needs the (time, space) grid")
        batch, length, embed = y.shape
        time, space = self.grid
        prefix = length - time * space
        if prefix < 0 or (prefix and kind == "split"):
            raise ValueError(
                f"{length} tokens do not fit the grid {self.grid} for {kind!r} attention"
            )
        head, grid = y[:, :prefix], rearrange(y[:, prefix:], "b (t s) d -> b t s d", t=time)

        def drop_path(out: jax.Array, shared: tuple[int, ...]) -> jax.Array:
            dropout = nn.Dropout(self.drop_path_rate, broadcast_dims=shared)
            return dropout(out, deterministic=not train)

        if kind == "time":
            out = drop_path(self._attention("attention_time", ((1,),))(grid), (1, 3))
            if self.time_projection:
                # (None, "embed"): an array may not repeat a logical name.
                zero = nn.initializers.zeros
                out = dense(embed, (None, "embed"), self.dtype, "time_dense", kernel_init=zero)(out)
            head_out = jnp.zeros_like(head)
        elif kind == "space":
            head_per_frame = jnp.broadcast_to(head[:, None], (batch, time, prefix, embed))
            out = self._attention("attention", ((2,),))(
                jnp.concatenate([head_per_frame, grid], axis=2)
            )
            out = drop_path(out, (2, 3))
            head_out, out = out[:, :, :prefix].mean(axis=1), out[:, :, prefix:]
        else:  # split
            out = self._attention("attention", ((1,), (2,)))(grid)
            head_out = head
        out = constrain(out, token_names(4))
        return jnp.concatenate(
            [head_out.astype(out.dtype), rearrange(out, "b t s d -> b (t s) d")], axis=1
        )

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        # Drop-path: drop the whole residual branch per example (broadcast over tokens, embed).
        drop_path = nn.Dropout(self.drop_path_rate, broadcast_dims=(1, 2))
        eps = self.options.layer_norm_eps
        for kind in self.sublayers:
            norm = "norm_time" if kind == "time" else "norm1"
            y = self._attend(kind, layer_norm(norm, self.dtype, eps)(x), train)
            y = nn.Dropout(self.dropout_rate)(y, deterministic=not train)
            if kind not in FOLDED_DROP_PATH:  # those drop their folded sequences themselves
                y = drop_path(y, deterministic=not train)
            x = x + y
        y = layer_norm("norm2", self.dtype, eps)(x)
        y = Mlp(self.mlp_dim, self.dropout_rate, self.dtype, self.options.activation, name="mlp")(
            y, train=train
        )
        x = x + drop_path(y, deterministic=not train)
        return constrain(x, token_names(3))


# Attention sublayers whose drop path acts on the folded sequences (EncoderBlock._attend).
FOLDED_DROP_PATH = ("time", "space")


def check_sublayers(sublayers: tuple[str, ...]) -> None:
    """Raises a ValueError for unknown or repeated attention sublayers (they share names)."""
    unknown = [s for s in sublayers if s not in SUBLAYERS]
    if unknown or not sublayers:
        raise ValueError(f"attention sublayers {sublayers} must be drawn from {SUBLAYERS}")
    spatial = [s for s in sublayers if s != "time"]
    if len(spatial) > 1 or sublayers.count("time") > 1:
        raise ValueError(
            f"attention sublayers {sublayers}: at most one 'time' and one other sublayer"
        )


class Encoder(nn.Module):
    """A stack of encoder blocks and a final layer norm (``final_norm=False`` leaves it out,
    as VideoMAE's mean-pooling head does); stochastic depth grows linearly from 0 to
    ``drop_path_rate``."""

    num_layers: int
    num_heads: int
    mlp_dim: int
    dropout_rate: float = 0.0
    drop_path_rate: float = 0.0
    dtype: Dtype = jnp.float32
    options: TransformerOptions = TransformerOptions()
    sublayers: tuple[str, ...] = ("joint",)
    grid: tuple[int, int] | None = None
    time_projection: bool = False
    final_norm: bool = True
    remat: str = "none"  # REMAT_POLICIES: "none", "block" or "dots"

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        check_sublayers(self.sublayers)
        block = remat_block(EncoderBlock, self.remat)
        for i in range(self.num_layers):
            rate = self.drop_path_rate * i / max(self.num_layers - 1, 1)
            x = block(
                self.num_heads,
                self.mlp_dim,
                self.dropout_rate,
                rate,
                dtype=self.dtype,
                options=self.options,
                sublayers=self.sublayers,
                grid=self.grid,
                time_projection=self.time_projection,
                name=f"block{i:02d}",
            )(x, train)
        if not self.final_norm:
            return x
        return layer_norm("encoder_norm", self.dtype, self.options.layer_norm_eps)(x)


class TubeletEmbed(nn.Module):
    """3D patches ("tubelets") projected to ``hidden_size`` by a strided conv (one matmul
    when they do not overlap, :mod:`vjax.models.conv`).

    Returns ``(batch, tokens, hidden)`` with tokens in (time, height, width) order; the token
    grid is ``(frames // t, (height // h) * (width // w))``. ``strides`` smaller than the
    tubelet make overlapping patches (AST's spectrogram patches); None: the tubelet itself.
    ``conv_init``: the conv's initialisation, ``"lecun"`` (LeCun normal kernel, zero bias: scenic's
    ViT) or ``"torch"`` (torch's default nn.Conv3d: VideoMAE's official code).
    """

    hidden_size: int
    tubelet: tuple[int, int, int]
    dtype: Dtype = jnp.float32
    strides: tuple[int, int, int] | None = None
    conv_init: str = "lecun"

    @nn.compact
    def __call__(self, video: jax.Array) -> jax.Array:
        if self.conv_init not in PATCH_INITS:
            raise ValueError(f"conv_init must be one of {PATCH_INITS}, got {self.conv_init!r}")
        if self.conv_init == "torch":
            kernel_init = torch_default_kernel
            bias_init = torch_default_bias(math.prod(self.tubelet) * video.shape[-1])
        else:
            kernel_init, bias_init = nn.initializers.lecun_normal(), nn.initializers.zeros
        x = Conv(
            self.hidden_size,
            tuple(self.tubelet),
            tuple(self.strides or self.tubelet),
            dtype=self.dtype,
            kernel_init=_logical(kernel_init, (None, None, None, None, "embed")),
            bias_init=_logical(bias_init, ("embed",)),
            name="conv",
        )(video)
        return constrain(rearrange(x, "b t h w d -> b (t h w) d"), ("batch", "tokens", "embed"))


NumClasses = int | Mapping[str, int]
"""A model's ``num_classes``: K for one classifier, ``{task: K}`` for multi-task heads."""


class ClassifierHead(nn.Module):
    """Linear classifier, zero-initialised as in ViT so training starts from uniform logits.

    ``num_classes`` an int: one head (``head``), logits ``(B, K)``. A mapping ``{task: K}``
    (multi-task, e.g. Epic-Kitchens' verb and noun): one head per task, named by the task, and
    logits ``{task: (B, K_task)}``; every backbone gets multi-task heads through this module.
    """

    num_classes: NumClasses

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array | dict[str, jax.Array]:
        def head(size: int, name: str) -> jax.Array:
            logits = nn.Dense(
                size,
                dtype=jnp.float32,
                kernel_init=_logical(nn.initializers.zeros, ("embed", "classes")),
                bias_init=_logical(nn.initializers.zeros, ("classes",)),
                name=name,
            )(x)
            return constrain(logits, ("batch", "classes"))

        if isinstance(self.num_classes, Mapping):
            return {task: head(size, task) for task, size in self.num_classes.items()}
        return head(self.num_classes, "head")


def sinusoidal_table(length: int, dim: int) -> jax.Array:
    """Fixed 1D sin/cos position table ``(1, length, dim)`` as in VideoMAE (and "Attention is
    all you need"): angle ``p / 10000^(2 * (j // 2) / dim)``, sine on even, cosine on odd dims.
    """
    position = jnp.arange(length, dtype=jnp.float32)[:, None]
    exponent = (2 * (jnp.arange(dim) // 2)).astype(jnp.float32) / dim
    angle = position / jnp.power(10000.0, exponent)[None]
    table = jnp.where(jnp.arange(dim) % 2 == 0, jnp.sin(angle), jnp.cos(angle))
    return table[None]


def divisible_heads(num_heads: int, groups: int, what: str) -> None:
    """Raises a ValueError when ``num_heads`` cannot be split into ``groups`` equal groups."""
    if num_heads % groups:
        raise ValueError(
            f"{what} splits the heads into {groups} equal groups; num_heads={num_heads} is not "
            f"divisible by {groups}"
        )
