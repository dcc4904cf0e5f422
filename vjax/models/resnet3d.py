"""3D ResNets: torchvision's VideoResNet family and pytorchvideo's Slow / C2D / I3D /
R(2+1)D ResNet-50s, all from the blocks in :mod:`vjax.models.conv_blocks`.

* :class:`VideoResNet` (Tran et al. 2018, as torchvision builds it): ``r3d_18/34/50``
  (3x3x3 convs), ``mc3_18`` (3D convs in stage 1, 2D convs after), ``r2plus1d_18/34``
  ((2+1)D convs whose middle width keeps the 3D conv's parameter count:
  ``mid = in * out * 27 // (in * 9 + 3 * out)``; stem 1x7x7 -> 45 channels -> 3x1x1).
* :class:`ResNet3D` (pytorchvideo's ``create_resnet`` / ``create_r2plus1d``): bottleneck
  ResNet-50s whose first 1x1x1 conv of a block may look ``k_t`` frames in time. ``slow_r50``
  (Feichtenhofer et al. 2019), ``c2d_r50``, ``i3d_r50`` (Carreira & Zisserman 2017, as
  pytorchvideo inflates it: stem 5x7x7, temporal max-pool after stage 1, 3x1x1 kernels
  alternating with 1x1x1), ``r2plus1d_r50`` and ``csn_r101`` (ir-CSN, Tran et al. 2019:
  the bottleneck's 3x3x3 conv depthwise, as pytorchvideo's ``create_csn`` builds it).
  :func:`inflate_resnet50` turns a 2D ResNet-50 into I3D/Slow parameters.

Heads average over time and space globally (pytorchvideo's fixed-size average pool equals
this at the zoo's input sizes), apply dropout and a linear classifier (``classes``).

>>> model = build_model({"name": "r2plus1d_18"}, num_classes=400)
>>> logits = model.apply(variables, video, train=False)   # video: (B, 16, 112, 112, 3)
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vjax.models.clip_input import check_video_shape
from vjax.models.conv_blocks import (
    ACTIVATION_AXES,
    BasicBlock,
    BottleneckBlock,
    ConvUnit,
    ResStage,
    classify,
    max_pool3d,
    register_preset,
    start,
)
from vjax.models.layers import NumClasses, constrain
from vjax.models.registry import register

_CONV_MAKERS = ("3d", "2d", "2plus1d")


def r2plus1d_midplanes(in_planes: int, planes: int) -> int:
    """Width between the spatial and temporal convs of torchvision's (2+1)D conv: the one
    that gives as many parameters as the 3x3x3 conv it replaces (Tran et al. 2018, eq. 1)."""
    return (in_planes * planes * 3 * 3 * 3) // (in_planes * 3 * 3 + 3 * planes)


@register("video_resnet")
class VideoResNet(nn.Module):
    """torchvision's ``VideoResNet``: a stem, four stages of 64/128/256/512 (x4 for
    bottlenecks) channels striding 2 from stage 2 on, global average pool, linear head.

    ``conv_makers[i]`` is stage i's conv: ``"3d"`` (3x3x3, strided in time and space),
    ``"2d"`` (1x3x3, strided in space only) or ``"2plus1d"``. ``stem`` is ``"basic"``
    (3x7x7 conv) or ``"2plus1d"``. ``width`` scales every stage (64 in torchvision; the
    (2+1)D stem's middle width is ``45 * width // 64``, torchvision's 45). Children: ``stem``,
    ``layer1``..``layer4``, ``classifier``. ``frozen_bn`` keeps BatchNorm on its running
    statistics even in training.
    """

    num_classes: NumClasses
    block: str = "basic"  # "basic" (ResNet-18/34) or "bottleneck" (ResNet-50)
    layers: Sequence[int] = (2, 2, 2, 2)
    conv_makers: Sequence[str] = ("3d", "3d", "3d", "3d")
    stem: str = "basic"
    width: int = 64
    dropout_rate: float = 0.0
    frozen_bn: bool = False
    # Per-layer widths of a pruned model (vjax.models.widths): conv units by layer path.
    widths: Any = None
    dtype: Any = jnp.float32

    def check_input(self, input_shape: Sequence[int]) -> None:
        """Validates a clip shape and the architecture fields before any compilation."""
        check_video_shape(input_shape, (1, 1, 1))
        if self.block not in ("basic", "bottleneck"):
            raise ValueError(f"block must be 'basic' or 'bottleneck', got {self.block!r}")
        if self.stem not in ("basic", "2plus1d"):
            raise ValueError(f"stem must be 'basic' or '2plus1d', got {self.stem!r}")
        if len(self.layers) != 4 or len(self.conv_makers) != 4:
            raise ValueError(
                f"layers and conv_makers need 4 entries (one per stage), got "
                f"{list(self.layers)} and {list(self.conv_makers)}"
            )
        bad = [m for m in self.conv_makers if m not in _CONV_MAKERS]
        if bad:
            raise ValueError(f"unknown conv_makers {bad}; valid: {', '.join(_CONV_MAKERS)}")

    @nn.compact
    def __call__(self, video: jax.Array, *, train: bool) -> jax.Array:
        x, bn_train = start(self, video, train)
        stem_2plus1d = self.stem == "2plus1d"
        x = ConvUnit(
            self.width,
            (3, 7, 7),
            (1, 2, 2),
            factorise="spatial_first" if stem_2plus1d else None,
            mid_features=45 * self.width // 64 if stem_2plus1d else None,
            dtype=self.dtype,
            name="stem",
        )(x, train=bn_train)
        expansion = 1 if self.block == "basic" else 4
        in_planes = self.width
        stage_widths = [self.width * 2**i for i in range(4)]
        for i, (planes, depth, maker) in enumerate(
            zip(stage_widths, self.layers, self.conv_makers, strict=True)
        ):
            s = 1 if i == 0 else 2
            strides = (1, s, s) if maker == "2d" else (s, s, s)
            kernel = (1, 3, 3) if maker == "2d" else (3, 3, 3)
            factorise = "spatial_first" if maker == "2plus1d" else None
            per_block: list[dict[str, Any]] = []
            if maker == "2plus1d":
                ins = [in_planes] + [planes * expansion] * (depth - 1)
                mid_key = "mid_features" if self.block == "basic" else "mid_b"
                per_block = [{mid_key: r2plus1d_midplanes(n, planes)} for n in ins]
            if self.block == "basic":
                block = functools.partial(
                    BasicBlock, planes, kernel=kernel, factorise=factorise, dtype=self.dtype
                )
            else:
                block = functools.partial(
                    BottleneckBlock,
                    planes,
                    planes * expansion,
                    kernel_b=kernel,
                    factorise_b=factorise,
                    dtype=self.dtype,
                )
            x = ResStage(block, depth, strides, per_block, name=f"layer{i + 1}")(x, train=bn_train)
            in_planes = planes * expansion
        return classify(x, self.num_classes, self.dropout_rate, train)


def conv_a_kernels_per_block(kernels: Any, depth: int) -> list[tuple[int, int, int]]:
    """A stage's ``conv_a`` kernel, or a list of them cycled over its blocks (pytorchvideo)."""
    if isinstance(kernels[0], int):
        kernels = [kernels]
    return [tuple(k) for k in (list(kernels) * depth)[:depth]]


