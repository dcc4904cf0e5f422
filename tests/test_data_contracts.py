"""The data path's contracts, each against an independent reference (PyAV decoding directly,
NumPy by hand, hand counts, the documented behaviour), found by mutation testing (audit 19): which
frames a segment keeps and at what size, which listings and manifest rows are videos, how
videos split per class, what the annotation readers accept, which settings give a dataset its
own folder, when sound starts, prepare's flags, the batches' random keys and offsets, and a
complete MKV or WebM whose sound outlasts its pictures."""

import os

import av
import numpy as np
import pytest
from test_pipeline import FakeSource

from vjax.data.manifests import VideoEntry, class_names, read_entries, split_by_class
from vjax.data.video_io import VideoDecodeError, decode_video, encode_video, iter_video
from vjax.errors import UserError


def _counter(n: int, height: int = 16, width: int = 24) -> np.ndarray:
    """Frame i is flat grey 8 * i."""
    levels = (8 * np.arange(n) % 256).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (n, height, width, 3)).copy()


def _ids(frames: np.ndarray) -> list[int]:
    return np.round(frames.astype(np.float32).mean((1, 2, 3)) / 8).astype(int).tolist()


def _pyav_times(path: str) -> list[float]:
    """Every frame's presentation time, read with PyAV directly (the reference)."""
    with av.open(path) as container:
        return [float(f.time) for f in container.decode(video=0)]


# vjax/data/video_io.py
def test_a_native_rate_segment_is_the_frames_shown_from_start_up_to_but_not_at_end(tmp_path):
    """The segment
    [start, end) at the file's own rate is the frames whose time t has start <= t < end."""
    path = encode_video(str(tmp_path / "c.mp4"), _counter(30), 10)
    times = _pyav_times(path)
    for start, end in ((0.5, 1.0), (0.0, 0.3), (1.2, 2.5)):
        expected = [i for i, t in enumerate(times) if start <= t < end]
        clip = decode_video(path, start=start, end=end)
        assert _ids(clip.frames) == expected, (start, end)


def test_min_frames_is_the_fewest_frames_kept_not_one_more(tmp_path):
    """A video with exactly
    min_frames output frames is kept (2 s at 5 fps = 10 frames)."""
    path = encode_video(str(tmp_path / "c.mp4"), _counter(30), 15)
    assert len(decode_video(path, fps=5, min_frames=10).frames) == 10
    with pytest.raises(VideoDecodeError) as error:
        decode_video(path, fps=5, min_frames=11)
    assert error.value.reason == "too_short"


def test_a_file_whose_decoding_breaks_mid_stream_keeps_the_frames_before_the_break(tmp_path):
    """An MP4 with garbage over 30% of its bytes
    decodes (PyAV raises InvalidDataError) up to the damage; vjax keeps those frames and lets
    the truncation check decide: 'truncated' with the check on, the prefix with it off."""
    rng = np.random.default_rng(1)
    path = encode_video(
        str(tmp_path / "n.mp4"), rng.integers(0, 256, (30, 32, 48, 3), np.uint8), 15
    )
    data = bytearray(open(path, "rb").read())
    at = int(len(data) * 0.3)
    data[at : at + 2000] = rng.integers(0, 256, 2000, np.uint8).tobytes()
    broken = str(tmp_path / "broken.mp4")
    open(broken, "wb").write(data)
    decoded, error = 0, None  # the reference: PyAV alone
    try:
        with av.open(broken) as container:
            for _ in container.decode(video=0):
                decoded += 1
    except av.FFmpegError as e:
        error = e
    assert error is not None and 0 < decoded < 30, "the damage no longer breaks decoding"
    with pytest.raises(VideoDecodeError) as e:
        decode_video(broken)
    assert e.value.reason == "truncated"
    assert len(decode_video(broken, check_truncation=False).frames) == decoded


