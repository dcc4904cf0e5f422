"""Recurrent video models: a recurrent head over per-time features, LRCN, ConvLSTM, and the
same head on top of any registered backbone's intermediate features.

* :class:`RecurrentHead`: stacked LSTM or GRU layers (optionally bidirectional) over
  ``(batch, time, features)``, summarised by the last state or the mean over time. Built on
  ``nn.RNN``, a ``scan``, so long clips do not unroll at compile time. Gate equations are
  PyTorch's (``nn.LSTM``/``nn.GRU``), so their weights map one to one.
* ``lrcn`` (Donahue et al. 2015): a 2D ResNet applied to every frame (convs of kernel
  ``(1, k, k)``, so frames never mix), spatial average, recurrent head, classifier.
* ``conv_lstm`` (Shi et al. 2015): a per-frame conv stem, then ConvLSTM layers that keep the
  spatial layout in their state; the last hidden state is pooled and classified.
* ``recurrent_over``: any registered model as backbone; the output of one of its sub-modules
  (``feature_module``, e.g. ``layer4`` of a 3D ResNet: ``(B, T', H', W', C)`` pooled over
  space, or a transformer stage's ``(B, T', D)``) feeds the recurrent head. The backbone stops
  at that sub-module, so its own head is never built.

>>> model = build_model({"name": "lrcn", "cell": "lstm", "hidden_size": 256}, num_classes=101)
>>> logits = model.apply(variables, video, train=False)   # video: (B, T, H, W, 3)
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vjax.models.clip_input import check_video_shape
from vjax.models.conv_blocks import (
    BasicBlock,
    ConvUnit,
    ResStage,
    classify,
    max_pool3d,
    start,
)
from vjax.models.layers import ClassifierHead, NumClasses, constrain
from vjax.models.registry import build_model, dtype_name, register
from vjax.models.widths import layer_width

_CELLS = ("lstm", "gru")
_POOLING = ("last", "mean")


def _named(init: Any, names: tuple[str | None, ...]) -> Any:
    return nn.with_logical_partitioning(init, names)


def _cell(kind: str, features: int, dtype: Any) -> nn.RNNCellBase:
    """An LSTM or GRU cell with logically named kernels (``rnn`` = the hidden units)."""
    cls = {"lstm": nn.LSTMCell, "gru": nn.GRUCell}[kind]
    return cls(
        features,
        kernel_init=_named(nn.initializers.lecun_normal(), ("embed", "rnn")),
        recurrent_kernel_init=_named(nn.initializers.orthogonal(), (None, "rnn")),
        bias_init=_named(nn.initializers.zeros, ("rnn",)),
        dtype=dtype,
        parent=None,  # owned by the nn.RNN it is given to (params under <rnn>/cell)
    )


def zero_carry(kind: str, batch: int, features: int) -> Any:
    """The zero initial state flax's cells start from (LSTM: ``(c, h)``, GRU: ``h``), built
    without the random key ``nn.RNN`` would otherwise split (an op exporters cannot express)."""
    h = jnp.zeros((batch, features), jnp.float32)
    return (h, h) if kind == "lstm" else h


def check_recurrent_fields(cell: str, pooling: str) -> None:
    if cell not in _CELLS:
        raise ValueError(f"cell must be one of {_CELLS}, got {cell!r}")
    if pooling not in _POOLING:
        raise ValueError(f"pooling must be one of {_POOLING}, got {pooling!r}")


class RecurrentHead(nn.Module):
    """``(batch, time, features) -> (batch, hidden_size * directions)``.

    ``pooling="last"`` is PyTorch's ``h_n`` of the top layer: the forward direction's state
    after the last frame and, when bidirectional, the backward direction's after the first.
    Children: ``layer0``... (``nn.RNN``s with a ``cell``); bidirectional: ``forward0``,
    ``backward0``, ... A pruned model (``model.widths``) may give each of them fewer units.
    """

    cell: str = "lstm"
    hidden_size: int = 512
    num_layers: int = 1
    bidirectional: bool = False
    pooling: str = "last"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        check_recurrent_fields(self.cell, self.pooling)
        x = constrain(x.astype(self.dtype), ("batch", "time", "embed"))
        batch = x.shape[0]

        def rnn(name: str) -> tuple[nn.RNN, Any]:
            """A fresh cell (directions never share weights) and its zero state."""
            units = layer_width(self, self.hidden_size, name)
            cell = nn.RNN(_cell(self.cell, units, self.dtype), name=name)
            return cell, zero_carry(self.cell, batch, units)

        for i in range(self.num_layers):
            if self.bidirectional:
                (forward, c_f), (backward, c_b) = rnn(f"forward{i}"), rnn(f"backward{i}")
                x = nn.Bidirectional(forward, backward)(x, initial_carry=(c_f, c_b))
                h = layer_width(self, self.hidden_size, f"forward{i}")
            else:
                layer, carry = rnn(f"layer{i}")
                x = layer(x, initial_carry=carry)
        x = constrain(x, ("batch", "time", "rnn"))
        if self.pooling == "mean":
            return x.mean(axis=1)
        if not self.bidirectional:
            return x[:, -1]
        return jnp.concatenate([x[:, -1, :h], x[:, 0, h:]], axis=-1)


def head_from_fields(model: nn.Module, name: str | None = None) -> RecurrentHead:
    """The :class:`RecurrentHead` a model's own ``cell``/``hidden_size``/... fields describe."""
    return RecurrentHead(
        model.cell,
        model.hidden_size,
        model.num_layers,
        model.bidirectional,
        model.pooling,
        model.dtype,
        name=name,
    )


