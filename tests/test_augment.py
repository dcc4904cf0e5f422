"""Clip sampling and augmentation checked against hand-made arrays and torchvision."""

import io

import numpy as np
import pytest

from vjax.data import augment, sampling
from vjax.data.transforms import InputOptions, _test_clips

# ------------------------------------------------------------------ temporal sampling


def test_clip_at_stride_loop_and_pad():
    np.testing.assert_array_equal(sampling.clip_at(3, 10, 4, 2), [3, 5, 7, 9])
    np.testing.assert_array_equal(sampling.clip_at(3, 8, 4, 2, "loop"), [3, 5, 7, 1])
    np.testing.assert_array_equal(sampling.clip_at(3, 8, 4, 2, "pad"), [3, 5, 7, 7])
    # A fractional stride resamples: 2.5 stored frames per clip frame.
    np.testing.assert_array_equal(sampling.clip_at(0, 20, 4, 2.5), [0, 2, 5, 7])
    with pytest.raises(ValueError, match="pad_mode"):
        sampling.clip_at(0, 8, 4, 1, "mirror")


def test_uniform_clips_and_centre_clip():
    clips = sampling.uniform_clips(20, 4, 2, num_clips=3)  # span 7, starts 0, 6.5, 13
    np.testing.assert_array_equal(clips, [[0, 2, 4, 6], [6, 8, 10, 12], [13, 15, 17, 19]])
    np.testing.assert_array_equal(sampling.uniform_clips(20, 4, 2), [[6, 8, 10, 12]])
    # Longer than the video: every view starts at 0 and loops.
    np.testing.assert_array_equal(sampling.uniform_clips(3, 4, 1, 2), [[0, 1, 2, 0]] * 2)


def test_random_clip_covers_every_start_and_stays_inside():
    starts = set()
    for i in range(300):
        idx = sampling.random_clip(np.random.default_rng(i), 12, 4, 2)
        np.testing.assert_array_equal(np.diff(idx), [2, 2, 2])
        starts.add(int(idx[0]))
    assert starts == set(range(0, 6))  # span 7 of 12 frames: starts 0..5
    short = sampling.random_clip(np.random.default_rng(0), 3, 4, 1, "pad")
    np.testing.assert_array_equal(short, [0, 1, 2, 2])


def test_tsn_segments():
    np.testing.assert_array_equal(sampling.tsn_segments(10, 5), [1, 3, 5, 7, 9])
    for i in range(50):
        idx = sampling.tsn_segments(10, 5, np.random.default_rng(i))
        assert np.all(idx // 2 == np.arange(5))  # one frame from each 2-frame segment
    np.testing.assert_array_equal(sampling.tsn_segments(2, 4), [0, 0, 1, 1])


def test_tsn_test_views_are_distinct_and_two_are_videomaes():
    """VideoMAE's SSv2 test (ssv2.py, two views): ``int(tick / 2 + tick * x)`` and
    ``int(tick * x)`` with ``tick = frames / segments``; more views spread within segments."""
    for frames, segments in [(40, 4), (37, 16), (123, 16)]:
        tick = frames / segments
        middles = [int(tick / 2 + tick * x) for x in range(segments)]
        starts = [int(tick * x) for x in range(segments)]
        np.testing.assert_array_equal(sampling.tsn_views(frames, segments, 2), [middles, starts])
        np.testing.assert_array_equal(sampling.tsn_views(frames, segments, 1), [middles])
    three = sampling.tsn_views(60, 4, 3)  # 15-frame segments: 1/2, 5/6 and 1/6 of the way
    np.testing.assert_array_equal(three, [[7, 22, 37, 52], [12, 27, 42, 57], [2, 17, 32, 47]])
    opts = InputOptions(num_frames=4, sampling="tsn", test_num_clips=2, crop_size=8)
    np.testing.assert_array_equal(_test_clips(opts, 40, 10.0), [[5, 15, 25, 35], [0, 10, 20, 30]])


# ------------------------------------------------------------------ spatial


def _frames(t=3, h=6, w=8):
    """Every pixel distinct and asymmetric: value encodes (t, y, x, c)."""
    t_, y, x, c = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), np.arange(3), indexing="ij")
    return (t_ * 61 + y * 17 + x * 5 + c * 2).astype(np.uint8)