def test_short_side_of_a_portrait_video_is_its_width(tmp_path):
    """A portrait 48 x 32 (H x W) video at short_side 16 is
    24 x 16, as a landscape one is 16 x 24."""
    portrait = encode_video(str(tmp_path / "p.mp4"), _counter(5, height=48, width=32), 10)
    landscape = encode_video(str(tmp_path / "l.mp4"), _counter(5, height=32, width=48), 10)
    assert decode_video(portrait, short_side=16).frames.shape == (5, 24, 16, 3)
    assert decode_video(landscape, short_side=16).frames.shape == (5, 16, 24, 3)


def test_info_start_is_the_time_output_frame_0_stands_for(tmp_path):
    """Resampled to fps from
    ``start``, output frame k stands for start + k / fps (the module's docstring), so the stored
    sound track begins at ``start`` (0.55 s), not at the next frame's time (0.6 s)."""
    path = encode_video(str(tmp_path / "c.mp4"), _counter(30), 10)
    info: dict = {}
    frames = list(iter_video(path, fps=5, start=0.55, end=1.6, info=info))
    # output times 0.55, 0.75, 0.95, 1.15, 1.35, 1.55 show frames 5, 7, 9, 11, 13, 15
    assert _ids(np.stack(frames)) == [5, 7, 9, 11, 13, 15]
    assert info["start"] == pytest.approx(0.55)


# vjax/data/manifests.py: listings
def test_frames_of_floats_are_refused_where_uint8_is_read(tmp_path):
    """0..1 float frames were cast to uint8, so encode_video wrote a black video and the test
    views of an example cut black clips (a top-1 that halved, no word); integer arrays, as
    ``rng.integers`` gives them, stay accepted."""
    from vjax.data.transforms import InputOptions, make_view_iterator

    frames = _counter(8)
    with pytest.raises(ValueError, match="frames must be uint8 \\(0..255\\), got float64"):
        encode_video(str(tmp_path / "f.mp4"), frames / 255.0, 8)
    encode_video(str(tmp_path / "i.mp4"), frames.astype(np.int64), 8)
    views = make_view_iterator(InputOptions(num_frames=4, crop_size=16))
    refused = r"a video's frames must be uint8 \(0..255\), got float32; for 0..1 floats"
    with pytest.raises(ValueError, match=refused):
        next(views({"frames": list(frames.astype(np.float32) / 255), "label": 0}))
    assert next(views({"frames": list(frames), "label": 0})).shape == (4, 16, 16, 3)


def test_decode_arguments_out_of_range_are_named_not_blamed_on_the_file(tmp_path):
    """An empty segment said the file was corrupt; a negative or fractional short side gave
    1-pixel or 2-pixel frames; a string fps a TypeError."""
    path = encode_video(str(tmp_path / "a.mp4"), _counter(8), 8)
    for kwargs, message in (
        ({"start": 1.5, "end": 0.5}, r"the segment is empty: end \(0.5\) <= start \(1.5\)"),
        ({"short_side": -16}, "short_side must be a whole number of pixels >= 1, got -16"),
        ({"short_side": 1.5}, "short_side must be a whole number of pixels >= 1, got 1.5"),
        ({"fps": "8"}, "fps must be a positive number, got '8'"),
    ):
        with pytest.raises(ValueError, match=message):
            decode_video(path, **kwargs)
    assert decode_video(path, fps=np.float32(4.0), short_side=8.0).frames.shape == (4, 8, 12, 3)
    assert decode_video(path, short_side=0).frames.shape == (8, 16, 24, 3)  # 0: as stored


def test_class_names_sort_negative_integer_labels_as_numbers():
    """Integer labels, negative ones too, sort as numbers (not as text)."""
    entries = [VideoEntry(f"{i}.mp4", label) for i, label in enumerate(["10", "-1", "2", "0"])]
    assert class_names(entries) == ["-1", "0", "2", "10"]


