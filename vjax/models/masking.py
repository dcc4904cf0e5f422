"""Masked-video pre-training helpers: tube / random token masks, visible-token gathers, and
the pixels of each tubelet as a token (patchify / unpatchify) with VideoMAE's normalised
reconstruction targets.

Tokens are in (time, height, width) order, as :class:`~vjax.models.layers.TubeletEmbed` makes
them; a token's pixels are ordered ``(tubelet time, patch row, patch column, channel)``, the
layout of Hugging Face's ``VideoMAEForPreTraining`` targets and decoder outputs.

>>> mask = draw_mask(key, batch=8, grid=(8, 196), ratio=0.9, kind="tube")   # bool (8, 1568)
>>> visible, masked = split_tokens(mask, num_masked(grid, 0.9, "tube"))
>>> targets = pixel_targets(video01, (2, 16, 16), normalize=True)            # (8, 1568, 1536)
>>> motion = pixel_targets(target_clip(video01, "frame_difference", (2, 16, 16)), (2, 16, 16))
"""

from __future__ import annotations

import math

import einops
import jax
import jax.numpy as jnp

from vjax.models.layers import constrain

MASKINGS = ("tube", "random")
TARGETS = ("pixels", "frame_difference")
NORM_EPS = 1e-6  # added to each tubelet's pixel std (VideoMAE and Hugging Face)
_PATCH = "b (t pt) (h ph) (w pw) c -> b (t h w) (pt ph pw) c"


def num_masked(grid: tuple[int, int], ratio: float, kind: str) -> int:
    """Masked tokens per clip of a ``(time, space)`` token grid: ``int(ratio * space)`` per
    time step for ``"tube"`` masking (one spatial mask for every time step), else
    ``int(ratio * tokens)``."""
    if kind not in MASKINGS:
        raise ValueError(f"masking must be one of {MASKINGS}, got {kind!r}")
    time, space = grid
    return time * int(ratio * space) if kind == "tube" else int(ratio * time * space)


def check_masking(grid: tuple[int, int], ratio: float, kind: str) -> None:
    """Raises a ValueError naming the numbers unless the mask hides some tokens and keeps some."""
    count = num_masked(grid, ratio, kind)
    tokens = grid[0] * grid[1]
    if not 0 < count < tokens:
        raise ValueError(
            f"mask_ratio={ratio} with {kind!r} masking hides {count} of {tokens} tokens "
            f"(grid {grid}); it must hide at least one and keep at least one: choose a ratio in "
            f"(0, 1) that leaves both, or a smaller patch"
        )


def _lowest(scores: jax.Array, count: int) -> jax.Array:
    """True at the ``count`` lowest scores of each row (a uniform random subset)."""
    rank = jnp.argsort(jnp.argsort(scores, axis=-1), axis=-1)
    return rank < count


