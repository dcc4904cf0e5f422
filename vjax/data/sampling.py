"""Which frames of a video make a clip: random (train), uniform multi-clip (test), TSN segments.

All functions return integer frame indices into a video of ``num_available`` frames. A clip
spans ``(num_frames - 1) * stride + 1`` frames; ``stride`` may be fractional, which is how a
clip is resampled to another frame rate (``stride = stored_fps / target_fps``). A clip longer
than the video is completed by ``pad_mode``: ``"loop"`` wraps around to the first frame,
``"pad"`` repeats the last frame.

>>> rng = np.random.default_rng([0, 12, 3])       # keyed by (seed, step, example)
>>> random_clip(rng, 100, num_frames=8, stride=2)  # 8 indices, 2 apart, random start
>>> uniform_clips(100, num_frames=8, stride=2, num_clips=4)   # (4, 8), evenly spread
"""

from __future__ import annotations

import math

import numpy as np

PAD_MODES = ("loop", "pad")


def _check(num_available: int, num_frames: int, stride: float, pad_mode: str) -> None:
    if num_available < 1:
        raise ValueError(f"a video needs at least one frame, got num_available={num_available}")
    if num_frames < 1 or stride <= 0:
        raise ValueError(f"need num_frames >= 1 and stride > 0, got {num_frames}, {stride}")
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")


def clip_span(num_frames: int, stride: float) -> float:
    """How many stored frames a clip covers (first to last, inclusive)."""
    return (num_frames - 1) * stride + 1


def clip_at(
    start: float, num_available: int, num_frames: int, stride: float = 1, pad_mode: str = "loop"
) -> np.ndarray:
    """The clip starting at frame ``start``: ``floor(start + k * stride)`` for ``k < num_frames``,
    with indices past the end completed by ``pad_mode``."""
    _check(num_available, num_frames, stride, pad_mode)
    idx = np.floor(start + np.arange(num_frames) * stride + 1e-9).astype(np.int64)
    if pad_mode == "loop":
        return idx % num_available
    return np.minimum(idx, num_available - 1)


def random_clip(
    rng: np.random.Generator,
    num_available: int,
    num_frames: int,
    stride: float = 1,
    pad_mode: str = "loop",
) -> np.ndarray:
    """A clip at a uniformly random start among those that fit (start 0 when none fits)."""
    # Integer start s fits when s + (num_frames - 1) * stride < num_available.
    slack = num_available - clip_span(num_frames, stride)
    start = int(rng.integers(0, math.ceil(slack + 1))) if slack >= 0 else 0
    return clip_at(start, num_available, num_frames, stride, pad_mode)


def uniform_clips(
    num_available: int,
    num_frames: int,
    stride: float = 1,
    num_clips: int = 1,
    pad_mode: str = "loop",
) -> np.ndarray:
    """``(num_clips, num_frames)``: starts evenly spaced from the first to the last clip that
    fits (one clip: the centre one), as in the usual multi-clip test protocol."""
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    slack = max(num_available - clip_span(num_frames, stride), 0.0)
    if num_clips == 1:
        starts = np.array([slack / 2])
    else:
        starts = np.linspace(0.0, slack, num_clips)
    return np.stack(
        [clip_at(np.floor(s), num_available, num_frames, stride, pad_mode) for s in starts]
    )


def tsn_segments(
    num_available: int,
    num_segments: int,
    rng: np.random.Generator | None = None,
    offset: float = 0.5,
) -> np.ndarray:
    """TSN sampling: the video cut into ``num_segments`` equal segments, one frame from each
    (random within the segment with ``rng``; without, the frame ``offset`` of the way into
    each segment: its middle by default). Short videos repeat frames rather than fail."""
    _check(num_available, num_segments, 1, "pad")
    edges = np.arange(num_segments + 1) * (num_available / num_segments)
    lo, hi = edges[:-1], edges[1:]
    share = offset if rng is None else rng.uniform(size=num_segments)
    return np.minimum(np.floor(lo + share * (hi - lo)).astype(np.int64), num_available - 1)


def tsn_views(num_available: int, num_segments: int, num_views: int) -> np.ndarray:
    """``(num_views, num_segments)`` frame indices of TSN's multi-view test: view ``v`` takes
    the frame ``(1/2 + v / num_views) mod 1`` of the way into each segment, so one view is the
    segments' middles and the others spread evenly between (two views: the middles and the
    starts, as VideoMAE tests Something-Something v2)."""
    return np.stack(
        [tsn_segments(num_available, num_segments, offset=(0.5 + v / num_views) % 1.0)
         for v in range(num_views)]
    )  # fmt: skip