def test_crop_of_the_output_size_is_an_exact_slice_and_flip_mirrors_it():
    frames = _frames()
    out = augment.decode_crop_resize(frames, (2, 1, 6, 5), 4)
    np.testing.assert_array_equal(out, frames[:, 1:5, 2:6])
    flipped = augment.decode_crop_resize(frames, (2, 1, 6, 5), 4, flip=True)
    np.testing.assert_array_equal(flipped, frames[:, 1:5, 2:6][:, :, ::-1])


def test_an_odd_sided_centre_square_stays_square_in_whole_pixels():
    """The centre square of a 239 x 320 frame is 239 x 239 pixels (rounding both of its
    edges, 40.5 and 279.5, made it 240 wide), and a box that rounding pushes past the frame's
    edge is moved back inside, not cut."""
    for height, width in ((239, 320), (320, 239), (241, 241), (9, 16)):
        x0, y0, x1, y1 = augment.pixel_box(augment.centre_box(height, width), height, width)
        side = min(height, width)
        assert (x1 - x0, y1 - y0) == (side, side), (height, width)
        assert abs(x0 - (width - side) / 2) <= 0.5 and abs(y0 - (height - side) / 2) <= 0.5
    frames = _frames(1, 239, 320)
    x0 = augment.pixel_box(augment.centre_box(239, 320), 239, 320)[0]
    out = augment.decode_crop_resize(frames, augment.centre_box(239, 320), 239)
    np.testing.assert_array_equal(out, frames[:, :, x0 : x0 + 239])  # a slice: no resampling
    assert augment.pixel_box((10.6, 0.0, 20.6, 10.0), 10, 20) == (10, 0, 20, 10)
    with pytest.raises(ValueError, match="outside the"):
        augment.pixel_box((20.0, 0.0, 30.0, 10.0), 10, 20)


def test_resize_keeps_a_linear_ramp_linear():
    ramp = np.broadcast_to((np.arange(64) * 2)[None, None, :, None], (1, 64, 64, 3))
    out = augment.decode_crop_resize(np.ascontiguousarray(ramp, np.uint8), (0, 0, 64, 64), 32)
    # Output column j covers source columns 2j, 2j+1: any symmetric filter gives 4j + 1.
    np.testing.assert_array_equal(out[0, 10, 2:-2, 0], 4 * np.arange(2, 30) + 1)


def test_a_crop_that_shrinks_one_way_and_grows_the_other_is_antialiased_where_it_shrinks():
    """Columns 0, 255, 0 repeating, 48 wide and 8 tall, to 16 x 16: each output column covers
    three source columns, whose mean is 85 (bilinear alone samples the middle one: 255)."""
    row = np.tile([0, 255, 0], 16).astype(np.uint8)
    frames = np.ascontiguousarray(np.broadcast_to(row[None, None, :, None], (1, 8, 48, 3)))
    out = augment.decode_crop_resize(frames, (0, 0, 48, 8), 16)
    np.testing.assert_allclose(out, 85, atol=1)


def test_jpeg_frames_decode_like_arrays():
    from PIL import Image

    frames = _frames(2, 16, 24)
    jpegs = []
    for f in frames:
        buf = io.BytesIO()
        Image.fromarray(f).save(buf, "JPEG", quality=95)
        jpegs.append(buf.getvalue())
    decoded = np.stack([np.asarray(Image.open(io.BytesIO(j))) for j in jpegs])
    box = (3.5, 2.0, 19.5, 14.0)
    # PIL is an independent JPEG decoder: the two may differ by rounding only.
    ours = augment.decode_crop_resize(jpegs, box, 8).astype(int)
    np.testing.assert_allclose(ours, augment.decode_crop_resize(decoded, box, 8), atol=2)


