"""The data path's edges (found by a mutation audit): listings, which frames a clip reads,
labels, settings that must take effect, preparation. Each expected value is worked out by hand
in the test (or its docstring)."""

import os

import numpy as np
import pytest

from vjax.data import sampling
from vjax.data.manifests import VideoEntry, read_entries
from vjax.data.transforms import (
    InputOptions,
    actions_between,
    evaluation_label,
    label_reader,
    make_train_transform,
    make_view_iterator,
)
from vjax.errors import UserError


def _index_frames(n: int, h: int = 8, w: int = 8) -> np.ndarray:
    """Frame t is flat grey 10 * t (so a clip's frames are read off pixel (0, 0))."""
    return np.broadcast_to((10 * np.arange(n))[:, None, None, None], (n, h, w, 3)).astype(np.uint8)


# ------------------------------------------------------------------ manifests.py


def test_a_file_beside_the_class_folders_does_not_make_the_folder_unlabelled(tmp_path):
    """SRC/notes.md next to SRC/cat/ and SRC/dog/: still a folder of class sub-folders."""
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        (tmp_path / label / "a.mp4").write_bytes(b"x")
    (tmp_path / "notes.md").write_text("my videos")
    entries = read_entries(str(tmp_path))
    assert [(os.path.basename(e.path), e.label) for e in entries] == [
        ("a.mp4", "cat"),
        ("a.mp4", "dog"),
    ]


def test_manifest_entries_come_by_split_in_train_validation_test_order_then_as_listed(tmp_path):
    """read_entries: "sorted by split, then as listed" (train, validation, test; not a-z)."""
    (tmp_path / "m.csv").write_text(
        "path,label,split\nt.mp4,a,test\nz.mp4,a,validation\nb.mp4,a,train\na.mp4,b,train\n"
    )
    entries = read_entries(str(tmp_path / "m.csv"))
    assert [(os.path.basename(e.path), e.split) for e in entries] == [
        ("b.mp4", "train"),
        ("a.mp4", "train"),
        ("z.mp4", "validation"),
        ("t.mp4", "test"),
    ]


# ------------------------------------------------------------------ sampling.py


def test_uniform_clips_with_a_fractional_stride_start_on_whole_frames():
    """20 frames, 4 per clip, stride 1.5: span 5.5, starts 0 and 14.5 -> frame 14, then
    floor(14 + 1.5 k) = 14, 15, 17, 18 (not floor(14.5 + 1.5 k) = 14, 16, 17, 19)."""
    np.testing.assert_array_equal(
        sampling.uniform_clips(20, 4, 1.5, num_clips=2), [[0, 1, 3, 4], [14, 15, 17, 18]]
    )


def test_a_video_without_frames_is_a_clear_error():
    with pytest.raises(ValueError, match="at least one frame"):
        sampling.clip_at(0, 0, 4)


# ------------------------------------------------------------------ transforms.py


def test_a_target_fps_on_a_video_without_a_stored_rate_keeps_the_frame_stride():
    assert InputOptions(fps=5.0, frame_stride=2).stride_for(0.0) == 2
    assert InputOptions(fps=5.0, frame_stride=2).stride_for(10.0) == 4  # 10 fps -> 5 fps


def test_multi_task_labels_are_in_task_order():
    read = label_reader({"verb": ["take", "put", "open"], "noun": ["cup", "knife"]})
    np.testing.assert_array_equal(read({"verb": 2, "noun": 1}), [2, 1])  # task order, not a-z


def test_actions_under_way_touch_the_window_or_contain_it():
    """Window [2, 4] s: an action ending at 2 touches it, one from 0 to 5 contains it, one
    from 5 to 6 is after it."""
    actions = np.array([[0, 1.0, 2.0], [1, 2.5, 3.0], [2, 0.0, 5.0], [3, 5.0, 6.0]])
    np.testing.assert_array_equal(actions_between(actions, 2.0, 4.0, 4), [1, 1, 1, 0])
    np.testing.assert_array_equal(actions_between(actions, 5.0, 5.0, 4), [0, 0, 1, 1])