def draw_mask(
    key: jax.Array, batch: int, grid: tuple[int, int], ratio: float, kind: str
) -> jax.Array:
    """A boolean mask ``(batch, time * space)``, True where a token is hidden, with the same
    number hidden in every clip (:func:`num_masked`). ``"tube"``: one random spatial mask per
    clip shared by all time steps; ``"random"``: tokens drawn uniformly over the clip. A pure
    function of ``key`` (the same on any mesh: JAX's partitionable threefry)."""
    time, space = grid
    count = num_masked(grid, ratio, kind)
    if kind == "tube":
        per_frame = _lowest(jax.random.uniform(key, (batch, space)), count // time)
        mask = einops.repeat(per_frame, "b s -> b (t s)", t=time)
    else:
        mask = _lowest(jax.random.uniform(key, (batch, time * space)), count)
    return constrain(mask, ("batch", "tokens"))


def split_tokens(mask: jax.Array, count: int) -> tuple[jax.Array, jax.Array]:
    """``(visible, masked)`` token indices ``(batch, tokens - count)`` and ``(batch, count)``
    of a mask hiding ``count`` tokens per clip, each in increasing order (Hugging Face's
    order: ``x[~mask]`` and ``x[mask]``)."""
    order = jnp.argsort(mask.astype(jnp.int32), axis=1, stable=True)  # visible first
    visible, masked = order[:, : mask.shape[1] - count], order[:, mask.shape[1] - count :]
    return constrain(visible, ("batch", "tokens")), constrain(masked, ("batch", "tokens"))


def take_tokens(x: jax.Array, indices: jax.Array) -> jax.Array:
    """Rows ``indices`` ``(batch, n)`` of each clip's tokens ``x`` ``(batch, tokens, ...)``: a
    per-example gather that stays batch-parallel under a sharded jit."""
    picked = jnp.take_along_axis(x, indices.reshape(*indices.shape, *(1,) * (x.ndim - 2)), axis=1)
    return constrain(picked, ("batch", "tokens", *(None,) * (x.ndim - 2)))


def patch_pixels(video: jax.Array, tubelet: tuple[int, int, int]) -> jax.Array:
    """``(B, T, H, W, C)`` -> ``(B, tokens, pixels per tubelet, C)``."""
    pt, ph, pw = tubelet
    return einops.rearrange(video, _PATCH, pt=pt, ph=ph, pw=pw)


def patch_statistics(
    video: jax.Array, tubelet: tuple[int, int, int]
) -> tuple[jax.Array, jax.Array]:
    """Each tubelet's per-channel pixel mean and std (unbiased, + :data:`NORM_EPS`), both
    ``(B, tokens, 1, C)``: what :func:`pixel_targets` normalises by."""
    pixels = patch_pixels(video, tubelet)
    mean = pixels.mean(axis=-2, keepdims=True)
    std = jnp.sqrt(pixels.var(axis=-2, ddof=1, keepdims=True)) + NORM_EPS
    return mean, std


def pixel_targets(
    video: jax.Array, tubelet: tuple[int, int, int], normalize: bool = True
) -> jax.Array:
    """The reconstruction target of every token, ``(B, tokens, pt * ph * pw * C)``: the
    tubelet's pixels, normalised per channel by their own mean and std when ``normalize``
    (VideoMAE's ``norm_pix_loss``). ``video``: pixels in [0, 1], ``(B, T, H, W, C)``."""
    pixels = patch_pixels(video.astype(jnp.float32), tubelet)
    if normalize:
        mean, std = patch_statistics(video.astype(jnp.float32), tubelet)
        pixels = (pixels - mean) / std
    return einops.rearrange(pixels, "b n p c -> b n (p c)")


def target_clip(video: jax.Array, kind: str, tubelet: tuple[int, int, int]) -> jax.Array:
    """The clip whose tubelets a masked autoencoder reconstructs, in [0, 1], from ``video``
    (pixels in [0, 1], ``(B, T, H, W, C)``): ``"pixels"``, the clip itself (VideoMAE);
    ``"frame_difference"``, each frame's change to the next within its ``tubelet``'s frames,
    ``0.5 + (x[t + 1] - x[t]) / 2``, a tubelet's last frame 0.5 (no change), as MotionMAE's
    motion targets. A static background cancels out, leaving what moves and the pixel noise
    (which per-tubelet normalisation scales up). The change stays inside the tubelet: one
    reaching into the next tubelet's first frame, which random masking may leave visible,
    would put part of a hidden tubelet's target in the input (BENCHMARKS.md, vjax bench ssl)."""
    if kind not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {kind!r}")
    if kind == "pixels":
        return video
    check_frame_difference(tubelet)
    frames = tubelet[0]
    grouped = einops.rearrange(video.astype(jnp.float32), "b (n f) ... -> b n f ...", f=frames)
    change = grouped[:, :, 1:] - grouped[:, :, :-1]
    change = jnp.concatenate([change, jnp.zeros_like(grouped[:, :, :1])], axis=2)
    return 0.5 + 0.5 * einops.rearrange(change, "b n f ... -> b (n f) ...")


def check_frame_difference(tubelet: tuple[int, ...]) -> None:
    """Frame-difference targets need two or more frames per tubelet: a change is only taken
    between frames of one tubelet, so a one-frame tubelet would have nothing to predict."""
    if tubelet[0] < 2:
        raise ValueError(
            "target 'frame_difference' needs tubelets of 2 or more frames (each change is "
            f"taken inside a tubelet), got tubelet {tuple(tubelet)}"
        )


def mean_prediction_loss(tubelet: tuple[int, int, int]) -> float:
    """The normalised-pixel loss (:func:`pixel_targets` with ``normalize``) of predicting every
    hidden tubelet's own mean, zeros: ``(n - 1) / n`` for ``n`` pixels per channel, as the
    targets are standardised with the unbiased std (:data:`NORM_EPS` aside). A reconstruction
    loss is read against it: only what lies below it was learnt from the visible tokens."""
    pixels = math.prod(tubelet)
    return (pixels - 1) / pixels


def unpatchify(
    tokens: jax.Array, tubelet: tuple[int, int, int], grid: tuple[int, int, int], channels: int
) -> jax.Array:
    """``(B, tokens, pt * ph * pw * C)`` on a ``(time, height, width)`` token grid -> the clip
    ``(B, T, H, W, C)``: the inverse of :func:`pixel_targets` without normalisation."""
    pt, ph, pw = tubelet
    t, h, w = grid
    return einops.rearrange(
        tokens,
        "b (t h w) (pt ph pw c) -> b (t pt) (h ph) (w pw) c",
        t=t, h=h, w=w, pt=pt, ph=ph, pw=pw, c=channels,
    )  # fmt: skip