def test_crop_boxes():
    assert augment.three_crop_boxes(4, 10) == [(0, 0, 4, 4), (3, 0, 7, 4), (6, 0, 10, 4)]
    assert augment.three_crop_boxes(10, 4) == [(0, 0, 4, 4), (0, 3, 4, 7), (0, 6, 4, 10)]
    assert augment.centre_box(4, 10, 0.5) == (4, 1, 6, 3)
    for i in range(100):
        rng = np.random.default_rng(i)
        x0, y0, x1, y1 = augment.random_resized_crop_box(rng, 100, 150, (0.2, 0.5), (0.5, 2))
        assert 0 <= x0 < x1 <= 150 and 0 <= y0 < y1 <= 100
        assert 0.2 * 15000 * 0.95 <= (x1 - x0) * (y1 - y0) <= 0.5 * 15000 * 1.05
        assert 0.45 <= (x1 - x0) / (y1 - y0) <= 2.2
        x0, y0, x1, y1 = augment.scale_jitter_box(rng, 100, 150, (112, 128), 64)
        side = x1 - x0
        assert y1 - y0 == pytest.approx(side) and 0 <= x0 and x1 <= 150 and 0 <= y0 and y1 <= 100
        assert 64 * 100 / 128 - 1e-9 <= side <= 64 * 100 / 112 + 1e-9
    # Impossible draws fall back to the largest centred box with the ratio in range.
    box = augment.random_resized_crop_box(np.random.default_rng(0), 10, 100, (1.0, 1.0), (1, 2))
    assert box == (40, 0, 60, 10)


def test_flip_label_map():
    names = ["push left", "push right", "wave", "turn cw", "turn ccw"]
    mapping = augment.flip_map_from_names(
        [("push left", "push right"), ("turn cw", "turn ccw")], names
    )
    assert mapping == {0: 1, 1: 0, 3: 4, 4: 3}
    assert [augment.flip_label(i, mapping) for i in range(5)] == [1, 0, 2, 4, 3]
    with pytest.raises(ValueError, match="not a pair of class names"):
        augment.flip_map_from_names([("push left", "jump")], names)
    ssv2 = [
        "Pushing something from left to right",
        "Pushing something from right to left",
        "Turning the camera left while filming something",
        "Turning the camera right while filming something",
        "Moving something up",
        "Putting something to the left of something",  # no mirrored class: unchanged
    ]
    assert augment.flip_map_from_names("left_right", ssv2) == {0: 1, 1: 0, 2: 3, 3: 2}


# ------------------------------------------------------------------ colour, erasing, mixing


@pytest.mark.parametrize("op", [0, 1, 2])
def test_colour_ops_match_torchvision(op):
    torch = pytest.importorskip("torch", reason="torchvision is the reference for colour ops")
    from torchvision.transforms.v2 import functional as F

    frame = np.random.default_rng(op).integers(0, 256, (1, 16, 16, 3), np.uint8)
    factor = 1.3
    ours = augment.adjust_colors(frame, [op], [factor] * 3).astype(int)
    image = torch.from_numpy(frame[0]).permute(2, 0, 1).float() / 255  # float images: [0, 1]
    fn = [F.adjust_brightness, F.adjust_contrast, F.adjust_saturation][op]
    ref = fn(image, factor).permute(1, 2, 0).numpy() * 255
    np.testing.assert_allclose(ours[0], ref, atol=1.0)


def test_colour_jitter_is_identical_across_frames():
    frame = np.random.default_rng(0).integers(0, 256, (1, 8, 8, 3), np.uint8)
    clip = np.repeat(frame, 4, axis=0)
    out = augment.color_jitter(clip, np.random.default_rng(1))
    assert not np.array_equal(out[0], frame[0])
    np.testing.assert_array_equal(out, np.repeat(out[:1], 4, axis=0))


