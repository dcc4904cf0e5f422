"""Procedural "motion decides the class" videos, rendered with numpy only.

Every clip shows one textured, rotationally asymmetric object over a static smooth
background with i.i.d. per-frame pixel noise. The class is *how the object moves*
(see :data:`MOTIONS`). The frame is a torus: the object wraps around the edges, so
its position is uniform in every frame for every class.

Key property: the middle frame (index ``T // 2``) has the same distribution for
every class. Position, orientation and scale at the middle frame are drawn from one
shared distribution, and the motion only extends the trajectory forwards and
backwards from there. All appearance draws and the pixel noise come *before* the
motion draws, so for a given generator state every motion renders a byte-identical
middle frame. A model that sees one frame is therefore at chance; a model that
compares frames is not.

Conventions: pixel ``(row, col)`` has centre ``(x, y) = (col + 0.5, row + 0.5)``;
``x`` points right and ``y`` points *down* (image convention). Orientation ``theta``
maps object-local coordinates to the screen with the usual rotation matrix
``[[cos, -sin], [sin, cos]]`` in these ``(x, y)`` coordinates; because ``y`` points
down, an *increasing* ``theta`` turns the object **clockwise as seen on screen**
(the top of the object moves right). Hence ``rotate_cw`` increases ``theta`` and
``rotate_ccw`` decreases it.

Contrast polarity is fixed on purpose: a dark smooth background and a bright object
(every channel of the object is brighter than every channel of the background). With
random polarity the direction of motion is a *quadratic* function of the pixels (the
sign of a temporal difference depends on whether the object is lighter or darker than
what it covers); with fixed polarity it is nearly linear in a tubelet ("bright appears
on the right, disappears on the left"), and a small video transformer learns the task
much faster. In a probe (tiny ViViT, 4x8x8 tubelets, batch 32, 2000 train clips, 8
classes, ~1500 CPU steps) random polarity reached ~0.36 val top-1, fixed polarity ~0.82
(and ~0.90 with 4000 train clips; speed_up vs slow_down is the hardest pair).
Polarity, colours and background are class-independent, so this adds no shortcut.

This module must stay free of tensorflow / tfds imports.
"""

from __future__ import annotations

import zlib

import numpy as np

MOTIONS: tuple[str, ...] = (
    "right",
    "left",
    "down",
    "up",
    "rotate_cw",
    "rotate_ccw",
    "speed_up",
    "slow_down",
    "approach",
    "recede",
)
"""Class catalogue, in label order. A dataset with ``num_classes=K`` uses ``MOTIONS[:K]``."""

MIN_SIDE = 4
"""The smallest frame height and width a clip is rendered at."""

SHAPES: tuple[str, ...] = ("triangle", "ell", "half_disc", "notched_rect")
"""Object shapes (none has a rotational symmetry)."""

REF_SIDE = 32.0
"""Speeds below are quoted in pixels/frame for a frame side of this many pixels."""
SIZE_RANGE = (0.2, 0.35)
"""Object size at the middle frame, as a fraction of ``min(height, width)`` (all classes)."""
NOISE_SIGMA = 0.04
"""Std of the i.i.d. per-frame pixel noise, as a fraction of the [0, 1] intensity range.
The noise is uniform (4x cheaper to draw than Gaussian, same std)."""
BACKGROUND_MEAN_RANGE = (0.05, 0.3)
"""Per-channel range of the background's mean colour (dark)."""
BACKGROUND_AMPLITUDE = 0.05
"""Per-channel amplitude bound of each of the 3 background sinusoids (so bg <= 0.45)."""
OBJECT_RANGE = (0.55, 1.0)
"""Per-channel range of the object's two texture colours (bright): the object is always
brighter than the background in every channel, by at least 0.1."""
TRANSLATE_SPEED = (1.0, 2.0)  # px/frame at REF_SIDE
TRANSLATE_JITTER_DEG = 10.0
ROTATE_SPEED_DEG = (15.0, 25.0)  # degrees/frame
RAMP_SLOW = (0.25, 0.35)  # px/frame at REF_SIDE, slow end of speed_up / slow_down
RAMP_FAST = (2.3, 2.7)  # px/frame at REF_SIDE, fast end
SCALE_FACTOR = (1.8, 2.2)  # total geometric size change over the clip (approach / recede)

_DIRECTION = {"right": 0.0, "left": np.pi, "down": 0.5 * np.pi, "up": -0.5 * np.pi}
_SPLIT_CODES = {"train": 0, "validation": 1, "test": 2}
_TRI_NORM = float(np.hypot(0.35, 1.0))


def split_code(split: str) -> int:
    """Integer code of a split name, used in the per-example seed (stable across runs)."""
    if split in _SPLIT_CODES:
        return _SPLIT_CODES[split]
    return zlib.crc32(split.encode("utf-8"))


