"""What every vjax video model checks of its input clip before anything compiles: the layout
``(batch, time, height, width, channels)`` (3 channels for a conv net; a transformer takes the
count it was converted with) and a float dtype.

Both mistakes otherwise fail late or not at all: a PyTorch-layout clip ``(B, C, T, H, W)``
or Hugging Face's ``(B, T, C, H, W)`` trained a conv net with 112 "channels", and uint8
frames gave logits of pixels in 0..255 that no trained weights expect.

>>> check_video_shape((2, 3, 16, 112, 112), (1, 1, 1))   # ValueError: "... this looks like
...                                                       # PyTorch's (B, C, T, H, W) ..."
>>> check_video_dtype(video)                              # ValueError for uint8 frames
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp

RGB = 3
MAX_CHANNELS = 4  # the most a frame has (RGBA): a last axis above it is a height or width
LAYOUT = "(batch, time, height, width, channels)"
_LAYOUTS = {1: "PyTorch's (B, C, T, H, W)", 2: "Hugging Face's (B, T, C, H, W)"}


def check_video_shape(
    input_shape: Sequence[int], min_size: tuple[int, int, int], channels: int | None = RGB
) -> None:
    """Raises a ValueError naming the problem unless ``input_shape`` is ``(batch, time,
    height, width, channels)`` with at least ``min_size`` frames/pixels. ``channels``: the
    count the model takes, None for any (a transformer converted with its own
    ``num_channels``); a channels-first clip is named as such, with the axis move that fixes
    it, either way."""
    shape = tuple(input_shape)
    if len(shape) != 5:
        raise ValueError(f"expected video of shape {LAYOUT}, got {shape}")
    moved = _channels_axis(shape)
    if moved is not None or channels not in (None, shape[-1]):
        expected = f"{channels} input channels" if channels else "the input channels"
        hint = (
            f"this looks like {_LAYOUTS[moved]}: vjax takes {LAYOUT}, so move the channels "
            f"last with jnp.moveaxis(video, {moved}, -1)"
            if moved is not None
            else f"vjax takes {LAYOUT} RGB clips"
        )
        raise ValueError(
            f"expected {expected} in the last axis, got {shape[-1]} (shape {shape}); {hint}"
        )
    for axis, size, least in zip(("frames", "height", "width"), shape[1:4], min_size, strict=True):
        if size < least:
            raise ValueError(
                f"{axis} ({size}) is below this model's minimum ({least}); clip shape {shape}"
            )


def _channels_axis(shape: tuple[int, ...]) -> int | None:
    """The earlier axis (1: PyTorch's layout, 2: Hugging Face's) holding 3 channels when the
    last axis holds more than a frame has, else None."""
    if shape[-1] <= MAX_CHANNELS:
        return None
    return next((axis for axis in _LAYOUTS if shape[axis] == RGB), None)


def check_video_dtype(video: Any) -> None:
    """Raises a ValueError unless ``video`` is floating point: a module takes the normalised
    clip, and uint8 frames (0..255) would be scored as they are."""
    if not jnp.issubdtype(video.dtype, jnp.floating):
        raise ValueError(
            f"a vjax module takes float clips normalised as in training (config.input.mean "
            f"and std), got {video.dtype}: call a loaded model (vjax.load(run)(video)), which "
            f"normalises uint8 frames, or normalise them first with "
            f"vjax.step.normalize_video(video, mean, std, dtype)"
        )