def test_a_looped_training_clip_is_labelled_by_the_frames_it_spans():
    """10 frames at 10 fps, 4 frames at stride 4: 0, 4, 8, 12 -> 2 (looped); the clip spans
    frames 0..8 (0.0-0.8 s), so an action at 0.5-0.7 s is under way."""
    options = InputOptions(
        num_frames=4, frame_stride=4, crop_size=8, train_crop="centre", flip=False
    )
    example = {
        "frames": _index_frames(10),
        "fps": 10.0,
        "label": [1],
        "actions": np.array([[1, 0.5, 0.7]], np.float32),
    }
    clip, label = make_train_transform(options, ["a", "b"])(example, np.random.default_rng(0))
    np.testing.assert_array_equal(clip[:, 0, 0, 0], [0, 40, 80, 20])
    np.testing.assert_array_equal(label, [0, 1])


def test_localisation_points_are_j_over_25_of_the_duration():
    """Charades_v1_localize.m: 25 points j / 25 * duration, j = 0..24; 30 frames at 10 fps."""
    options = InputOptions(num_frames=4, frame_stride=2, crop_size=8)
    example = {
        "frames": _index_frames(30),
        "fps": 10.0,
        "label": [0],
        "actions": np.array([[0, 2.8, 3.0]]),
    }
    label = evaluation_label(options, ["a"])(example)
    np.testing.assert_allclose(label["frame_times"], np.arange(25) * 3.0 / 25, rtol=1e-6)
    assert label["frame_labels"][:, 0].tolist() == [0] * 24 + [
        1
    ]  # only t = 2.88 s (2.76 is before)


def test_flip_false_never_mirrors_a_training_clip():
    options = InputOptions(
        num_frames=2, frame_stride=1, crop_size=8, train_crop="centre", flip=False
    )
    ramp = np.broadcast_to(np.arange(8, dtype=np.uint8)[None, None, :, None] * 20, (3, 8, 8, 3))
    transform = make_train_transform(options, ["a"])
    for seed in range(16):
        clip, _ = transform({"frames": ramp, "label": 0}, np.random.default_rng(seed))
        np.testing.assert_array_equal(clip[0, 0, :, 0], np.arange(8) * 20)


def test_a_stored_height_and_width_place_the_centre_crop():
    """8 x 16 frames stored with height 8, width 16: the centred 8 x 8 square is columns 4-11."""
    frames = np.random.default_rng(0).integers(0, 256, (2, 8, 16, 3), np.uint8)
    options = InputOptions(num_frames=2, frame_stride=1, crop_size=8)
    example = {"frames": frames, "height": 8, "width": 16}
    view = next(iter(make_view_iterator(options)(example)))
    np.testing.assert_array_equal(view, frames[:, :, 4:12])


def test_tsn_training_draws_a_random_frame_in_each_segment():
    """sampling="tsn": 100 frames, 4 segments of 25; over seeds the first frame takes many
    values in 0..24 (not always the middle, 12)."""
    options = InputOptions(
        num_frames=4, crop_size=8, sampling="tsn", train_crop="centre", flip=False
    )
    transform = make_train_transform(options, ["a"])
    frames = np.broadcast_to(np.arange(100, dtype=np.uint8)[:, None, None, None], (100, 8, 8, 3))
    example = {"frames": frames, "label": 0}  # pixel = frame index
    firsts = {int(transform(example, np.random.default_rng(s))[0][0, 0, 0, 0]) for s in range(40)}
    assert firsts <= set(range(25)) and len(firsts) > 10


@pytest.mark.parametrize("pad_mode, expected", [("pad", [0, 10, 20, 20]), ("loop", [0, 10, 20, 0])])
def test_pad_mode_completes_a_short_video_in_training_and_test(pad_mode, expected):
    """3 frames, 4 per clip: "pad" repeats the last frame, "loop" wraps to the first."""
    options = InputOptions(
        num_frames=4,
        frame_stride=1,
        crop_size=8,
        train_crop="centre",
        flip=False,
        pad_mode=pad_mode,
    )
    example = {"frames": _index_frames(3), "label": 0}
    clip, _ = make_train_transform(options, ["a"])(example, np.random.default_rng(0))
    np.testing.assert_array_equal(clip[:, 0, 0, 0], expected)
    view = next(iter(make_view_iterator(options)(example)))
    np.testing.assert_array_equal(view[:, 0, 0, 0], expected)