def _box(u: np.ndarray, v: np.ndarray, cu: float, cv: float, hu: float, hv: float) -> np.ndarray:
    """Chebyshev-style signed distance to an axis-aligned box (exact along the faces)."""
    return np.maximum(np.abs(u - cu) - hu, np.abs(v - cv) - hv)


def _shape_sdf(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance (object units, negative inside) of shape ``SHAPES[shape]``.

    All shapes fit in the unit square ``[-0.5, 0.5]^2`` around the object origin.
    """
    name = SHAPES[shape]
    if name == "triangle":  # isosceles, pointing along +u
        back = -(u + 0.5)
        side_a = (0.35 * (u - 0.5) + v) / _TRI_NORM
        side_b = (0.35 * (u - 0.5) - v) / _TRI_NORM
        return np.maximum(np.maximum(back, side_a), side_b)
    if name == "ell":
        return np.minimum(_box(u, v, -0.3, 0.0, 0.2, 0.5), _box(u, v, 0.0, 0.3, 0.5, 0.2))
    if name == "half_disc":
        du = u + 0.25
        return np.maximum(np.sqrt(du * du + v * v) - 0.5, -du)
    if name == "notched_rect":
        return np.maximum(_box(u, v, 0.0, 0.0, 0.5, 0.32), -_box(u, v, 0.5, 0.0, 0.22, 0.12))
    raise AssertionError(name)


def _object_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two bright texture colours in ``OBJECT_RANGE`` that differ visibly from each other.

    Every channel of the object is brighter than every channel of the (dark) background,
    so the contrast polarity is the same in every clip (see the module docstring).
    """
    lo, hi = OBJECT_RANGE
    cand = rng.uniform(lo, hi, size=(16, 2, 3)).astype(np.float32)
    gap = np.linalg.norm(cand[:, 0] - cand[:, 1], axis=-1)
    ok = np.flatnonzero(gap >= 0.25)
    k = int(ok[0]) if ok.size else int(np.argmax(gap))
    return cand[k, 0], cand[k, 1]


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Static smooth dark colour texture ``(H, W, 3)`` (mean plus 3 low-frequency sinusoids)."""
    mean = rng.uniform(*BACKGROUND_MEAN_RANGE, size=3).astype(np.float32)
    freqs = rng.integers(-3, 4, size=(3, 2))
    freqs[np.all(freqs == 0, axis=1), 0] = 1
    phases = rng.uniform(0.0, 2 * np.pi, size=3)
    amp = BACKGROUND_AMPLITUDE
    colours = rng.uniform(-amp, amp, size=(3, 3)).astype(np.float32)
    y = (np.arange(height, dtype=np.float32) + 0.5)[:, None] / height
    x = (np.arange(width, dtype=np.float32) + 0.5)[None, :] / width
    bg = np.broadcast_to(mean, (height, width, 3)).astype(np.float32)
    for (fx, fy), ph, col in zip(freqs, phases, colours, strict=True):
        wave = np.sin(2 * np.pi * (fx * x + fy * y) + ph).astype(np.float32)
        bg = bg + wave[..., None] * col
    return bg


def _wrap(d: np.ndarray, period: float) -> np.ndarray:
    """Minimum-image displacement on a circle of the given period."""
    return d - period * np.round(d / period)


def _trajectory(
    rng: np.random.Generator,
    motion: str,
    t: np.ndarray,
    num_frames: int,
    px: float,
    centre: np.ndarray,
    theta: float,
    size: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame ``(cx, cy, theta, size)``; equals the given values at ``t == 0`` (middle)."""
    n = t.shape[0]
    cx = np.full(n, centre[0])
    cy = np.full(n, centre[1])
    th = np.full(n, theta)
    sz = np.full(n, size)
    span = max(num_frames - 1, 1)
    if motion in _DIRECTION:
        speed = rng.uniform(*TRANSLATE_SPEED) * px
        ang = _DIRECTION[motion] + np.deg2rad(rng.uniform(-1, 1) * TRANSLATE_JITTER_DEG)
        cx = cx + speed * np.cos(ang) * t
        cy = cy + speed * np.sin(ang) * t
    elif motion in ("rotate_cw", "rotate_ccw"):
        omega = np.deg2rad(rng.uniform(*ROTATE_SPEED_DEG))
        th = th + (omega if motion == "rotate_cw" else -omega) * t
    elif motion in ("speed_up", "slow_down"):
        ang = rng.uniform(0.0, 2 * np.pi)
        slow = rng.uniform(*RAMP_SLOW) * px
        fast = rng.uniform(*RAMP_FAST) * px
        v0, v1 = (slow, fast) if motion == "speed_up" else (fast, slow)
        tau = t + num_frames // 2  # absolute frame index
        dist = v0 * tau + (v1 - v0) * tau * tau / (2.0 * span)  # integral of the linear ramp
        dist = dist - dist[num_frames // 2]
        cx = cx + np.cos(ang) * dist
        cy = cy + np.sin(ang) * dist
    elif motion in ("approach", "recede"):
        factor = rng.uniform(*SCALE_FACTOR)
        sign = 1.0 if motion == "approach" else -1.0
        sz = sz * factor ** (sign * t / span)
    else:
        raise ValueError(f"unknown motion {motion!r}; expected one of {MOTIONS}")
    return cx, cy, th, sz


def render_clip(
    rng: np.random.Generator, motion: str, num_frames: int, height: int, width: int
) -> np.ndarray:
    """Render one clip of class ``motion`` as uint8 ``(num_frames, height, width, 3)``.

    Speeds scale with ``min(height, width) / 32``. Rendering is analytic per pixel in
    object-local coordinates with a one-pixel anti-aliased edge, so sub-pixel motion
    is visible; everything is vectorised over ``(T, H, W)``.
    """
    if motion not in MOTIONS:
        raise ValueError(f"unknown motion {motion!r}; expected one of {MOTIONS}")
    if num_frames < 1 or min(height, width) < MIN_SIDE:
        raise ValueError(f"bad clip shape {(num_frames, height, width)}")
    side = float(min(height, width))
    px = side / REF_SIDE

    # --- appearance and middle-frame state: identical draws for every motion ---
    shape = int(rng.integers(len(SHAPES)))
    bg = _background(rng, height, width)
    col_a, col_b = _object_colours(rng)
    checker = bool(rng.integers(2))
    tex_freq = rng.uniform(1.5, 2.5)
    tex_ang = rng.uniform(0.0, 2 * np.pi)
    tex_phase = rng.uniform(0.0, 2 * np.pi)
    centre = rng.uniform((0.0, 0.0), (width, height))
    theta = rng.uniform(0.0, 2 * np.pi)
    size = rng.uniform(*SIZE_RANGE) * side
    noise = rng.random((num_frames, height, width, 3), dtype=np.float32)  # U[0, 1)

    # --- motion: extends the trajectory around the middle frame ---
    t = np.arange(num_frames, dtype=np.float64) - num_frames // 2
    cx, cy, th, sz = _trajectory(rng, motion, t, num_frames, px, centre, theta, size)

    f32 = np.float32
    xs = np.arange(width, dtype=np.float64) + 0.5
    ys = np.arange(height, dtype=np.float64) + 0.5
    dx = _wrap(xs[None, :] - cx[:, None], width).astype(f32)[:, None, :]  # (T, 1, W)
    dy = _wrap(ys[None, :] - cy[:, None], height).astype(f32)[:, :, None]  # (T, H, 1)
    cos = (np.cos(th) / sz).astype(f32)[:, None, None]
    sin = (np.sin(th) / sz).astype(f32)[:, None, None]
    u = cos * dx + sin * dy  # inverse rotation and scaling -> object units
    v = cos * dy - sin * dx
    scale = sz.astype(f32)[:, None, None]
    alpha = np.clip(0.5 - _shape_sdf(shape, u, v) * scale, 0.0, 1.0)  # 1-px soft edge

    # Texture in object coordinates (moves, turns and scales with the object).
    w = f32(2 * np.pi * tex_freq)
    if checker:
        wave = np.sin(w * u + f32(tex_phase)) * np.sin(w * v)
        sharp = scale / f32(np.pi * tex_freq)
    else:
        wave = np.sin(w * (u * f32(np.cos(tex_ang)) + v * f32(np.sin(tex_ang))) + f32(tex_phase))
        sharp = scale / f32(2 * np.pi * tex_freq)  # ~1 px transition between stripes
    pattern = np.clip(0.5 + 0.5 * np.maximum(sharp, 1.0) * wave, 0.0, 1.0)

    obj = col_b + (col_a - col_b) * pattern[..., None]
    a = alpha[..., None]
    half_width = f32(NOISE_SIGMA * np.sqrt(3.0))  # U[-w, w) has std w / sqrt(3)
    frames = bg + a * (obj - bg) + half_width * (2 * noise - 1)
    return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def generate_example(
    seed: int,
    split: str,
    index: int,
    num_classes: int,
    num_frames: int,
    height: int,
    width: int,
) -> tuple[np.ndarray, int]:
    """Example ``index`` of ``split``: ``(video uint8 (T, H, W, 3), label)``.

    Deterministic from ``np.random.default_rng([seed, split_code(split), index])``.
    Labels are exactly balanced: ``label = index % num_classes`` and the class is
    ``MOTIONS[label]``.
    """
    if not 2 <= num_classes <= len(MOTIONS):
        raise ValueError(f"num_classes must be in [2, {len(MOTIONS)}], got {num_classes}")
    if seed < 0 or index < 0:
        raise ValueError("seed and index must be non-negative")
    rng = np.random.default_rng([seed, split_code(split), index])
    label = index % num_classes
    return render_clip(rng, MOTIONS[label], num_frames, height, width), label


def generate_arrays(
    seed: int,
    split: str,
    num_examples: int,
    num_classes: int,
    num_frames: int,
    height: int,
    width: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Examples ``0 .. num_examples-1`` of ``split`` stacked in memory (no TFDS needed).

    Returns ``(videos uint8 (N, T, H, W, 3), labels int32 (N,))``, identical to what
    the TFDS builder stores.
    """
    videos = np.empty((num_examples, num_frames, height, width, 3), np.uint8)
    labels = np.empty((num_examples,), np.int32)
    for i in range(num_examples):
        videos[i], labels[i] = generate_example(
            seed, split, i, num_classes, num_frames, height, width
        )
    return videos, labels


# --- the audio-visual variant (``vjax_av_motion``): a motion and a sound decide the class ---

AV_MOTIONS: tuple[str, ...] = ("right", "left")
"""The audio-visual variant's motions (rendered by :func:`render_clip`)."""
SOUNDS: tuple[str, ...] = ("rising", "falling", "pulsed")
"""Its sound patterns: a tone gliding up two octaves, gliding down two octaves, or steady and
switched on and off (:func:`render_sound`)."""
AV_CLASSES: tuple[str, ...] = tuple(f"{m}_{s}" for m in AV_MOTIONS for s in SOUNDS)
"""Class ``k`` is motion ``AV_MOTIONS[k // 3]`` with sound ``SOUNDS[k % 3]``: the video alone
tells 2 of the 6 apart (at most 1/3 right), the sound alone 3 (at most 1/2), both all."""
TONE_LOW_HZ = (300.0, 600.0)
"""Range of the lowest frequency of a clip's tone (a glide spans 4x from there)."""
PULSE_HZ = (3.0, 5.0)
"""On/off rate of the pulsed tone."""
TONE_AMPLITUDE = (0.2, 0.5)
SOUND_NOISE_SIGMA = 0.05
"""Std of the white noise under every sound (and the whole sound of a silent stretch)."""


def render_sound(
    rng: np.random.Generator, pattern: str, num_samples: int, sample_rate: int
) -> np.ndarray:
    """float32 ``(num_samples,)`` in [-1, 1]: a tone of ``pattern`` (:data:`SOUNDS`) at a
    random pitch, level and phase, plus white noise. The glides are exponential in frequency
    (straight lines on a mel scale)."""
    if pattern not in SOUNDS:
        raise ValueError(f"unknown sound {pattern!r}; expected one of {SOUNDS}")
    t = np.arange(num_samples) / sample_rate
    duration = max(num_samples / sample_rate, 1e-9)
    low = rng.uniform(*TONE_LOW_HZ)
    amplitude = rng.uniform(*TONE_AMPLITUDE)
    phase0 = rng.uniform(0, 2 * np.pi)
    if pattern == "pulsed":
        freq = np.full_like(t, 2 * low)
        rate, offset = rng.uniform(*PULSE_HZ), rng.uniform(0, 1)
        gate = (np.floor(2 * (rate * t + offset)) % 2 == 0).astype(np.float64)
    else:
        octaves = 2 * t / duration if pattern == "rising" else 2 * (1 - t / duration)
        freq = low * 2.0**octaves
        gate = np.ones_like(t)
    phase = phase0 + 2 * np.pi * np.cumsum(freq) / sample_rate
    noise = rng.normal(0.0, SOUND_NOISE_SIGMA, num_samples)
    return np.clip(amplitude * gate * np.sin(phase) + noise, -1, 1).astype(np.float32)


def generate_av_example(
    seed: int,
    split: str,
    index: int,
    num_frames: int,
    height: int,
    width: int,
    fps: float,
    sample_rate: int,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Example ``index`` of the audio-visual variant: ``(video uint8 (T, H, W, 3), sound
    float32 (round(T / fps * sample_rate),), label)``, label ``index % 6``
    (:data:`AV_CLASSES`). Deterministic from ``(seed, split, index)``; the frames are
    :func:`render_clip`'s and the sound lasts exactly as long as they do at ``fps``."""
    if seed < 0 or index < 0:
        raise ValueError("seed and index must be non-negative")
    rng = np.random.default_rng([seed, split_code(split), index, 1])
    label = index % len(AV_CLASSES)
    motion, pattern = AV_MOTIONS[label // len(SOUNDS)], SOUNDS[label % len(SOUNDS)]
    video = render_clip(rng, motion, num_frames, height, width)
    sound = render_sound(rng, pattern, round(num_frames / fps * sample_rate), sample_rate)
    return video, sound, label
