"""torchvision's video ResNets (``r3d_18``, ``mc3_18``, ``r2plus1d_18`` and any ``VideoResNet``
built from its blocks) -> :class:`vjax.models.resnet3d.VideoResNet`.

The architecture is read off the checkpoint (bottleneck or basic blocks, blocks per stage,
3D / 2D / (2+1)D convs per stage, the stem), so a ``VideoResNet`` that torchvision does not
name converts too; ``arch`` names the preset it should match. Also the shared torch-layout
machinery (:class:`TorchWeights`) that :mod:`vjax.convert.pytorchvideo` uses.

>>> from torchvision.models.video import r3d_18
>>> config, variables = from_torchvision(r3d_18(weights="DEFAULT").state_dict(), "r3d_18")
>>> logits = build_model(config.model, 400).apply(variables, video, train=False)

Command: ``vjax convert --from=torchvision --arch=r3d_18 --src=r3d_18.pth --out=weights/r3d``
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vjax.convert.common import ConversionError, assign, check_tree_matches, pretrained_config
from vjax.errors import NotFoundError

# torchvision's video transforms (VideoClassification preset) and training clip.
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
CLIP = (16, 112, 112, 3)


class TorchWeights:
    """A torch ``state_dict`` read into a flax ``{"params", "batch_stats"}`` tree.

    Every source tensor must be used exactly once; :meth:`finish` names those left over and
    compares the result with the model's own tree (missing/extra keys, shapes).
    """

    def __init__(self, state_dict: Mapping[str, Any]):
        self.tensors = {k: _numpy(v) for k, v in state_dict.items()}
        self.used: set[str] = set()
        self.params: dict = {}
        self.stats: dict = {}

    def has(self, key: str) -> bool:
        return key in self.tensors

    def take(self, key: str, target: str) -> np.ndarray:
        if key not in self.tensors:
            raise ConversionError(f"{key}: missing from the checkpoint (needed for {target})")
        self.used.add(key)
        return self.tensors[key]

    def conv(self, src: str, dst: str) -> None:
        """torch Conv3d ``(out, in/groups, t, h, w)`` -> flax ``(t, h, w, in/groups, out)``
        (a Conv2d ``(out, in, h, w)`` -> ``(h, w, in, out)``, for inflation)."""
        kernel = self.take(f"{src}.weight", f"{dst}/kernel")
        if kernel.ndim not in (4, 5):
            raise ConversionError(
                f"{src}.weight: expected a Conv3d/Conv2d kernel for {dst}/kernel, got shape "
                f"{kernel.shape}"
            )
        order = (2, 3, 4, 1, 0) if kernel.ndim == 5 else (2, 3, 1, 0)
        assign(self.params, f"{dst}/kernel", kernel.transpose(order))
        if self.has(f"{src}.bias"):
            assign(self.params, f"{dst}/bias", self.take(f"{src}.bias", f"{dst}/bias"))

    def norm(self, src: str, dst: str) -> None:
        """BatchNorm3d: weight/bias -> params scale/bias, running stats -> batch_stats."""
        assign(self.params, f"{dst}/scale", self.take(f"{src}.weight", f"{dst}/scale"))
        assign(self.params, f"{dst}/bias", self.take(f"{src}.bias", f"{dst}/bias"))
        assign(self.stats, f"{dst}/mean", self.take(f"{src}.running_mean", f"{dst}/mean"))
        assign(self.stats, f"{dst}/var", self.take(f"{src}.running_var", f"{dst}/var"))
        self.used.add(f"{src}.num_batches_tracked")

    def dense(self, src: str, dst: str, bias: bool = True) -> None:
        """torch Linear ``(out, in)`` (or a 1x1x1 Conv3d) -> flax Dense ``(in, out)``."""
        weight = self.take(f"{src}.weight", f"{dst}/kernel")
        weight = weight.reshape(weight.shape[0], -1)
        assign(self.params, f"{dst}/kernel", weight.T)
        if bias:
            assign(self.params, f"{dst}/bias", self.take(f"{src}.bias", f"{dst}/bias"))

    def conv_unit(self, conv: str, norm: str | None, dst: str) -> None:
        """A :class:`~vjax.models.conv_blocks.ConvUnit`: its ``conv`` and ``norm``."""
        self.conv(conv, f"{dst}/conv")
        if norm is not None:
            self.norm(norm, f"{dst}/norm")

    def finish(self, expected: Mapping[str, Any]) -> dict:
        """The variables, after checking nothing is left over and everything fits
        ``expected`` (``jax.eval_shape`` of ``model.init``)."""
        unused = sorted(k for k in self.tensors if k not in self.used)
        if unused:
            more = f" (and {len(unused) - 10} more)" if len(unused) > 10 else ""
            raise ConversionError(
                f"checkpoint keys the model has no place for: {', '.join(unused[:10])}{more}"
            )
        variables = {"params": self.params}
        if self.stats or "batch_stats" in expected:
            variables["batch_stats"] = self.stats
        check_tree_matches(variables, dict(expected))
        return variables


def _numpy(value: Any) -> np.ndarray:
    """A copy (never a view: torch updates BatchNorm buffers in place) as a numpy array."""
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu()
        value = value.float() if value.is_floating_point() else value
        value = value.numpy()
    return np.array(value, copy=True)


def expected_variables(model_config: Mapping[str, Any], num_classes: int, clip: Sequence[int]):
    """Shapes of ``build_model(model_config).init`` on one clip: the tree a checkpoint fills."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from vjax.models import build_model

    model = build_model(model_config, num_classes)
    video = jax.ShapeDtypeStruct((1, *clip), jnp.float32)
    return nn.meta.unbox(
        jax.eval_shape(lambda v: model.init(jax.random.key(0), v, train=False), video)
    )