def test_colour_drop_alone_turns_every_training_clip_grey():
    """input.color_drop_prob=1 with color_augment_prob=0: every clip grey (R = G = B)."""
    options = InputOptions(
        num_frames=2, frame_stride=1, crop_size=8, train_crop="centre", color_drop_prob=1.0
    )
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    frames[..., 0] = 200  # red
    clip, _ = make_train_transform(options, ["a"])(
        {"frames": frames, "label": 0}, np.random.default_rng(0)
    )
    # TF's rgb_to_grayscale of pure red 200: 0.2989 * 200 = 59.78 -> 60 in all three channels
    assert np.all(clip == 60)


# ------------------------------------------------------------------ video_prepare.py


def _noisy_video(path, frames: int = 4, fps: float = 5) -> str:
    from vjax.data.video_io import encode_video

    noise = np.random.default_rng(0).integers(0, 256, (frames, 32, 32, 3), np.uint8)
    return encode_video(str(path), noise, fps)


def test_jpeg_quality_is_the_quality_frames_are_stored_at(tmp_path):
    """jpeg_quality=10 stores noisy frames in far fewer bytes than 95."""
    from vjax.data.video_prepare import VideoSettings, encode_entry

    entry = VideoEntry(_noisy_video(tmp_path / "n.mp4"), "a")
    size = {
        q: sum(map(len, encode_entry(entry, VideoSettings(short_side=0, jpeg_quality=q)).frames))
        for q in (10, 95)
    }
    assert size[10] < size[95] / 2, size


class _InlinePool:
    """A stand-in for the process pool that runs each job when submitted and counts the
    jobs whose result has not been taken yet (the videos "in flight")."""

    in_flight = most = 0

    def __init__(self, workers, mp_context=None, initializer=None):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def submit(self, fn, *args):
        from concurrent.futures import Future

        future, pool = Future(), type(self)
        future.set_result(fn(*args))
        pool.in_flight += 1
        pool.most = max(pool.most, pool.in_flight)
        taken = future.result

        def result(timeout=None):
            pool.in_flight -= 1
            return taken(timeout)

        future.result = result
        return future


def test_encode_entries_yields_in_listing_order_with_at_most_four_per_worker_in_flight(
    tmp_path, monkeypatch
):
    """The module docstring: results in input order whatever the number of workers, and at most
    4 * workers videos in flight (memory bounded on any dataset)."""
    from vjax.data import video_prepare

    monkeypatch.setattr(video_prepare, "ProcessPoolExecutor", _InlinePool)
    _InlinePool.in_flight = _InlinePool.most = 0
    entries = [VideoEntry(str(tmp_path / f"{i}.mp4"), "a") for i in range(20)]  # all missing
    results = list(video_prepare.encode_entries(entries, video_prepare.VideoSettings(), 2))
    assert [i for i, _ in results] == list(range(20))
    assert [r.path for _, r in results] == [e.path for e in entries]
    assert _InlinePool.most <= 8, _InlinePool.most


# ------------------------------------------------------------------ video_builder.py


def test_prepared_records_index_label_ids_names_and_source_changes(tmp_path):
    """A manifest: train = a broken file (listing 0), v1 labelled 10, v2 labelled 2;
    validation = v3. Class names sort as numbers (2, 10): "2" is id 0, "10" id 1."""
    from vjax.data.video_builder import format_report, prepare_video_folder, read_report

    for name in ("v1", "v2", "v3"):
        _noisy_video(tmp_path / f"{name}.mp4")
    (tmp_path / "broken.mp4").write_bytes(b"")
    manifest = tmp_path / "m.csv"
    rows = "path,label,split\nbroken.mp4,2,train\nv1.mp4,10,train\nv2.mp4,2,train\n"
    manifest.write_text(rows + "v3.mp4,10,validation\n")
    kwargs = dict(src=str(manifest), short_side=16, num_workers=1)
    builder = prepare_video_folder(str(tmp_path / "d"), **kwargs)
    assert builder.info.features["label"].names == ["2", "10"]
    train = builder.as_data_source("train")
    assert [int(train[i]["index"]) for i in range(2)] == [1, 2]  # listing positions
    assert [int(train[i]["label"]) for i in range(2)] == [1, 0]  # v1: "10", v2: "2"
    assert builder.video_names("train") == ["v1.mp4", "v2.mp4"]
    assert builder.video_names("validation") == ["v3.mp4"]  # a split of one video
    assert format_report(read_report(builder)).splitlines() == [
        "train: kept 2 of 3 (found 3); skipped 1 (unreadable 1)",
        "validation: kept 1 of 1 (found 1); skipped 0 (none)",
    ]

    def changes():
        return type(builder)(
            config=builder.builder_config, data_dir=str(tmp_path / "d")
        ).source_changes()

    manifest.write_text(rows + "v3.mp4,10,validation\nv3.mp4,10,test\n")  # a new split
    assert changes() == "test: 1 videos listed, 0 then"
    manifest.write_text(rows + "v3.mp4,10,validation\n")
    os.remove(tmp_path / "v2.mp4")  # deleted since: nothing new to prepare
    assert changes() == ""
    segment = "path,label,start,end,split\nbroken.mp4,2,,,train\nv1.mp4,10,0,0.4,train\n"
    manifest.write_text(segment + "v2.mp4,2,,,train\nv3.mp4,10,,,validation\n")  # v1 cut
    assert changes() == "train: other videos, labels or segments listed"


