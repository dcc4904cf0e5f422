"""Initialisation surgery: parameters of one transformer moved onto another's shapes.

:func:`adapt_params` takes a source parameter tree (a 2D image ViT in vjax naming, such as a
``single_frame`` model or a converted big_vision checkpoint, or a video model trained at
another resolution or clip length) and the target model's parameters, and returns the
target tree filled from the source:

* same shape: copied;
* a 3-channel patch kernel onto a 1-channel one (an image ViT initialising AST's spectrogram
  patches): summed over the channels, AST's rule, so a spectrogram embeds as the source
  embeds it repeated on three channels;
* tubelet kernel ``(t, h, w, in, out)`` from a kernel with another time extent: inflated,
  ``"central"`` (the 2D filter on the central frame, zeros elsewhere) or ``"average"``
  (the 2D filter divided by ``t`` on every frame, I3D's filter inflation); a source with
  several frames is first summed over time (which keeps its response to a static clip);
* ``pos_embedding`` ``(1, tokens, D)``: laid out on its ``(time, height, width)`` token grid
  and resized, linearly along each axis with corners aligned (bilinear over space, as
  scenic's ``scipy.ndimage.zoom(order=1)``), a single source frame tiled over time;
* ``time_embedding`` / ``temporal_pos_embedding`` ``(1, frames, D)``: linear over time;
* the classifier (``classifier/...``) with another class count: reset to the target's
  initial values;
* temporal attention from an image model (ViViT model 3's and TimeSformer's
  ``attention_time``): a copy of the same block's spatial ``attention``, as scenic's ViViT
  and TimeSformer's own loader initialise it; TimeSformer's ``norm_time`` likewise from
  ``norm1`` (its loader's rule; scenic leaves model 3's at its initial value), while its
  ``time_dense`` keeps its zero initialisation, so each block starts as the image block;
* other target parameters the source lacks (model 2's temporal transformer, the classifier
  of another task) keep the target's initial values, and source parameters the target
  lacks are dropped; both are listed in the notes.

Anything else with a different shape is an error naming the parameter and both shapes.

>>> image = single_frame_params   # e.g. from ViViT size "B/16" on one 224x224 frame
>>> target = model.init(key, jnp.zeros((1, 32, 224, 224, 3)), train=False)["params"]
>>> params, notes = adapt_params(image, target, inflation="average",
...                              target_grid=(16, 14, 14))
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import numpy as np
from flax import traverse_util

from vjax.errors import UserError

INFLATIONS = ("central", "average")
_TIME_EMBEDDINGS = ("time_embedding", "temporal_pos_embedding")
Grid = tuple[int, int, int]


class SurgeryError(UserError):
    """A parameter that cannot be adapted; the message names it and both shapes. A user's
    error (a ``train.init_from`` or ``vjax convert`` source that does not fit the config's
    model): the commands print it as one line. Still a ValueError, as before."""


def token_grid(model: Any, clip_shape: tuple[int, ...]) -> Grid:
    """``(time, height, width)`` token grid of ``model`` (anything with a ``tubelet``) on a
    clip of ``(batch, frames, height, width, channels)`` or ``(frames, height, width, ...)``.

    >>> token_grid(ViViT(num_classes=400, size="B/16x2"), (1, 32, 224, 224, 3))
    (16, 14, 14)
    """
    if hasattr(model, "patch_grid"):  # a spectrogram model (AST): its own patch layout
        return model.patch_grid(clip_shape)
    dims = clip_shape[1:4] if len(clip_shape) == 5 else clip_shape[:3]
    return tuple(size // step for size, step in zip(dims, model.tubelet, strict=True))


def resize_linear(x: np.ndarray, axis: int, size: int) -> np.ndarray:
    """Linear interpolation of ``x`` to ``size`` entries along ``axis``, corners aligned.

    A single entry is tiled. A linear ramp stays exactly a linear ramp.
    """
    n = x.shape[axis]
    if n == size:
        return x
    if n == 1:
        return np.repeat(x, size, axis=axis)
    pos = np.linspace(0.0, n - 1.0, size)
    low = np.clip(np.floor(pos).astype(int), 0, n - 2)
    weight = (pos - low).reshape([-1 if a == axis else 1 for a in range(x.ndim)])
    return np.take(x, low, axis=axis) * (1 - weight) + np.take(x, low + 1, axis=axis) * weight


def inflate_kernel(kernel: np.ndarray, frames: int, inflation: str) -> np.ndarray:
    """A ``(t, h, w, in, out)`` tubelet kernel with ``frames`` time steps from ``kernel``.

    ``"average"``: the time-summed kernel / ``frames`` on every frame; ``"central"``: the
    time-summed kernel on frame ``frames // 2``, zeros elsewhere. Either way a clip whose
    frames are all the same image gets the same embedding as the source kernel gives it.
    """
    if inflation not in INFLATIONS:
        raise SurgeryError(f"inflation must be one of {INFLATIONS}, got {inflation!r}")
    flat = kernel.sum(axis=0)
    if inflation == "average":
        return np.repeat(flat[None] / frames, frames, axis=0)
    out = np.zeros((frames, *flat.shape), kernel.dtype)
    out[frames // 2] = flat
    return out


def _layout(tokens: int, grid: Grid | None, name: str, which: str, shape) -> Grid:
    """The ``(time, height, width)`` layout of a position table of ``tokens`` rows."""
    if grid is not None:
        t, h, w = grid
        if tokens == t * h * w:
            return (t, h, w)
        if tokens == h * w:
            return (1, h, w)
    side = math.isqrt(tokens)
    if grid is None and side * side == tokens:
        return (1, side, side)
    raise SurgeryError(
        f"cannot lay out parameter {name} of shape {shape} on a token grid: pass "
        f"{which}_grid=(time, height, width) (got {grid})"
    )


def resize_pos_embedding(table: np.ndarray, source: Grid, target: Grid) -> np.ndarray:
    """Resizes a ``(1, t*h*w, D)`` table from the ``source`` grid to the ``target`` grid."""
    x = np.asarray(table).reshape(*source, table.shape[-1])
    for axis, size in enumerate(target):
        x = resize_linear(x, axis, size)
    return x.reshape(1, math.prod(target), table.shape[-1]).astype(table.dtype)


def _adapt_leaf(
    name: str,
    source: np.ndarray,
    target: Any,
    *,
    inflation: str,
    source_grid: Grid | None,
    target_grid: Grid | None,
) -> tuple[np.ndarray, str]:
    """One target parameter from its source counterpart, and what was done (or raises)."""
    key = name.rsplit("/", 1)[-1]
    shape, want = tuple(source.shape), tuple(target.shape)

    def fail(reason: str) -> SurgeryError:
        return SurgeryError(
            f"cannot adapt parameter {name}: source shape {shape}, target shape {want}: {reason}"
        )

    if name.startswith("classifier/"):
        return _initial(name, target), f"reset {name} {shape} -> {want} (class count differs)"
    if key == "kernel" and source.ndim == 5 and len(want) == 5:
        summed = shape[3] != want[3] and want[3] == 1  # RGB patches -> one-channel spectrogram
        if summed:
            source = source.sum(axis=3, keepdims=True)
        if source.shape[1:] != want[1:]:
            raise fail("only the tubelet's time extent and RGB -> 1 input channel can change")
        inflated = source.shape[0] != want[0]
        if inflated:
            source = inflate_kernel(source, want[0], inflation)
        if not summed:
            return source, f"inflated {name} {shape} -> {want} ({inflation})"
        also = f", then inflated ({inflation})" if inflated else ""
        return source, f"summed {name} {shape} -> {want} over its input channels{also}"
    if key in _TIME_EMBEDDINGS and source.ndim == 3 and len(want) == 3 and shape[2] == want[2]:
        resized = resize_linear(source, 1, want[1])
        return resized, f"resized {name} {shape} -> {want} over time"
    if key == "pos_embedding" and source.ndim == 3 and len(want) == 3 and shape[2] == want[2]:
        src = _layout(shape[1], source_grid, name, "source", shape)
        dst = _layout(want[1], target_grid, name, "target", want)
        resized = resize_pos_embedding(source, src, dst)
        return resized, f"resized {name} grid {src} -> {dst}"
    raise fail("no rule adapts this parameter")


def _initial(name: str, target: Any) -> np.ndarray:
    if not hasattr(target, "__array__"):
        raise SurgeryError(
            f"parameter {name} {tuple(target.shape)} must keep the target's initial value: "
            f"pass initialised target parameters, not only their shapes"
        )
    return np.asarray(target)


def _spatial_twin(name: str, source: Mapping[str, Any], target: Mapping[str, Any]) -> str | None:
    """The source parameter a temporal attention parameter ``name`` the source lacks is copied
    from: ``.../attention_time/...`` from the block's ``.../attention/...``, and for
    TimeSformer's blocks (those with ``time_dense``) ``.../norm_time/...`` from
    ``.../norm1/...``; None for any other name, or a twin missing or of another shape."""
    block, _, rest = name.partition("/attention_time/")
    twin = f"{block}/attention/{rest}" if rest else None
    block, _, rest = name.partition("/norm_time/")
    if rest and f"{block}/time_dense/kernel" in target:
        twin = f"{block}/norm1/{rest}"
    if twin is None or twin not in source:
        return None
    return twin if np.shape(source[twin]) == tuple(target[name].shape) else None


def adapt_params(
    source_params: Mapping[str, Any],
    target_params: Mapping[str, Any],
    *,
    inflation: str = "central",
    source_grid: Grid | None = None,
    target_grid: Grid | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Fills the target model's parameter tree from ``source_params`` (see module docstring).

    ``target_params``: the target's initialised parameters (their values are kept wherever the
    source has nothing to give; abstract shapes suffice when every parameter comes from the
    source). ``source_grid`` / ``target_grid``: the ``(time, height, width)`` token grids
    (:func:`token_grid`), needed when a position table is not a square single frame. Returns
    the new tree (NumPy arrays, the target's dtypes) and notes on everything not copied.

    >>> params, notes = adapt_params(image_vit, video_init, inflation="average",
    ...                              target_grid=(16, 14, 14))
    """
    if inflation not in INFLATIONS:
        raise SurgeryError(f"inflation must be one of {INFLATIONS}, got {inflation!r}")
    source = traverse_util.flatten_dict(nn.meta.unbox(dict(source_params)), sep="/")
    target = traverse_util.flatten_dict(nn.meta.unbox(dict(target_params)), sep="/")
    out, notes = {}, []
    for name, leaf in target.items():
        if name not in source:
            twin = _spatial_twin(name, source, target)
            if twin is None:
                out[name] = _initial(name, leaf)
                notes.append(f"kept the target's initial {name} {leaf.shape} (not in source)")
            else:
                out[name] = np.asarray(source[twin]).astype(leaf.dtype)
                notes.append(f"{name} from {twin} (temporal attention as the image model's)")
            continue
        value = np.asarray(source[name])
        if value.shape == tuple(leaf.shape):
            out[name] = value
        else:
            out[name], note = _adapt_leaf(
                name,
                value,
                leaf,
                inflation=inflation,
                source_grid=source_grid,
                target_grid=target_grid,
            )
            notes.append(note)
        out[name] = out[name].astype(leaf.dtype)
    kernels = [  # the weight matrices below the classifier: what pretraining gives
        name
        for name in target
        if name.rsplit("/", 1)[-1].endswith("kernel") and not name.startswith("classifier/")
    ]
    if kernels and not any(name in source for name in kernels):
        raise SurgeryError(
            f"the source has none of the target's {len(kernels)} weight matrices below its "
            f"classifier (e.g. {kernels[0]}); is it a model of another family?"
        )
    notes += [f"dropped {name} (not in target)" for name in source if name not in target]
    return traverse_util.unflatten_dict(out, sep="/"), notes