def infer_video_resnet(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The :class:`~vjax.models.resnet3d.VideoResNet` fields a torchvision checkpoint holds."""
    keys = set(state_dict)
    if "stem.0.weight" not in keys or "fc.weight" not in keys:
        raise ConversionError(
            "not a torchvision VideoResNet checkpoint: stem.0.weight or fc.weight is missing"
        )
    block = "bottleneck" if any(".conv3." in k for k in keys) else "basic"
    layers, makers = [], []
    for i in range(1, 5):
        depth = len({k.split(".")[1] for k in keys if k.startswith(f"layer{i}.")})
        if depth == 0:
            raise ConversionError(f"layer{i}: missing from the checkpoint (a VideoResNet has 4)")
        layers.append(depth)
        conv = "conv1" if block == "basic" else "conv2"
        if f"layer{i}.0.{conv}.0.0.weight" in keys:
            makers.append("2plus1d")
        else:
            kernel = np.shape(state_dict[f"layer{i}.0.{conv}.0.weight"])
            makers.append("3d" if kernel[2] == 3 else "2d")
    features = int(np.shape(state_dict["fc.weight"])[1])
    return {
        "block": block,
        "layers": tuple(layers),
        "conv_makers": tuple(makers),
        "stem": "2plus1d" if "stem.3.weight" in keys else "basic",
        "width": features // (4 if block == "bottleneck" else 1) // 8,
    }


def _conv_builder(w: TorchWeights, src: str, maker: str, dst: str) -> None:
    """torchvision's ``conv_builder`` (Conv3DSimple / Conv3DNoTemporal / Conv2Plus1D)."""
    if maker == "2plus1d":
        w.conv(f"{src}.0", f"{dst}/conv/conv_1")
        w.norm(f"{src}.1", f"{dst}/conv/norm_1")
        w.conv(f"{src}.3", f"{dst}/conv/conv_2")
    else:
        w.conv(src, f"{dst}/conv")


def video_resnet_variables(
    state_dict: Mapping[str, Any], fields: Mapping[str, Any]
) -> TorchWeights:
    """Reads a torchvision VideoResNet state dict into the tree :class:`VideoResNet` uses."""
    w = TorchWeights(state_dict)
    if fields["stem"] == "2plus1d":
        w.conv("stem.0", "stem/conv/conv_1")
        w.norm("stem.1", "stem/conv/norm_1")
        w.conv("stem.3", "stem/conv/conv_2")
        w.norm("stem.4", "stem/norm")
    else:
        w.conv_unit("stem.0", "stem.1", "stem")
    basic = fields["block"] == "basic"
    names = (("conv1", "conv_1"), ("conv2", "conv_2")) if basic else (("conv2", "conv_b"),)
    for i, (depth, maker) in enumerate(zip(fields["layers"], fields["conv_makers"], strict=True)):
        for b in range(depth):
            src, dst = f"layer{i + 1}.{b}", f"layer{i + 1}/block{b}"
            for torch_name, ours in names:
                _conv_builder(w, f"{src}.{torch_name}.0", maker, f"{dst}/{ours}")
                w.norm(f"{src}.{torch_name}.1", f"{dst}/{ours}/norm")
            if not basic:
                w.conv_unit(f"{src}.conv1.0", f"{src}.conv1.1", f"{dst}/conv_a")
                w.conv_unit(f"{src}.conv3.0", f"{src}.conv3.1", f"{dst}/conv_c")
            if w.has(f"{src}.downsample.0.weight"):
                w.conv_unit(f"{src}.downsample.0", f"{src}.downsample.1", f"{dst}/shortcut")
    w.dense("fc", "classifier/head")
    return w


def kinetics400_classes(num_classes: int) -> list[str]:
    """Kinetics-400 class names where there are 400 outputs (from torchvision), else
    ``class_<i>``."""
    if num_classes == 400:
        try:
            from vjax.torch_imports import import_torchvision

            return list(import_torchvision().models._meta._KINETICS400_CATEGORIES)
        except ImportError:
            pass
    return [f"class_{i}" for i in range(num_classes)]


def from_torchvision(state_dict: Mapping[str, Any], arch: str | None = None):
    """``(config, variables)`` for a torchvision ``VideoResNet`` state dict.

    ``arch`` (``r3d_18``, ``mc3_18``, ``r2plus1d_18``, ``r3d_34``, ``r3d_50``,
    ``r2plus1d_34``) must match what the checkpoint holds; None accepts any VideoResNet and
    names the matching preset, or ``video_resnet`` with explicit fields. A missing key,
    left-over key or wrong shape raises ConversionError naming the parameter and shapes.

    >>> config, variables = from_torchvision(torch.load("r3d_18.pth"), "r3d_18")
    """
    model, variables = torchvision_variables(state_dict, arch)
    num_classes = int(np.shape(state_dict["fc.weight"])[0])
    config = pretrained_config(
        model,
        CLIP,
        kinetics400_classes(num_classes),
        mean=KINETICS_MEAN,
        std=KINETICS_STD,
        source=f"torchvision {model['name']}",
        # the weights' transforms(): 16 frames at 15 fps, resized to 128 x 171, 112 cropped
        fps=15.0,
        test_crop_fraction=112 / 128,
    )
    return config, variables


def torchvision_variables(
    state_dict: Mapping[str, Any], arch: str | None = None
) -> tuple[dict[str, Any], dict]:
    """What :func:`from_torchvision` converts, before it is wrapped in a config (no
    ml_collections needed): ``(model section, variables)``."""
    from vjax.models import available_models, build_model
    from vjax.models.resnet3d import VideoResNet

    fields = infer_video_resnet(state_dict)
    presets = {}
    for name in available_models():
        net = build_model({"name": name}, 1)
        if isinstance(net, VideoResNet) and name != "video_resnet":
            presets[name] = {k: _as_tuple(getattr(net, k)) for k in fields}
    match = next((n for n, p in presets.items() if p == fields), None)
    if arch is not None:
        if arch not in presets:
            raise ConversionError(f"unknown torchvision arch {arch!r}; valid: {sorted(presets)}")
        if presets[arch] != fields:
            raise ConversionError(
                f"the checkpoint is not a {arch}: it holds {fields}, {arch} is {presets[arch]}"
            )
    model = {"name": arch or match} if (arch or match) else {"name": "video_resnet", **fields}
    num_classes = int(np.shape(state_dict["fc.weight"])[0])
    w = video_resnet_variables(state_dict, fields)
    return model, w.finish(expected_variables(model, num_classes, (4, 32, 32, 3)))


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def from_torchvision_resnet50(state_dict: Mapping[str, Any], arch: str = "i3d_r50"):
    """``(config, variables)``: a 2D torchvision ResNet-50 (e.g. ImageNet weights) inflated
    into the 3D ResNet-50 ``arch`` (``i3d_r50``, ``slow_r50`` or ``c2d_r50``) with
    :func:`vjax.models.resnet3d.inflate_resnet50` (each k_t-frame kernel = the 2D kernel / k_t).

    >>> from torchvision.models import resnet50
    >>> config, variables = from_torchvision_resnet50(resnet50(weights="DEFAULT").state_dict())
    """
    import jax

    from vjax.models.resnet3d import RESNET_DEPTHS, inflate_resnet50

    if arch not in ("i3d_r50", "slow_r50", "c2d_r50"):
        raise ConversionError(f"inflate into i3d_r50, slow_r50 or c2d_r50, not {arch!r}")
    w = TorchWeights(state_dict)
    w.conv_unit("conv1", "bn1", "stem")
    for i, depth in enumerate(RESNET_DEPTHS[50]):
        for b in range(depth):
            src, dst = f"layer{i + 1}.{b}", f"stage{i + 1}/block{b}"
            for n, ours in (("1", "conv_a"), ("2", "conv_b"), ("3", "conv_c")):
                w.conv_unit(f"{src}.conv{n}", f"{src}.bn{n}", f"{dst}/{ours}")
            if w.has(f"{src}.downsample.0.weight"):
                w.conv_unit(f"{src}.downsample.0", f"{src}.downsample.1", f"{dst}/shortcut")
    w.dense("fc", "classifier/head")
    num_classes = int(np.shape(state_dict["fc.weight"])[0])
    model = {"name": arch}
    expected = expected_variables(model, num_classes, (8, 32, 32, 3))
    # The 2D kernels must be the 3D ones without their time axis.
    flat = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape[1:] if len(x.shape) == 5 else x.shape, x.dtype),
        expected["params"],
    )
    check_tree_matches(w.params, flat, "2D ResNet-50: ")
    w.params = inflate_resnet50(w.params, expected["params"])
    variables = w.finish(expected)
    classes = [f"class_{i}" for i in range(num_classes)]
    config = pretrained_config(model, (8, 224, 224, 3), classes, source="torchvision resnet50")
    return config, variables


