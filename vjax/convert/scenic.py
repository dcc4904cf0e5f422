"""scenic ViViT checkpoints -> vjax :class:`~vjax.models.vivit.ViViT`.

scenic's ``projects/vivit/model.py`` builds ``ViViT`` (attention ``spacetime``: model 1;
``factorized_self_attention_block``: model 3; ``factorized_dot_product_attention``: model
4) and ``SpaceTimeViViT`` (``factorized_encoder``: model 2, or with
``attention_config.spatial_only_baseline`` the average-pool baseline). Their parameters:

* ``embedding/kernel`` ``(ft, fh, fw, C, D)`` (``temporal_encoding_config.method =
  "3d_conv"``; ``patches.size`` is ``(fh, fw, ft)``) or ``(fh, fw, C, D)``
  (``"temporal_sampling"``: 2D patches of each sampled frame);
* ``cls`` (classifier ``"token"``), prepended *before* the learned position table
  ``Transformer/posembed_input/pos_embedding`` ``(1, [1 +] tokens, D)``; its first row is
  folded into vjax's ``cls``;
* ``Transformer/encoderblock_N/{LayerNorm_0, MultiHeadDotProductAttention_0, LayerNorm_1,
  MlpBlock_0/Dense_0, Dense_1}`` (model 3: ``LayerNorm_time``,
  ``MultiHeadDotProductAttention_time``, ``..._space``, ``LayerNorm_mlp``, ``MlpBlock``),
  ``Transformer/encoder_norm``;
* model 2: ``cls_SpatialTransformer``, ``SpatialTransformer/...``,
  ``cls_TemporalTransformer``, ``TemporalTransformer/...`` in the same layout;
* ``output_projection`` (and ``pre_logits`` when ``representation_size`` is set).

Checkpoints are flax msgpack files (``flax.training.checkpoints``: a train state whose
``optimizer.target`` or ``params`` is the tree above). scenic's MLP uses flax's
tanh-approximate GELU and layer norms of epsilon 1e-6, which the returned config sets.

>>> config, variables = from_scenic("checkpoint_30000", scenic_config)   # config.model + data
>>> logits = build_model(config.model, len(config.class_names)).apply(variables, video,
...                                                                   train=False)

Command: ``vjax convert --from=scenic --src=checkpoint_N --config=scenic_config.py --out=DIR``
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from flax import traverse_util

from vjax.convert.common import ConversionError, check_tree_matches, pretrained_config
from vjax.convert.torchvision import expected_variables
from vjax.convert.vit import NUMERICS, FlatSource, flatten, flax_encoder, split_cls_row
from vjax.errors import NotFoundError
from vjax.tasks import ClassNames, head_sizes, split_classes

# scenic attention_config.type -> vjax ViViT variant.
ATTENTION_TYPES = {
    "spacetime": "spacetime",
    "factorized_encoder": "factorised_encoder",
    "factorized_self_attention_block": "factorised_self_attention",
    "factorized_self_attention": "factorised_self_attention",
    "factorized_dot_product_attention": "factorised_dot_product",
}
_POOLING = {"token": "cls", "gap": "gap"}


def read_checkpoint(path: str) -> dict[str, Any]:
    """The train state of a scenic checkpoint: a flax msgpack file (the released models), or
    the ``checkpoint_N`` folder (or the folder of them) that scenic's
    ``flax.training.checkpoints.save_checkpoint`` writes with Orbax, flax's default now."""
    from flax import serialization

    if os.path.isdir(path):
        from flax.training import checkpoints

        state = checkpoints.restore_checkpoint(path, target=None)
        if not state:
            raise NotFoundError(f"scenic checkpoint folder {path} holds no checkpoint_N")
        return state
    if not os.path.isfile(path):
        raise NotFoundError(f"scenic checkpoint {path} does not exist")
    with open(path, "rb") as f:
        return serialization.msgpack_restore(f.read())