def _clip_with_edge_pixels(seed: int) -> np.ndarray:
    """A small random clip with black, white, grey, primary and tied-channel pixels too."""
    clip = np.random.default_rng(seed).integers(0, 256, (3, 6, 6, 3), np.uint8)
    clip[0, 0] = [
        [0, 0, 0],
        [255, 255, 255],
        [128, 128, 128],
        [255, 0, 0],
        [0, 255, 0],
        [9, 9, 200],
    ]
    return clip


def _tf_colour_ops(clip: np.ndarray, factors, drop: bool) -> np.ndarray:
    """DMVR's color_default_augm / color_drop with given factors: TensorFlow's own ops on the
    clip as [0, 1] floats (a [T, H, W, C] tensor: one factor for every frame), x 255."""
    import tensorflow as tf

    x = tf.constant(clip.astype(np.float32) / 255)
    if factors is not None:
        brightness, saturation, contrast, hue = factors
        x = tf.image.adjust_brightness(x, brightness)
        x = tf.image.adjust_saturation(x, saturation)
        x = tf.image.adjust_contrast(x, contrast)
        x = tf.image.adjust_hue(x, hue)
        x = tf.clip_by_value(x, 0.0, 1.0)
    if drop:
        x = tf.tile(tf.image.rgb_to_grayscale(x), [1, 1, 1, 3])
    return x.numpy() * 255


@pytest.mark.parametrize(
    "factors, drop",
    [
        ((0.1, 1.0, 1.0, 0.0), False),  # brightness alone
        ((0.0, 1.35, 1.0, 0.0), False),  # saturation alone
        ((0.0, 0.6, 1.0, 0.0), False),
        ((0.0, 1.0, 0.65, 0.0), False),  # contrast alone
        ((0.0, 1.0, 1.4, 0.0), False),
        ((0.0, 1.0, 1.0, 0.17), False),  # hue alone
        ((0.0, 1.0, 1.0, -0.2), False),
        ((-32 / 255, 0.6, 1.4, -0.2), False),  # DMVR's extremes together
        ((32 / 255, 1.4, 0.6, 0.2), False),
        ((0.25, 2.5, 2.0, 0.9), False),  # beyond DMVR's ranges: out-of-range values inside
        (None, True),  # colour drop alone
        ((-0.1, 1.2, 0.8, 0.05), True),
    ],
)
def test_dmvr_colour_ops_match_tensorflow(factors, drop):
    clip = _clip_with_edge_pixels(seed=0)
    ours = augment.dmvr_adjust_colors(clip, factors, drop)
    assert ours.dtype == np.uint8 and ours.shape == clip.shape
    np.testing.assert_allclose(ours, _tf_colour_ops(clip, factors, drop), atol=1.0)  # uint8


def test_dmvr_colour_augment_draws_once_per_clip():
    clip = _clip_with_edge_pixels(seed=0)
    for seed in range(5):
        whole = augment.dmvr_color_augment(clip, np.random.default_rng(seed), 1.0, 0.0)
        assert not np.array_equal(whole, clip)
        for t in range(len(clip)):  # frame t alone, same draws: the same change
            alone = augment.dmvr_color_augment(clip[t : t + 1], np.random.default_rng(seed), 1.0)
            np.testing.assert_array_equal(whole[t], alone[0])
    frame = np.repeat(clip[:1], 4, axis=0)
    out = augment.dmvr_color_augment(frame, np.random.default_rng(1), 1.0, 0.0)
    np.testing.assert_array_equal(out, np.repeat(out[:1], 4, axis=0))


def test_dmvr_colour_augment_probabilities():
    clip = _clip_with_edge_pixels(seed=1)
    for seed in range(20):
        rng = np.random.default_rng(seed)
        np.testing.assert_array_equal(augment.dmvr_color_augment(clip, rng, 0.0, 0.0), clip)
        assert not np.array_equal(augment.dmvr_color_augment(clip, rng, 1.0, 0.0), clip)
        grey = augment.dmvr_color_augment(clip, rng, rng.uniform(), 1.0)
        assert (grey == grey[..., :1]).all()  # R = G = B
    changed = [
        not np.array_equal(augment.dmvr_color_augment(clip, np.random.default_rng(s), 0.8), clip)
        for s in range(200)
    ]
    assert 0.7 < np.mean(changed) < 0.9


