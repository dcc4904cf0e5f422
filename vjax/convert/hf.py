"""Hugging Face transformers video transformers -> vjax: ``VivitForVideoClassification`` /
``VivitModel``, ``TimesformerForVideoClassification`` / ``TimesformerModel`` and
``VideoMAEForVideoClassification`` / ``VideoMAEModel`` (``VideoMAEForPreTraining``'s encoder
too), for any config of those classes.

The vjax model is read off the HF config: widths, depth, heads, tubelet/patch and image sizes,
frames, ``hidden_act``, ``layer_norm_eps``, the q/k/v bias layout (for VideoMAE, a learned
key bias in the checkpoint, as some transformers 5 releases save, makes it ``qkv``), TimeSformer's
``attention_type`` and VideoMAE's ``use_mean_pooling``. Both the transformers 5 parameter
names (``layers.N.attention.q_proj``, ``mlp.fc1``) and the 4.x names the Hub checkpoints use
(``encoder.layer.N.attention.attention.query``, ``intermediate.dense``, VideoMAE's ``q_bias``)
are read. Where HF adds a learned position row to its class token, that row is folded into
vjax's ``cls`` (both are added before any layer, so the sum is what the network sees).

TimeSformer's ``space_only`` classifier in HF returns one row of logits per frame,
``(batch * frames, classes)``; the vjax model returns their average over frames.

A base model (no ``classifier.*``) converts into the same vjax model with a zero classifier
of ``num_labels`` classes (and, for VideoMAE's mean pooling, an identity ``fc_norm``); its
encoder output equals HF's ``last_hidden_state``. ViViT's ``pooler`` (dense + tanh, which
the classifier never uses) and VideoMAE pre-training's decoder have no vjax counterpart and
are dropped; ``config.source`` says so.

``from_hf(..., pretraining=True)`` (the convert command's default for a
``VideoMAEForPreTraining`` folder) keeps the decoder instead: the result is vjax's
``videomae_pretraining`` model (any decoder depth and width, tubelet, patch, ``norm_pix_loss``),
whose loss and predicted pixels for a given mask equal Hugging Face's. ``--arch=VideoMAEModel``
(or ``VideoMAEForVideoClassification``) converts the same folder's encoder to a classifier.

>>> model = transformers.VivitForVideoClassification.from_pretrained("google/vivit-b-16x2")
>>> config, variables = from_hf(model.state_dict(), model.config)
>>> logits = build_model(config.model, len(config.class_names)).apply(
...     variables, video, train=False)     # video: (B, T, H, W, C); HF's is (B, T, C, H, W)

Command: ``vjax convert --from=hf --src=MODEL_DIR --out=weights/vivit`` (``MODEL_DIR`` holds
``config.json`` and ``model.safetensors`` / ``pytorch_model.bin``, as ``save_pretrained``
writes it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from flax import traverse_util

from vjax.convert.common import IMAGENET_MEAN, IMAGENET_STD, ConversionError, pretrained_config
from vjax.convert.torchvision import TorchWeights, expected_variables, load_state_dict
from vjax.errors import NotFoundError
from vjax.models.layers import ACTIVATIONS

MODEL_TYPES = ("vivit", "timesformer", "videomae")
ARCHITECTURES = {
    "VivitForVideoClassification": "vivit",
    "VivitModel": "vivit",
    "TimesformerForVideoClassification": "timesformer",
    "TimesformerModel": "timesformer",
    "VideoMAEForVideoClassification": "videomae",
    "VideoMAEModel": "videomae",
    "VideoMAEForPreTraining": "videomae",
}
# Checkpoint parts with no vjax counterpart (see the module docstring).
_DROPPED = {
    "vivit": ("pooler.",),
    "timesformer": (),
    "videomae": ("decoder.", "encoder_to_decoder.", "mask_token"),
}
# Normalisation of each family's HF image processor.
_NORMALISATION = {
    "vivit": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "timesformer": ((0.45, 0.45, 0.45), (0.225, 0.225, 0.225)),
    "videomae": (IMAGENET_MEAN, IMAGENET_STD),
}
# Each logical part of an encoder layer: its HF names (transformers 5 first, then 4.x).
_LAYER_PARTS = {
    "query": ("attention.q_proj", "attention.attention.query"),
    "key": ("attention.k_proj", "attention.attention.key"),
    "value": ("attention.v_proj", "attention.attention.value"),
    "out": ("attention.o_proj", "attention.output.dense"),
    "fc1": ("mlp.fc1", "intermediate.dense"),
    "fc2": ("mlp.fc2", "output.dense"),
}
_LAYER_PREFIXES = ("layers.{i}.", "encoder.layer.{i}.")
_DECODER_PREFIXES = ("decoder.decoder_layers.{i}.", "decoder.layers.{i}.")
_PRETRAINING = "VideoMAEForPreTraining"


def hf_config_dict(hf_config: Any) -> dict[str, Any]:
    """A complete HF config as a dict, from a transformers config object, a dict (missing
    keys take the transformers defaults when transformers is installed), a ``config.json``
    path or a model folder."""
    if isinstance(hf_config, str | os.PathLike):
        path = str(hf_config)
        path = os.path.join(path, "config.json") if os.path.isdir(path) else path
        if not os.path.isfile(path):
            raise NotFoundError(f"HF config {path} does not exist")
        with open(path) as f:
            hf_config = json.load(f)
    if hasattr(hf_config, "to_dict"):
        return hf_config.to_dict()
    if not isinstance(hf_config, Mapping):
        raise ConversionError(
            f"hf_config must be a transformers config or a dict, not {hf_config!r}"
        )
    config = dict(hf_config)
    model_type = config.get("model_type")
    if model_type not in MODEL_TYPES:
        raise ConversionError(
            f"unsupported HF model_type {model_type!r}; supported: {', '.join(MODEL_TYPES)}"
        )
    try:
        from transformers import AutoConfig
    except ImportError:
        return config
    fields = {k: v for k, v in config.items() if k not in ("model_type", "transformers_version")}
    return AutoConfig.for_model(model_type, **fields).to_dict()


def _get(config: Mapping[str, Any], key: str, *alternatives: str) -> Any:
    for name in (key, *alternatives):
        if name in config:
            return config[name]
    raise ConversionError(f"the HF config has no {key!r} (model_type {config.get('model_type')})")


def _pair(value: Any, what: str) -> tuple[int, int]:
    pair = (int(value), int(value)) if np.ndim(value) == 0 else tuple(int(v) for v in value)
    if len(pair) != 2:
        raise ConversionError(f"HF {what} must be an int or (height, width), got {value!r}")
    return pair


def vjax_model_config(
    config: Mapping[str, Any], pretraining: bool = False
) -> tuple[dict[str, Any], tuple[int, ...]]:
    """The vjax model section and training clip ``(T, H, W, C)`` of an HF config dict
    (``pretraining``: VideoMAE's masked autoencoder, decoder included).

    Raises ConversionError naming an HF option vjax cannot reproduce (a non-square patch, an
    activation vjax lacks, an unknown attention type).
    """
    model_type = config.get("model_type")
    activation = _get(config, "hidden_act")
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise ConversionError(
            f"HF hidden_act={activation!r} has no vjax equivalent; vjax supports "
            f"{', '.join(ACTIVATIONS)}"
        )
    image = _pair(_get(config, "image_size"), "image_size")
    if model_type == "vivit":
        tubelet = tuple(int(v) for v in _get(config, "tubelet_size"))
        biased = bool(_get(config, "qkv_bias"))
        model = {"name": "vivit", "variant": "spacetime", "pooling": "cls"}
    elif model_type == "timesformer":
        tubelet = (1, *_pair(_get(config, "patch_size"), "patch_size"))
        biased = bool(_get(config, "qkv_bias"))
        model = {"name": "timesformer", "attention_type": _get(config, "attention_type")}
    elif model_type == "videomae":
        tubelet = (int(_get(config, "tubelet_size")), *_pair(_get(config, "patch_size"), "patch"))
        biased = bool(_get(config, "qv_bias", "qkv_bias"))
        mean = bool(_get(config, "use_mean_pooling"))
        # HF's fc_norm is nn.LayerNorm(hidden_size): torch's default epsilon.
        model = {"name": "videomae", "pooling": "mean" if mean else "first", "fc_norm_eps": 1e-5}
        if pretraining:
            model = _pretraining_model(config, encoder_norm=not mean)
    else:
        raise ConversionError(
            f"unsupported HF model_type {model_type!r}; supported: {', '.join(MODEL_TYPES)}"
        )
    if pretraining and model_type != "videomae":
        raise ConversionError(f"HF {model_type} has no pre-training model in vjax (VideoMAE has)")
    if tubelet[1] != tubelet[2]:
        raise ConversionError(
            f"HF {model_type} patch {tubelet[1]}x{tubelet[2]} is not square; vjax's tubelets "
            f"are (time, patch, patch)"
        )
    bias_layout = {"vivit": "qkv", "timesformer": "qkv", "videomae": "qv"}[model_type]
    model.update(
        size=f"B/{tubelet[1]}x{tubelet[0]}",
        hidden_size=int(_get(config, "hidden_size")),
        num_layers=int(_get(config, "num_hidden_layers")),
        num_heads=int(_get(config, "num_attention_heads")),
        mlp_dim=int(_get(config, "intermediate_size")),
        layer_norm_eps=float(_get(config, "layer_norm_eps")),
        activation=activation,
        qkv_bias=bias_layout if biased else "",
    )
    clip = (int(_get(config, "num_frames")), *image, int(_get(config, "num_channels")))
    return model, clip


def _pretraining_model(config: Mapping[str, Any], encoder_norm: bool) -> dict[str, Any]:
    """The decoder and target fields of ``videomae_pretraining`` from a VideoMAE config."""
    return {
        "name": "videomae_pretraining",
        "encoder_norm": encoder_norm,
        "decoder_hidden_size": int(_get(config, "decoder_hidden_size")),
        "decoder_num_layers": int(_get(config, "decoder_num_hidden_layers")),
        "decoder_num_heads": int(_get(config, "decoder_num_attention_heads")),
        "decoder_mlp_dim": int(_get(config, "decoder_intermediate_size")),
        "decoder_norm_eps": 1e-5,  # HF's decoder norm is nn.LayerNorm(width): torch's default
        "norm_pix_loss": bool(_get(config, "norm_pix_loss")),
    }


class _Reader:
    """HF tensors moved into a vjax parameter tree, each shape checked against the model's
    own (``expected``: flat ``{"a/b/c": shape}``) before any reshape, so a wrong checkpoint
    names the HF key, the vjax parameter and both shapes."""

    def __init__(self, weights: TorchWeights, expected: Mapping[str, Any]):
        self.w, self.expected = weights, expected

    def take(self, key: str, dst: str, hf_shape: tuple[int, ...]) -> np.ndarray:
        return self.check(self.w.take(key, dst), key, dst, hf_shape)

    def check(self, value: np.ndarray, key: str, dst: str, hf_shape: tuple[int, ...]):
        if tuple(value.shape) != tuple(hf_shape):
            raise ConversionError(
                f"{key} (for {dst}): source has shape {tuple(value.shape)}, model expects "
                f"{tuple(hf_shape)} (vjax {dst}: {self.expected.get(dst, 'not in the model')})"
            )
        return value

    def put(self, dst: str, value: np.ndarray) -> None:
        self.w.params[dst] = np.asarray(value, np.float32)

    def copy(self, key: str, dst: str) -> None:
        self.put(dst, self.take(key, dst, tuple(self.expected[dst])))

    def dense(self, src: str, dst: str) -> None:
        """torch Linear ``(out, in)`` -> flax Dense ``(in, out)``."""
        d_in, d_out = self.expected[f"{dst}/kernel"]
        self.put(f"{dst}/kernel", self.take(f"{src}.weight", f"{dst}/kernel", (d_out, d_in)).T)
        self.copy(f"{src}.bias", f"{dst}/bias")

    def norm(self, src: str, dst: str) -> None:
        self.copy(f"{src}.weight", f"{dst}/scale")
        self.copy(f"{src}.bias", f"{dst}/bias")

    def projection(self, weight: np.ndarray, bias: np.ndarray | None, dst: str, name: str):
        """A q/k/v Linear ``(heads*kv, embed)`` -> ``(embed, heads, kv)`` (+ ``(heads, kv)``)."""
        embed, heads, kv = self.expected[f"{dst}/{name}_kernel"]
        self.put(f"{dst}/{name}_kernel", weight.T.reshape(embed, heads, kv))
        if bias is not None:
            self.put(f"{dst}/{name}_bias", bias.reshape(heads, kv))
        elif f"{dst}/{name}_bias" in self.expected:
            raise ConversionError(f"{dst}/{name}_bias: missing from the checkpoint")

    def out(self, src: str, dst: str) -> None:
        heads, kv, embed = self.expected[f"{dst}/out_kernel"]
        kernel = self.take(f"{src}.weight", f"{dst}/out_kernel", (embed, heads * kv))
        self.put(f"{dst}/out_kernel", kernel.T.reshape(heads, kv, embed))
        self.copy(f"{src}.bias", f"{dst}/out_bias")

    def conv(self, src: str, dst: str) -> None:
        """Conv3d ``(out, in, t, h, w)`` or Conv2d ``(out, in, h, w)`` -> ``(t, h, w, in, out)``."""
        t, h, w, c, d = self.expected[f"{dst}/kernel"]
        kernel = self.w.take(f"{src}.weight", f"{dst}/kernel")
        if kernel.ndim == 4 and t == 1:
            kernel = kernel[:, :, None]
        kernel = self.check(kernel, f"{src}.weight", f"{dst}/kernel", (d, c, t, h, w))
        self.put(f"{dst}/kernel", kernel.transpose(2, 3, 4, 1, 0))
        self.copy(f"{src}.bias", f"{dst}/bias")

    def pick(self, prefix: str, names: tuple[str, ...]) -> str:
        """The first of ``prefix + name`` the checkpoint holds (for 4.x/5.x naming)."""
        for name in names:
            if self.w.has(f"{prefix}{name}.weight"):
                return f"{prefix}{name}"
        raise ConversionError(
            f"{prefix}{names[0]}.weight: missing from the checkpoint (nor {names[1:]})"
        )


def _attention(r: _Reader, layer: str, src: str | None, dst: str, fused: str | None = None):
    """One attention layer: separate q/k/v Linears under ``layer`` (ViViT, VideoMAE) or
    TimeSformer's fused ``qkv`` Linear ``fused`` (rows: q, k, v), then the output dense."""
    embed, heads, kv = r.expected[f"{dst}/query_kernel"]
    width = heads * kv
    if fused is not None:
        weight = r.take(f"{fused}.qkv.weight", f"{dst}/query_kernel", (3 * width, embed))
        bias = (
            r.take(f"{fused}.qkv.bias", f"{dst}/query_bias", (3 * width,))
            if r.w.has(f"{fused}.qkv.bias")
            else None
        )
        for i, name in enumerate(("query", "key", "value")):
            part = None if bias is None else bias[i * width : (i + 1) * width]
            r.projection(weight[i * width : (i + 1) * width], part, dst, name)
        r.out(f"{src}.output.dense", dst)
        return
    for name in ("query", "key", "value"):
        proj = r.pick(layer, _LAYER_PARTS[name])
        weight = r.take(f"{proj}.weight", f"{dst}/{name}_kernel", (width, embed))
        # VideoMAE 4.x checkpoints keep the q/v biases beside a bias-free Linear.
        legacy = f"{layer}attention.attention.{name[0]}_bias"
        bias_key = f"{proj}.bias" if r.w.has(f"{proj}.bias") else legacy
        bias = r.take(bias_key, f"{dst}/{name}_bias", (width,)) if r.w.has(bias_key) else None
        r.projection(weight, bias, dst, name)
    r.out(r.pick(layer, _LAYER_PARTS["out"]), dst)


def _key_biased_layout(state_dict: Mapping[str, Any], layout: str) -> str:
    """The q/k/v bias layout of a VideoMAE checkpoint: ``layout`` (from its config), unless its
    key projection has a learned bias (as some transformers 5 releases save): then the
    projections of layer 0 that hold one, e.g. ``"qkv"``."""

    def biased(name: str) -> bool:
        parts = _LAYER_PARTS[name]
        return any(
            f"{prefix.format(i=0)}{part}.bias" in state_dict
            or f"{prefix.format(i=0)}attention.attention.{name[0]}_bias" in state_dict
            for prefix in _LAYER_PREFIXES
            for part in parts
        )

    if not biased("key"):
        return layout
    return "".join(name[0] for name in ("query", "key", "value") if biased(name))


def _layer_prefix(r: _Reader, i: int, prefixes: tuple[str, ...] = _LAYER_PREFIXES) -> str:
    for prefix in prefixes:
        prefix = prefix.format(i=i)
        if any(k.startswith(prefix) for k in r.w.tensors):
            return prefix
    raise ConversionError(
        f"{prefixes[0].format(i=i)}*: encoder layer {i} is missing from the checkpoint"
    )


def _encoder(
    r: _Reader,
    model_type: str,
    num_layers: int,
    attention_type: str | None,
    prefixes: tuple[str, ...] = _LAYER_PREFIXES,
    root: str = "encoder",
) -> None:
    for i in range(num_layers):
        src, dst = _layer_prefix(r, i, prefixes), f"{root}/block{i:02d}"
        r.norm(f"{src}layernorm_before", f"{dst}/norm1")
        r.norm(f"{src}layernorm_after", f"{dst}/norm2")
        r.dense(r.pick(src, _LAYER_PARTS["fc1"]), f"{dst}/mlp/fc1")
        r.dense(r.pick(src, _LAYER_PARTS["fc2"]), f"{dst}/mlp/fc2")
        if model_type == "timesformer":
            _attention(r, src, f"{src}attention", f"{dst}/attention", f"{src}attention.attention")
            if attention_type == "divided_space_time":
                t_src = f"{src}temporal_attention"
                _attention(r, src, t_src, f"{dst}/attention_time", f"{t_src}.attention")
                r.norm(f"{src}temporal_layernorm", f"{dst}/norm_time")
                r.dense(f"{src}temporal_dense", f"{dst}/time_dense")
        else:
            _attention(r, src, None, f"{dst}/attention")


def _decoder(r: _Reader, model: Mapping[str, Any]) -> None:
    """VideoMAE pre-training's decoder: projection, mask token, blocks, norm and pixel head."""
    encoder_width, width = r.expected["encoder_to_decoder/kernel"]
    kernel = r.take(
        "encoder_to_decoder.weight", "encoder_to_decoder/kernel", (width, encoder_width)
    )
    r.put("encoder_to_decoder/kernel", kernel.T)
    r.copy("mask_token", "mask_token")
    _encoder(r, "videomae", model["decoder_num_layers"], None, _DECODER_PREFIXES, "decoder")
    r.norm("decoder.norm", "decoder_norm")
    r.dense("decoder.head", "decoder_head")


def _embeddings(r: _Reader, model_type: str) -> None:
    r.conv("embeddings.patch_embeddings.projection", "embedding/conv")
    if model_type == "videomae":
        return  # a fixed sinusoidal table, computed by the model
    table = r.take(
        "embeddings.position_embeddings",
        "pos_embedding",
        (1, r.expected["pos_embedding"][1] + 1, r.expected["pos_embedding"][2]),
    )
    cls = r.take("embeddings.cls_token", "cls", tuple(r.expected["cls"]))
    r.put("cls", cls + table[:, :1])
    r.put("pos_embedding", table[:, 1:])
    if "time_embedding" in r.expected:
        r.copy("embeddings.time_embeddings", "time_embedding")


def _strip_prefix(state_dict: Mapping[str, Any], model_type: str) -> dict[str, Any]:
    """Drops the ``vivit.``/``timesformer.``/``videomae.`` prefix a task model puts on its
    backbone (the classifier and VideoMAE's fc_norm sit outside it)."""
    prefix = f"{model_type}."
    if not any(k.startswith(prefix) for k in state_dict):
        return dict(state_dict)
    return {k.removeprefix(prefix): v for k, v in state_dict.items()}


def _class_names(config: Mapping[str, Any], num_classes: int) -> list[str]:
    labels = {int(k): v for k, v in (config.get("id2label") or {}).items()}
    if sorted(labels) == list(range(num_classes)):
        return [str(labels[i]) for i in range(num_classes)]
    return [f"class_{i}" for i in range(num_classes)]


def from_hf(path_or_state_dict: Any, hf_config: Any = None, *, pretraining: bool = False):
    """``(config, variables)`` for an HF ViViT / TimeSformer / VideoMAE checkpoint
    (``pretraining``: a ``VideoMAEForPreTraining`` one as vjax's ``videomae_pretraining``).

    ``path_or_state_dict``: a state dict (torch tensors or NumPy arrays), a ``.safetensors``
    or ``pytorch_model.bin`` file, or a model folder (``config.json`` + weights, which then
    also gives the config). ``hf_config``: a transformers config object, a dict, or a path;
    None reads the folder's ``config.json``. A missing or left-over key or a wrong shape
    raises ConversionError naming the parameter and both shapes.

    >>> hf = transformers.TimesformerForVideoClassification(transformers.TimesformerConfig())
    >>> config, variables = from_hf(hf.state_dict(), hf.config)
    """
    model, clip, variables, config, num_classes, notes = hf_variables(
        path_or_state_dict, hf_config, pretraining=pretraining
    )
    mean, std = _NORMALISATION[config["model_type"]]
    channels = clip[-1]
    name = config.get("_name_or_path") or config["model_type"]
    return pretrained_config(
        model,
        clip,
        _class_names(config, num_classes),
        mean=mean if channels == 3 else (mean[0],) * channels,
        std=std if channels == 3 else (std[0],) * channels,
        source=f"hf {name}" + (f" ({'; '.join(notes)})" if notes else ""),
    ), variables


def hf_variables(path_or_state_dict: Any, hf_config: Any = None, *, pretraining: bool = False):
    """What :func:`from_hf` converts, before it is wrapped in a config (no ml_collections
    needed): ``(model section, clip, variables, HF config dict, classes, notes)``."""
    source = path_or_state_dict
    if isinstance(source, str | os.PathLike) and os.path.isdir(source):
        hf_config = source if hf_config is None else hf_config
        source = read_weights(str(source))
    if hf_config is None:
        raise ConversionError("hf_config is required unless the source is a model folder")
    config = hf_config_dict(hf_config)
    model_type = config.get("model_type")
    model, clip = vjax_model_config(config, pretraining)
    state_dict = load_state_dict(str(source)) if isinstance(source, str | os.PathLike) else source
    state_dict = _strip_prefix(state_dict, model_type)
    if model_type == "videomae":
        model["qkv_bias"] = _key_biased_layout(state_dict, model["qkv_bias"])
    drop = () if pretraining else _DROPPED[model_type]
    dropped = sorted(k for k in state_dict if k.startswith(drop)) if drop else []
    weights = TorchWeights(state_dict)
    weights.used.update(dropped)
    has_head = weights.has("classifier.weight")
    num_classes = (
        int(np.shape(state_dict["classifier.weight"])[0])
        if has_head
        else len(config.get("id2label") or {}) or 2
    )
    expected = expected_variables(model, num_classes, clip)
    flat = {k: v.shape for k, v in traverse_util.flatten_dict(expected["params"], sep="/").items()}
    reader = _Reader(weights, flat)
    _embeddings(reader, model_type)
    _encoder(reader, model_type, model["num_layers"], model.get("attention_type"))
    if "encoder/encoder_norm/scale" in flat:
        reader.norm("layernorm", "encoder/encoder_norm")
    parts = [p for p in _DROPPED[model_type] if any(k.startswith(p) for k in dropped)]
    notes = [f"dropped {len(dropped)} tensors: {', '.join(p + '*' for p in parts)}"]
    notes = notes if dropped else []
    if pretraining:
        _decoder(reader, model)
        num_classes = 0  # no classes: a pre-training model
    elif has_head:
        reader.dense("classifier", "classifier/head")
        if "fc_norm/scale" in flat:
            reader.norm("fc_norm", "fc_norm")
    else:
        reader.put("classifier/head/kernel", np.zeros(flat["classifier/head/kernel"]))
        reader.put("classifier/head/bias", np.zeros(flat["classifier/head/bias"]))
        notes.append("base model: zero classifier")
        if "fc_norm/scale" in flat:
            reader.put("fc_norm/scale", np.ones(flat["fc_norm/scale"]))
            reader.put("fc_norm/bias", np.zeros(flat["fc_norm/bias"]))
            notes.append("identity fc_norm")
    weights.params = traverse_util.unflatten_dict(weights.params, sep="/")
    return model, clip, weights.finish(expected), config, num_classes, notes


def read_weights(folder: str) -> dict[str, Any]:
    """The state dict of an HF model folder: ``model.safetensors`` or ``pytorch_model.bin``,
    or the shards a ``*.index.json`` lists (``save_pretrained`` of a large model)."""
    for name in ("model.safetensors", "pytorch_model.bin"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return load_state_dict(path)
        if os.path.isfile(f"{path}.index.json"):
            with open(f"{path}.index.json") as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
            state: dict[str, Any] = {}
            for shard in shards:
                state.update(load_state_dict(os.path.join(folder, shard)))
            return state
    raise NotFoundError(
        f"{folder} holds no model.safetensors or pytorch_model.bin (nor a sharded *.index.json)"
    )


def from_cli(src: str, arch: str | None, config: str | None):
    """``vjax convert --from=hf --src=MODEL_DIR [--arch=VivitForVideoClassification]
    [--config=config.json]``: ``arch``, when given, must be the folder's architecture."""
    if not os.path.isdir(src) and config is None:
        raise ConversionError(f"--src={src} must be an HF model folder, or pass --config")
    hf_config = hf_config_dict(config if config is not None else src)
    listed = hf_config.get("architectures") or []
    if arch is not None:
        if arch not in ARCHITECTURES:
            raise ConversionError(f"unknown HF arch {arch!r}; valid: {', '.join(ARCHITECTURES)}")
        # A pre-training folder also converts to its encoder (VideoMAEModel or a classifier).
        encoder_of = _PRETRAINING in listed and ARCHITECTURES[arch] == "videomae"
        mismatch = listed and arch not in listed and not encoder_of
        if ARCHITECTURES[arch] != hf_config.get("model_type") or mismatch:
            raise ConversionError(
                f"--arch={arch} but the checkpoint is a {listed or hf_config.get('model_type')}"
            )
    pretraining = _PRETRAINING in listed if arch is None else arch == _PRETRAINING
    return from_hf(src, hf_config, pretraining=pretraining)