def test_a_class_folder_named_like_a_split_is_a_class(tmp_path):
    """Train/validation/test are splits
    only when every top folder is one; next to 'cat' a folder 'test' is the class 'test'."""
    for label in ("cat", "test"):
        os.makedirs(tmp_path / label)
        (tmp_path / label / "a.mp4").write_bytes(b"x")
    entries = read_entries(str(tmp_path))
    assert sorted((e.label, e.split) for e in entries) == [("cat", "train"), ("test", "train")]


def test_a_folder_inside_a_class_folder_is_not_a_video(tmp_path):
    """A sub-folder of a class folder (thumbnails, say) is not a video."""
    os.makedirs(tmp_path / "cat" / "thumbnails")
    (tmp_path / "cat" / "a.mp4").write_bytes(b"x")
    assert [os.path.basename(e.path) for e in read_entries(str(tmp_path))] == ["a.mp4"]


def test_manifest_rows_with_an_empty_segment_or_extra_columns_are_refused(tmp_path):
    """A zero-length segment (end == start) and a row with more columns than the header are
    errors naming the row, not an empty clip or silently dropped cells."""
    (tmp_path / "same.csv").write_text("x.mp4,a,2,2\n")
    with pytest.raises(UserError, match=r"same.csv:1: end \(2.0\) must be after start"):
        read_entries(str(tmp_path / "same.csv"))
    (tmp_path / "wide.csv").write_text("path,label\nx.mp4,a,extra\n")
    with pytest.raises(UserError, match=r"wide.csv:2: 3 columns, expected <= 2"):
        read_entries(str(tmp_path / "wide.csv"))
    # Lines as an editor numbers them: blank lines before the bad row counted.
    (tmp_path / "gaps.csv").write_text("path,label,start,end\n\na.mp4,x\n\n\nb.mp4,y,5,2\n")
    with pytest.raises(UserError, match=r"gaps.csv:6: end \(2.0\) must be after start"):
        read_entries(str(tmp_path / "gaps.csv"))


def test_rows_of_empty_cells_are_skipped_as_blank_lines(tmp_path):
    """A spreadsheet saved as CSV ends with rows of commas (',,,'); they are blank
    rows, not videos without a path."""
    (tmp_path / "m.csv").write_text("path,label\na.mp4,cat\n,\nb.mp4,dog\n ,  \n")
    assert [(os.path.basename(e.path), e.label) for e in read_entries(str(tmp_path / "m.csv"))] == [
        ("a.mp4", "cat"),
        ("b.mp4", "dog"),
    ]


# vjax/data/manifests.py: split_by_class
def _split_tally(counts: dict[str, int], fractions) -> dict[str, tuple[int, int, int]]:
    entries = [VideoEntry(f"/x/{c}/{i:02d}.mp4", c) for c, n in counts.items() for i in range(n)]
    tally = {c: [0, 0, 0] for c in counts}
    for e in split_by_class(entries, fractions, seed=0):
        tally[e.label][("train", "validation", "test").index(e.split)] += 1
    return {c: tuple(t) for c, t in tally.items()}


def test_held_out_counts_are_the_fractions_rounded_half_up():
    """15 videos at 0.1 -> 1.5 -> 2 held out each (round half up, as
    _split_counts documents), 25 at 0.1 -> 2.5 -> 3; 14 at 0.1 -> 1.4 -> 1."""
    assert _split_tally({"a": 15, "b": 25, "c": 14}, (0.8, 0.1, 0.1)) == {
        "a": (11, 2, 2),
        "b": (19, 3, 3),
        "c": (12, 1, 1),
    }


def test_every_class_keeps_a_training_video_whatever_the_fractions():
    """A class of 2 at (0.2, 0.4, 0.4) rounds to one
    validation and one test video; one goes back to train."""
    tally = _split_tally({"a": 2, "b": 1, "c": 5}, (0.2, 0.4, 0.4))
    assert all(t[0] >= 1 for t in tally.values()), tally
    assert tally["a"] == (1, 0, 1) and tally["b"] == (1, 0, 0)