def test_random_erase_one_rectangle_in_every_frame_with_noise_of_its_own():
    """The same box in every frame, its noise drawn per frame (VideoMAE's erasing: the box
    was filled with one frame's noise repeated, correlation 1 between frames)."""
    clip = np.zeros((3, 20, 30, 3), np.uint8)
    out = augment.random_erase(clip, np.random.default_rng(0), area=(0.1, 0.2))
    changed = (out != 0).any(-1)
    np.testing.assert_array_equal(changed, np.repeat(changed[:1], 3, axis=0))
    inside = out[:, changed[0]].reshape(3, -1).astype(float)
    assert abs(np.corrcoef(inside[0], inside[1])[0, 1]) < 0.2
    ys, xs = np.nonzero(changed[0])
    box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    assert 0.09 * 600 <= box <= 0.21 * 600 and changed[0].sum() >= 0.9 * box


def test_mixup_and_cutmix_soft_labels():
    video = np.stack([np.full((2, 8, 10, 3), v, np.uint8) for v in (0, 100, 200)])
    label = np.array([0, 1, 2])
    out = augment.mix_batch(video, label, 4, np.random.default_rng(0), mixup_alpha=1.0)
    probs = out["label_probs"]
    lam = probs[0, 0]  # row 0 mixed with row 2
    np.testing.assert_allclose(probs[0], [lam, 0, 1 - lam, 0], atol=1e-6)
    np.testing.assert_allclose(probs[1], [0, 1, 0, 0])  # the middle row meets itself
    np.testing.assert_allclose(out["video"][0], np.round(200 * (1 - lam)), atol=1)
    assert out["label"][0] == (0 if lam >= 0.5 else 2)

    out = augment.mix_batch(video, label, 4, np.random.default_rng(3), cutmix_alpha=1.0)
    lam = out["label_probs"][0, 0]
    pasted = (out["video"][0] == 200).all(-1).mean()  # fraction of pixels from row 2
    assert pasted == pytest.approx(1 - lam)
    np.testing.assert_allclose(out["label_probs"].sum(1), 1.0, atol=1e-6)
    plain = augment.mix_batch(video, label, 4, np.random.default_rng(0))
    np.testing.assert_array_equal(plain["label_probs"], np.eye(4)[label])


def test_clip_at_survives_float_error_of_a_resampled_stride():
    stride = 5 * 29.97 / 6  # 40 * stride = 998.9999999999999 in float64
    assert sampling.clip_at(0, 2000, 41, stride)[40] == 999


def test_random_clip_with_fractional_stride_reaches_every_fitting_start():
    starts = {
        int(sampling.random_clip(np.random.default_rng(i), 10, 4, 1.5)[0]) for i in range(300)
    }
    assert starts == set(range(6))  # s + 4.5 < 10


def test_tsn_random_offsets_are_independent_per_segment():
    offsets = np.stack(
        [
            sampling.tsn_segments(100, 4, np.random.default_rng(i)) - [0, 25, 50, 75]
            for i in range(200)
        ]
    )
    assert np.mean(offsets.std(axis=1) > 0) > 0.9  # not one shared offset
    assert abs(np.corrcoef(offsets[:, 0], offsets[:, 1])[0, 1]) < 0.3


def _flat_rows(b=4, h=16, w=16):
    return np.stack([np.full((2, h, w, 3), 60 * i + 7, np.uint8) for i in range(b)])


def test_cutmix_alone_mixes():
    out = augment.mix_batch(
        _flat_rows(), np.arange(4), 4, np.random.default_rng(3), cutmix_alpha=1.0
    )
    assert 0 < out["label_probs"][0, 0] < 1