def bottleneck_stage(
    depth: int,
    inner: int,
    features: int,
    strides: tuple[int, int, int],
    conv_a_kernels: Any,
    dtype: Any,
    name: str,
    **block_fields: Any,
) -> ResStage:
    """One pytorchvideo ResNet stage of ``depth`` bottleneck blocks (shared by
    :class:`ResNet3D` and both SlowFast pathways)."""
    block = functools.partial(BottleneckBlock, inner, features, dtype=dtype, **block_fields)
    per_block = [{"kernel_a": k} for k in conv_a_kernels_per_block(conv_a_kernels, depth)]
    return ResStage(block, depth, strides, per_block, name=name)


# Blocks per stage; 14 (one bottleneck per stage) is for quick CPU runs of a recipe's family.
RESNET_DEPTHS = {14: (1, 1, 1, 1), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


def resnet_stem(
    x: jax.Array, width: int, kernel: Any, pool: bool, train: bool, dtype: Any, name: str
) -> jax.Array:
    """pytorchvideo's basic stem: ``kernel`` conv (stride 1x2x2) -> BN -> ReLU
    [-> 1x3x3 max-pool, stride 1x2x2]. Call inside a compact module."""
    x = ConvUnit(width, tuple(kernel), (1, 2, 2), dtype=dtype, name=name)(x, train=train)
    return max_pool3d(x, (1, 3, 3), (1, 2, 2)) if pool else x


@register("resnet3d")
class ResNet3D(nn.Module):
    """pytorchvideo's bottleneck ResNet (``create_resnet`` / ``create_r2plus1d`` /
    ``create_csn``).

    Stage ``i`` has ``RESNET_DEPTHS[depth][i]`` blocks of width ``width * 2**i`` inside and
    4x that outside; ``conv_a_kernels[i]`` is its first conv's kernel (or a list cycled over
    its blocks), ``conv_b_kernel``/``factorise_b`` its middle conv, strided
    ``(temporal_strides[i], spatial_strides[i], spatial_strides[i])`` and depthwise (one
    group per channel) when ``depthwise_b`` (ir-CSN's channel separation). ``stage1_pool`` adds
    I3D/C2D's 2x1x1 temporal max-pool after stage 1. Children: ``stem``, ``stage1``..
    ``stage4``, ``classifier``.
    """

    num_classes: NumClasses
    depth: int = 50
    width: int = 64  # stem channels; stage i is width * 2**i inside, 4x that outside
    stem_kernel: Sequence[int] = (1, 7, 7)
    stem_pool: bool = True
    conv_a_kernels: Sequence[Any] = ((1, 1, 1), (1, 1, 1), (3, 1, 1), (3, 1, 1))
    conv_b_kernel: Sequence[int] = (1, 3, 3)
    factorise_b: str | None = None
    depthwise_b: bool = False
    spatial_strides: Sequence[int] = (1, 2, 2, 2)
    temporal_strides: Sequence[int] = (1, 1, 1, 1)
    stage1_pool: bool = False
    dropout_rate: float = 0.5
    frozen_bn: bool = False
    # Per-layer widths of a pruned model (vjax.models.widths): conv units by layer path.
    widths: Any = None
    dtype: Any = jnp.float32

    def check_input(self, input_shape: Sequence[int]) -> None:
        """Validates a clip shape and the depth before any compilation."""
        check_video_shape(input_shape, (2 if self.stage1_pool else 1, 1, 1))
        if self.depth not in RESNET_DEPTHS:
            raise ValueError(f"depth must be one of {sorted(RESNET_DEPTHS)}, got {self.depth}")

    @nn.compact
    def __call__(self, video: jax.Array, *, train: bool) -> jax.Array:
        x, bn_train = start(self, video, train)
        x = resnet_stem(
            x, self.width, self.stem_kernel, self.stem_pool, bn_train, self.dtype, "stem"
        )
        for i, depth in enumerate(RESNET_DEPTHS[self.depth]):
            inner = self.width * 2**i
            s, t = self.spatial_strides[i], self.temporal_strides[i]
            x = bottleneck_stage(
                depth,
                inner,
                4 * inner,
                (t, s, s),
                self.conv_a_kernels[i],
                self.dtype,
                f"stage{i + 1}",
                kernel_b=tuple(self.conv_b_kernel),
                factorise_b=self.factorise_b,
                depthwise=self.depthwise_b,
            )(x, train=bn_train)
            if i == 0 and self.stage1_pool:
                x = nn.max_pool(x, window_shape=(2, 1, 1), strides=(2, 1, 1))
        x = constrain(x, ACTIVATION_AXES)
        return classify(x, self.num_classes, self.dropout_rate, train)


def inflate_resnet50(params_2d: dict, params_3d: Any) -> dict:
    """I3D inflation: a 2D ResNet-50's parameters into a :class:`ResNet3D` (I3D / Slow).

    ``params_2d`` has the 3D model's tree with 2D kernels ``(kh, kw, in, out)``; each is
    repeated over the 3D kernel's ``k_t`` frames and divided by ``k_t`` (Carreira & Zisserman
    2017), so a video of identical frames gives the 2D net's features at every time step.
    Everything else (BatchNorm, the classifier) is copied. ``params_3d`` gives the target
    shapes (e.g. ``jax.eval_shape`` of ``model.init``).

    >>> params = inflate_resnet50(params_2d, jax.eval_shape(model.init, key, video)["params"])
    """

    def inflate(path, target, source):
        source = np.asarray(source)
        where = "/".join(str(getattr(k, "key", k)) for k in path)
        if source.shape == tuple(target.shape):
            return source
        if source.ndim == 4 and len(target.shape) == 5 and source.shape == target.shape[1:]:
            kt = target.shape[0]
            return np.repeat(source[None], kt, axis=0) / kt
        raise ValueError(
            f"{where}: 2D parameter of shape {source.shape} does not inflate to {target.shape}"
        )

    params_3d = nn.meta.unbox(params_3d)
    return jax.tree_util.tree_map_with_path(inflate, params_3d, params_2d)


def _register_presets() -> None:
    four = (2, 2, 2, 2)
    r34 = (3, 4, 6, 3)
    for name, doc, fields in (
        ("r3d_18", "R3D-18 (torchvision r3d_18)", {"layers": four}),
        ("r3d_34", "R3D-34", {"layers": r34}),
        ("r3d_50", "R3D-50 (bottleneck blocks)", {"layers": r34, "block": "bottleneck"}),
        ("mc3_18", "MC3-18 (torchvision mc3_18)", {"conv_makers": ("3d", "2d", "2d", "2d")}),
        (
            "r2plus1d_18",
            "R(2+1)D-18 (torchvision r2plus1d_18)",
            {"conv_makers": ("2plus1d",) * 4, "stem": "2plus1d"},
        ),
        (
            "r2plus1d_34",
            "R(2+1)D-34",
            {"layers": r34, "conv_makers": ("2plus1d",) * 4, "stem": "2plus1d"},
        ),
    ):
        register_preset(name, VideoResNet, doc, **fields)

    register_preset("slow_r50", ResNet3D, "Slow R50 8x8 (pytorchvideo slow_r50)")
    register_preset(
        "c2d_r50",
        ResNet3D,
        "C2D R50 (pytorchvideo c2d_r50)",
        conv_a_kernels=((1, 1, 1),) * 4,
        stage1_pool=True,
    )
    register_preset(
        "i3d_r50",
        ResNet3D,
        "I3D R50 8x8 (pytorchvideo i3d_r50)",
        stem_kernel=(5, 7, 7),
        stage1_pool=True,
        conv_a_kernels=(
            (3, 1, 1),
            ((3, 1, 1), (1, 1, 1)),
            ((3, 1, 1), (1, 1, 1)),
            ((1, 1, 1), (3, 1, 1)),
        ),
    )
    register_preset(
        "r2plus1d_r50",
        ResNet3D,
        "R(2+1)D R50 16x4 (pytorchvideo r2plus1d_r50)",
        stem_pool=False,
        conv_a_kernels=((1, 1, 1),) * 4,
        conv_b_kernel=(3, 3, 3),
        factorise_b="temporal_first",
        spatial_strides=(2, 2, 2, 2),
        temporal_strides=(1, 1, 2, 2),
    )
    register_preset(
        "csn_r101",
        ResNet3D,
        "ir-CSN R101 32x2 (pytorchvideo csn_r101): depthwise 3x3x3 convs, strided in time",
        depth=101,
        stem_kernel=(3, 7, 7),
        conv_a_kernels=((1, 1, 1),) * 4,
        conv_b_kernel=(3, 3, 3),
        depthwise_b=True,
        temporal_strides=(1, 2, 2, 2),
        dropout_rate=0.0,
    )


_register_presets()