def load_state_dict(path: str) -> dict[str, Any]:
    """A state dict from a ``.safetensors`` file or a ``torch.save`` file (read with
    ``weights_only=True``); a ``{"state_dict": ...}`` / ``{"model_state": ...}`` /
    ``{"model": ...}`` wrapper (pytorchvideo's zoo files, torchvision's reference scripts,
    whose argparse ``args`` beside the weights are allowed through) is unwrapped."""
    if not os.path.exists(path):
        raise NotFoundError(f"checkpoint {path} does not exist")
    try:
        if path.endswith(".safetensors"):
            from safetensors.numpy import load_file

            return dict(load_file(path))
        import torch

        with torch.serialization.safe_globals([argparse.Namespace]):
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (any failure to parse the user's file)
        kind = "safetensors" if path.endswith(".safetensors") else "torch.save"
        raise ConversionError(
            f"{path} is not a readable {kind} checkpoint ({type(e).__name__}: "
            f"{str(e).strip().splitlines()[0] if str(e).strip() else ''})"
        ) from e
    if not isinstance(loaded, Mapping):
        raise ConversionError(f"{path} holds a {type(loaded).__name__}, not a state dict")
    for wrapper in ("model_state", "state_dict", "model"):
        if isinstance(loaded, Mapping) and isinstance(loaded.get(wrapper), Mapping):
            loaded = loaded[wrapper]
    return dict(loaded)


def from_cli(src: str, arch: str | None, config: str | None):
    """``vjax convert --from=torchvision --src=FILE [--arch=r3d_18]``."""
    del config  # the architecture is read off the checkpoint
    return from_torchvision(load_state_dict(src), arch)