def test_switch_prob_one_is_always_cutmix_with_its_own_alpha():
    lams = []
    for seed in range(200):
        out = augment.mix_batch(
            _flat_rows(h=32, w=32),
            np.arange(4),
            4,
            np.random.default_rng(seed),
            mixup_alpha=0.05,
            cutmix_alpha=1.0,
            switch_prob=1.0,
        )
        # cutmix pastes pixels: every pixel is its own row's or the partner's, none blended
        assert set(np.unique(out["video"][0])) <= {7, 187}
        lams.append(out["label_probs"][0, 0])
    # Beta(1, 1) boxes: few rows keep nearly everything (Beta(0.05, 0.05) would: ~40%)
    assert np.mean(np.array(lams) > 0.97) < 0.15


def test_mixup_rounds_blended_pixels():
    video = _flat_rows()
    out = augment.mix_batch(video, np.arange(4), 4, np.random.default_rng(0), mixup_alpha=1.0)
    lam = float(out["label_probs"][0, 0])
    want = np.floor(video[0].astype(np.float64) * lam + video[3] * (1 - lam) + 0.5)
    np.testing.assert_array_equal(out["video"][0], want)


def test_a_mixed_row_has_audio_when_either_partner_has():
    audio = np.ones((4, 8, 5), np.float32)
    has = np.array([True, False, True, False])
    out = augment.mix_batch(
        _flat_rows(),
        np.arange(4),
        4,
        np.random.default_rng(0),
        mixup_alpha=1.0,
        audio=audio,
        has_audio=has,
    )
    np.testing.assert_array_equal(out["has_audio"], [True, True, True, True])


# (vjax/data/augment.py)


# kills au02, au03, au05
def test_random_resized_crop_draws_like_torchvision():
    """RandomResizedCrop's rule: area uniform, aspect log-uniform, position uniform."""
    from vjax.data import augment

    boxes = [augment.random_resized_crop_box(np.random.default_rng(s), 1000, 1000, (0.05, 0.3),
                                             (0.25, 4.0)) for s in range(400)]  # fmt: skip
    x0, y0, x1, y1 = np.asarray(boxes, float).T
    w, h = x1 - x0, y1 - y0
    area = w * h / 1e6
    assert area.min() < 0.07 and area.max() > 0.28 and abs(area.mean() - 0.175) < 0.02
    assert 0.42 < np.mean(w < h) < 0.58  # log-uniform over (1/4, 4): half are taller than wide
    assert 0.42 < np.mean(x0 / (1000 - w)) < 0.58  # left edge uniform over the free room


# kills au01
def test_random_resized_crop_keeps_an_asymmetric_aspect_range():
    """crop_ratio=(1.5, 3) gives boxes 1.5 to 3 times wider than tall, never taller."""
    from vjax.data import augment

    for s in range(100):
        x0, y0, x1, y1 = augment.random_resized_crop_box(
            np.random.default_rng(s), 400, 600, (0.1, 0.3), (1.5, 3.0)
        )
        assert 1.45 <= (x1 - x0) / (y1 - y0) <= 3.1


# kills au04
def test_random_resized_crop_fallback_for_a_frame_taller_than_the_ratios():
    """torchvision's fallback for in_ratio < min(ratio): full width, height width / min(ratio)."""
    from vjax.data import augment

    box = augment.random_resized_crop_box(np.random.default_rng(0), 100, 10, (1.0, 1.0), (0.5, 2))
    assert box == (0, 40, 10, 60)


# kills au06
def test_scale_jitter_reaches_both_ends_of_the_short_side():
    """short_side=(112, 113) is inclusive: both lengths are drawn."""
    from vjax.data import augment

    boxes = [augment.scale_jitter_box(np.random.default_rng(s), 100, 150, (112, 113), 64)
             for s in range(50)]  # fmt: skip
    assert {round(64 * 100 / (x1 - x0)) for x0, _, x1, _ in boxes} == {112, 113}