def params_tree(state: Mapping[str, Any]) -> Mapping[str, Any]:
    """The model parameters inside a restored train state (``optimizer.target``, ``params``)
    or the tree itself."""
    if isinstance(state.get("optimizer"), Mapping) and "target" in state["optimizer"]:
        state = state["optimizer"]["target"]
    elif isinstance(state.get("params"), Mapping):
        state = state["params"]
    if "embedding" not in state:
        raise ConversionError(
            f"not a scenic ViViT parameter tree: no 'embedding' among {sorted(state)[:10]}"
        )
    return state


def _field(config: Mapping[str, Any], path: str, default: Any = KeyError) -> Any:
    """``config["a"]["b"]`` for ``path="a.b"`` (dicts or ConfigDicts); ``default`` if absent
    (ConversionError naming the field when no default is given)."""
    node: Any = config
    for key in path.split("."):
        node = node.get(key) if hasattr(node, "get") else None
        if node is None:
            if default is KeyError:
                raise ConversionError(f"the scenic model config has no {path!r}")
            return default
    return node


def vjax_model_config(model: Mapping[str, Any]) -> dict[str, Any]:
    """The vjax ViViT model section for scenic's ``config.model``; raises ConversionError
    naming a scenic option vjax cannot reproduce."""
    kind = _field(model, "attention_config.type", "spacetime")
    if kind not in ATTENTION_TYPES:
        raise ConversionError(
            f"scenic attention_config.type={kind!r} is not supported; valid: "
            f"{', '.join(ATTENTION_TYPES)}"
        )
    classifier = _field(model, "classifier", "gap")
    if classifier not in _POOLING:
        raise ConversionError(
            f"scenic classifier={classifier!r} has no vjax equivalent; valid: token, gap"
        )
    if _field(model, "representation_size", None) is not None:
        raise ConversionError(
            "scenic representation_size (a tanh pre-logits layer) has no vjax equivalent"
        )
    size = [int(v) for v in _field(model, "patches.size")]
    method = _field(model, "temporal_encoding_config.method", "3d_conv")
    if method not in ("3d_conv", "temporal_sampling"):
        raise ConversionError(f"scenic temporal_encoding_config.method={method!r} is unknown")
    if len(size) != (3 if method == "3d_conv" else 2):  # scenic's embed_3d_patch / _2d_patch
        shape = "(h, w, t)" if method == "3d_conv" else "(h, w)"
        raise ConversionError(f"scenic {method} takes patches.size {shape}, got {tuple(size)}")
    fh, fw = size[:2]
    ft = size[2] if method == "3d_conv" else 1
    if fh != fw:
        raise ConversionError(f"scenic patches.size {fh}x{fw} is not square; vjax patches are")
    variant = ATTENTION_TYPES[kind]
    out: dict[str, Any] = {"name": "vivit", "variant": variant, "size": f"B/{fh}x{ft}"}
    out["hidden_size"] = int(_field(model, "hidden_size"))
    if variant == "factorised_encoder":
        for ours, theirs in (("num_layers", "num_layers"), ("num_heads", "num_heads")):
            out[ours] = int(_field(model, f"spatial_transformer.{theirs}"))
        out["mlp_dim"] = int(_field(model, "spatial_transformer.mlp_dim"))
        if _field(model, "attention_config.spatial_only_baseline", False):
            out["variant"] = "average_pool"
        else:
            out["temporal_layers"] = int(_field(model, "temporal_transformer.num_layers"))
            out["temporal_num_heads"] = int(_field(model, "temporal_transformer.num_heads"))
            out["temporal_mlp_dim"] = int(_field(model, "temporal_transformer.mlp_dim"))
    else:
        for key in ("num_layers", "num_heads", "mlp_dim"):
            out[key] = int(_field(model, key))
    if variant == "factorised_self_attention":
        out["attention_order"] = _field(model, "attention_config.attention_order", "time_space")
    out["pooling"] = _POOLING[classifier]
    return {**out, **NUMERICS}