def test_split_fractions_must_sum_to_one():
    """Split fractions that do not sum to 1 are refused, not a split that loses videos."""
    entries = [VideoEntry(f"/x/a/{i}.mp4", "a") for i in range(10)]
    with pytest.raises(UserError, match="split_fractions must be"):
        split_by_class(entries, (0.5, 0.1, 0.1), seed=0)


# vjax/data/annotations.py
def _audioset_tree(root, with_eval: bool = True):
    root.mkdir()
    (root / "class_labels_indices.csv").write_text("index,mid,display_name\n0,/m/a,Speech\n")
    (root / "balanced_train_segments.csv").write_text(
        '# YTID, ...\nhhhhhhhhhhh, 30.000, 40.000, "/m/a"\n'
    )
    if with_eval:
        (root / "eval_segments.csv").write_text('jjjjjjjjjjj, 0.000, 10.000, "/m/a"\n')
    return root


def test_audioset_actions_are_in_the_clips_own_clock(tmp_path):
    """The segment 30-40 s of a video is
    stored as a 10 s clip, and its label holds over the whole clip: (0, 10) in the clip's
    seconds, as VideoEntry.actions documents ("seconds from the video's start")."""
    from vjax.data.annotations import audioset_entries

    entries, names = audioset_entries(str(_audioset_tree(tmp_path / "as")))
    assert names == ["Speech"]
    train = next(e for e in entries if e.split == "train")
    assert train.actions == (("Speech", 0.0, 10.0),)


def test_audioset_without_its_eval_csv_is_an_error_not_a_dataset_without_test(tmp_path):
    """A missing eval_segments.csv is an error, not a dataset without a test split (only the
    unbalanced training list is optional)."""
    from vjax.data.annotations import audioset_entries
    from vjax.errors import NotFoundError

    with pytest.raises(NotFoundError, match="eval_segments.csv"):
        audioset_entries(str(_audioset_tree(tmp_path / "as", with_eval=False)))


def test_vggsound_csv_with_a_header_row_someone_added(tmp_path):
    """The official vggsound.csv has no header; one that a user added
    (youtube_id,start_seconds,label,split) is skipped, not a malformed row."""
    from vjax.data.annotations import vggsound_entries

    (tmp_path / "vggsound.csv").write_text(
        "youtube_id,start_seconds,label,split\naaaaaaaaaaa,30,dog barking,train\n"
    )
    entries, names = vggsound_entries(str(tmp_path))
    assert names == ["dog barking"] and [e.id for e in entries] == ["aaaaaaaaaaa_000030"]


def test_epic_kitchens_timestamps_count_hours(tmp_path):
    """HH:MM:SS.ff -> 3600 h + 60 m + s, on a segment an
    hour into a video (Epic-Kitchens-100 has videos over an hour long)."""
    from vjax.data.annotations import _seconds

    assert _seconds("01:02:03.50") == pytest.approx(3723.5)
    assert _seconds("00:00:02.10") == pytest.approx(2.1)


def test_epic_kitchens_class_ids_with_a_gap_are_refused(tmp_path):
    """A classes CSV with ids 0, 1, 3 (one row lost) would shift every later class
    by one (id 3's rows would read names[3], past the end, and id 2 would name 'open');
    it is a UserError naming the file."""
    from vjax.data.annotations import _epic_classes

    path = tmp_path / "EPIC_100_verb_classes.csv"
    path.write_text("id,key,instances,category\n0,take,[],a\n1,put,[],a\n3,open,[],a\n")
    with pytest.raises(UserError, match="class ids must be 0..2 without gaps"):
        _epic_classes(str(path))
    path.write_text("id,key,instances,category\n2,open,[],a\n0,take,[],a\n1,put,[],a\n")
    assert _epic_classes(str(path)) == ["take", "put", "open"]