def test_a_flat_folder_report_says_how_it_was_split(tmp_path):
    """No train/validation/test given: the report's auto_split has the fractions, the seed and
    the videos per class, and format_report ends with the line saying so."""
    from vjax.data.video_builder import format_report, prepare_video_folder, read_report

    (tmp_path / "src" / "cat").mkdir(parents=True)
    _noisy_video(tmp_path / "src" / "cat" / "a.mp4")
    builder = prepare_video_folder(
        str(tmp_path / "d"),
        src=str(tmp_path / "src"),
        short_side=16,
        num_workers=1,
        split_fractions=(1.0, 0.0, 0.0),
    )
    report = read_report(builder)
    assert report["train"]["auto_split"] == {
        "fractions": [1.0, 0.0, 0.0],
        "seed": 0,
        "listed_per_class": {"cat": 1},
    }
    assert format_report(report).splitlines()[-1] == (
        "(no train/validation/test given: split per class by split_fractions=(1.0, 0.0, 0.0), "
        "split_seed=0)"
    )


def test_every_split_seed_gets_its_own_dataset_folder_and_fps_5_is_5_0(tmp_path):
    """Other fractions with seed 1 and seed 2 are two splits (two folders); fps=5 (a Python
    config) and fps=5.0 (the command line) are one dataset."""
    from vjax.data.video_builder import VideoFolderConfig

    src, fractions = str(tmp_path), (0.5, 0.25, 0.25)
    names = {
        VideoFolderConfig(src=src, split_fractions=fractions, split_seed=seed).name
        for seed in (0, 1, 2)
    }
    assert len(names) == 3
    assert VideoFolderConfig(src=src, fps=5).name == VideoFolderConfig(src=src, fps=5.0).name


# ------------------------------------------------------------------ annotations.py


def test_audioset_classes_are_in_index_order_past_nine(tmp_path):
    """class_labels_indices.csv with indices 0..11 listed out of order: names by the number
    (0, 1, 2, ..., 11), not as text (0, 1, 10, 11, 2, ...)."""
    from vjax.data.annotations import audioset_entries

    rows = [(i, f"/m/{i}", f"class{i}") for i in (11, 3, 0, 10, 2, 1, 9, 4, 5, 8, 6, 7)]
    (tmp_path / "class_labels_indices.csv").write_text(
        "index,mid,display_name\n" + "".join(f"{i},{m},{n}\n" for i, m, n in rows)
    )
    (tmp_path / "balanced_train_segments.csv").write_text('aaaaaaaaaaa, 0.000, 10.000, "/m/10"\n')
    (tmp_path / "eval_segments.csv").write_text('bbbbbbbbbbb, 0.000, 10.000, "/m/2,/m/11"\n')
    entries, names = audioset_entries(str(tmp_path))
    assert names == [f"class{i}" for i in range(12)]
    assert [e.label for e in entries] == [("class10",), ("class2", "class11")]


