"""Train/eval batches cut from stored whole videos: exact, keyed on (seed, step, row)."""

import os

import numpy as np
import pytest

from vjax.data import augment
from vjax.data.pipeline import TrainBatches, eval_batches
from vjax.data.transforms import (
    InputOptions,
    make_batch_transform,
    make_eval_transform,
    make_train_transform,
    make_view_sampler,
)
from vjax.errors import UserError


class FrameSource:
    """Whole videos as lists of frames; pixel (y, x) of frame t of video i is asymmetric in x
    and encodes (i, t), so crops, flips and frame choices can be read back."""

    def __init__(self, n: int, length: int = 12, height: int = 8, width: int = 10):
        self.n, self.length, self.height, self.width = n, length, height, width

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        x = np.arange(self.width)[None, :, None]
        frames = [
            np.broadcast_to(x + 20 * t + (i % 2), (self.height, self.width, 3)).astype(np.uint8)
            for t in range(self.length)
        ]
        return {"frames": frames, "label": i % 3, "fps": 10.0}


OPTIONS = dict(num_frames=4, frame_stride=2, crop_size=8, train_crop="centre")


def test_same_seed_and_step_give_the_same_batch_in_any_order_and_process_split():
    options = InputOptions(**{**OPTIONS, "train_crop": "random_resized", "color_jitter": 0.3})
    transform = make_train_transform(options, ["a", "b", "c"])

    def make(p=0, count=1):
        return TrainBatches(FrameSource(10), 4, seed=0, process_index=p, process_count=count,
                            transform=transform)  # fmt: skip

    a, b = make(), make()
    for step in (5, 0, 3):
        np.testing.assert_array_equal(a(step)["video"], b(step)["video"])
    assert a(0)["video"].shape == (4, 4, 8, 8, 3)
    assert not np.array_equal(a(0)["video"], a(1)["video"])
    parts = [make(p, 2)(7) for p in range(2)]
    np.testing.assert_array_equal(np.concatenate([p["video"] for p in parts]), a(7)["video"])
    other = TrainBatches(FrameSource(10), 4, seed=1, transform=transform)
    assert not np.array_equal(other(5)["video"], a(5)["video"])


def test_clip_frames_follow_the_stride_and_target_fps():
    source = FrameSource(4, length=40, width=8)
    for fps, step in [(0.0, 2), (5.0, 4)]:  # stored 10 fps; target 5 fps doubles the stride
        options = InputOptions(**{**OPTIONS, "fps": fps, "flip": False})
        batch = TrainBatches(source, 4, 0, transform=make_train_transform(options, "abc"))(0)
        t = (batch["video"][:, :, 0, 0, 0] - batch["video"][:, :1, 0, 0, 0]) // 20
        np.testing.assert_array_equal(t, np.tile(np.arange(4) * step, (4, 1)))


def _flipped(clip: np.ndarray) -> bool:
    row = clip[0, 0, :, 0].astype(int)
    return bool(row[0] > row[-1])  # FrameSource's ramp rises to the right


def test_flip_remaps_direction_sensitive_labels():
    names = ["left", "right", "wave"]
    options = InputOptions(**OPTIONS, flip_label_map=(("left", "right"),))
    transform = make_train_transform(options, names)
    source = FrameSource(6, width=8)
    seen = set()
    for seed in range(12):
        for i in range(6):
            clip, label = transform(source[i], np.random.default_rng([seed, i]))
            flipped = _flipped(clip)
            expected = {0: 1, 1: 0, 2: 2}[i % 3] if flipped else i % 3
            assert label == expected
            seen.add((i % 3, flipped))
    assert len(seen) == 6  # every class seen both ways


def test_flip_swaps_the_paired_columns_of_a_multi_hot_label():
    # Several classes per clip (Charades-like): a mirror swaps "turn left" and "turn right"'s
    # columns and keeps the rest (the transform raised a TypeError on int(multi-hot) before).
    names = ["turn left", "turn right", "sit"]
    transform = make_train_transform(InputOptions(**OPTIONS, flip_label_map="left_right"), names)
    example = {**FrameSource(1, width=8)[0], "label": np.array([0, 2])}
    seen = set()
    for seed in range(8):
        clip, label = transform(example, np.random.default_rng(seed))
        expected = [0, 1, 1] if _flipped(clip) else [1, 0, 1]
        np.testing.assert_array_equal(label, expected)
        seen.add(_flipped(clip))
    assert seen == {False, True}


