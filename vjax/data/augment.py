"""Clip augmentation in numpy/PIL, identical across the frames of a clip.

Spatial augmentation is a *box* in source-frame coordinates ``(x0, y0, x1, y1)`` that is cut
out and resized to ``size x size`` in one PIL pass per frame, straight after JPEG decoding
(:func:`decode_crop_resize`), so no full-size float frames are ever made. Boxes:
:func:`random_resized_crop_box` (Inception-style area/aspect sampling),
:func:`scale_jitter_box` (short side scaled to a random length, then a random square crop),
:func:`centre_box` and :func:`three_crop_boxes` (test views). Then, on the uint8 clip:
horizontal flip (with a label remap for direction-sensitive classes), colour jitter
(torchvision's) or DMVR's colour augmentation (scenic's), random erasing; and on a batch:
mixup / cutmix, which produce soft labels (``label_probs``).
Normalisation happens on device (``vjax.step.normalize_video``).

>>> box = random_resized_crop_box(rng, 256, 341)
>>> clip = decode_crop_resize(jpegs, box, 224, flip=bool(rng.integers(2)))   # (T, 224, 224, 3)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

Box = tuple[float, float, float, float]


def random_resized_crop_box(
    rng: np.random.Generator,
    height: int,
    width: int,
    area: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    attempts: int = 10,
) -> Box:
    """A box covering a random fraction ``area`` of the frame with aspect ratio (w/h) drawn
    log-uniformly from ``ratio``; after ``attempts`` misses, the largest centred box whose
    ratio is in range (torchvision's RandomResizedCrop rule)."""
    total = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(attempts):
        target = total * rng.uniform(*area)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            y0 = int(rng.integers(0, height - h + 1))
            x0 = int(rng.integers(0, width - w + 1))
            return (x0, y0, x0 + w, y0 + h)
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        w, h = width, height
    return ((width - w) // 2, (height - h) // 2, (width - w) // 2 + w, (height - h) // 2 + h)


def scale_jitter_box(
    rng: np.random.Generator, height: int, width: int, short_side: tuple[int, int], size: int
) -> Box:
    """The square box that, after scaling the frame's short side to a random length in
    ``short_side`` (inclusive), is a random ``size x size`` crop."""
    lo, hi = short_side
    if not 0 < lo <= hi or size > lo:
        raise ValueError(f"need 0 < {lo} <= {hi} and crop size {size} <= {lo}")
    scale = min(height, width) / int(rng.integers(lo, hi + 1))  # source pixels per output pixel
    side = size * scale
    x0 = rng.uniform(0.0, width - side)
    y0 = rng.uniform(0.0, height - side)
    return (x0, y0, x0 + side, y0 + side)


def centre_box(height: int, width: int, fraction: float = 1.0) -> Box:
    """The centred square of side ``fraction * min(height, width)``."""
    side = fraction * min(height, width)
    x0, y0 = (width - side) / 2, (height - side) / 2
    return (x0, y0, x0 + side, y0 + side)


def three_crop_boxes(height: int, width: int) -> list[Box]:
    """Three squares of side ``min(height, width)`` along the long side: start, centre, end
    (left/centre/right for landscape frames, top/centre/bottom for portrait)."""
    side = min(height, width)
    if width >= height:
        return [(x, 0.0, x + side, float(side)) for x in (0.0, (width - side) / 2, width - side)]
    return [(0.0, y, float(side), y + side) for y in (0.0, (height - side) / 2, height - side)]


def pixel_box(box: Box, height: int, width: int) -> tuple[int, int, int, int]:
    """``box`` in whole pixels of a ``height x width`` frame: its width and height rounded
    as sizes (a square box stays square where rounding both edges could make it 1 px
    wider than tall) and its corner moved inside the frame where rounding pushed it out."""
    x0, y0, x1, y1 = box
    if not (x0 < width and y0 < height and x1 > 0 and y1 > 0):
        raise ValueError(f"crop box {box} is outside the {(height, width)} frame")
    w, h = min(max(1, round(x1 - x0)), width), min(max(1, round(y1 - y0)), height)
    left = min(max(round(x0), 0), max(width - w, 0))
    top = min(max(round(y0), 0), max(height - h, 0))
    return left, top, left + w, top + h


def decode_crop_resize(
    frames: Sequence[bytes] | np.ndarray, box: Box, size: int, flip: bool = False
) -> np.ndarray:
    """JPEG bytes (or uint8 ``(T, H, W, 3)`` frames) -> uint8 ``(T, size, size, 3)``: each frame
    cut to ``box`` (rounded to whole pixels) and resized, optionally mirrored.

    OpenCV decodes (libjpeg-turbo) and resizes (:func:`resize_square`); about 4x faster per
    frame than PIL's decode plus box resize.
    """
    import cv2

    out = np.empty((len(frames), size, size, 3), np.uint8)
    pixels = None
    for i, frame in enumerate(frames):
        if not isinstance(frame, np.ndarray):
            frame = cv2.imdecode(np.frombuffer(frame, np.uint8), cv2.IMREAD_COLOR_RGB)
        if pixels is None:
            pixels = x0, y0, x1, y1 = pixel_box(box, *frame.shape[:2])
        resized = resize_square(frame[y0:y1, x0:x1], size)
        out[i] = resized[:, ::-1] if flip else resized
    return out


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """``image`` resized to ``size x size``: area averaging along a side that shrinks
    (antialiased), bilinear along one that grows; a crop that shrinks one way and grows the
    other is resized in those two passes (bilinear alone aliases the shrinking side)."""
    import cv2

    height, width = image.shape[:2]
    shrunk = (min(width, size), min(height, size))
    if shrunk != (width, height):
        image = cv2.resize(image, shrunk, interpolation=cv2.INTER_AREA)
    if shrunk != (size, size):
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
    return image


def flip_label(label: Any, flip_map: Mapping[int, int]) -> Any:
    """The label of a mirrored clip: ``flip_map[label]`` for direction-sensitive classes
    (e.g. "pushing left to right" <-> "pushing right to left"), else unchanged; a multi-hot
    label (several classes per clip) has each such pair of columns swapped."""
    if np.ndim(label):
        columns = np.arange(len(label))
        columns[list(flip_map)] = list(flip_map.values())
        return np.asarray(label)[columns]
    return int(flip_map.get(int(label), label))


def left_right_pairs(names: Sequence[str]) -> list[tuple[str, str]]:
    """Pairs of class names that differ only by the words "left" and "right" swapped, e.g.
    SSv2's "Pushing something from left to right" / "... from right to left"."""
    swap = {"left": "right", "right": "left", "Left": "Right", "Right": "Left"}
    known = set(names)
    pairs = []
    for name in names:
        mirrored = " ".join(swap.get(word, word) for word in name.split(" "))
        if mirrored != name and mirrored in known and (mirrored, name) not in pairs:
            pairs.append((name, mirrored))
    return pairs


def flip_map_from_names(
    pairs: Sequence[Sequence[str]] | str, names: Sequence[str]
) -> dict[int, int]:
    """``{i: j, j: i}`` for each pair of class names that a horizontal flip swaps;
    ``pairs="left_right"`` takes :func:`left_right_pairs` of ``names``."""
    if isinstance(pairs, str):
        if pairs != "left_right":
            raise ValueError(f"input.flip_label_map: {pairs!r} is not 'left_right' or pairs")
        pairs = left_right_pairs(names)
    index = {n: i for i, n in enumerate(names)}
    out: dict[int, int] = {}
    for pair in pairs:
        if len(pair) != 2 or any(n not in index for n in pair):
            raise ValueError(f"input.flip_label_map: {pair!r} is not a pair of class names")
        a, b = index[pair[0]], index[pair[1]]
        out[a], out[b] = b, a
    return out


def color_jitter(
    clip: np.ndarray,
    rng: np.random.Generator,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
) -> np.ndarray:
    """Random brightness, contrast and saturation factors in ``[1 - s, 1 + s]`` applied in a
    random order to every frame alike (see :func:`adjust_colors`)."""
    order = [int(i) for i in rng.permutation(3)]
    factors = [rng.uniform(max(0.0, 1 - s), 1 + s) for s in (brightness, contrast, saturation)]
    return adjust_colors(clip, order, factors)


def adjust_colors(clip: np.ndarray, order: Sequence[int], factors: Sequence[float]) -> np.ndarray:
    """Applies ops ``order`` (0 brightness, 1 contrast, 2 saturation) with ``factors``, using
    torchvision's definitions: brightness scales, contrast blends with the mean grey level (of
    the whole clip, so every frame changes alike), saturation blends with each pixel's grey."""
    x = clip.astype(np.float32)
    for op in order:
        f = np.float32(factors[op])
        if op == 0:
            x = x * f
        elif op == 1:
            mean = _gray(x).mean()
            x = (x - mean) * f + mean
        else:
            gray = _gray(x)[..., None]
            x = (x - gray) * f + gray
        np.clip(x, 0.0, 255.0, out=x)
    return (x + 0.5).astype(np.uint8)


# Luma weights: PIL's / torchvision's, and tf.image.rgb_to_grayscale's.
PIL_LUMA = (0.299, 0.587, 0.114)
TF_LUMA = (0.2989, 0.5870, 0.1140)


def _gray(x: np.ndarray, weights: Sequence[float] = PIL_LUMA) -> np.ndarray:
    """The grey level of each pixel of float RGB ``x`` (last axis): ``weights`` . (R, G, B)."""
    return x @ np.asarray(weights, np.float32)


# DMVR's color_default_augm (deepmind/dmvr dmvr/processors.py), scenic's video colour
# augmentation: random_brightness(max_delta=32/255), random_saturation(0.6, 1.4),
# random_contrast(0.6, 1.4), random_hue(max_delta=0.2), each factor uniform in its range.
DMVR_BRIGHTNESS = 32 / 255
DMVR_SATURATION = (0.6, 1.4)
DMVR_CONTRAST = (0.6, 1.4)
DMVR_HUE = 0.2


def dmvr_color_augment(
    clip: np.ndarray, rng: np.random.Generator, augment_prob: float = 0.8, drop_prob: float = 0.0
) -> np.ndarray:
    """DMVR's video colour augmentation (scenic's ``do_color_augment``), one draw for the
    whole clip: with probability ``augment_prob`` a random brightness delta, saturation,
    contrast and hue (:func:`dmvr_adjust_colors`), then with probability ``drop_prob`` grey.
    Much milder than ``color_jitter`` of the same number: brightness moves by <= 32 levels."""
    factors = None
    if rng.uniform() < augment_prob:
        factors = (
            rng.uniform(-DMVR_BRIGHTNESS, DMVR_BRIGHTNESS),
            rng.uniform(*DMVR_SATURATION),
            rng.uniform(*DMVR_CONTRAST),
            rng.uniform(-DMVR_HUE, DMVR_HUE),
        )
    drop = bool(rng.uniform() < drop_prob)
    return dmvr_adjust_colors(clip, factors, drop)


def dmvr_adjust_colors(
    clip: np.ndarray, factors: Sequence[float] | None = None, drop: bool = False
) -> np.ndarray:
    """A uint8 ``(T, H, W, 3)`` clip through TF's colour ops on [0, 1] floats, in DMVR's
    order, every frame alike. ``factors`` (None: skipped) = ``(brightness, saturation,
    contrast, hue)``: ``tf.image.adjust_brightness`` (adds the delta), ``adjust_saturation``
    (scales HSV saturation), ``adjust_contrast`` (about each frame's per-channel mean),
    ``adjust_hue`` (turns HSV hue by that fraction of a turn), then a clip to [0, 1].
    ``drop``: ``tf.image.rgb_to_grayscale`` in all three channels."""
    if factors is None and not drop:
        return clip
    values = None if factors is None else tuple(np.float32(f) for f in factors)
    out = np.empty_like(clip)
    for frame, target in zip(clip, out, strict=True):  # a frame's temporaries stay in cache
        target[...] = _dmvr_frame(frame, values, drop)
    return out


def _dmvr_frame(frame: np.ndarray, factors: Sequence[np.float32] | None, drop: bool) -> np.ndarray:
    """:func:`dmvr_adjust_colors` of one uint8 ``(H, W, 3)`` frame, on its channel planes
    ``(3, H, W)`` (where the per-pixel min / max / hue work is several times faster)."""
    x = np.moveaxis(frame, -1, 0).astype(np.float32, order="C") / 255
    if factors is not None:
        brightness, saturation, contrast, hue = factors
        x = _adjust_saturation(x + brightness, saturation)
        mean = x.mean(axis=(1, 2), keepdims=True)  # per channel of the image, as TF's
        x = _adjust_hue((x - mean) * contrast + mean, hue)
        np.clip(x, 0.0, 1.0, out=x)
    x = np.moveaxis(x, 0, -1)
    if drop:
        x = np.repeat(_gray(x, TF_LUMA)[..., None], 3, axis=-1)
    return (x * 255 + 0.5).astype(np.uint8)


def _adjust_saturation(planes: np.ndarray, factor: np.float32) -> np.ndarray:
    """TF's AdjustSaturation kernel on channel planes: HSV saturation ``(high - low) / high``
    times ``factor``, clipped to [0, 1] (0 where ``high <= 0``), hue and value (``high``)
    kept; that moves every channel of a pixel towards its ``high`` by one ratio."""
    low, high, span = _extremes(planes)
    ratio = np.minimum(factor, np.maximum(high, 0) / span)
    return high - (high - planes) * ratio


def _adjust_hue(planes: np.ndarray, delta: np.float32) -> np.ndarray:
    """TF's AdjustHue kernel on channel planes: HSV hue turned by ``delta`` (a fraction of a
    turn), each pixel's smallest and largest channel kept. Hue in sixths of a turn; channel
    ``n`` in (5, 3, 1) (R, G, B) is ``high - (high - low) * clip(min(k, 4 - k), 0, 1)`` with
    ``k = (n + hue) mod 6`` (the HSV -> RGB formula)."""
    r, g, b = planes
    low, high, span = _extremes(planes)
    hue = np.where(
        high == r, (g - b) / span, np.where(high == g, (b - r) / span + 2, (r - g) / span + 4)
    )
    hue += 6 * delta
    hue -= 6 * np.floor(hue / 6)  # [0, 6]
    out = np.empty_like(planes)
    for channel, n in enumerate((5, 3, 1)):
        k = hue + n
        k = np.where(k >= 6, k - 6, k)
        out[channel] = high - (high - low) * np.clip(np.minimum(k, 4 - k), 0, 1)
    return out


def _extremes(planes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each pixel's smallest and largest channel, and their difference as a divisor (1 where
    they are equal: grey pixels, whose hue and saturation are 0)."""
    low, high = planes.min(0), planes.max(0)
    return low, high, np.where(high > low, high - low, np.float32(1))


def random_erase(
    clip: np.ndarray,
    rng: np.random.Generator,
    area: tuple[float, float] = (0.02, 1 / 3),
    ratio: tuple[float, float] = (0.3, 3.3),
) -> np.ndarray:
    """Fills one random rectangle, in the same place in every frame, with noise drawn anew
    for each frame, as VideoMAE's clip-wise random erasing (timm's, per pixel) does; the
    noise is uniform over 0-255 (theirs: normal in normalised units, which the transform
    does not know)."""
    t, h, w, c = clip.shape
    out = clip.copy()
    for _ in range(10):
        target = h * w * rng.uniform(*area)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        eh, ew = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < eh < h and 0 < ew < w:
            y0, x0 = int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1))
            out[:, y0 : y0 + eh, x0 : x0 + ew] = rng.integers(0, 256, (t, eh, ew, c), np.uint8)
            return out
    return out


def mix_batch(
    video: np.ndarray,
    label: np.ndarray,
    num_classes: int | Sequence[int],
    rng: np.random.Generator,
    mixup_alpha: float = 0.0,
    cutmix_alpha: float = 0.0,
    switch_prob: float = 0.5,
    audio: np.ndarray | None = None,
    has_audio: np.ndarray | None = None,
    multi_label: bool = False,
    mixup_rate: float | None = None,
) -> dict[str, np.ndarray]:
    """Mixup or cutmix of a batch with its reverse (row ``i`` with row ``B-1-i``, as timm does).

    Returns ``video`` (uint8, mixed), ``label`` (the dominant row's, for accuracy) and
    ``label_probs`` float32 ``(B, num_classes)``: ``lam * onehot(y) + (1 - lam) *
    onehot(y_reversed)`` with ``lam`` the mixup weight or cutmix's exact kept-area fraction.
    Cutmix is chosen with ``switch_prob`` when both are on.

    Several tasks: ``label`` ``(B, tasks)`` and ``num_classes`` one count per task; the
    one-hots (and so ``label_probs``) are concatenated over the tasks, mixed with one ``lam``.
    ``multi_label``: ``label`` is multi-hot ``(B, num_classes)`` and is mixed as it is (each
    class's target ``lam`` or ``1 - lam``, 1 where both partners have it), as scenic mixes
    AudioSet's labels.

    With ``audio`` (spectrograms ``(B, frames, mel_bins)``) and ``has_audio`` ``(B,)``, the
    same rows mix with the same ``lam`` (cutmix too: its kept-area fraction), and a mixed row
    has audio when either partner has.

    ``mixup_rate`` (mixup only): each row is mixed with probability ``mixup_rate``, with a
    weight of its own (AST's per-example mixup); the others keep their clip and label
    (``lam = 1``). None: every row, one weight for the batch.
    """
    sizes = [int(num_classes)] if np.ndim(num_classes) == 0 else list(num_classes)
    if multi_label:
        onehot = np.asarray(label, np.float32).reshape(len(label), sum(sizes))
    else:
        columns = label.reshape(len(label), len(sizes))
        onehot = np.concatenate(
            [np.eye(k, dtype=np.float32)[columns[:, i]] for i, k in enumerate(sizes)], axis=1
        )
    sound = {} if audio is None else {"audio": audio, "has_audio": has_audio}
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return {"video": video, "label": label, "label_probs": onehot, **sound}
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or rng.uniform() < switch_prob)
    other = video[::-1]
    if use_cutmix:
        lam = rng.beta(cutmix_alpha, cutmix_alpha)
        _, _, h, w, _ = video.shape
        ch, cw = round(h * math.sqrt(1 - lam)), round(w * math.sqrt(1 - lam))
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        y0, y1 = max(cy - ch // 2, 0), min(cy + (ch - ch // 2), h)
        x0, x1 = max(cx - cw // 2, 0), min(cx + (cw - cw // 2), w)
        mixed = video.copy()
        mixed[:, :, y0:y1, x0:x1] = other[:, :, y0:y1, x0:x1]
        lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
    else:
        if mixup_rate is None:
            lam = rng.beta(mixup_alpha, mixup_alpha)
        else:  # a weight per row; 1 (unmixed) for the rows outside the rate
            chosen = rng.uniform(size=len(video)) < mixup_rate
            lam = np.where(chosen, rng.beta(mixup_alpha, mixup_alpha, size=len(video)), 1.0)
        weight = _per_row(lam, video.ndim)
        blend = video.astype(np.float32) * weight + other.astype(np.float32) * (1 - weight)
        mixed = (blend + 0.5).astype(np.uint8)
    row = _per_row(lam, 2)
    probs = row * onehot + (1 - row) * onehot[::-1]
    dominant = np.where(_per_row(lam, label.ndim) >= 0.5, label, label[::-1]).astype(np.int32)
    if audio is not None:
        heard, weight = np.asarray(has_audio), _per_row(lam, audio.ndim)
        sound = {
            "audio": (weight * audio + (1 - weight) * audio[::-1]).astype(np.float32),
            "has_audio": heard | (heard[::-1] & (np.asarray(lam) < 1)),  # a partner mixed in
        }
    return {"video": mixed, "label": dominant, "label_probs": probs.astype(np.float32), **sound}


def _per_row(lam: float | np.ndarray, ndim: int) -> float | np.ndarray:
    """A batch's mixing weight (a number) as it is, or one weight per row ``(B,)`` shaped to
    broadcast over arrays of ``ndim`` axes."""
    return lam if np.ndim(lam) == 0 else np.reshape(lam, (-1,) + (1,) * (ndim - 1))