# vjax/data/video_builder.py
def test_each_setting_that_changes_the_records_gets_its_own_dataset_folder(tmp_path):
    """Preparing again with other split fractions, another split seed or with
    sound must not read back the records prepared without them. The defaults keep the name
    they always had (1: the same folder), and equal settings give equal names."""
    from vjax.data.video_builder import VideoFolderConfig

    src = str(tmp_path / "videos")
    base = VideoFolderConfig(src=src).name
    others = [
        VideoFolderConfig(src=src, split_fractions=(0.5, 0.25, 0.25)).name,
        VideoFolderConfig(src=src, split_seed=1).name,
        VideoFolderConfig(src=src, audio_sample_rate=16000).name,
        VideoFolderConfig(src=src, audio_sample_rate=8000).name,
        VideoFolderConfig(src=src, fold=2).name,
    ]
    assert len({base, *others}) == 6
    assert VideoFolderConfig(src=src, split_fractions=(0.8, 0.1, 0.1), split_seed=0).name == base


def test_a_clip_listed_in_two_splits_is_a_warning_naming_it(tmp_path, caplog):
    """A manifest that lists a clip in train and in test (or one row twice before the listing
    is split) trains on what it tests; each such clip is named once. Two segments of one file
    are two clips (Epic-Kitchens lists many of one video)."""
    from vjax.data.video_builder import VideoFolder, VideoFolderConfig

    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "path,label,start,end,split\n"
        "a.mp4,x,,,train\nb.mp4,y,,,train\na.mp4,x,,,test\n"
        "long.mp4,x,0,5,train\nlong.mp4,x,5,10,validation\n"
        "c.mp4,y,1,2,validation\nc.mp4,y,1,2,train\nc.mp4,y,1,2,test\n"
    )
    config = VideoFolderConfig(src=str(manifest))
    with caplog.at_level("WARNING", logger="vjax.data.manifests"):
        VideoFolder(config=config, data_dir=str(tmp_path / "d"))._listing()
    [warning] = [r.getMessage() for r in caplog.records if "more than one split" in r.getMessage()]
    a, c = str(tmp_path / "a.mp4"), str(tmp_path / "c.mp4")
    assert warning.startswith("video_folder: 2 clip(s) are listed in more than one split")
    assert f"{a} in train and test; {c} [1.0, 2.0) in train and validation and test" in warning
    assert "long.mp4" not in warning


def test_a_source_relabelled_since_it_was_prepared_is_a_change(tmp_path):
    """The same two files, their labels swapped in the manifest, is a changed
    source ("other videos, labels or segments listed"), as a new or missing video is."""
    from vjax.data.video_builder import prepare_video_folder

    video = encode_video(str(tmp_path / "a.mp4"), _counter(6), 5)
    encode_video(str(tmp_path / "b.mp4"), _counter(6), 5)
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\na.mp4,x\nb.mp4,y\n")
    kwargs = dict(src=str(manifest), fps=5, short_side=16, num_workers=1)
    builder = prepare_video_folder(str(tmp_path / "d"), **kwargs)
    assert builder.source_changes() == "" and os.path.isfile(video)
    manifest.write_text("path,label\na.mp4,y\nb.mp4,x\n")
    again = type(builder)(config=builder.builder_config, data_dir=str(tmp_path / "d"))
    assert again.source_changes() == "train: other videos, labels or segments listed"


def test_vggsound_prepared_with_audio_sample_rate_0_has_no_sound(tmp_path):
    """None takes the builder's 16 kHz default, an explicit
    0 means no sound stored (VideoSettings: '0: no sound stored')."""
    from vjax.data.video_builder import VideoFolderConfig, prepare_videos

    (tmp_path / "vggsound.csv").write_text("aaaaaaaaaaa,0,dog barking,train\n")
    encode_video(str(tmp_path / "aaaaaaaaaaa_000000.mp4"), _counter(6), 5)
    silent = prepare_videos("vggsound", str(tmp_path / "d"), src=str(tmp_path), fps=5,
                            short_side=16, num_workers=1, audio_sample_rate=0)  # fmt: skip
    assert silent.builder_config.audio_sample_rate == 0
    assert "audio" not in silent.info.features and "has_audio" not in silent.info.features
    assert VideoFolderConfig(src=str(tmp_path)).audio_sample_rate == 0