def test_batch_mixing_and_eval_views():
    options = InputOptions(**OPTIONS, mixup_alpha=0.8, cutmix_alpha=1.0)
    batches = TrainBatches(
        FrameSource(10),
        4,
        seed=0,
        transform=make_train_transform(options, "abc"),
        batch_transform=make_batch_transform(options, 3),
    )
    batch = batches(2)
    assert batch["label_probs"].shape == (4, 3)
    np.testing.assert_array_equal(batches(2)["label_probs"], batch["label_probs"])
    assert make_batch_transform(InputOptions(**OPTIONS), 3) is None

    eval_options = InputOptions(**OPTIONS, test_num_clips=3, test_num_crops=3)
    views = make_view_sampler(eval_options)(FrameSource(1, length=12, width=10)[0])
    assert views.shape == (9, 4, 8, 8, 3)
    # Clips start at frames 0, 2.5 -> 2, 5 (span 7 of 12); crops at x = 0, 1, 2.
    np.testing.assert_array_equal(views[::3, 0, 0, 0, 0], [0, 40, 100])
    np.testing.assert_array_equal(views[:3, 0, 0, 0, 0], [0, 1, 2])
    batches = list(eval_batches(FrameSource(5), 4, transform=make_eval_transform(eval_options)))
    assert [b["video"].shape for b in batches] == [(4, 4, 8, 8, 3)] * 2
    assert batches[1]["mask"].tolist() == [1, 0, 0, 0]


def test_options_from_config_reject_unknown_keys():
    options = InputOptions.from_config({"global_batch_size": 8, "num_frames": 8, "crop_size": 32})
    assert options.clip_shape == (8, 32, 32, 3)
    with pytest.raises(ValueError, match="input.num_frame"):
        InputOptions.from_config({"num_frame": 8})
    with pytest.raises(ValueError, match="input.pad_mode"):
        InputOptions(pad_mode="mirror")


def test_dmvr_colour_augmentation_follows_the_crop_and_flip():
    rng = np.random.default_rng(0)
    video = {"frames": list(rng.integers(0, 256, (12, 8, 10, 3), np.uint8)), "label": 1}
    plain = make_train_transform(InputOptions(**OPTIONS, flip=True), "abc")
    options = InputOptions(**OPTIONS, flip=True, color_augment_prob=0.8, color_drop_prob=0.5)
    coloured = make_train_transform(options, "abc")
    for seed in range(8):  # the same per-example rng: crop and flip first, then the colours
        rng = np.random.default_rng(seed)
        clip, _ = plain(video, rng)
        expected = augment.dmvr_color_augment(clip, rng, 0.8, 0.5)
        np.testing.assert_array_equal(coloured(video, np.random.default_rng(seed))[0], expected)
    for key in ("color_augment_prob", "color_drop_prob", "erase_prob", "mix_switch_prob"):
        with pytest.raises(ValueError, match=f"input.{key} must be in"):
            InputOptions(**{key: 1.5})
    for key in ("color_jitter", "mixup_alpha", "cutmix_alpha"):
        with pytest.raises(ValueError, match=f"input.{key} must be >= 0"):
            InputOptions(**{key: -0.1})
    for bad in ({"test_crop_fraction": 0.0}, {"crop_area": (0.5, 0.2)}, {"crop_area": (0, 1)}):
        with pytest.raises(ValueError, match=f"input.{next(iter(bad))} must be"):
            InputOptions(**bad)


def test_batches_from_a_prepared_video_folder(tmp_path):
    from vjax.data.transforms import transforms_for
    from vjax.data.video_builder import prepare_video_folder
    from vjax.data.video_io import encode_video

    levels = (8 * np.arange(30))[:, None, None, None]
    frames = np.broadcast_to(levels, (30, 24, 32, 3)).astype(np.uint8)
    for i, label in enumerate(["a", "a", "b"]):
        os.makedirs(tmp_path / "src" / label, exist_ok=True)
        encode_video(str(tmp_path / "src" / label / f"{i}.mp4"), frames, 15)
    builder = prepare_video_folder(
        str(tmp_path / "d"), src=str(tmp_path / "src"), fps=5, short_side=16, num_workers=1
    )
    config_input = {**OPTIONS, "global_batch_size": 4, "crop_size": 16,
                    "train_crop": "scale_jitter", "jitter_short_side": (16, 20)}  # fmt: skip
    t = transforms_for(builder, config_input)
    batch = TrainBatches(builder.as_data_source("train"), 4, 0, transform=t["transform"])(0)
    assert batch["video"].shape == (4, 4, 16, 16, 3)
    ids = np.round(batch["video"].astype(float).mean((2, 3, 4)) / 8)
    np.testing.assert_array_equal(np.diff(ids, axis=1), np.full((4, 3), 6))  # 2 stored = 6 src
    fixed = transforms_for(_MotionLike(), {"global_batch_size": 4, "num_frames": 16})
    assert fixed["transform"] is None and fixed["batch_transform"] is None
    # Clip options on fixed clips would do nothing (a multi-view test of the demo was one
    # view): each one set away from its default is named.
    with pytest.raises(UserError, match=r"input.crop_size=16, .*input.train_crop='scale_jitter'"
                       r".*: motion_like stores fixed clips"):  # fmt: skip
        transforms_for(_MotionLike(), config_input)
    with pytest.raises(UserError, match=r"^input.test_num_clips=4: motion_like stores fixed "
                       r"clips, .*; remove it or prepare videos"):  # fmt: skip
        transforms_for(_MotionLike(), {"test_num_clips": 4, "crop_area": [0.08, 1.0]})