def test_vggsound_finds_clips_named_with_their_end_second(tmp_path):
    """A clip saved as <id>_<start:06>_<start+10:06>.mp4 is found (not listed as missing)."""
    from vjax.data.annotations import vggsound_entries

    (tmp_path / "vggsound.csv").write_text("aaaaaaaaaaa,30,dog barking,train\n")
    (tmp_path / "aaaaaaaaaaa_000030_000040.mp4").write_bytes(b"x")
    (entry,), names = vggsound_entries(str(tmp_path))
    assert entry.path == str(tmp_path / "aaaaaaaaaaa_000030_000040.mp4")
    assert (entry.id, entry.start, entry.end, names) == (
        "aaaaaaaaaaa_000030",
        None,
        None,
        ["dog barking"],
    )


def test_vggsound_split_other_than_train_or_test_is_refused(tmp_path):
    from vjax.data.annotations import vggsound_entries

    # The error names the file's line, the comment and blank lines counted.
    rows = "# comment\naaaaaaaaaaa,30,dog barking,train\n\nbbbbbbbbbbb,30,dog barking,val\n"
    (tmp_path / "vggsound.csv").write_text(rows)
    with pytest.raises(UserError, match=r"csv:4: not youtube_id,start_seconds,label,train\|test"):
        vggsound_entries(str(tmp_path))


def test_hmdb51_splits_follow_the_fold_and_leave_out_unused_videos(tmp_path):
    """<class>_test_split<F>.txt: 1 train, 2 test, 0 unused; fold 2 reads the split2 files."""
    from vjax.data.annotations import hmdb51_entries

    splits = tmp_path / "testTrainMulti_7030_splits"
    splits.mkdir()
    (splits / "wave_test_split1.txt").write_text("a.avi 1\nb.avi 2\nc.avi 0\n")
    (splits / "wave_test_split2.txt").write_text("a.avi 2\nb.avi 0\nc.avi 1\n")
    for fold, expected in (
        (1, [("a", "train"), ("b", "test")]),
        (2, [("c", "train"), ("a", "test")]),
    ):
        entries, names = hmdb51_entries(str(tmp_path), fold=fold)
        assert [(os.path.basename(e.path)[0], e.split) for e in entries] == expected
        assert names == ["wave"]


def test_format_report_says_kept_of_listed_then_found():
    """A split of 3 listed videos, one missing (found 2), one unreadable: kept 1."""
    from vjax.data.video_builder import format_report

    report = {
        "train": {
            "listed": 3,
            "found": 2,
            "kept": 1,
            "skipped": 2,
            "skipped_by_reason": {"unreadable": 1, "missing": 1},
        }
    }
    assert (
        format_report(report) == "train: kept 1 of 3 (found 2); skipped 2 (missing 1, unreadable 1)"
    )


def test_a_multi_label_record_keeps_each_actions_class_start_and_end():
    """Charades: the record's label is the class ids, its actions rows (id, start, end)."""
    from vjax.data.video_builder import _RecordMaker

    make = _RecordMaker({"label": {"sit": 0, "run": 1}}, stores_id=True, multi_label=True)
    entry = VideoEntry(
        "x.mp4", ("run", "sit"), id="X", actions=(("run", 1.0, 2.5), ("sit", 0.0, 4.0))
    )
    labels = make._labels(entry)
    assert labels["label"] == [1, 0]
    np.testing.assert_array_equal(labels["actions"], [[1, 1.0, 2.5], [0, 0.0, 4.0]])


def test_a_video_missing_then_is_reported_when_another_was_deleted_since(tmp_path):
    """One listed video arrives after preparation and another is deleted: the prepared dataset
    lacks the new one, and says so (the counts of found files alone would cancel out)."""
    import shutil

    from vjax.data.video_builder import prepare_video_folder
    from vjax.data.video_io import encode_video

    frames = _index_frames(4, 32, 32)
    for name in ("a.mp4", "c.mp4"):
        encode_video(str(tmp_path / name), frames, 5)
    (tmp_path / "m.csv").write_text("path,label\na.mp4,x\nlater.mp4,y\nc.mp4,y\n")
    built = prepare_video_folder(
        str(tmp_path / "data"), src=str(tmp_path / "m.csv"), short_side=16, num_workers=1
    )
    shutil.copy(tmp_path / "a.mp4", tmp_path / "later.mp4")
    os.remove(tmp_path / "a.mp4")
    again = type(built)(config=built.builder_config, data_dir=str(tmp_path / "data"))
    assert again.source_changes() == "train: 1 videos missing then are there now"