class ConvLSTMCell(nn.RNNCellBase):
    """A convolutional LSTM cell (Shi et al. 2015) over ``(batch, H, W, C)`` frames, with
    logically named kernels. The same equations as ``flax.linen.ConvLSTMCell`` (gates i, g, f,
    o; forget-gate bias +1), which the tests compare it with."""

    features: int
    kernel_size: tuple[int, int] = (3, 3)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, carry: tuple[jax.Array, jax.Array], x: jax.Array):
        c, h = carry

        def conv(name: str) -> nn.Conv:
            return nn.Conv(
                4 * self.features,
                self.kernel_size,
                padding="SAME",
                dtype=self.dtype,
                kernel_init=_named(nn.initializers.lecun_normal(), (None, None, None, "rnn")),
                bias_init=_named(nn.initializers.zeros, ("rnn",)),
                name=name,
            )

        gates = conv("ih")(x) + conv("hh")(h)
        i, g, f, o = jnp.split(gates, 4, axis=-1)
        new_c = nn.sigmoid(f + 1) * c + nn.sigmoid(i) * jnp.tanh(g)
        new_h = nn.sigmoid(o) * jnp.tanh(new_c)
        return (new_c, new_h), new_h

    @nn.nowrap
    def initialize_carry(self, rng: jax.Array, input_shape: tuple[int, ...]):
        shape = (*input_shape[:-1], self.features)
        return jnp.zeros(shape, self.dtype), jnp.zeros(shape, self.dtype)

    @property
    def num_feature_axes(self) -> int:
        return 3


@register("lrcn")
class LRCN(nn.Module):
    """A 2D ResNet on every frame (ResNet-18 by default: ``frame_layers=(2, 2, 2, 2)``,
    ``frame_width=64``), spatial average, a :class:`RecurrentHead`, a linear classifier.

    BatchNorm statistics are shared over batch and time, as a 2D CNN on ``B * T`` frames
    would compute them. Children: ``stem``, ``layer1``..``layer4``, ``head``, ``classifier``.
    """

    num_classes: NumClasses
    frame_layers: Sequence[int] = (2, 2, 2, 2)
    frame_width: int = 64
    cell: str = "lstm"
    hidden_size: int = 512
    num_layers: int = 1
    bidirectional: bool = False
    pooling: str = "last"
    dropout_rate: float = 0.0
    frozen_bn: bool = False
    # Per-layer widths of a pruned model (vjax.models.widths): conv and recurrent units.
    widths: Any = None
    dtype: Any = jnp.float32

    def check_input(self, input_shape: Sequence[int]) -> None:
        check_video_shape(input_shape, (1, 1, 1))
        check_recurrent_fields(self.cell, self.pooling)

    @nn.compact
    def __call__(self, video: jax.Array, *, train: bool) -> jax.Array:
        x, bn_train = start(self, video, train)
        x = ConvUnit(self.frame_width, (1, 7, 7), (1, 2, 2), dtype=self.dtype, name="stem")(
            x, train=bn_train
        )
        x = max_pool3d(x, (1, 3, 3), (1, 2, 2))
        for i, depth in enumerate(self.frame_layers):
            s = 1 if i == 0 else 2
            block = functools.partial(
                BasicBlock, self.frame_width * 2**i, kernel=(1, 3, 3), dtype=self.dtype
            )
            x = ResStage(block, depth, (1, s, s), name=f"layer{i + 1}")(x, train=bn_train)
        x = x.mean(axis=(2, 3))  # (batch, time, channels): one feature vector per frame
        x = head_from_fields(self, name="head")(x)
        return classify(x, self.num_classes, self.dropout_rate, train)