def test_fixed_clip_data_is_mixed_when_asked():
    """Fixed-clip datasets (vjax_motion) cut no clips but take the batch's mixup: row i blended
    with row B-1-i by the weight its soft label shows."""
    from vjax.data.transforms import transforms_for

    t = transforms_for(_MotionLike(), {"global_batch_size": 4, "mixup_alpha": 1.0})
    assert t["transform"] is None and t["eval_transform"] is None
    video = np.stack([np.full((2, 4, 4, 3), 50 * i, np.uint8) for i in range(4)])
    batch = {"video": video, "label": np.array([0, 1, 2, 1])}
    mixed = t["batch_transform"](batch, np.random.default_rng(0))
    lam = mixed["label_probs"][0, 0]
    np.testing.assert_allclose(mixed["label_probs"][0], [lam, 1 - lam, 0], atol=1e-6)
    np.testing.assert_allclose(mixed["video"][0], 150 * (1 - lam), atol=1)
    assert 0 < lam < 1


class _MotionLike:
    name = "motion_like"

    class info:  # noqa: N801  (mimics builder.info)
        features = {"video": None, "label": type("ClassLabel", (), {"names": ["a", "b", "c"]})}


def test_threads_make_the_same_batches():
    options = InputOptions(**{**OPTIONS, "train_crop": "random_resized"})
    transform = make_train_transform(options, "abc")
    inline = TrainBatches(FrameSource(10), 4, seed=0, transform=transform)
    threaded = TrainBatches(FrameSource(10), 4, seed=0, transform=transform, num_threads=3)
    for step in (0, 9):
        np.testing.assert_array_equal(inline(step)["video"], threaded(step)["video"])
        np.testing.assert_array_equal(inline(step)["label"], threaded(step)["label"])


def test_a_resumed_run_sees_the_uninterrupted_batches():
    from vjax.data.pipeline import prefetch

    options = InputOptions(**{**OPTIONS, "train_crop": "random_resized", "erase_prob": 0.5})
    transform = make_train_transform(options, "abc")

    def batches():  # a fresh process: nothing carried over but (seed, step)
        return TrainBatches(FrameSource(10), 4, seed=3, transform=transform)

    whole = [b["video"] for b in prefetch(batches(), range(0, 8))]
    first = [b["video"] for b in prefetch(batches(), range(0, 5))]  # killed after step 5
    rest = [b["video"] for b in prefetch(batches(), range(5, 8))]  # resumed at step 5
    for a, b in zip(whole, first + rest, strict=True):
        np.testing.assert_array_equal(a, b)


def _index_frames(n, h=8, w=8):
    """``n`` uint8 frames whose every pixel holds the frame's index."""
    return np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, h, w, 3)).copy()


# (vjax/data/transforms.py)


# kills tr07
def test_a_looped_view_keeps_the_loop_order():
    """A view that loops past the video's end shows frames in loop order, not sorted."""
    from vjax.data.transforms import InputOptions, make_view_iterator

    options = InputOptions(num_frames=4, frame_stride=2, crop_size=8, pad_mode="loop")
    view = next(iter(make_view_iterator(options)({"frames": _index_frames(5)})))
    # 0, 2, 4, then 6 wraps to frame 1 of 5: no frame repeats, so no dedup path is taken
    np.testing.assert_array_equal(view[:, 0, 0, 0], [0, 2, 4, 1])


# kills tr09
def test_test_crop_fraction_cuts_the_centred_square():
    """input.test_crop_fraction=0.5 views the centred half-side square of the frame."""
    from vjax.data.transforms import InputOptions, make_view_iterator

    frames = np.random.default_rng(0).integers(0, 256, (4, 8, 12, 3), np.uint8)
    options = InputOptions(num_frames=4, frame_stride=1, crop_size=4, test_crop_fraction=0.5)
    view = next(iter(make_view_iterator(options)({"frames": frames})))
    np.testing.assert_array_equal(view, frames[:, 2:6, 4:8])  # side 4 of 8, centred


