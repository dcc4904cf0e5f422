"""Where a video transformer looks: every attention layer's probabilities, and attention
rollout (Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020) over space
and time, rendered over the frames.

The attention layers sow their probabilities into the ``"attention"`` collection when it is
mutable (:func:`attention_maps`); training and inference never form them. Rollout multiplies
the layers' head-averaged attention, each mixed with the identity for the residual path, so
``R[i, j]`` is how much output token ``i`` draws on input token ``j``; the model's output is
the class token's row (cls pooling) or the mean of all rows (average pooling).

>>> relevance = spacetime_rollout(model, variables, video)  # (B, t, h, w) per tubelet, sums to 1
>>> over_time = temporal_rollout(model, variables, video)   # (B, t) for factorised models
>>> frames = overlay(clip_uint8, relevance[0], model.tubelet)  # the heat map over the frames
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def attention_maps(model: Any, variables: Any, video: Any) -> dict[str, tuple[Any, ...]]:
    """Every attention layer's probabilities for ``video`` (normalised, as ``model.apply``
    takes it), keyed by the layer's path (``"encoder/block00/attention"``), sorted by path,
    not in call order (a factorised block's ``attention_time`` runs before its
    ``attention_space``; roll out in the model's order); each a tuple over the layer's head
    groups of float32 ``(batch, *other grid axes, heads, L, L)``
    (:func:`vjax.models.attention.attention_weights`)."""
    import jax
    from flax.traverse_util import flatten_dict

    variables = {k: v for k, v in variables.items() if k != "attention"}
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False, mutable=["attention"]))
    _, state = apply(variables, video)
    flat = flatten_dict(dict(state["attention"]), sep="/")
    return {path.removesuffix("/weights"): value for path, value in flat.items()}


def rollout(layers: Sequence[Any], residual: float = 0.5) -> np.ndarray:
    """``(batch, L, L)``: the product, last layer first, of each layer's attention ``(batch,
    heads, L, L)`` averaged over heads and mixed with the identity (``residual``), rows
    renormalised."""
    result = None
    for weights in layers:
        a = np.asarray(weights, np.float64).mean(axis=1)
        a = residual * np.eye(a.shape[-1]) + (1.0 - residual) * a
        a /= a.sum(axis=-1, keepdims=True)
        result = a if result is None else a @ result
    if result is None:
        raise ValueError("no attention layers to roll out")
    return result


def _output_row(rolled: np.ndarray, tokens: int, first: bool = False) -> np.ndarray:
    """The output's draw on the ``tokens`` grid tokens (after any class tokens in front): the
    class token's row, or the first token's for a model that pools it (VideoMAE's
    ``pooling="first"``), else (average pooling) the mean row; normalised to sum to 1."""
    prefix = rolled.shape[-1] - tokens
    row = rolled[:, 0, prefix:] if prefix or first else rolled.mean(axis=1)
    return row / row.sum(axis=-1, keepdims=True)


def _grid(model: Any, video: Any) -> tuple[int, int, int]:
    """Tubelets along time, height and width."""
    return tuple(n // t for n, t in zip(np.shape(video)[1:4], model.tubelet, strict=True))


def spacetime_rollout(model: Any, variables: Any, video: Any) -> np.ndarray:
    """``(batch, t, h, w)``: how much the output draws on each tubelet, through every
    joint (all tokens) attention layer (ViViT model 1, VideoMAE, joint TimeSformer)."""
    t, h, w = _grid(model, video)
    maps = attention_maps(model, variables, video)
    joint = [
        g[0]
        for g in maps.values()
        if len(g) == 1 and g[0].ndim == 4 and g[0].shape[-1] >= t * h * w
    ]
    if not joint:
        raise ValueError(
            "this model has no joint space-time attention layer (ViViT models 2 and 3 and "
            "divided TimeSformer: temporal_rollout)"
        )
    first = getattr(model, "pooling", None) == "first"
    return _output_row(rollout(joint), t * h * w, first).reshape(-1, t, h, w)


def temporal_rollout(model: Any, variables: Any, video: Any) -> np.ndarray:
    """``(batch, t)``: how much the output draws on each time step, through the temporal
    attention of a factorised model: model 2's temporal encoder (its exact rollout), or the
    ``attention_time`` sublayers of ViViT model 3 and TimeSformer averaged over spatial
    positions. The latter is an approximation: it leaves out the spatial sublayers between
    them and TimeSformer's class token (with peaked attention its weights can move by a few
    hundredths and its most-attended step can change); roll out ``attention_maps`` at the
    token level where that matters."""
    t = _grid(model, video)[0]
    maps = attention_maps(model, variables, video)
    over_time = [g[0].mean(axis=1) for p, g in maps.items() if p.endswith("/attention_time")]
    if not over_time:
        over_time = [g[0] for p, g in maps.items() if p.startswith("temporal_encoder/")]
    if not over_time:
        raise ValueError(
            "this model has no temporal attention layer of its own (temporal_rollout takes "
            "ViViT models 2 and 3 and divided TimeSformer; joint attention: spacetime_rollout)"
        )
    return _output_row(rollout(over_time), t)


def overlay(
    frames: np.ndarray, relevance: np.ndarray, tubelet: Sequence[int], alpha: float = 0.5
) -> np.ndarray:
    """uint8 ``(T, H, W, 3)`` frames with ``relevance`` (per tubelet, ``(t, h, w)``, or per
    time step ``(t,)``) drawn over them as a heat map, scaled to the clip's maximum."""
    from matplotlib import colormaps

    grid = np.asarray(relevance, np.float64)
    if grid.ndim == 1:
        grid = grid[:, None, None]
        steps = (tubelet[0], frames.shape[1], frames.shape[2])
    else:
        steps = tuple(tubelet)
    dense = grid.repeat(steps[0], 0).repeat(steps[1], 1).repeat(steps[2], 2)
    heat = colormaps["inferno"](dense / max(dense.max(), 1e-12))[..., :3] * 255.0
    return np.clip((1 - alpha) * frames + alpha * heat, 0, 255).astype(np.uint8)