# kills au07
def test_shrinking_averages_the_source_pixels():
    """A 4x shrink is antialiased: each output pixel is its 4x4 block's mean (area filter)."""
    from vjax.data import augment

    frames = np.random.default_rng(0).integers(0, 256, (1, 16, 16, 3), np.uint8)
    out = augment.decode_crop_resize(frames, (0, 0, 16, 16), 4).astype(float)
    blocks = frames.reshape(1, 4, 4, 4, 4, 3).astype(float).mean(axis=(2, 4))
    np.testing.assert_allclose(out, blocks, atol=1.0)


# kills au08
def test_a_fractional_box_rounds_to_the_nearest_pixel():
    """Box coordinates round, not truncate: (0.6, 1.6, 4.6, 5.6) is rows 2:6, columns 1:5."""
    from vjax.data import augment

    frames = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), np.uint8)
    out = augment.decode_crop_resize(frames, (0.6, 1.6, 4.6, 5.6), 4)
    np.testing.assert_array_equal(out, frames[:, 2:6, 1:5])


# kills au09, au12
def test_colour_jitter_draws_torchvision_factor_ranges_and_orders(monkeypatch):
    """ColorJitter(s): each factor uniform in [1 - s, 1 + s], the three ops in a random order."""
    from vjax.data import augment

    seen = []
    monkeypatch.setattr(augment, "adjust_colors", lambda c, o, f: seen.append((tuple(o), f)) or c)
    clip = np.zeros((1, 2, 2, 3), np.uint8)
    for s in range(300):
        augment.color_jitter(clip, np.random.default_rng(s), 0.4, 0.4, 0.4)
    factors = np.asarray([f for _, f in seen])
    assert factors.min() >= 0.6 and factors.max() <= 1.4
    assert (factors.min(0) < 0.65).all() and (factors.max(0) > 1.35).all()
    assert len({o for o, _ in seen}) == 6  # every order of the three ops


# kills au10
def test_contrast_of_a_coloured_frame_matches_torchvision():
    """Contrast blends with the mean grey level (torchvision), not the mean of R, G and B."""
    torch = pytest.importorskip("torch")
    from torchvision.transforms.v2 import functional as F

    from vjax.data import augment

    rng = np.random.default_rng(0)
    frame = np.stack([rng.integers(150, 250, (16, 16)), rng.integers(0, 40, (16, 16)),
                      rng.integers(0, 40, (16, 16))], -1).astype(np.uint8)[None]  # fmt: skip
    ours = augment.adjust_colors(frame, [1], [1.0, 0.5, 1.0]).astype(float)
    ref = F.adjust_contrast(torch.from_numpy(frame[0]).permute(2, 0, 1), 0.5)
    np.testing.assert_allclose(ours[0], ref.permute(1, 2, 0).numpy(), atol=1.0)


# kills au11
def test_colour_ops_round_to_the_nearest_level():
    """A brightness factor's result is rounded to the nearest uint8 level, not truncated."""
    from vjax.data import augment

    clip = np.random.default_rng(0).integers(0, 190, (1, 16, 16, 3), np.uint8)
    out = augment.adjust_colors(clip, [0], [1.3, 1.0, 1.0]).astype(float)
    assert np.abs(out - clip * 1.3).max() <= 0.5 + 1e-3


# kills au13, au14
def test_dmvr_colour_augment_draws_scenics_ranges(monkeypatch):
    """DMVR: brightness delta in [-32/255, 32/255], saturation and contrast in [0.6, 1.4], hue
    in [-0.2, 0.2], each uniform."""
    from vjax.data import augment

    seen = []
    monkeypatch.setattr(augment, "dmvr_adjust_colors", lambda c, f, d: seen.append(f) or c)
    for s in range(300):
        augment.dmvr_color_augment(np.zeros((1, 2, 2, 3), np.uint8), np.random.default_rng(s), 1.0)
    b, sat, con, hue = np.asarray(seen).T
    for x, lo, hi in ((b, -32 / 255, 32 / 255), (sat, 0.6, 1.4), (con, 0.6, 1.4), (hue, -0.2, 0.2)):
        span = hi - lo
        assert lo <= x.min() < lo + 0.05 * span and hi - 0.05 * span < x.max() <= hi


