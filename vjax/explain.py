"""Where a video transformer looks: every attention layer's probabilities, and attention
rollout (Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020) over space
and time, rendered over the frames.

The attention layers sow their probabilities into the ``"attention"`` collection when it is
mutable (:func:`attention_maps`); training and inference never form them. Rollout multiplies
the layers' head-averaged attention, each mixed with the identity for the residual path, so
``R[i, j]`` is how much output token ``i`` draws on input token ``j``; the model's output is
the class token's row (cls pooling) or the mean of all rows (average pooling).

>>> relevance = spacetime_rollout(model, variables, video)  # (B, t, h, w) per tubelet, sums to 1
>>> over_time = temporal_rollout(model, variables, video)   # (B, t), the same summed over space
>>> frames = overlay(clip_uint8, relevance[0], model.tubelet)  # the heat map over the frames
"""

from __future__ import annotations

import re
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


def _grid(model: Any, video: Any) -> tuple[int, int, int]:
    """Tubelets along time, height and width."""
    return tuple(n // t for n, t in zip(np.shape(video)[1:4], model.tubelet, strict=True))


Layer = tuple[str, tuple[Any, ...]]  # (sublayer kind, the layer's head groups' weights)


def _stages(maps: dict[str, tuple[Any, ...]], model: Any) -> dict[str, list[Layer]]:
    """The attention layers of each encoder (``"encoder"``, ``"temporal_encoder"``) in call
    order, each with its kind: ``"joint"``, ``"time"``, ``"space"`` or ``"split"`` (model 4's
    heads, half over time and half over space)."""
    time_first = getattr(model, "attention_order", "time_space") == "time_space"
    stages: dict[str, list[tuple[tuple[int, int], Layer]]] = {}
    for path, groups in maps.items():
        *outer, block, layer = path.split("/")  # "encoder/block00/attention"; MBT: no outer
        prefix, number = re.fullmatch(r"(.*?)block(\d+)", block).groups()
        stage = "/".join(outer) + prefix  # "encoder", "temporal_encoder", MBT's "video_"
        if layer == "attention_time":
            kind = "time"
        else:
            kind = "split" if len(groups) == 2 else "space" if groups[0].ndim == 5 else "joint"
        order = (int(number), (kind == "time") != time_first)
        stages.setdefault(stage, []).append((order, (kind, groups)))
    return {stage: [layer for _, layer in sorted(layers)] for stage, layers in stages.items()}


def _mean_heads(weights: Any) -> np.ndarray:
    """Attention weights averaged over their heads axis (third from last in every layout)."""
    return np.asarray(weights, np.float64).mean(axis=-3)


def _over_time(cells: np.ndarray, weights: Any) -> np.ndarray:
    """``cells (B, t, s) @`` attention over time at each spatial position ``(B, s, H, t, t)``."""
    return np.einsum("bts,bstu->bus", cells, _mean_heads(weights))


def _over_space(head: np.ndarray, cells: np.ndarray, weights: Any):
    """``[head, cells] @`` attention within each frame ``(B, t, H, P + s, P + s)``, the ``P``
    class tokens joining every frame and taking the mean of their rows over frames."""
    time = cells.shape[1]
    shared = np.broadcast_to(head[:, None] / time, (len(head), time, head.shape[1]))
    out = np.einsum("btl,btlm->btm", np.concatenate([shared, cells], 2), _mean_heads(weights))
    return out[:, :, : head.shape[1]].sum(axis=1), out[:, :, head.shape[1] :]


def _through(row: np.ndarray, layer: Layer, grid: tuple[int, int]) -> np.ndarray:
    """``row @ A``: a row over the tokens (``P`` class tokens, then the time-major grid)
    through one attention sublayer's head-averaged token-to-token matrix ``A``."""
    kind, groups = layer
    time, space = grid
    prefix = row.shape[1] - time * space
    head, cells = row[:, :prefix], row[:, prefix:].reshape(len(row), time, space)
    if kind == "joint":
        return np.einsum("bl,blm->bm", row, _mean_heads(groups[0]))
    if kind == "time":  # class tokens skip temporal attention
        cells = _over_time(cells, groups[0])
    elif kind == "space":
        head, cells = _over_space(head, cells, groups[0])
    else:  # split: equal head groups, so the head mean is the mean of the two
        cells = 0.5 * (_over_time(cells, groups[0]) + _over_space(head, cells, groups[1])[1])
    return np.concatenate([head, cells.reshape(len(row), -1)], axis=1)


def _stage_row(
    layers: list[Layer], grid: tuple[int, int], first: bool = False, residual: float = 0.5
) -> np.ndarray:
    """``(batch, P + t*s)``: the encoder output's row of the rollout (the class token's, or
    the first token's for ``first``, else the mean over tokens), propagated from the last
    layer to the first through each ``residual * I + (1 - residual) * A``."""
    kind, groups = next(layer for layer in layers if layer[0] != "time")
    tokens = grid[0] * grid[1]
    covered = {"joint": tokens, "space": grid[1]}.get(kind, 0)
    prefix = groups[0].shape[-1] - covered if covered else 0
    if prefix < 0 or (kind == "space" and groups[0].shape[1] != grid[0]):
        raise ValueError(
            f"cannot roll out this model: its attention layers do not cover the clip's "
            f"{grid[0]} x {grid[1]} tubelets (time x space)"
        )
    row = np.zeros((len(groups[0]), prefix + tokens))
    if prefix or first:
        row[:, 0] = 1.0
    else:
        row[:] = 1.0 / tokens
    for layer in reversed(layers):
        row = residual * row + (1.0 - residual) * _through(row, layer, grid)
    return row


def _transformer_and_input(model: Any, video: Any) -> tuple[Any, Any]:
    """``(module, normalised video)``: a model ``vjax.load`` gave is unwrapped and its uint8
    clip normalised as in training; raw uint8 for a module, or a model without tubelets (a
    CNN), is a ValueError naming it (it was an AttributeError deep in Flax, or a map of the
    wrong input)."""
    if hasattr(model, "module") and hasattr(model, "normalize"):  # vjax.load's LoadedModel
        model, video = model.module, model.normalize(np.asarray(video))
    elif np.issubdtype(np.asarray(video).dtype, np.integer):
        raise ValueError(
            "the video is uint8 frames: give the module its normalised input "
            "(model.normalize(video) of vjax.load's model), as model.apply takes"
        )
    if not hasattr(model, "tubelet"):
        raise ValueError(f"attention rollout needs a video transformer (vivit, timesformer, "
                         f"videomae); {type(model).__name__} has no attention")  # fmt: skip
    return model, video


def spacetime_rollout(model: Any, variables: Any, video: Any) -> np.ndarray:
    """``(batch, t, h, w)``: how much the output draws on each tubelet, rolled out exactly
    through every attention layer in call order: joint attention (ViViT model 1, VideoMAE,
    joint TimeSformer); time and space sublayers (ViViT models 3 and 4, divided TimeSformer,
    whose class token joins every frame's spatial attention and takes the mean over frames, as
    the model computes it); per-frame encoders under a temporal encoder or a mean over frames
    (ViViT model 2 and average pool, space-only TimeSformer). Class tokens' own shares are left
    out; the tubelets' sum to 1. ``model`` may be ``vjax.load``'s (``variables`` its own, a
    uint8 clip normalised as in training)."""
    model, video = _transformer_and_input(model, video)
    batch = np.shape(video)[0]
    t, h, w = _grid(model, video)
    stages = _stages(attention_maps(model, variables, video), model)
    spatial = stages.get("encoder") or (next(iter(stages.values())) if len(stages) == 1 else [])
    if not spatial:
        raise ValueError(f"cannot roll out this model: its attention layers are {list(stages)}")
    first = getattr(model, "pooling", None) == "first"
    if t > 1 and len(spatial[0][1][0]) == batch * t:  # frames folded into the batch
        frames = _stage_row(spatial, (1, h * w), first)[:, -h * w :]
        over_time = np.full((batch, t), 1.0 / t)  # the mean over frames, without an encoder
        if "temporal_encoder" in stages:
            over_time = _stage_row(stages["temporal_encoder"], (t, 1))[:, -t:]
        cells = over_time[:, :, None] * frames.reshape(batch, t, h * w)
    else:
        cells = _stage_row(spatial, (t, h * w), first)[:, -t * h * w :]
    cells = cells.reshape(batch, -1)
    return (cells / cells.sum(axis=1, keepdims=True)).reshape(batch, t, h, w)


def temporal_rollout(model: Any, variables: Any, video: Any) -> np.ndarray:
    """``(batch, t)``: how much the output draws on each time step (tubelet along time), the
    :func:`spacetime_rollout` summed over space; for any of its models."""
    return spacetime_rollout(model, variables, video).sum(axis=(2, 3))


def overlay(
    frames: np.ndarray, relevance: np.ndarray, tubelet: Sequence[int], alpha: float = 0.5
) -> np.ndarray:
    """uint8 ``(T, H, W, 3)`` frames with ``relevance`` (per tubelet, ``(t, h, w)``, or per
    time step ``(t,)``) drawn over them as a heat map, scaled to the clip's maximum."""
    from matplotlib import colormaps

    from vjax.data.video_io import require_uint8_frames

    require_uint8_frames(frames, "overlay's frames")  # 0..1 would draw over black
    grid = np.asarray(relevance, np.float64)
    if grid.ndim == 1:
        grid = grid[:, None, None]
        steps = (tubelet[0], frames.shape[1], frames.shape[2])
    else:
        steps = tuple(tubelet)
    dense = grid.repeat(steps[0], 0).repeat(steps[1], 1).repeat(steps[2], 2)
    heat = colormaps["inferno"](dense / max(dense.max(), 1e-12))[..., :3] * 255.0
    return np.clip((1 - alpha) * frames + alpha * heat, 0, 255).astype(np.uint8)