@register("conv_lstm")
class ConvLSTMNet(nn.Module):
    """Per-frame conv stem (``stem_features`` channels, stride 2), ConvLSTM layers of
    ``hidden_features`` channels each, the last hidden state averaged over space, classifier.
    Children: ``stem``, ``conv_lstm0``..., ``classifier``."""

    num_classes: NumClasses
    stem_features: int = 32
    hidden_features: Sequence[int] = (64,)
    kernel_size: int = 3
    dropout_rate: float = 0.0
    frozen_bn: bool = False
    dtype: Any = jnp.float32

    def check_input(self, input_shape: Sequence[int]) -> None:
        check_video_shape(input_shape, (1, 2, 2))

    @nn.compact
    def __call__(self, video: jax.Array, *, train: bool) -> jax.Array:
        x, bn_train = start(self, video, train)
        k = self.kernel_size
        x = ConvUnit(self.stem_features, (1, k, k), (1, 2, 2), dtype=self.dtype, name="stem")(
            x, train=bn_train
        )
        for i, features in enumerate(self.hidden_features):
            cell = ConvLSTMCell(features, (k, k), dtype=self.dtype, parent=None)
            x = nn.RNN(cell, name=f"conv_lstm{i}")(x)  # scans over time (axis 1)
        return classify(x[:, -1].mean(axis=(1, 2)), self.num_classes, self.dropout_rate, train)


class _Captured(Exception):  # noqa: N818  (control flow, not an error)
    def __init__(self, value: jax.Array):
        self.value = value


@register("recurrent_over")
class RecurrentOver(nn.Module):
    """A :class:`RecurrentHead` over per-time features of any registered ``backbone``.

    ``backbone`` is a model config section (``{"name": "r2plus1d_18", ...}``); the output of
    its sub-module named ``feature_module`` is taken: ``(B, T', H', W', C)`` maps are averaged
    over space, ``(B, T', D)`` sequences are used as they are. Parameters: ``backbone_model``
    (the backbone's own tree, so its pretrained weights load), ``head``, ``classifier``.
    """

    num_classes: NumClasses
    backbone: Any = None
    feature_module: str = "layer4"
    cell: str = "lstm"
    hidden_size: int = 512
    num_layers: int = 1
    bidirectional: bool = False
    pooling: str = "last"
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.nowrap  # callable on the unbound model (check_input): no parent, no scope
    def _backbone(self) -> nn.Module:
        """The backbone module; any class count will do, it stops before its classifier."""
        if not self.backbone or "name" not in self.backbone:
            raise ValueError("recurrent_over needs model.backbone = {'name': ..., ...}")
        if self.backbone.get("remat", "none") != "none":  # the capture cannot leave its trace
            raise ValueError(
                "recurrent_over takes its features from inside the backbone, which "
                "model.backbone.remat rematerialises out of reach: set it to 'none'"
            )
        return build_model(dict(self.backbone), 1, dtype_name(self.dtype))

    @nn.nowrap
    def check_input(self, input_shape: Sequence[int]) -> None:
        """Called by the trainer on the unbound model, before any compilation."""
        check_recurrent_fields(self.cell, self.pooling)
        self._backbone().check_input(input_shape)

    def setup(self) -> None:
        check_recurrent_fields(self.cell, self.pooling)
        self.backbone_model = self._backbone()
        self.head = head_from_fields(self)
        self.dropout = nn.Dropout(self.dropout_rate)
        self.classifier = ClassifierHead(self.num_classes)

    def __call__(self, video: jax.Array, *, train: bool) -> jax.Array:
        self.backbone_model.check_input(video.shape)
        target = self.feature_module

        def stop_at_feature_module(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            if context.method_name == "__call__" and context.module.name == target:
                raise _Captured(out)
            return out

        try:
            with nn.intercept_methods(stop_at_feature_module):
                self.backbone_model(video, train=train)
        except _Captured as captured:
            features = captured.value
        else:
            raise ValueError(
                f"backbone {self.backbone['name']!r} has no sub-module named {target!r} "
                f"(model.feature_module)"
            )
        if features.shape[0] != video.shape[0]:
            raise ValueError(
                f"the output of {target!r} has {features.shape[0]} rows for {video.shape[0]} "
                f"clips (a per-frame stage?): set model.feature_module to a module whose output "
                f"keeps the batch, (batch, time, ...)"
            )
        if features.ndim == 5:
            features = features.mean(axis=(2, 3))
        if features.ndim != 3:
            raise ValueError(
                f"features of {target!r} have shape {features.shape}; expected "
                f"(batch, time, height, width, channels) or (batch, time, features)"
            )
        x = self.dropout(self.head(features), deterministic=not train)
        return self.classifier(x)
