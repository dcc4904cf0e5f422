"""big_vision / scenic / original-ViT image checkpoints (``.npz``) as the initialisation of a
vjax video transformer.

The ``.npz`` holds flax parameter paths joined by ``/``. Three layouts are read, all of the
same network (pre-LN ViT, flax's tanh-approximate GELU, layer-norm epsilon 1e-6):

* big_vision ``vit.py``: ``embedding/kernel`` ``(ph, pw, C, D)``, ``pos_embedding``
  ``(1, hw, D)`` (added before the class token), ``cls``,
  ``Transformer/encoderblock_N/{LayerNorm_0, MultiHeadDotProductAttention_0, LayerNorm_1,
  MlpBlock_0/Dense_0, Dense_1}``, ``Transformer/encoder_norm``, ``head`` (with
  ``scan=True``: one ``Transformer/encoderblock`` whose parameters are stacked over depth);
* google-research/vision_transformer (the AugReg ``.npz`` files) and scenic's ViT:
  ``Transformer/posembed_input/pos_embedding`` ``(1, 1 + hw, D)`` whose first row belongs
  to the class token (folded into ``cls``), blocks with ``MultiHeadDotProductAttention_1``,
  ``LayerNorm_2``, ``MlpBlock_3`` (old linen numbering), head ``head`` or
  ``output_projection``.

:func:`image_vit_params` reads any of them into vjax names (an image ViT: a single-frame
tubelet ``(1, ph, pw, C, D)``), and :func:`from_vit_npz` moves that onto a video model with
:func:`vjax.convert.surgery.adapt_params`: the patch kernel inflated over time
(``"central"`` or ``"average"``), position embeddings resized (tiled over time, bilinear over
space), the classifier reset when the class count differs, and parameters the image model
lacks (temporal attention, time embeddings, model 2's temporal transformer) left at their
initial values. :func:`flax_block` (one flax encoder block in vjax names) is shared with
:mod:`vjax.convert.scenic`.

>>> config, variables = from_vit_npz("ViT-B_16.npz", vivit_config, inflation="central")

Command: ``vjax convert --from=vit --src=ViT-B_16.npz --config=configs/x.py:arg --out=DIR``
(``--arch=average`` for average inflation; central by default).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from flax import traverse_util

from vjax.convert.common import ConversionError, pretrained_config

# big_vision / scenic ViTs: flax's default (tanh-approximate) GELU and LayerNorm epsilon.
NUMERICS = {"activation": "gelu_tanh", "layer_norm_eps": 1e-6, "qkv_bias": "qkv"}
_HEADS = ("head", "output_projection")
_POS_TABLES = (
    "pos_embedding",
    "Transformer/posembed_input/pos_embedding",
    "Transformer/pos_embedding",
)


class FlatSource:
    """A flat ``{"a/b/c": array}`` checkpoint whose keys are each read once at most;
    :meth:`leftovers` names what nothing read (a checkpoint of another model)."""

    def __init__(self, flat: Mapping[str, Any]):
        self.flat = {k: np.asarray(v) for k, v in flat.items()}
        self.used: set[str] = set()

    def has(self, key: str) -> bool:
        return key in self.flat

    def take(self, key: str) -> np.ndarray:
        if key not in self.flat:
            raise ConversionError(f"{key}: missing from the checkpoint")
        self.used.add(key)
        return self.flat[key]

    def children(self, prefix: str) -> list[str]:
        """Names directly under ``prefix`` (e.g. a block's sub-modules)."""
        start = f"{prefix}/"
        return sorted({k[len(start) :].split("/")[0] for k in self.flat if k.startswith(start)})

    def leftovers(self, ignore: Iterable[str] = ()) -> None:
        ignored = tuple(ignore)
        left = sorted(k for k in self.flat if k not in self.used and not k.startswith(ignored))
        if left:
            more = f" (and {len(left) - 10} more)" if len(left) > 10 else ""
            raise ConversionError(
                f"checkpoint keys the model has no place for: {', '.join(left[:10])}{more}"
            )


def flatten(tree: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a": {"b": x}}`` -> ``{"a/b": x}`` (a flax / msgpack parameter tree)."""
    return traverse_util.flatten_dict(dict(tree), sep="/")


def _number(name: str) -> int:
    return int(name.rsplit("_", 1)[1])


def _block_modules(src: FlatSource, prefix: str) -> dict[str, str]:
    """vjax sub-module name -> the flax one inside the block at ``prefix``.

    Numbered flax names (``LayerNorm_0``/``_1`` or ``_0``/``_2``) are ordered: the first norm
    is before attention, the second before the MLP. scenic's factorised self-attention block
    names its parts ``LayerNorm_time``/``_space``/``_mlp``,
    ``MultiHeadDotProductAttention_time``/``_space`` and ``MlpBlock``.
    """
    children = src.children(prefix)
    named = {
        "LayerNorm_time": "norm_time",
        "MultiHeadDotProductAttention_time": "attention_time",
        "LayerNorm_space": "norm1",
        "MultiHeadDotProductAttention_space": "attention",
        "LayerNorm_mlp": "norm2",
        "MlpBlock": "mlp",
    }
    out = {ours: theirs for theirs, ours in named.items() if theirs in children}
    norms = sorted((c for c in children if re.fullmatch(r"LayerNorm_\d+", c)), key=_number)
    attention = [c for c in children if re.fullmatch(r"MultiHeadDotProductAttention_\d+", c)]
    mlp = [c for c in children if re.fullmatch(r"MlpBlock_\d+", c)]
    if norms or attention or mlp:
        if len(norms) != 2 or len(attention) != 1 or len(mlp) != 1:
            raise ConversionError(
                f"{prefix}: expected two LayerNorm_N, one MultiHeadDotProductAttention_N and one "
                f"MlpBlock_N, found {children}"
            )
        out.update(norm1=norms[0], norm2=norms[1], attention=attention[0], mlp=mlp[0])
    if "norm1" not in out:
        raise ConversionError(f"{prefix}: not a ViT encoder block (it holds {children})")
    return out


def flax_block(src: FlatSource, prefix: str) -> dict[str, np.ndarray]:
    """One flax ViT / ViViT encoder block at ``prefix`` in vjax names (relative to the block).

    flax's ``MultiHeadDotProductAttention`` already stores ``(embed, heads, kv)`` kernels and
    ``(heads, kv, embed)`` output kernels, vjax's layout, so values are copied as they are.
    """
    out = {}
    for ours, theirs in _block_modules(src, prefix).items():
        path = f"{prefix}/{theirs}"
        if ours.startswith("norm"):
            for leaf in ("scale", "bias"):
                out[f"{ours}/{leaf}"] = src.take(f"{path}/{leaf}")
        elif ours == "mlp":
            for dense, fc in (("Dense_0", "fc1"), ("Dense_1", "fc2")):
                for leaf in ("kernel", "bias"):
                    out[f"mlp/{fc}/{leaf}"] = src.take(f"{path}/{dense}/{leaf}")
        else:
            for part in ("query", "key", "value", "out"):
                for leaf in ("kernel", "bias"):
                    if src.has(f"{path}/{part}/{leaf}"):
                        out[f"{ours}/{part}_{leaf}"] = src.take(f"{path}/{part}/{leaf}")
    return out


def flax_encoder(src: FlatSource, prefix: str, dst: str) -> dict[str, np.ndarray]:
    """``prefix/encoderblock_N`` blocks and ``prefix/encoder_norm`` -> ``dst/blockNN``..."""
    blocks = sorted(
        (c for c in src.children(prefix) if re.fullmatch(r"encoderblock_\d+", c)), key=_number
    )
    if not blocks:
        raise ConversionError(f"{prefix}/encoderblock_0: missing from the checkpoint")
    out = {}
    for i, name in enumerate(blocks):
        if _number(name) != i:
            raise ConversionError(f"{prefix}/encoderblock_{i}: missing from the checkpoint")
        for key, value in flax_block(src, f"{prefix}/{name}").items():
            out[f"{dst}/block{i:02d}/{key}"] = value
    if src.has(f"{prefix}/encoder_norm/scale"):
        out[f"{dst}/encoder_norm/scale"] = src.take(f"{prefix}/encoder_norm/scale")
        out[f"{dst}/encoder_norm/bias"] = src.take(f"{prefix}/encoder_norm/bias")
    return out


def split_cls_row(table: np.ndarray, cls: np.ndarray | None, name: str, tokens: int | None = None):
    """Folds the class token's position row into ``cls`` where ``table`` holds one: both are
    added before any layer, so ``cls + row`` and the remaining table are the same network.

    The table holds the row when it is one longer than the ``tokens`` of the grid (None: a
    square grid). Returns ``(cls, table)``.
    """
    length = table.shape[1]
    if tokens is None:
        tokens = length if math.isqrt(length) ** 2 == length else length - 1
    if cls is not None and length == tokens + 1:
        return cls + table[:, :1], table[:, 1:]
    if length == tokens:
        return cls, table
    raise ConversionError(
        f"{name}: position table {table.shape} fits neither {tokens} tokens nor {tokens} plus "
        f"a class token (class token {'present' if cls is not None else 'absent'})"
    )


def unstack_scanned(flat: Mapping[str, Any], prefix: str = "Transformer") -> dict[str, Any]:
    """big_vision's ``scan=True`` encoder stores one ``prefix/encoderblock`` whose parameters
    carry a leading depth axis; split it into ``encoderblock_0``, ``encoderblock_1``..."""
    scanned = f"{prefix}/encoderblock/"
    out = {k: v for k, v in flat.items() if not k.startswith(scanned)}
    for key, value in flat.items():
        if key.startswith(scanned):
            for i, layer in enumerate(np.asarray(value)):
                out[f"{prefix}/encoderblock_{i}/{key[len(scanned) :]}"] = layer
    return out


def _numpy_npz(path: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def image_vit_params(flat: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """An image ViT checkpoint (flat ``{"a/b": array}``, any layout in the module docstring)
    in vjax names: ``embedding/conv`` ``(1, ph, pw, C, D)``, ``cls``, ``pos_embedding``
    ``(1, hw, D)``, ``encoder``, ``classifier/head``. Returns the tree and notes on what was
    dropped. Raises ConversionError for layouts vjax cannot reproduce (MAP head, sin-cos
    position table, left-over keys)."""
    src = FlatSource(unstack_scanned(flat))
    if src.children("MAPHead_0"):
        raise ConversionError("MAPHead_0: attention-pooling heads have no vjax equivalent")
    kernel = src.take("embedding/kernel")
    if kernel.ndim != 4:
        raise ConversionError(f"embedding/kernel: expected (ph, pw, C, D), got {kernel.shape}")
    out = {
        "embedding/conv/kernel": kernel[None],
        "embedding/conv/bias": src.take("embedding/bias"),
        **flax_encoder(src, "Transformer", "encoder"),
    }
    table_key = next((k for k in _POS_TABLES if src.has(k)), None)
    if table_key is None:
        raise ConversionError(
            f"no learned position table ({' or '.join(_POS_TABLES)}): sin-cos position "
            f"embeddings have no vjax ViViT equivalent"
        )
    cls = src.take("cls") if src.has("cls") else None
    cls, table = split_cls_row(src.take(table_key), cls, table_key)
    out["pos_embedding"] = table
    if cls is not None:
        out["cls"] = cls
    notes, ignored = [], []
    if src.children("pre_logits"):
        ignored.append("pre_logits")
        notes.append("dropped pre_logits (and the head behind it): vjax has no tanh pre-logits")
    else:
        head = next((h for h in _HEADS if src.has(f"{h}/kernel")), None)
        if head is not None:
            out["classifier/head/kernel"] = src.take(f"{head}/kernel")
            out["classifier/head/bias"] = src.take(f"{head}/bias")
    ignored += [f"{h}/" for h in _HEADS]
    src.leftovers(ignored)
    return traverse_util.unflatten_dict(out, sep="/"), notes


def _model_and_clip(config: Any) -> tuple[dict[str, Any], tuple[int, ...], int | None]:
    """The model section, clip and class count (or None) of a vjax config."""
    if "model" not in config or "input" not in config or "clip" not in config["input"]:
        raise ConversionError(
            "config must be a vjax config with a model section and input.clip (T, H, W, C)"
        )
    names = config.get("class_names")
    dataset = config.get("dataset") or {}
    classes = len(names) if names else dataset.get("num_classes")
    return dict(config["model"]), tuple(config["input"]["clip"]), classes


def _target_variables(model: Any, clip: tuple[int, ...], seed: int, source: Mapping) -> Any:
    """The target model's variables: initialised only where the source cannot fill every
    parameter (a missing one, or a classifier of another shape), else just their shapes
    (initialising a large model on a CPU takes a while)."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    def init():
        return model.init(jax.random.key(seed), jnp.zeros((1, *clip), jnp.float32), train=False)

    shapes = flatten(nn.meta.unbox(jax.eval_shape(init))["params"])
    given = flatten(source)
    classifier = [k for k in shapes if k.startswith("classifier/")]
    if all(k in given for k in shapes) and all(
        np.shape(given[k]) == tuple(shapes[k].shape) for k in classifier
    ):
        return jax.eval_shape(init)
    return init()


def _blocks(params: Any) -> int:
    """The number of blocks of a parameter tree's (spatial) ``encoder``."""
    return sum(1 for name in params.get("encoder", {}) if name.startswith("block"))


def from_vit_npz(
    path: str,
    config: Any,
    *,
    inflation: str = "central",
    num_classes: int | None = None,
    seed: int = 0,
):
    """``(config, variables)``: a video model of ``config`` initialised from an image ViT
    ``.npz`` (any layout in the module docstring).

    ``config``: a vjax config (``model`` section and ``input.clip``; ``class_names`` or
    ``dataset.num_classes`` give the class count, else ``num_classes``, else the
    checkpoint's head). The model's ``activation``, ``layer_norm_eps`` and ``qkv_bias`` are
    set to the checkpoint's (:data:`NUMERICS`); its width, depth and heads must match the
    checkpoint (a mismatch names the parameter and both shapes). ``inflation``: ``"central"``
    or ``"average"`` (see :func:`vjax.convert.surgery.inflate_kernel`). Parameters the image
    model lacks keep their ``seed`` initial values; ``config.source`` lists every change.

    >>> config, variables = from_vit_npz("B_16.npz", load_config("configs/x.py:vivit_b"))
    """
    import jax

    from vjax.convert.surgery import SurgeryError, adapt_params, token_grid
    from vjax.models import build_model

    model_cfg, clip, classes = _model_and_clip(config)
    source, notes = image_vit_params(_numpy_npz(path))
    head = source.get("classifier", {}).get("head", {}).get("kernel")
    classes = num_classes or classes or (None if head is None else head.shape[-1])
    if not classes:
        raise ConversionError("pass num_classes: neither the config nor the checkpoint has one")
    model_cfg.update(NUMERICS)
    model = build_model(model_cfg, classes)
    target = _target_variables(model, clip, seed, source)
    depth, ours = (_blocks(tree) for tree in (source, target["params"]))
    # surgery would keep a missing block at its initial values: a silent half-model
    if ours and depth != ours:
        raise ConversionError(
            f"{path} has {depth} encoder blocks and the model {ours}: set "
            f"model.num_layers={depth} (an image ViT gives the video model its encoder whole)"
        )
    grid = token_grid(model, (1, *clip))
    side = math.isqrt(source["pos_embedding"].shape[1])
    try:
        params, changes = adapt_params(
            source,
            target["params"],
            inflation=inflation,
            source_grid=(1, side, side),
            target_grid=grid,
        )
    except SurgeryError as e:
        raise ConversionError(str(e)) from e
    # Transformers hold parameters only; any other collection comes from the initialised model.
    variables = {
        **jax.device_get({k: v for k, v in target.items() if k != "params"}),
        "params": params,
    }
    names = (config.get("class_names") or [f"class_{i}" for i in range(classes)])[:classes]
    if len(names) != classes:
        names = [f"class_{i}" for i in range(classes)]
    out = pretrained_config(
        model_cfg,
        clip,
        names,
        mean=(0.5,) * clip[-1],  # big_vision / ViT inputs are scaled to [-1, 1]
        std=(0.5,) * clip[-1],
        source=f"vit npz {path} ({inflation} inflation; {'; '.join(notes + changes)})",
    )
    return out, variables


def from_cli(src: str, arch: str | None, config: str | None):
    """``vjax convert --from=vit --src=ViT.npz --config=configs/x.py:arg [--arch=average]``
    (``arch``: the inflation, ``central`` by default)."""
    if config is None:
        raise ConversionError(
            "--config=CONFIG.py[:arg] (the video model to initialise) is required"
        )
    from vjax.config_utils import load_config

    return from_vit_npz(src, load_config(config), inflation=arch or "central")