# vjax/data/video_prepare.py
def test_a_native_rate_segment_stores_the_sound_from_its_first_kept_frame(tmp_path):
    """Stored at
    the file's own 10 fps, the segment [0.55, 2.0) keeps frames 6..19 (PyAV's times 0.6 ..
    1.9 s), so its sound is 0.6 s .. 2.0 s and the tone that starts at 1.2 s is heard 0.6 s in."""
    from test_audio_data import FPS, ONSET, SR, write_tone_video

    from vjax.data import audio
    from vjax.data.video_prepare import Encoded, VideoSettings, encode_entry

    path = write_tone_video(str(tmp_path / "tone.mp4"))
    kept = [t for t in _pyav_times(path) if 0.55 <= t < 2.0]
    encoded = encode_entry(VideoEntry(path, "x", 0.55, 2.0), VideoSettings(0, 0, 1, 90, SR))
    assert isinstance(encoded, Encoded) and len(encoded.frames) == len(kept) == 14
    assert abs(len(encoded.audio) - len(kept) / FPS * SR) <= 1
    onset = np.flatnonzero(np.abs(encoded.audio) > 0.05 * audio.INT16_SCALE)[0]
    assert abs(onset - (ONSET / FPS - kept[0]) * SR) < 0.003 * SR


# vjax/data/prepare.py and vjax/data/datasets.py
def test_prepare_without_a_dataset_prints_help_and_exits_2_and_help_exits_0(capsys):
    """No dataset named is a usage error (2), --help is not (0); both print the
    command's help."""
    from vjax.data.prepare import main

    assert main([]) == 2
    assert main(["--help"]) == 0 and main(["-h"]) == 0
    assert main(["--fps=5"]) == 2
    assert capsys.readouterr().out.count("vjax prepare NAME") == 4


def test_data_dir_is_never_a_required_prepare_flag():
    """--data_dir defaults to ~/tensorflow_datasets (load_dataset), so it is
    listed with its default and not demanded; src of a video dataset is required."""
    import inspect

    from vjax.config_utils import ConfigError
    from vjax.data.datasets import preparer
    from vjax.data.prepare import check_required, dataset_help

    signature = inspect.signature(preparer("video_folder")).parameters
    check_required("video_folder", signature, {"name", "progress_bar", "src"})
    with pytest.raises(ConfigError, match=r"video_folder needs --src=\.\.\. \("):
        check_required("video_folder", signature, {"name", "progress_bar"})
    text = dataset_help("video_folder", signature)
    assert "--data_dir=DIR  (default ~/tensorflow_datasets)" in text
    assert [line for line in text.splitlines() if "(required)" in line] == [
        "  --src=...  (required)"
    ]


def test_planned_clip_shape_of_vjax_motion_is_frames_height_width():
    """The clip the preflight checks for vjax_motion is prepare_motion's (num_frames, height,
    width), for a non-square one too."""
    from vjax.data.datasets import planned_clip_shape

    config = {"name": "vjax_motion", "num_frames": 4, "height": 8, "width": 12}
    assert planned_clip_shape(config, None) == (4, 8, 12, 3)
    assert planned_clip_shape({"name": "vjax_motion", "num_frames": 4}, None) is None


# vjax/data/pipeline.py and vjax/data/datasets.py
def _record_rng(draws: list):
    def batch_transform(batch, rng):
        draws.append(float(rng.uniform()))
        return batch

    return batch_transform


