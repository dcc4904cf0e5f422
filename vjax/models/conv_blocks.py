"""The one stem/block/stage vocabulary every 3D-conv net in vjax is built from.

Units: :class:`ConvUnit` (a full, (2+1)D-factorised or grouped 3D conv, then BatchNorm and an
activation), :class:`SqueezeExcite`. Blocks: :class:`BasicBlock` (two 3x3x3-style units, as in
ResNet-18/34) and :class:`BottleneckBlock` (1x1x1 -> k_t x k x k -> 1x1x1, optionally grouped
or depthwise with squeeze-excitation, as in ResNet-50, R(2+1)D-50 and X3D), each with the
projection shortcut the sources use. :class:`ResStage` stacks blocks, striding the first.

Conventions shared with torchvision and pytorchvideo, so their weights load unchanged:
padding ``k // 2`` on every axis, convs without bias before a BatchNorm, BatchNorm momentum 0.1
in torch terms (flax ``momentum=0.9``) and epsilon 1e-5, max-pool padding with ``-inf``.

Logical axis names: conv kernels ``(None, None, None, "conv_in", "conv_out")`` (``conv_in``
is None for grouped convs, whose input dim is channels / groups), BatchNorm scale/bias and
conv biases ``("conv_out",)``, activations ``("batch", "time", None, None, "conv_out")``.

The ``train`` argument of every module here means "BatchNorm uses batch statistics and
updates ``batch_stats``"; models pass ``train and not frozen_bn`` so fine-tuning can keep the
pretrained statistics while dropout still follows ``train``.

>>> unit = ConvUnit(64, (3, 7, 7), strides=(1, 2, 2))
>>> y, state = unit.init_with_output(key, video, train=False)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vjax.models.batch_norm import BatchNorm
from vjax.models.clip_input import check_video_dtype
from vjax.models.conv import Conv
from vjax.models.layers import ClassifierHead, NumClasses, constrain
from vjax.models.widths import layer_width

Dtype = Any
Triple = tuple[int, int, int]

BN_MOMENTUM = 0.9  # torch's momentum=0.1: running = 0.9 * running + 0.1 * batch
BN_EPSILON = 1e-5
ACTIVATION_AXES = ("batch", "time", None, None, "conv_out")
# He (fan-out) initialisation as torchvision and pytorchvideo use, from a uniform rather than a
# normal distribution: the same variance, and XLA:CPU compiles it in a fraction of the time
# (no erf_inv per kernel), which dominates compiling init for small nets.
_he_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "uniform")


def activation(name: str | None) -> Callable[[jax.Array], jax.Array]:
    """``"relu"``, ``"swish"`` (x * sigmoid(x)) or None (identity) by name."""
    table = {"relu": nn.relu, "swish": nn.swish, None: lambda x: x}
    if name not in table:
        raise ValueError(f"unknown activation {name!r}; valid: relu, swish, None")
    return table[name]


def conv3d(
    features: int,
    kernel: Sequence[int],
    strides: Sequence[int] = (1, 1, 1),
    *,
    groups: int = 1,
    use_bias: bool = False,
    dtype: Dtype = jnp.float32,
    name: str | None = None,
) -> Conv:
    """A 3D conv with torch's symmetric ``k // 2`` padding and logically named parameters
    (computed as 2D convs where its kernel allows, :mod:`vjax.models.conv`)."""
    in_axis = "conv_in" if groups == 1 else None
    return Conv(
        features,
        kernel_size=tuple(kernel),
        strides=tuple(strides),
        padding=tuple((k // 2, k // 2) for k in kernel),
        feature_group_count=groups,
        use_bias=use_bias,
        dtype=dtype,
        kernel_init=nn.with_logical_partitioning(
            _he_fan_out, (None, None, None, in_axis, "conv_out")
        ),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("conv_out",)),
        name=name,
    )


def batch_norm(train: bool, dtype: Dtype, name: str | None = None) -> BatchNorm:
    """BatchNorm over all but the channel axis; batch statistics (and updates) when ``train``
    (:mod:`vjax.models.batch_norm`: flax's variables and numbers, faster on CPU).

    Under ``jit`` with the batch sharded over devices the mean is a global reduction, so the
    statistics are reduced across the data axis without any ``axis_name``.
    """
    return BatchNorm(
        use_running_average=not train,
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        dtype=dtype,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("conv_out",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("conv_out",)),
        name=name,
    )


def max_pool3d(
    x: jax.Array,
    kernel: Sequence[int],
    strides: Sequence[int],
    padding: Sequence[tuple[int, int]] | None = None,
) -> jax.Array:
    """Max pooling over (time, height, width), padded with ``-inf`` (padded positions never
    win) by ``padding`` per axis, torch's ``k // 2`` by default.

    The padding is an explicit ``jnp.pad`` before a ``VALID`` pool: the ONNX exporter
    (jax2onnx 0.17) reads only "SAME"/"VALID" pool padding and silently drops a list of
    pairs, which shifted every window of LRCN's and the 3D ResNets' stems. ``window_shape``
    goes by keyword, the only way its replacement ``nn.max_pool`` takes it."""
    padding = [(k // 2, k // 2) for k in kernel] if padding is None else padding
    if any(p for pair in padding for p in pair):
        x = jnp.pad(x, ((0, 0), *padding, (0, 0)), constant_values=-jnp.inf)
    return nn.max_pool(x, window_shape=tuple(kernel), strides=tuple(strides), padding="VALID")


def global_average(x: jax.Array) -> jax.Array:
    """``(batch, time, height, width, channels)`` -> ``(batch, channels)``."""
    return x.mean(axis=(1, 2, 3))


class Conv2Plus1D(nn.Module):
    """A ``(k_t, k, k)`` conv factorised into a spatial ``(1, k, k)`` and a temporal
    ``(k_t, 1, 1)`` conv through ``mid_features`` channels (Tran et al. 2018).

    ``spatial_first`` picks the order (torchvision: spatial first; pytorchvideo's R(2+1)D:
    temporal first). ``mid_norm`` puts BatchNorm + ReLU between the two (X3D's stem has
    none); ``second_groups`` groups the second conv (X3D's stem: depthwise temporal).
    Children: ``conv_1``, ``norm_1`` (if ``mid_norm``), ``conv_2``.
    """

    features: int
    mid_features: int
    kernel: Triple
    strides: Triple = (1, 1, 1)
    spatial_first: bool = True
    mid_norm: bool = True
    second_groups: int = 1
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        (kt, kh, kw), (st, sh, sw) = self.kernel, self.strides
        spatial = ((1, kh, kw), (1, sh, sw))
        temporal = ((kt, 1, 1), (st, 1, 1))
        first, second = (spatial, temporal) if self.spatial_first else (temporal, spatial)
        mid = layer_width(self, self.mid_features)  # a pruned model's may be narrower
        x = conv3d(mid, *first, dtype=self.dtype, name="conv_1")(x)
        if self.mid_norm:
            x = nn.relu(batch_norm(train, self.dtype, "norm_1")(x))
        return conv3d(
            self.features, *second, groups=self.second_groups, dtype=self.dtype, name="conv_2"
        )(x)


class ConvUnit(nn.Module):
    """conv -> BatchNorm -> activation; the conv is full, grouped or (2+1)D-factorised.

    ``factorise``: None (one ``kernel`` conv), ``"spatial_first"`` or ``"temporal_first"``
    (a :class:`Conv2Plus1D` through ``mid_features`` channels). Children: ``conv``, ``norm``.
    A pruned model (``model.widths``) may give the unit, or its middle width, fewer channels.
    """

    features: int
    kernel: Triple
    strides: Triple = (1, 1, 1)
    groups: int = 1
    act: str | None = "relu"
    norm: bool = True
    use_bias: bool = False
    factorise: str | None = None
    mid_features: int | None = None
    mid_norm: bool = True
    second_groups: int = 1
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        features = layer_width(self, self.features)  # a pruned model's may be narrower
        if self.factorise is None:
            x = conv3d(
                features,
                self.kernel,
                self.strides,
                groups=self.groups,
                use_bias=self.use_bias,
                dtype=self.dtype,
                name="conv",
            )(x)
        elif self.factorise in ("spatial_first", "temporal_first"):
            x = Conv2Plus1D(
                features,
                self.mid_features or self.features,
                tuple(self.kernel),
                tuple(self.strides),
                spatial_first=self.factorise == "spatial_first",
                mid_norm=self.mid_norm,
                second_groups=self.second_groups,
                dtype=self.dtype,
                name="conv",
            )(x, train=train)
        else:
            raise ValueError(
                f"factorise must be None, 'spatial_first' or 'temporal_first', "
                f"got {self.factorise!r}"
            )
        if self.norm:
            x = batch_norm(train, self.dtype, "norm")(x)
        return constrain(activation(self.act)(x), ACTIVATION_AXES)


class SqueezeExcite(nn.Module):
    """Channel gating by a global-average bottleneck MLP (Hu et al. 2018), as fvcore's
    ``SqueezeExcitation``: mean over (T, H, W) -> ``reduce`` + ReLU -> ``expand`` + sigmoid."""

    reduced: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        s = x.mean(axis=(1, 2, 3), keepdims=True)
        for name, width, act in (("reduce", self.reduced, nn.relu), ("expand", channels, None)):
            s = nn.Dense(
                width,
                dtype=self.dtype,
                kernel_init=nn.with_logical_partitioning(
                    nn.initializers.lecun_uniform(), ("conv_in", "conv_out")
                ),
                bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("conv_out",)),
                name=name,
            )(s)
            s = act(s) if act else s
        return x * nn.sigmoid(s)


class Shortcut(nn.Module):
    """The residual path: identity, or a strided 1x1x1 projection (+ BatchNorm) where the
    width or the resolution changes. ``norm_on_stride=False`` (X3D) adds BatchNorm only where
    the width changes. Children: ``conv``, ``norm``."""

    features: int
    strides: Triple
    norm_on_stride: bool = True
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        widens = x.shape[-1] != self.features
        if not widens and math.prod(self.strides) == 1:
            return x
        x = conv3d(self.features, (1, 1, 1), self.strides, dtype=self.dtype, name="conv")(x)
        if widens or self.norm_on_stride:
            x = batch_norm(train, self.dtype, "norm")(x)
        return x


class BasicBlock(nn.Module):
    """Two units (``conv_1`` with the stride, ``conv_2`` without activation), the shortcut
    added, then ReLU: ResNet-18/34 (R3D, MC3 with ``kernel=(1, 3, 3)``, R(2+1)D with
    ``factorise="spatial_first"`` through ``mid_features``)."""

    features: int
    strides: Triple = (1, 1, 1)
    kernel: Triple = (3, 3, 3)
    factorise: str | None = None
    mid_features: int | None = None
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        unit = dict(
            kernel=self.kernel,
            factorise=self.factorise,
            mid_features=self.mid_features,
            dtype=self.dtype,
        )
        y = ConvUnit(self.features, strides=self.strides, name="conv_1", **unit)(x, train=train)
        y = ConvUnit(self.features, act=None, name="conv_2", **unit)(y, train=train)
        short = Shortcut(self.features, self.strides, dtype=self.dtype, name="shortcut")
        return constrain(nn.relu(y + short(x, train=train)), ACTIVATION_AXES)


class BottleneckBlock(nn.Module):
    """``conv_a`` (``kernel_a`` x 1 x 1) -> ``conv_b`` (``kernel_b``, strided, grouped or
    (2+1)D) [-> squeeze-excite] -> ``inner_act`` -> ``conv_c`` (1x1x1, no activation), plus
    the shortcut, then ``act``.

    The stride sits on ``conv_b`` (as in torchvision and every pytorchvideo zoo net; none of
    them strides ``conv_a`` in time). ``depthwise`` sets ``conv_b``'s groups to its width
    (X3D); ``se_reduced > 0`` adds a :class:`SqueezeExcite` after ``conv_b``'s BatchNorm.
    """

    inner: int
    features: int
    strides: Triple = (1, 1, 1)
    kernel_a: Triple = (1, 1, 1)
    kernel_b: Triple = (1, 3, 3)
    depthwise: bool = False
    factorise_b: str | None = None
    mid_b: int | None = None
    se_reduced: int = 0
    act: str = "relu"
    inner_act: str = "relu"
    shortcut_norm_on_stride: bool = True
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        conv_a = ConvUnit(
            self.inner, tuple(self.kernel_a), act=self.act, dtype=self.dtype, name="conv_a"
        )
        y = conv_a(x, train=train)
        y = ConvUnit(
            self.inner,
            tuple(self.kernel_b),
            tuple(self.strides),
            groups=self.inner if self.depthwise else 1,
            act=None,
            factorise=self.factorise_b,
            mid_features=self.mid_b,
            dtype=self.dtype,
            name="conv_b",
        )(y, train=train)
        if self.se_reduced:
            y = SqueezeExcite(self.se_reduced, dtype=self.dtype, name="se")(y)
        y = activation(self.inner_act)(y)
        y = ConvUnit(self.features, (1, 1, 1), act=None, dtype=self.dtype, name="conv_c")(
            y, train=train
        )
        short = Shortcut(
            self.features,
            tuple(self.strides),
            norm_on_stride=self.shortcut_norm_on_stride,
            dtype=self.dtype,
            name="shortcut",
        )
        return constrain(activation(self.act)(y + short(x, train=train)), ACTIVATION_AXES)


class ResStage(nn.Module):
    """``depth`` blocks named ``block0``...; the first gets ``strides``, all share ``block``'s
    arguments, and ``per_block[i]`` adds block ``i``'s own (e.g. I3D's alternating temporal
    kernels, X3D's squeeze-excite on every other block).

    >>> stage = ResStage(functools.partial(BasicBlock, 128), depth=2, strides=(2, 2, 2))
    """

    block: Callable[..., nn.Module]
    depth: int
    strides: Triple = (1, 1, 1)
    per_block: Sequence[dict[str, Any]] = ()

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        if self.per_block and len(self.per_block) != self.depth:
            raise ValueError(f"per_block has {len(self.per_block)} entries for {self.depth} blocks")
        for i in range(self.depth):
            extra = dict(self.per_block[i]) if self.per_block else {}
            strides = tuple(self.strides) if i == 0 else (1, 1, 1)
            x = self.block(strides=strides, name=f"block{i}", **extra)(x, train=train)
        return x


def classify(
    x: jax.Array,
    num_classes: NumClasses,
    dropout_rate: float,
    train: bool,
    name: str = "classifier",
) -> jax.Array | dict[str, jax.Array]:
    """Global average over (T, H, W) (``x`` may already be pooled), dropout, linear head(s)
    (:class:`~vjax.models.layers.ClassifierHead`). Call inside a compact module."""
    if x.ndim == 5:
        x = global_average(x)
    x = nn.Dropout(dropout_rate)(x, deterministic=not train)
    return ClassifierHead(num_classes, name=name)(x)


def prepare(video: jax.Array, dtype: Any) -> jax.Array:
    """The input clip in the compute dtype, with its batch and time axes named."""
    return constrain(video.astype(dtype), ("batch", "time", None, None, None))


def start(model: nn.Module, video: jax.Array, train: bool) -> tuple[jax.Array, bool]:
    """What every conv net does first: validate the clip (``model.check_input``, a float
    dtype), cast it to the model's dtype with logical names, and pick the BatchNorm mode: batch
    statistics only when training and not ``frozen_bn``. Call inside a compact ``__call__``."""
    model.check_input(video.shape)
    check_video_dtype(video)
    return prepare(video, model.dtype), train and not getattr(model, "frozen_bn", False)


def register_preset(name: str, base: type[nn.Module], doc: str, **defaults: Any) -> type:
    """Registers ``name`` as a subclass of ``base`` whose fields default to ``defaults``, so
    ``config.model.name = name`` builds that architecture and a config may still override any
    field (e.g. ``layers``, ``dropout_rate``).

    >>> register_preset("r3d_18", VideoResNet, "R3D-18", layers=(2, 2, 2, 2))
    """
    from vjax.models.registry import register

    fields = base.__dataclass_fields__
    unknown = [k for k in defaults if k not in fields]
    if unknown:
        raise ValueError(f"preset {name!r}: {base.__name__} has no field(s) {unknown}")
    namespace = {"__annotations__": {k: fields[k].type for k in defaults}, "__doc__": doc}
    namespace.update(defaults)
    namespace["__module__"] = base.__module__
    cls = type(f"{base.__name__}_{name}", (base,), namespace)
    return register(name)(cls)