# kills tr08
def test_quick_validation_view_is_the_centre_clip_whatever_test_num_clips():
    """The trainer's single-view validation takes the centre clip even with test_num_clips=3."""
    from vjax.data.transforms import InputOptions, make_eval_transform

    options = InputOptions(num_frames=4, frame_stride=2, crop_size=8, test_num_clips=3)
    clip, _ = make_eval_transform(options, ["a"])({"frames": _index_frames(30), "label": 0})
    # span 7 of 30 frames: the centre clip starts at floor((30 - 7) / 2) = 11
    np.testing.assert_array_equal(clip[:, 0, 0, 0], [11, 13, 15, 17])


# kills tr11
def test_erase_prob_is_the_share_of_erased_training_clips():
    """input.erase_prob=0.25 erases about a quarter of the training clips, not three quarters."""
    from vjax.data.transforms import InputOptions, make_train_transform

    options = InputOptions(num_frames=2, frame_stride=1, crop_size=16, train_crop="centre",
                           flip=False, erase_prob=0.25)  # fmt: skip
    transform = make_train_transform(options, ["a"])
    example = {"frames": np.full((4, 16, 16, 3), 128, np.uint8), "label": 0}
    erased = [(transform(example, np.random.default_rng(s))[0] != 128).any() for s in range(400)]
    assert 0.18 < np.mean(erased) < 0.32


# kills tr13
def test_color_jitter_strength_applies_to_brightness_contrast_and_saturation(monkeypatch):
    """input.color_jitter=s is torchvision's ColorJitter(s, s, s): saturation included."""
    from vjax.data import augment
    from vjax.data.transforms import InputOptions, make_train_transform

    seen = []
    monkeypatch.setattr(augment, "color_jitter", lambda clip, rng, *s: seen.append(s) or clip)
    options = InputOptions(num_frames=2, frame_stride=1, crop_size=8, color_jitter=0.3)
    example = {"frames": _index_frames(4), "label": 0}
    make_train_transform(options, ["a"])(example, np.random.default_rng(0))
    assert seen == [(0.3, 0.3, 0.3)]


# kills tr14
def test_scale_jitter_draws_the_short_side_over_its_whole_range(monkeypatch):
    """train_crop="scale_jitter" scales the short side to every length of jitter_short_side."""
    from vjax.data import augment
    from vjax.data.transforms import InputOptions, make_train_transform

    boxes = []
    real = augment.decode_crop_resize
    monkeypatch.setattr(augment, "decode_crop_resize",
                        lambda f, box, *a: boxes.append(box) or real(f, box, *a))  # fmt: skip
    options = InputOptions(num_frames=2, frame_stride=1, crop_size=16, train_crop="scale_jitter",
                           jitter_short_side=(20, 40), flip=False)  # fmt: skip
    transform = make_train_transform(options, ["a"])
    example = {"frames": np.zeros((4, 30, 40, 3), np.uint8), "label": 0}
    for seed in range(300):
        transform(example, np.random.default_rng(seed))
    short = {round(16 * 30 / (x1 - x0)) for x0, _, x1, _ in boxes}  # side = 16 * 30 / short
    assert short == set(range(20, 41))


# kills tr06
def test_view_times_are_clip_major_like_the_views():
    """Charades localisation: view_times repeat each clip's centre once per crop, clip-major."""
    from vjax.data.transforms import InputOptions, evaluation_label

    options = InputOptions(num_frames=4, frame_stride=2, crop_size=8, test_num_clips=2,
                           test_num_crops=3)  # fmt: skip
    example = {"frames": _index_frames(30), "fps": 10.0, "label": [0],
               "actions": np.array([[0, 0.0, 1.0]])}  # fmt: skip
    label = evaluation_label(options, ["a"])(example)
    # clips 0..6 and 23..29 of 30 frames at 10 fps: centres 0.3 s and 2.6 s
    np.testing.assert_allclose(label["view_times"], [0.3, 0.3, 0.3, 2.6, 2.6, 2.6], rtol=1e-6)


# kills tr15 and ad01
def test_option_defaults_are_the_documented_ones():
    """The defaults the transforms and audio module docstrings promise (a config may omit them)."""
    from vjax.data.audio import AudioOptions
    from vjax.data.transforms import InputOptions

    o = InputOptions()
    assert (o.num_frames, o.frame_stride, o.fps, o.crop_size) == (16, 2, 0, 224)
    assert (o.crop_area, o.crop_ratio, o.jitter_short_side) == ((0.08, 1.0), (3 / 4, 4 / 3),
                                                                (256, 320))  # fmt: skip
    a = AudioOptions()
    assert (a.sample_rate, a.mel_bins, a.window_ms, a.hop_ms, a.frames) == (16000, 128, 25, 10, 100)
    assert (a.mean, a.std) == (-4.27, 4.57)