def test_the_batch_transform_rng_is_keyed_on_seed_step_and_process():
    """The batch transform's random stream (mixup's weight and partners) is keyed on (seed,
    step, process_index), by hand with NumPy: without the step every step mixes alike, without
    the process every process does."""
    from vjax.data.pipeline import TrainBatches

    for process in (0, 1):
        draws: list = []
        batches = TrainBatches(FakeSource(8), 4, seed=3, process_index=process, process_count=2,
                               batch_transform=_record_rng(draws))  # fmt: skip
        for step in (0, 1, 5):
            batches(step)
        expected = [
            np.random.default_rng([3, step, 1 << 32, process]).uniform() for step in (0, 1, 5)
        ]
        assert draws == expected
    assert len({*expected}) == 3


def test_eval_batches_of_several_processes_cover_every_example_once():
    """With 2 processes and global
    batch 4 over 10 examples, batch n holds examples 4n..4n+3, process p rows 4n+2p, 4n+2p+1
    (by hand); over all batches and processes each example is scored once, padding masked."""
    from vjax.data.pipeline import eval_batch, num_eval_batches

    seen = []
    for number in range(num_eval_batches(10, 4)):
        for process in (0, 1):
            batch = eval_batch(FakeSource(10), 4, number, process, 2)
            ids = batch["video"][:, 0, 0, 0, 0].tolist()
            first = 4 * number + 2 * process
            expected = [i if i < 10 else 0 for i in (first, first + 1)]
            assert ids == expected and batch["mask"].tolist() == [
                float(i < 10) for i in (first, first + 1)
            ]
            seen += [i for i, m in zip(ids, batch["mask"], strict=True) if m]
    assert sorted(seen) == list(range(10))


def test_training_batches_follow_the_configs_seed():
    """A fixed-clip dataset's first batch is the
    first rows of default_rng([seed, 0]).permutation(n), by hand with NumPy, for two seeds."""
    from types import SimpleNamespace

    import ml_collections
    import tensorflow_datasets as tfds

    from vjax.data.loaders import host_batches

    features = {"video": tfds.features.Tensor(shape=(2, 2, 2, 3), dtype=np.uint8),
                "label": tfds.features.ClassLabel(names=["a", "b", "c"])}  # fmt: skip
    builder = SimpleNamespace(name="fake", info=SimpleNamespace(features=features),
                              as_data_source=lambda split: FakeSource(8))  # fmt: skip
    for seed in (0, 5):
        config = ml_collections.ConfigDict({"seed": seed, "input": {"global_batch_size": 4}})
        batch = host_batches(builder, config, 0, 1)(0)
        expected = np.random.default_rng([seed, 0]).permutation(8)[:4]
        assert batch["video"][:, 0, 0, 0, 0].tolist() == expected.tolist()


def test_dataset_class_names_are_in_label_id_order():
    """SSv2's official ids are not alphabetical; the names a
    run reports must be the ClassLabel's own id -> name (int2str), or every prediction is
    named after another class."""
    from types import SimpleNamespace

    import tensorflow_datasets as tfds

    from vjax.data.datasets import dataset_class_names

    label = tfds.features.ClassLabel(names=["right to left", "left to right", "down"])
    builder = SimpleNamespace(info=SimpleNamespace(features={"label": label}))
    assert dataset_class_names(builder) == [label.int2str(i) for i in range(3)]
    assert dataset_class_names(builder) == ["right to left", "left to right", "down"]


# vjax/data/loaders.py
def test_training_batches_read_the_data_dir_they_are_given(tmp_path):
    """A run whose data moved is calibrated from the new
    folder (vjax quantize --data_dir=...), not from the config's old one."""
    import ml_collections

    from vjax.data.loaders import training_batches

    dataset = dict(name="vjax_motion", data_dir=str(tmp_path / "old"), num_classes=2,
                   num_frames=2, height=8, width=8, num_train=4, num_validation=2,
                   num_test=2)  # fmt: skip
    config = ml_collections.ConfigDict({"seed": 0, "dataset": dataset,
                                        "input": {"global_batch_size": 2}})  # fmt: skip
    (batch,) = training_batches(config, 1, data_dir=str(tmp_path / "new"))
    assert batch["video"].shape == (2, 2, 8, 8, 3)
    assert (tmp_path / "new").is_dir() and not (tmp_path / "old").exists()