# kills au15
def test_random_erase_area_spans_its_range():
    """Random erasing's area is drawn over (0.02, 1/3) of the frame, not fixed."""
    from vjax.data import augment

    clip = np.zeros((1, 40, 40, 3), np.uint8)
    areas = [(augment.random_erase(clip, np.random.default_rng(s)) != 0).any(-1).mean()
             for s in range(200)]  # fmt: skip
    assert min(areas) < 0.05 and max(areas) > 0.25


# kills au17
def test_capitalised_left_and_right_pair_up():
    """'Left' and 'Right' capitalised are mirrored too (the swap table lists them)."""
    from vjax.data import augment

    assert augment.left_right_pairs(["Turn Left", "Turn Right", "Wave"]) == [
        ("Turn Left", "Turn Right")
    ]


def test_mixup_rate_mixes_each_row_by_chance_with_a_weight_of_its_own():
    """``input.mixup_rate`` (AST's per-example mixup, src/dataloader.py: each example mixed
    with probability 0.5 and a Beta(10, 10) weight of its own): a row outside the rate keeps
    its clip, label, sound and ``has_audio``; a mixed row blends with its partner (row
    B-1-i) by its own weight, in pixels, soft label and spectrogram alike."""
    from vjax.data.transforms import InputOptions, make_batch_transform

    rows = 64
    video = np.stack([np.full((2, 4, 4, 3), 3 * i, np.uint8) for i in range(rows)])
    label = np.arange(rows) % 8  # a row and its partner never share a class (63 is odd)
    audio = np.stack([np.full((6, 5), float(i), np.float32) for i in range(rows)])
    has = np.arange(rows) % 3 != 0
    options = InputOptions(mixup_alpha=10.0, mixup_rate=0.5)
    mix = make_batch_transform(options, 8)
    batch = {"video": video, "label": label, "audio": audio, "has_audio": has}
    out = mix(batch, np.random.default_rng(0))
    partner = rows - 1 - np.arange(rows)
    lam = out["label_probs"][np.arange(rows), label].astype(np.float64)
    onehot = np.eye(8)[label]
    want = lam[:, None] * onehot + (1 - lam[:, None]) * onehot[partner]
    np.testing.assert_allclose(out["label_probs"], want, atol=1e-6)
    blend = 3 * np.arange(rows) * lam + 3 * partner * (1 - lam)
    per_row = lambda x: x.reshape(rows, -1)[:, 0]  # noqa: E731  (each row is one value)
    assert all(len(np.unique(row)) == 1 for row in (*out["video"], *out["audio"]))
    np.testing.assert_allclose(per_row(out["video"]), np.floor(blend + 0.5), atol=1)
    np.testing.assert_allclose(per_row(out["audio"]), blend / 3, rtol=1e-5)
    kept = lam == 1
    assert 20 <= kept.sum() <= 44  # about half of 64 rows (binomial: sd 4)
    np.testing.assert_array_equal(out["video"][kept], video[kept])
    np.testing.assert_array_equal(out["has_audio"], has | (has[partner] & ~kept))
    np.testing.assert_array_equal(out["label"], np.where(lam >= 0.5, label, label[partner]))
    weights = lam[~kept]
    assert len(np.unique(weights)) == len(weights)  # a weight per row, not one per batch
    assert abs(weights.mean() - 0.5) < 0.06 and 0.05 < weights.std() < 0.17  # Beta(10, 10)
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="input.mixup_rate must be in"):
            InputOptions(mixup_alpha=10.0, mixup_rate=bad)
    with pytest.raises(ValueError, match="which cutmix does not have"):
        InputOptions(mixup_alpha=1.0, cutmix_alpha=1.0, mixup_rate=0.5)
