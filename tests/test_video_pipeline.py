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


def test_flip_remaps_direction_sensitive_labels():
    names = ["left", "right", "wave"]
    options = InputOptions(**OPTIONS, flip_label_map=(("left", "right"),))
    transform = make_train_transform(options, names)
    source = FrameSource(6, width=8)
    seen = set()
    for seed in range(12):
        for i in range(6):
            clip, label = transform(source[i], np.random.default_rng([seed, i]))
            row = clip[0, 0, :, 0].astype(int)
            flipped = row[0] > row[-1]  # the source ramp rises to the right
            expected = {0: 1, 1: 0, 2: 2}[i % 3] if flipped else i % 3
            assert label == expected
            seen.add((i % 3, flipped))
    assert len(seen) == 6  # every class seen both ways


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
    fixed = transforms_for(_MotionLike(), config_input)
    assert fixed["transform"] is None and fixed["batch_transform"] is None


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
