"""Tests for the procedural motion dataset (``vjax.data.motion``) and its TFDS builder.

Besides determinism, shapes and the builder round trip, these check the two design
properties the dataset exists for: hand-written motion estimators recover the class
from pixels, and the middle frame alone carries no class information.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from vjax.data.motion import MOTIONS, generate_arrays, generate_example, render_clip

T, H, W = 16, 32, 32


# ------------------------------------------------------------- helpers


def _pair_correlations(video: np.ndarray) -> np.ndarray:
    """Circular cross-correlation of consecutive temporal differences, ``(T-2, H, W)``.

    Temporal differences cancel the static background exactly; if the object moves by
    ``d`` per frame, ``diff[t+1](x) == diff[t](x - d)`` on the torus, so the correlation
    peaks at lag ``d``.
    """
    d = np.diff(video.astype(np.float32), axis=0)
    f = np.fft.fft2(d, axes=(1, 2))
    return np.fft.ifft2(f[1:] * np.conj(f[:-1]), axes=(1, 2)).real.sum(-1)


def _peak_lag(corr: np.ndarray) -> tuple[int, int]:
    """Wrap-aware ``(dx, dy)`` of the correlation maximum."""
    h, w = corr.shape
    iy, ix = np.unravel_index(np.argmax(corr), corr.shape)
    return (ix + w // 2) % w - w // 2, (iy + h // 2) % h - h // 2


def _classify_translation(video: np.ndarray) -> str:
    dx, dy = _peak_lag(_pair_correlations(video).sum(0))
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"  # image y points down


def _classify_speed_change(video: np.ndarray) -> str:
    corr = _pair_correlations(video)
    third = len(corr) // 3
    early = np.hypot(*_peak_lag(corr[:third].sum(0)))
    late = np.hypot(*_peak_lag(corr[-third:].sum(0)))
    return "speed_up" if late > early else "slow_down"


def _bilinear_wrap(img: np.ndarray, qx: np.ndarray, qy: np.ndarray) -> np.ndarray:
    """Sample ``img (N, H, W, C)`` at continuous pixel coordinates (centres at +0.5), on a torus."""
    h, w = img.shape[1:3]
    x, y = qx - 0.5, qy - 0.5
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    x0, y0 = x0 % w, y0 % h
    x1, y1 = (x0 + 1) % w, (y0 + 1) % h
    top = (1 - fx) * img[:, y0, x0] + fx * img[:, y0, x1]
    bot = (1 - fx) * img[:, y1, x0] + fx * img[:, y1, x1]
    return (1 - fy) * top + fy * bot


def _classify_rotation(video: np.ndarray) -> str:
    """Which rotation sense best maps frame t onto frame t+1.

    The centre is the circular centroid of the temporal-variation map. In image
    coordinates (y down) the matrix ``[[cos a, -sin a], [sin a, cos a]]`` with ``a > 0``
    sends the point above the centre, ``(0, -1)``, to ``(sin a, -cos a)``: to the right,
    i.e. clockwise on screen. If frame t+1 is frame t turned by ``a`` about ``c``, then
    ``I[t+1](p) = I[t](c + R(-a) (p - c))``.
    """
    x = video.astype(np.float32)
    _, h, w, _ = x.shape
    var = x.std(0).sum(-1)
    var = np.maximum(var - np.median(var), 0.0)
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    cx = (np.angle((var * np.exp(2j * np.pi * xs / w)).sum()) * w / (2 * np.pi)) % w
    cy = (np.angle((var * np.exp(2j * np.pi * ys / h)).sum()) * h / (2 * np.pi)) % h
    dx = (xs - cx + w / 2) % w - w / 2
    dy = (ys - cy + h / 2) % h - h / 2
    disc = np.hypot(dx, dy) < 0.4 * min(h, w)
    best = {}
    for sense in (1, -1):  # +1: clockwise on screen
        errs = []
        for deg in (15.0, 20.0, 25.0):
            a = np.deg2rad(sense * deg)
            qx = cx + np.cos(a) * dx + np.sin(a) * dy  # c + R(-a) (p - c)
            qy = cy - np.sin(a) * dx + np.cos(a) * dy
            pred = _bilinear_wrap(x[:-1], qx, qy)
            errs.append((((pred - x[1:]) ** 2).sum(-1) * disc).sum())
        best[sense] = min(errs)
    return "rotate_cw" if best[1] < best[-1] else "rotate_ccw"


def _classify_scale_change(video: np.ndarray) -> str:
    """Spatial gradient energy grows with the object's size (edges and stripes lengthen)."""
    x = video.astype(np.float32)
    gx, gy = x - np.roll(x, 1, axis=2), x - np.roll(x, 1, axis=1)
    energy = np.sqrt((gx**2 + gy**2).sum(-1)).mean((1, 2))
    q = len(energy) // 4
    return "approach" if energy[-q:].mean() > energy[:q].mean() else "recede"