# vjax/data/video_io.py: Matroska and WebM whose sound outlasts the pictures
def _with_longer_sound(path: str, video_seconds: float, sound_seconds: float) -> str:
    """A complete file: 10 fps pictures for video_seconds, a sound track for sound_seconds."""
    import fractions

    codecs = ("libvpx-vp9", "libopus") if path.endswith(".webm") else ("libx264", "aac")
    with av.open(path, "w") as container:
        video = container.add_stream(codecs[0], rate=fractions.Fraction(10))
        video.width = video.height = 32
        video.pix_fmt = "yuv420p"
        sound = container.add_stream(codecs[1], rate=48000)
        sound.layout = "mono"
        for i in range(int(video_seconds * 10)):
            image = np.full((32, 32, 3), 8 * i % 256, np.uint8)
            container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(video.encode(None))
        samples = int(sound_seconds * 48000)
        for k in range(0, samples, 960):
            chunk = np.zeros((1, min(960, samples - k)), np.float32)
            kind = "fltp" if "opus" in codecs[1] else "flt"
            frame = av.AudioFrame.from_ndarray(chunk, format=kind, layout="mono")
            frame.sample_rate, frame.pts = 48000, k
            container.mux(sound.encode(frame))
        container.mux(sound.encode(None))
    return path


def test_a_complete_mp4_whose_sound_outlasts_its_pictures_is_kept(tmp_path):
    """The reference for the test below: the same content in MP4 is kept (its video stream
    declares its own 2 s)."""
    path = _with_longer_sound(str(tmp_path / "a.mp4"), 2.0, 4.0)
    assert decode_video(path).frames.shape == (20, 32, 32, 3)


@pytest.mark.parametrize("ext", ["mkv", "webm"])
def test_a_complete_file_whose_sound_outlasts_its_pictures_is_not_truncated(tmp_path, ext):
    """A complete file with 2 s of pictures and 4 s of sound decodes to its 20 frames, as the
    MP4 above does. They were skipped as 'truncated' ("frames end at 2.00s of a declared
    4.02s"): Matroska has no per-stream duration in the header PyAV reads (stream.duration is
    None), and the container's is the longest stream's 4 s. The video track's own DURATION
    tag (written by ffmpeg's and mkvmerge's Matroska muxers, and still there in a file cut in
    half) says 2 s."""
    path = _with_longer_sound(str(tmp_path / f"a.{ext}"), 2.0, 4.0)
    with av.open(path) as container:  # the reference: PyAV reads every picture
        assert sum(1 for _ in container.decode(video=0)) == 20
    assert decode_video(path).frames.shape == (20, 32, 32, 3)


def test_a_data_dir_that_is_a_file_is_named(tmp_path):
    """TFDS raised NotADirectoryError (a traceback) for a dataset.data_dir that is a file."""
    from vjax.data.datasets import load_dataset

    (tmp_path / "data").write_text("x")
    with pytest.raises(UserError, match=r"dataset.data_dir '.*data' is a file; name a folder"):
        load_dataset({"name": "vjax_motion", "data_dir": str(tmp_path / "data")})


def test_a_fold_for_a_dataset_without_folds_is_refused(tmp_path):
    """``fold=3`` on a video folder changed only the dataset folder's name, so the same videos
    were prepared again in full; only UCF101 and HMDB51 have official folds."""
    from vjax.data.video_builder import prepare_video_folder

    os.makedirs(tmp_path / "src" / "a")
    encode_video(str(tmp_path / "src" / "a" / "0.mp4"), _counter(6), 5)
    with pytest.raises(UserError, match=r"has no official folds \(fold=3\); UCF101 and HMDB51"):
        prepare_video_folder(str(tmp_path / "d"), src=str(tmp_path / "src"), fold=3)