def _clip(
    model: Mapping[str, Any], flat: FlatSource, config: Mapping[str, Any], vjax: Mapping
) -> tuple[int, int, int, int]:
    """``(T, H, W, C)``: the dataset's ``num_frames`` / ``crop_size`` where the config has
    them, else what the position tables imply for square frames."""
    kernel = flat.flat["embedding/kernel"]
    channels = kernel.shape[-2]
    patch = kernel.shape[-4]
    ft = kernel.shape[0] if kernel.ndim == 5 else 1
    frames = _field(config, "dataset_configs.num_frames", None)
    if _field(model, "temporal_encoding_config.method", "3d_conv") == "temporal_sampling":
        frames = int(_field(model, "temporal_encoding_config.n_sampled_frames"))
    crop = _field(config, "dataset_configs.crop_size", None)
    cls = 1 if vjax["pooling"] == "cls" else 0
    if flat.has("SpatialTransformer/posembed_input/pos_embedding"):
        space = flat.flat["SpatialTransformer/posembed_input/pos_embedding"].shape[1] - cls
        crop = crop or patch * math.isqrt(space)
        if not frames and flat.has("TemporalTransformer/posembed_input/pos_embedding"):
            time = flat.flat["TemporalTransformer/posembed_input/pos_embedding"].shape[1] - cls
            frames = time * ft
    else:
        tokens = flat.flat["Transformer/posembed_input/pos_embedding"].shape[1] - cls
        if crop and not frames:
            frames = ft * tokens // (int(crop) // patch) ** 2
        elif frames and not crop:
            crop = patch * math.isqrt(tokens // (int(frames) // ft))
    if not frames or not crop:
        raise ConversionError(
            "cannot tell the clip's frames from its image size: pass clip=(T, H, W, C) or a "
            "config with dataset_configs.num_frames / crop_size"
        )
    return int(frames), int(crop), int(crop), int(channels)


def _stage(src: FlatSource, scenic: str, cls_key: str, prefix: str, tokens: int, out: dict):
    """One scenic transformer (``Transformer``/``SpatialTransformer``/...) and its class
    token into vjax's ``{prefix}encoder``, ``{prefix}pos_embedding``, ``{prefix}cls``."""
    table_key = f"{scenic}/posembed_input/pos_embedding"
    cls = src.take(cls_key) if src.has(cls_key) else None
    cls, table = split_cls_row(src.take(table_key), cls, table_key, tokens)
    out[f"{prefix}pos_embedding"] = table
    if cls is not None:
        out[f"{prefix}cls"] = cls
    out.update(flax_encoder(src, scenic, f"{prefix}encoder"))


def _head_sizes(data_config: Mapping[str, Any], bias: Any) -> int | dict[str, int]:
    """The heads of scenic's ``output_projection``: one, or (its multi-head classification,
    e.g. Epic-Kitchens) ``dataset_configs.class_splits`` consecutive column blocks named by
    ``split_names``."""
    splits = data_config.get("class_splits")
    if not splits:
        return int(np.shape(bias)[-1])
    names = list(data_config.get("split_names") or [f"split_{i}" for i in range(len(splits))])
    if len(names) != len(splits) or sum(splits) != np.shape(bias)[-1]:
        raise ConversionError(
            f"dataset_configs.class_splits {list(splits)} / split_names {names} do not divide "
            f"output_projection's {np.shape(bias)[-1]} outputs"
        )
    return dict(zip(names, (int(k) for k in splits), strict=True))


def _default_class_names(sizes: int | dict[str, int]) -> list[str] | dict[str, list[str]]:
    """``class_<i>``, or ``<task>_<i>`` per head."""
    if isinstance(sizes, int):
        return [f"class_{i}" for i in range(sizes)]
    return {task: [f"{task}_{i}" for i in range(size)] for task, size in sizes.items()}


def from_scenic(
    params: Any,
    scenic_model_config: Mapping[str, Any],
    *,
    clip: tuple[int, int, int, int] | None = None,
    class_names: ClassNames | None = None,
):
    """``(config, variables)`` for a scenic ViViT / SpaceTimeViViT checkpoint.

    ``params``: the parameter tree, a restored train state, or a checkpoint file path.
    ``scenic_model_config``: scenic's experiment config (with ``model`` and optionally
    ``dataset_configs.num_frames`` / ``crop_size``) or its ``model`` section. ``clip``:
    ``(T, H, W, C)`` when the config does not give it. A multi-head checkpoint
    (``vivit_multihead_classification``: ``dataset_configs.class_splits`` and ``split_names``,
    e.g. Epic-Kitchens' noun 300 + verb 97) becomes one vjax head per split. A missing or
    left-over parameter or a wrong shape raises ConversionError naming it and both shapes.

    >>> state = flax.serialization.msgpack_restore(open("checkpoint_1", "rb").read())
    >>> config, variables = from_scenic(state, scenic_config)
    """
    if isinstance(params, str | os.PathLike):
        params = read_checkpoint(str(params))
    src = FlatSource(flatten(params_tree(params)))
    config = dict(scenic_model_config)
    model_section = config.get("model", config)
    model = vjax_model_config(model_section)
    clip = tuple(clip) if clip else _clip(model_section, src, config, model)
    kernel = src.take("embedding/kernel")
    out = {
        "embedding/conv/kernel": kernel if kernel.ndim == 5 else kernel[None],
        "embedding/conv/bias": src.take("embedding/bias"),
    }
    frames, height, width, _ = clip
    patch = kernel.shape[-4]
    grid = (frames // (kernel.shape[0] if kernel.ndim == 5 else 1), height // patch, width // patch)
    space = grid[1] * grid[2]
    if model["variant"] in ("factorised_encoder", "average_pool"):
        _stage(src, "SpatialTransformer", "cls_SpatialTransformer", "", space, out)
        if model["variant"] == "factorised_encoder":
            _stage(src, "TemporalTransformer", "cls_TemporalTransformer", "temporal_", grid[0], out)
    else:
        _stage(src, "Transformer", "cls", "", grid[0] * space, out)
    kernel, bias = src.take("output_projection/kernel"), src.take("output_projection/bias")
    sizes = _head_sizes(config.get("dataset_configs") or {}, bias)
    heads = {"head": sizes} if isinstance(sizes, int) else sizes  # vjax's parameter names
    for part, values in (("kernel", kernel), ("bias", bias)):
        for head, block in split_classes(values, heads).items():
            out[f"classifier/{head}/{part}"] = block
    src.leftovers()
    variables = {"params": traverse_util.unflatten_dict(out, sep="/")}
    check_tree_matches(variables, expected_variables(model, sizes, clip))
    names = class_names or _default_class_names(sizes)
    if head_sizes(names) != sizes:
        raise ConversionError(f"class names for {head_sizes(names)} outputs; the heads: {sizes}")
    kind = _field(model_section, "attention_config.type", "spacetime")
    return pretrained_config(
        model,
        clip,
        names,
        mean=(0.5,) * clip[-1],  # scenic's video pipelines scale pixels to [-1, 1]
        std=(0.5,) * clip[-1],
        source=f"scenic ViViT ({kind})",
        frame_stride=_field(config, "dataset_configs.stride", 1),
    ), variables


def load_scenic_config(spec: str) -> dict[str, Any]:
    """``get_config()`` (or ``get_config(arg)`` for ``path.py:arg``) of a scenic config file,
    as a dict. Only the file itself is executed; it may import ml_collections only."""
    import importlib.util

    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise NotFoundError(f"scenic config {path} does not exist")
    module_spec = importlib.util.spec_from_file_location("scenic_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    config = module.get_config(arg) if arg else module.get_config()
    return config.to_dict() if hasattr(config, "to_dict") else dict(config)


def from_cli(src: str, arch: str | None, config: str | None):
    """``vjax convert --from=scenic --src=checkpoint_N --config=scenic_config.py[:arg]``: the
    scenic config file's ``get_config()`` gives the model (``arch`` is unused)."""
    del arch
    if config is None:
        raise ConversionError("--config=SCENIC_CONFIG.py[:arg] (the scenic config) is required")
    return from_scenic(src, load_scenic_config(config))