def _log_power(x: np.ndarray) -> np.ndarray:
    """Translation-invariant features: log power spectrum (2-D for a frame, 3-D for a clip)."""
    g = x.astype(np.float32).mean(-1)
    g = g - g.mean()
    return np.log1p(np.abs(np.fft.fftn(g)) ** 2).ravel()


def _nearest_centroid_acc(feats: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fit class centroids of standardised features on the first half, score the second."""
    half = len(feats) // 2
    mu, sd = feats[:half].mean(0), feats[:half].std(0) + 1e-6
    f = (feats - mu) / sd
    cents = np.stack([f[:half][labels[:half] == c].mean(0) for c in range(k)])
    pred = np.argmin(((f[half:, None] - cents[None]) ** 2).sum(-1), axis=1)
    return float((pred == labels[half:]).mean())


def _motion_rng(i: int) -> np.random.Generator:
    return np.random.default_rng([12345, i])


# ------------------------------------------------------------- basics


def test_catalogue_order() -> None:
    assert MOTIONS == (
        "right", "left", "down", "up", "rotate_cw", "rotate_ccw",
        "speed_up", "slow_down", "approach", "recede",
    )  # fmt: skip


def test_determinism() -> None:
    a, la = generate_example(0, "train", 7, 8, 8, 16, 16)
    b, lb = generate_example(0, "train", 7, 8, 8, 16, 16)
    assert la == lb and a.tobytes() == b.tobytes()
    for other in (
        generate_example(1, "train", 7, 8, 8, 16, 16)[0],
        generate_example(0, "test", 7, 8, 8, 16, 16)[0],
        generate_example(0, "validation", 7, 8, 8, 16, 16)[0],
        generate_example(0, "train", 15, 8, 8, 16, 16)[0],  # same label, other index
    ):
        assert not np.array_equal(a, other)


@pytest.mark.parametrize("k", [2, 7, 10])
def test_shapes_dtypes_and_exact_balance(k: int) -> None:
    videos, labels = generate_arrays(3, "train", 3 * k, k, 8, 16, 16)
    assert videos.shape == (3 * k, 8, 16, 16, 3) and videos.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(labels, minlength=k), np.full(k, 3))
    np.testing.assert_array_equal(labels, np.arange(3 * k) % k)
    assert videos.std() > 10  # not blank


@pytest.mark.parametrize("motion", MOTIONS)
def test_render_clip_any_shape(motion: str) -> None:
    v = render_clip(np.random.default_rng(0), motion, 5, 12, 20)
    assert v.shape == (5, 12, 20, 3) and v.dtype == np.uint8
    assert v.min() < v.max()


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        render_clip(np.random.default_rng(0), "sideways", 4, 16, 16)
    for k in (1, 11):
        with pytest.raises(ValueError):
            generate_example(0, "train", 0, k, 4, 16, 16)


def test_object_is_brighter_than_background() -> None:
    """Fixed contrast polarity (a learnability design choice): where a moving object
    covers or uncovers a pixel, the covered state is the brighter one."""
    for i in range(12):
        video, _ = generate_example(0, "train", i, 4, T, H, W)  # translations
        x = video.astype(np.float32) / 255.0
        dev = x.mean(-1) - np.median(x.mean(-1), axis=0)  # median ~ background
        strong = np.abs(dev) > 0.25
        assert strong.sum() > 50
        assert (dev[strong] > 0).mean() > 0.95


def test_render_is_vectorised_over_frames_and_pixels() -> None:
    """No Python loop over frames or pixels: a clip of every motion costs the same number of
    Python and C function calls at 4x32x32 as at 16x64x96 (a count, unlike a time, does not
    depend on how busy the machine is)."""

    def calls(motion: str, shape: tuple[int, int, int]) -> int:
        count = [0]

        def profile(frame, event, arg):
            count[0] += event in ("call", "c_call")

        sys.setprofile(profile)
        try:
            render_clip(np.random.default_rng(0), motion, *shape)
        finally:
            sys.setprofile(None)
        return count[0]

    render_clip(np.random.default_rng(0), "right", T, H, W)  # lazy imports and caches
    for motion in MOTIONS:
        counts = {
            shape: calls(motion, shape) for shape in [(4, 32, 32), (16, 32, 32), (16, 64, 96)]
        }
        assert len(set(counts.values())) == 1, (motion, counts)


# ------------------------------------------------------------- motion carries the class


def test_translation_direction_is_recoverable() -> None:
    correct = 0
    for i in range(40):
        video, label = generate_example(0, "validation", i, 4, T, H, W)
        correct += _classify_translation(video) == MOTIONS[label]
    assert correct / 40 >= 0.9


def test_rotation_sense_is_recoverable_and_clockwise_on_screen() -> None:
    motions = [MOTIONS[4 + i % 2] for i in range(40)]
    correct = sum(
        _classify_rotation(render_clip(_motion_rng(i), m, T, H, W)) == m
        for i, m in enumerate(motions)
    )
    assert correct / 40 >= 0.9


def test_speed_change_is_recoverable() -> None:
    motions = [MOTIONS[6 + i % 2] for i in range(40)]
    correct = sum(
        _classify_speed_change(render_clip(_motion_rng(i), m, T, H, W)) == m
        for i, m in enumerate(motions)
    )
    assert correct / 40 >= 0.85


def test_scale_change_is_recoverable() -> None:
    motions = [MOTIONS[8 + i % 2] for i in range(40)]
    correct = sum(
        _classify_scale_change(render_clip(_motion_rng(i), m, T, H, W)) == m
        for i, m in enumerate(motions)
    )
    assert correct / 40 >= 0.9


# ------------------------------------------------------------- middle frame is uninformative


def test_middle_frame_is_identical_across_motions_for_one_rng_state() -> None:
    """All appearance draws and the noise precede the motion draws, so the middle frame
    depends only on the generator state, never on the class; the other frames do."""
    for seed in range(3):
        clips = {m: render_clip(np.random.default_rng(seed), m, T, H, W) for m in MOTIONS}
        mids = {m: c[T // 2].tobytes() for m, c in clips.items()}
        assert len(set(mids.values())) == 1
        others = {m: np.delete(c, T // 2, axis=0).tobytes() for m, c in clips.items()}
        assert len(set(others.values())) == len(MOTIONS)


@pytest.fixture(scope="module")
def translation_set() -> tuple[np.ndarray, np.ndarray]:
    return generate_arrays(0, "train", 600, 4, T, H, W)


@pytest.fixture(scope="module")
def all_class_set() -> tuple[np.ndarray, np.ndarray]:
    return generate_arrays(0, "test", 800, 10, T, H, W)


def _middle_frame_features(videos: np.ndarray) -> dict[str, np.ndarray]:
    mid = videos[:, T // 2]
    n = len(mid)
    return {
        "mean_colour": mid.reshape(n, -1, 3).mean(1),
        "pixels_8x8": mid.reshape(n, 8, H // 8, 8, W // 8, 3).mean((2, 4)).reshape(n, -1),
        "log_power": np.stack([_log_power(m) for m in mid]),
    }


@pytest.mark.parametrize("dataset, k", [("translation_set", 4), ("all_class_set", 10)])
def test_middle_frame_classifiers_are_at_chance(dataset: str, k: int, request) -> None:
    """Test halves hold 300 / 400 clips: the std of a chance-level accuracy is
    sqrt(p (1 - p) / n) = 0.025 / 0.015, and the margin is about 4 of those."""
    videos, labels = request.getfixturevalue(dataset)
    n_test = len(videos) - len(videos) // 2
    margin = 4.0 * np.sqrt((1 / k) * (1 - 1 / k) / n_test)
    for name, feats in _middle_frame_features(videos).items():
        acc = _nearest_centroid_acc(feats.astype(np.float32), labels, k)
        assert abs(acc - 1 / k) < margin, (name, acc)


def test_same_classifier_on_motion_inputs_beats_chance(translation_set, all_class_set) -> None:
    videos, labels = translation_set
    diff = videos[:, T // 2 + 1].astype(np.int16) - videos[:, T // 2]
    acc_diff = _nearest_centroid_acc(np.stack([_log_power(d) for d in diff]), labels, 4)
    acc_clip = _nearest_centroid_acc(np.stack([_log_power(v) for v in videos]), labels, 4)
    # The difference's power spectrum tells horizontal from vertical motion (not its sign).
    assert acc_diff > 0.25 + 0.1, acc_diff
    assert acc_clip >= 0.9, acc_clip
    videos, labels = all_class_set
    acc_all = _nearest_centroid_acc(np.stack([_log_power(v) for v in videos]), labels, 10)
    assert acc_all > 0.1 + 0.2, acc_all


# ------------------------------------------------------------- TFDS builder

SMALL = dict(num_classes=4, num_frames=8, height=16, width=16, num_train=24, num_validation=8,
             num_test=8, seed=0)  # fmt: skip
SPLIT_SIZES = {"train": 24, "validation": 8, "test": 8}


def _mtimes(root: str) -> dict[str, int]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            out[p] = os.stat(p).st_mtime_ns
    return out


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from vjax.data.motion_builder import prepare_motion

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    return data_dir, prepare_motion(data_dir, **SMALL)


def test_builder_metadata(prepared) -> None:
    from vjax.data.motion_builder import VjaxMotion

    _, builder = prepared
    assert isinstance(builder, VjaxMotion) and builder.name == "vjax_motion"
    assert str(builder.version) == "1.0.0"
    assert builder.builder_config.name == "c4_f8_16x16_n24-8-8_s0"
    info = builder.info
    assert set(info.features.keys()) == {"video", "label", "index"}
    assert info.features["label"].names == list(MOTIONS[:4])
    assert info.features["video"].shape == (8, 16, 16, 3)
    assert info.supervised_keys == ("video", "label")
    assert {s: info.splits[s].num_examples for s in SPLIT_SIZES} == SPLIT_SIZES


def test_builder_round_trip_is_exact(prepared) -> None:
    _, builder = prepared
    for split, n in SPLIT_SIZES.items():
        source = builder.as_data_source(split)
        assert len(source) == n
        labels = []
        for i in range(n):
            ex = source[i]
            assert isinstance(ex["video"], list)  # this tfds version returns frames
            video = np.stack(ex["video"])
            assert int(ex["index"]) == i  # stored in index order
            expected, label = generate_example(0, split, i, 4, 8, 16, 16)
            assert int(ex["label"]) == label
            np.testing.assert_array_equal(video, expected)  # PNG is lossless
            labels.append(label)
        np.testing.assert_array_equal(np.bincount(labels, minlength=4), np.full(4, n // 4))


def test_prepare_is_idempotent_and_configs_are_separate(prepared) -> None:
    from vjax.data.motion_builder import prepare_motion

    data_dir, builder = prepared
    before = _mtimes(data_dir)
    assert before  # files were written
    again = prepare_motion(data_dir, **SMALL)
    assert str(again.data_dir) == str(builder.data_dir)
    assert _mtimes(data_dir) == before

    other = prepare_motion(data_dir, **{**SMALL, "seed": 1, "num_train": 8})
    assert str(other.data_dir) != str(builder.data_dir)
    assert os.path.isdir(str(other.data_dir))
    # The first config's files are untouched (TFDS may update its dataset-level
    # ``vjax_motion/.config/metadata.json`` when it prepares a new config).
    first = _mtimes(str(builder.data_dir))
    assert first and first == {p: t for p, t in before.items() if p in first}
    assert len(other.as_data_source("train")) == 8
    a = np.stack(other.as_data_source("train")[0]["video"])
    b = np.stack(builder.as_data_source("train")[0]["video"])
    assert not np.array_equal(a, b)
