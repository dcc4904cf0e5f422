"""Optax optimiser from the config: AdamW or SGD+momentum, warmup + cosine, clipping, decay mask,
layer-wise learning-rate decay, frozen parameters."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import jax
import optax
from flax.core import meta

# A warmup as long as the run or longer (a short first run of a long recipe) is clipped to
# this fraction of the run.
CLIPPED_WARMUP_FRACTION = 0.1


def warmup_steps(opt: Mapping[str, Any], num_steps: int) -> int:
    """``optimizer.warmup_steps``, or :data:`CLIPPED_WARMUP_FRACTION` of the run when it is
    not shorter than the run (``train.num_steps``); the trainer prints a note when clipped."""
    warmup = int(opt["warmup_steps"])
    return warmup if warmup < num_steps else int(num_steps * CLIPPED_WARMUP_FRACTION)


def check_optimizer(opt: Mapping[str, Any]) -> None:
    """Raises a ValueError naming a setting out of its range: a negative rate, decay or clip
    norm (0: no clipping; below 0 optax's clipping turns each update around, ascending the
    loss), a momentum or Adam beta outside [0, 1), label smoothing outside [0, 1)."""
    for key in ("lr", "end_lr", "weight_decay", "warmup_steps", "grad_clip_norm"):
        if key not in opt:
            raise ValueError(f"optimizer.{key} is missing (the recipes in configs/ set it)")
        if _number(opt, key) < 0:
            raise ValueError(f"optimizer.{key} must be >= 0, got {opt[key]!r}")
    for key in ("b1", "b2", "momentum", "label_smoothing"):
        if key in opt and not 0 <= _number(opt, key) < 1:
            raise ValueError(f"optimizer.{key} must be in [0, 1), got {opt[key]!r}")
    try:
        re.compile(opt.get("freeze", ""))
    except (re.error, TypeError) as e:
        raise ValueError(
            f"optimizer.freeze={opt['freeze']!r} is not a regular expression: {e}"
        ) from None


def _number(opt: Mapping[str, Any], key: str) -> float:
    """``opt[key]`` as a finite float; a string, NaN or infinity is a ValueError naming it (they
    passed the range checks and failed in optax's first update, or trained to NaN)."""
    value = opt[key]
    try:  # a Python, NumPy or JAX scalar; not text, a bool or None
        number = float(value) if not isinstance(value, str | bool) else None
    except (TypeError, ValueError):
        number = None
    if number is None:
        raise ValueError(f"optimizer.{key} must be a number, got {value!r}")
    if not math.isfinite(number):
        raise ValueError(f"optimizer.{key} must be finite, got {value!r}")
    return number


def learning_rate_schedule(opt: Mapping[str, Any], num_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to ``lr`` over :func:`warmup_steps`, then cosine decay to
    ``end_lr``."""
    warmup = warmup_steps(opt, num_steps)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=float(opt["lr"]),
        warmup_steps=warmup,
        decay_steps=num_steps,
        end_value=float(opt["end_lr"]),
    )


def is_weight(path: tuple) -> bool:
    """Whether the parameter at ``path`` is a weight a layer multiplies its input by (a dense
    matrix, a conv kernel, an attention projection): flax names these ``kernel`` and vjax's
    own layers ``<role>_kernel`` (``query_kernel``, ``out_kernel``). Biases, norm scales,
    position tables and class/mask tokens are not weights. ``path`` is a tree path; the last
    dictionary key names the parameter (a logical-axis box adds an attribute key after it)."""
    keys = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
    name = str(keys[-1]) if keys else ""
    return name == "kernel" or name.endswith("_kernel")


def decay_mask(params: Any) -> Any:
    """True where weight decay applies: the weights (:func:`is_weight`), nothing else.

    ``tests/test_decay_mask.py`` checks on every model family that these are exactly the
    parameters that enter a matrix product or convolution. BatchNorm statistics live outside
    ``params`` and never reach the optimiser.
    """
    return jax.tree_util.tree_map_with_path(lambda path, _: is_weight(path), params)


# Parameters at the bottom of a ViT-style encoder (layer 0 for layer-wise decay).
_INPUT_PARAMS = ("embedding", "cls", "pos_embedding", "time_embedding", "mask_token")
_BLOCK = re.compile(r"^block(\d+)$")


def _keys(path) -> list[str]:
    return [str(p.key) for p in path if hasattr(p, "key")]


def parameter_name(path) -> str:
    """A parameter's tree path as ``optimizer.freeze`` matches it: its dictionary keys joined
    by ``/`` (``encoder/block00/attention/query_kernel``, ``classifier/head/bias``)."""
    return "/".join(_keys(path))


# optimizer.freeze that trains the classifier head alone (a linear probe through the training
# loop; the first stage of LP-FT): every model names its linear head(s) classifier/. A
# recurrent model's LSTM (its "head") is frozen with the rest: "^backbone_model/" trains the
# LSTM and the classifier on a frozen backbone instead.
HEAD_ONLY = "^(?!classifier/)"


def _boxed(x: Any) -> bool:
    """A logical-axis box: one parameter (its state goes with it)."""
    return isinstance(x, meta.AxisMetadata)


def frozen_mask(params: Any, pattern: str) -> Any:
    """True where ``optimizer.freeze`` (a regular expression, searched in each
    :func:`parameter_name`) matches: those parameters are not trained. Matching none or all of
    them is a ConfigError, as a misspelt pattern would freeze nothing (or everything)."""
    from vjax.config_utils import ConfigError  # ml_collections: not on the GPU image's path

    regex = re.compile(pattern)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params, is_leaf=_boxed)
    names = [parameter_name(path) for path, _ in leaves]
    frozen = [bool(regex.search(name)) for name in names]
    if not any(frozen) or all(frozen):
        what = "no parameter" if not any(frozen) else "every parameter (nothing would train)"
        raise ConfigError(
            f"optimizer.freeze={pattern!r} matches {what} of this model; its parameters are "
            f"named like {names[0]!r} ... {names[-1]!r}"
        )
    return jax.tree_util.tree_unflatten(treedef, frozen)


def frozen_summary(params: Any, pattern: str) -> str:
    """One start-up line: how many parameters ``optimizer.freeze`` freezes and trains."""
    mask = jax.tree.leaves(frozen_mask(params, pattern))
    sizes = [
        sum(x.size for x in jax.tree.leaves(p)) for p in jax.tree.leaves(params, is_leaf=_boxed)
    ]
    frozen = sum(size for size, m in zip(sizes, mask, strict=True) if m)
    return (
        f"optimizer.freeze={pattern!r}: {frozen:,} parameters frozen ({sum(mask)} tensors), "
        f"{sum(sizes) - frozen:,} trained ({len(mask) - sum(mask)} tensors)"
    )


def stop_frozen_gradients(params: Any, pattern: str) -> Any:
    """``params`` with :func:`jax.lax.stop_gradient` on those :func:`frozen_mask` freezes
    (``pattern`` empty: unchanged): their gradients are zeros, so the logged gradient norm is
    the trained parameters', no weight gradient of a frozen layer is computed, and nothing of
    the backward pass below the lowest trained parameter (all of it below a trained head)."""
    if not pattern:
        return params
    mask = frozen_mask(params, pattern)
    return jax.tree.map(lambda p, m: jax.lax.stop_gradient(p) if m else p, params, mask)


def _layer(path) -> int | None:
    """Layer of a parameter: 0 for the input embeddings, ``i + 1`` for ``encoder/block<i>``,
    None for what sits above the encoder (final norms, the head)."""
    keys = _keys(path)
    if keys and keys[0] in _INPUT_PARAMS:
        return 0
    if len(keys) > 1 and keys[0] == "encoder" and _BLOCK.match(keys[1]):
        return int(_BLOCK.match(keys[1])[1]) + 1
    return None


def layer_decay_scales(params: Any, decay: float) -> Any:
    """Per-parameter learning-rate factors of layer-wise decay (BEiT, VideoMAE): with ``L``
    blocks ``encoder/block<i>``, block ``i`` gets ``decay ** (L - i)``, the embeddings
    ``decay ** (L + 1)`` and everything above the encoder (final norms, head) 1. Parameters
    that ``optimizer.freeze`` hides from the optimiser (optax's ``MaskedNode``) still count
    in ``L``: freezing some blocks leaves the others' factors as they were."""
    masked = lambda x: isinstance(x, optax.MaskedNode)  # noqa: E731
    leaves = jax.tree_util.tree_flatten_with_path(params, is_leaf=masked)[0]
    depth = max((layer for path, _ in leaves if (layer := _layer(path))), default=0)
    if not depth:
        raise ValueError(
            "optimizer.layer_decay needs a transformer whose blocks are named encoder/block<i> "
            "(ViT, VideoMAE); set optimizer.layer_decay=1.0 for this model"
        )

    def scale(path, x) -> Any:
        if masked(x):
            return x
        layer = _layer(path)
        return 1.0 if layer is None else float(decay ** (depth + 1 - layer))

    return jax.tree_util.tree_map_with_path(scale, params, is_leaf=masked)


def scale_by_layer_decay(decay: float) -> optax.GradientTransformation:
    """Multiplies each parameter's update by its :func:`layer_decay_scales` factor: after
    AdamW that is the learning rate scaled per layer (weight decay included, as torch's
    per-group ``lr_scale``)."""

    def update(updates, state, params=None):
        del params
        scales = layer_decay_scales(updates, decay)
        return jax.tree.map(lambda u, s: u * s, updates, scales), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(opt: Mapping[str, Any], num_steps: int) -> optax.GradientTransformation:
    """The optimiser the config names; gradient clipping by global norm comes first;
    ``optimizer.freeze`` leaves the parameters it matches out (:func:`frozen_mask`). A setting
    out of its range is a ValueError (:func:`check_optimizer`).

    >>> tx = make_optimizer(config.optimizer, config.train.num_steps)
    """
    check_optimizer(opt)
    schedule = learning_rate_schedule(opt, num_steps)
    name = opt["name"]
    if name == "adamw":
        core = optax.adamw(
            schedule, b1=opt["b1"], b2=opt["b2"], weight_decay=opt["weight_decay"], mask=decay_mask
        )
    elif name == "sgd":
        core = optax.chain(
            optax.add_decayed_weights(opt["weight_decay"], mask=decay_mask),
            optax.sgd(schedule, momentum=opt["momentum"], nesterov=opt["nesterov"]),
        )
    else:
        raise ValueError(f"unknown optimizer.name {name!r}; valid: adamw, sgd")
    layer_decay = float(opt.get("layer_decay", 1.0))
    if not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"optimizer.layer_decay must be in (0, 1] (1.0: off), got {layer_decay}")
    if layer_decay != 1.0:
        core = optax.chain(core, scale_by_layer_decay(layer_decay))
    clip = opt["grad_clip_norm"]
    tx = optax.chain(optax.clip_by_global_norm(clip), core) if clip else core
    pattern = opt.get("freeze", "")
    if not pattern:
        return tx
    # Frozen parameters get no update, no weight decay, no optimiser state, and no part in
    # the clipping norm: the optimiser sees only the trained ones.
    labels = lambda params: jax.tree.map(  # noqa: E731
        lambda frozen: "frozen" if frozen else "trained", frozen_mask(params, pattern)
    )  # one label per parameter, boxed or not: a box's state is dropped with it
    return optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, labels)
