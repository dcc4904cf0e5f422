"""Real video files -> decoded frames -> the ``video_folder`` TFDS builder.

Every video here is encoded by the test with PyAV in a real container/codec; broken files are
made by cutting, emptying or patching real ones. Frame ``i`` of the "counter" videos has grey
level ``8 * i``, so which source frame a decoded frame came from is read off its pixels.
"""

import json
import os
import shutil

import av
import numpy as np
import pytest

from vjax.data.manifests import VideoEntry, class_names, read_entries
from vjax.data.video_io import VideoDecodeError, decode_video, encode_video
from vjax.errors import UserError

H, W, FPS, N = 32, 48, 15, 30  # 2 s videos
FORMATS = [("mp4", "libx264"), ("webm", "libvpx-vp9"), ("avi", "mpeg4"), ("mkv", "libx264")]
FORMATS = [(ext, codec) for ext, codec in FORMATS if codec in av.codecs_available]


def counter_frames(n: int = N, height: int = H, width: int = W) -> np.ndarray:
    """Frame i is flat grey 8 * i (plus a static gradient so codecs see an image)."""
    levels = (8 * np.arange(n) % 256).astype(np.float32)[:, None, None, None]
    ramp = np.linspace(0, 6, width, dtype=np.float32)[None, None, :, None]
    return np.clip(levels + ramp, 0, 255).astype(np.uint8).repeat(height, 1).repeat(3, -1)


def frame_ids(frames: np.ndarray) -> np.ndarray:
    """Which counter frame each decoded frame shows (its grey level / 8)."""
    return np.round((frames[:, :, :2].astype(np.float32).mean((1, 2, 3))) / 8).astype(int)


def _write(folder, name: str, codec: str, frames=None, fps: float = FPS) -> str:
    path = os.path.join(str(folder), name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return encode_video(path, counter_frames() if frames is None else frames, fps, codec)


def _audio_only(path: str) -> str:
    with av.open(path, "w") as container:
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), "fltp", "mono")
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return path


def _make_bad_files(folder, good_mp4: str, good_mkv: str) -> dict[str, str]:
    """name -> expected skip reason; each made from a real file."""
    os.makedirs(folder, exist_ok=True)
    mp4, mkv = open(good_mp4, "rb").read(), open(good_mkv, "rb").read()
    # Noisy frames spread the bytes evenly over time, so half the file is half the frames.
    noisy = np.random.default_rng(1).integers(0, 256, (N, H, W, 3), np.uint8)
    noisy_mkv = open(encode_video(os.path.join(folder, "noisy.mkv"), noisy, FPS), "rb").read()
    os.remove(os.path.join(folder, "noisy.mkv"))
    files = {
        "zero.mp4": (b"", "unreadable"),
        "random.mp4": (np.random.default_rng(0).bytes(4000), "unreadable"),
        "cut.mp4": (mp4[: len(mp4) // 2], "unreadable"),  # index (moov) at the end: lost
        # The header declares 2 s; the first half decodes.
        "cut.mkv": (noisy_mkv[: len(noisy_mkv) // 2], "truncated"),
        "unknown.mkv": (mkv.replace(b"V_MPEG4/ISO/AVC", b"V_UNKNOWN/FOO/X"), "unknown_codec"),
    }
    out = {}
    for name, (data, reason) in files.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)
        out[name] = reason
    _audio_only(os.path.join(folder, "audio.mp4"))
    out["audio.mp4"] = "no_video_stream"
    return out


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    good = {ext: _write(root, f"counter.{ext}", codec) for ext, codec in FORMATS}
    return root, good


# ------------------------------------------------------------------ decoding


@pytest.mark.parametrize("ext", [ext for ext, _ in FORMATS])
def test_decode_each_container_native_and_resampled(videos, ext):
    _, good = videos
    native = decode_video(good[ext])
    assert native.frames.shape == (N, H, W, 3) and native.source_fps == pytest.approx(FPS)
    np.testing.assert_array_equal(frame_ids(native.frames), np.arange(N))
    np.testing.assert_allclose(native.frames.mean(), counter_frames().mean(), atol=2.0)
    # 15 -> 5 fps: output time k/5 s shows source frame 3k; short side 32 -> 16.
    low = decode_video(good[ext], fps=5, short_side=16)
    assert low.frames.shape == (10, 16, 24, 3) and low.fps == 5.0
    np.testing.assert_array_equal(frame_ids(low.frames), 3 * np.arange(10))
    # Upsampling repeats frames: 15 -> 30 fps shows each source frame twice.
    high = decode_video(good[ext], fps=30)
    np.testing.assert_array_equal(frame_ids(high.frames), np.arange(N).repeat(2))


def test_decode_segment(videos):
    _, good = videos
    clip = decode_video(good["mp4"], fps=5, start=0.5, end=1.3)
    # times 0.5, 0.7, 0.9, 1.1 s -> frames 7.5 -> 7, 10.5 -> 10, 13.5 -> 13, 16.5 -> 16
    np.testing.assert_array_equal(frame_ids(clip.frames), [7, 10, 13, 16])


def test_bad_files_raise_with_their_reason(videos, tmp_path):
    _, good = videos
    expected = _make_bad_files(tmp_path, good["mp4"], good["mkv"])
    for name, reason in expected.items():
        with pytest.raises(VideoDecodeError) as e:
            decode_video(os.path.join(tmp_path, name))
        assert e.value.reason == reason, (name, e.value)
    with pytest.raises(VideoDecodeError) as e:
        decode_video(good["mp4"], fps=5, min_frames=11)  # 2 s at 5 fps = 10 frames
    assert e.value.reason == "too_short" and "10 frames" in str(e.value)
    with pytest.raises(VideoDecodeError) as e:
        decode_video(os.path.join(tmp_path, "missing.mp4"))
    assert e.value.reason == "unreadable"


# ------------------------------------------------------------------ listings


def test_folder_and_manifest_listings(tmp_path, caplog):
    for split, label, name in [
        ("train", "b", "1.mp4"),
        ("train", "a", "2.mp4"),
        ("test", "a", "3"),
    ]:
        os.makedirs(tmp_path / "tree" / split / label, exist_ok=True)
        (tmp_path / "tree" / split / label / name).write_bytes(b"x")
    (tmp_path / "tree" / "train" / "a" / ".DS_Store").write_bytes(b"x")
    for not_a_video in ("notes.txt", "2.COVER.JPG", "2.en.srt"):  # left out, with a warning
        (tmp_path / "tree" / "train" / "a" / not_a_video).write_bytes(b"x")
    entries = read_entries(str(tmp_path / "tree"))
    assert [(os.path.basename(e.path), e.label, e.split) for e in entries] == [
        ("3", "a", "test"),
        ("2.mp4", "a", "train"),
        ("1.mp4", "b", "train"),
    ]
    left_out = "left out 3 file(s) whose suffix says they are not videos (e.g. train/a/2.COVER.JPG)"
    assert left_out in caplog.text
    (tmp_path / "flat").mkdir()  # unlabelled: the same rule
    for name in ("README.md", "x.webm"):
        (tmp_path / "flat" / name).write_bytes(b"x")
    assert [os.path.basename(e.path) for e in read_entries(str(tmp_path / "flat"))] == ["x.webm"]
    (tmp_path / "m.csv").write_text(
        "label,path,start,end,split\n2,v/x.mp4,1,2.5,\n10,y.avi,,,test\n"
    )
    csv_entries = read_entries(str(tmp_path / "m.csv"))
    assert csv_entries == [
        VideoEntry(str(tmp_path / "v" / "x.mp4"), "2", 1.0, 2.5, "train"),
        VideoEntry(str(tmp_path / "y.avi"), "10", None, None, "test"),
    ]
    assert class_names(csv_entries) == ["2", "10"]  # numeric labels sort as numbers
    (tmp_path / "m.json").write_text(json.dumps({"validation": [{"path": "z.mkv", "label": "c"}]}))
    assert read_entries(str(tmp_path / "m.json"))[0].split == "validation"
    (tmp_path / "bad.csv").write_text("path,label,speed\nx.mp4,a,2\n")
    with pytest.raises(ValueError, match=r"unknown column\(s\) \['speed'\]"):
        read_entries(str(tmp_path / "bad.csv"))
    (tmp_path / "bad2.csv").write_text("x.mp4,a,3,1\n")
    with pytest.raises(ValueError, match="end .* must be after start"):
        read_entries(str(tmp_path / "bad2.csv"))
    for name, cells in [("split.csv", "x.mp4,a,validation"), ("clock.csv", "x.mp4,a,1:00,2:00")]:
        (tmp_path / name).write_text(f"{cells}\n")  # a split without a header, a clock time
        with pytest.raises(UserError, match=rf"{name}:1: start must be a number of seconds"):
            read_entries(str(tmp_path / name))
    # Excel's "CSV UTF-8" and some JSON writers begin with a byte-order mark: still a header.
    (tmp_path / "excel.csv").write_text("path,label\na.mp4,cat\nb.mp4,dog\n", "utf-8-sig")
    excel = read_entries(str(tmp_path / "excel.csv"))
    assert [e.label for e in excel] == ["cat", "dog"] and class_names(excel) == ["cat", "dog"]
    (tmp_path / "bom.json").write_text(json.dumps([{"path": "a.mp4", "label": "c"}]), "utf-8-sig")
    assert read_entries(str(tmp_path / "bom.json"))[0].label == "c"


# ------------------------------------------------------------------ the TFDS builder


@pytest.fixture(scope="module")
def video_tree(videos, tmp_path_factory):
    """walk/: every good container + 3 bad files; run/: 2 good + 3 bad + one too short."""
    root, good = videos
    src = tmp_path_factory.mktemp("tree")
    bad = _make_bad_files(root / "bad", good["mp4"], good["mkv"])
    for ext in good:
        shutil.copy(good[ext], src / f"walk_{ext}.{ext}")
    os.makedirs(src / "walk"), os.makedirs(src / "run")
    for i, name in enumerate(sorted(bad)):
        shutil.copy(root / "bad" / name, src / ("walk" if i % 2 else "run") / name)
    for ext in good:
        os.rename(src / f"walk_{ext}.{ext}", src / "walk" / f"{ext}.{ext}")
    shutil.copy(good["mp4"], src / "run" / "a.mp4")
    shutil.copy(good["avi" if "avi" in good else "mp4"], src / "run" / "b.avi")
    _write(src, "run/short.mp4", "libx264", counter_frames(3), fps=15)  # 0.2 s: 1 frame at 5 fps
    return str(src), {name: reason for name, reason in bad.items()}


def test_builder_keeps_good_skips_and_lists_bad(video_tree, tmp_path):
    from vjax.data.video_builder import prepare_video_folder, read_report

    src, bad = video_tree
    builder = prepare_video_folder(
        str(tmp_path), src=src, fps=5, short_side=16, min_frames=2, num_workers=2,
        split_fractions=(1.0, 0.0, 0.0),  # a flat folder: keep every video in train
    )  # fmt: skip
    report = read_report(builder)["train"]
    good_walk = len(FORMATS)
    assert report["listed"] == good_walk + 2 + 1 + len(bad)
    assert report["kept"] == good_walk + 2
    expected_reasons: dict[str, int] = {"too_short": 1}
    for reason in bad.values():
        expected_reasons[reason] = expected_reasons.get(reason, 0) + 1
    assert report["skipped_by_reason"] == expected_reasons
    listed = {os.path.basename(s["path"]): s["reason"] for s in report["skipped_files"]}
    assert listed == {**bad, "short.mp4": "too_short"}

    assert builder.info.features["label"].names == ["run", "walk"]
    source = builder.as_data_source("train")
    assert len(source) == report["kept"]
    from vjax.data.video_io import decode_jpegs

    paths = []
    for i in range(len(source)):
        ex = source[i]
        frames = decode_jpegs(ex["frames"])
        assert frames.shape == (10, 16, 24, 3) and float(ex["fps"]) == 5.0
        assert (int(ex["height"]), int(ex["width"])) == (16, 24)
        np.testing.assert_array_equal(frame_ids(frames), 3 * np.arange(10))
        path = ex["path"].decode()
        assert ex["label"] == (0 if "/run/" in path else 1)
        paths.append(path)
    assert paths == sorted(paths)  # stored in listing order


def test_builder_from_manifest_with_segments_and_splits(videos, tmp_path):
    from vjax.data.video_builder import prepare_video_folder, read_report
    from vjax.data.video_io import decode_jpegs

    _, good = videos
    manifest = tmp_path / "list.csv"
    manifest.write_text(
        f"path,label,start,end,split\n{good['mp4']},jump,0.5,1.3,train\n"
        f"{good['mkv']},sit,,,train\n{good['mp4']},sit,,,validation\nnope.mp4,jump,,,validation\n"
    )
    builder = prepare_video_folder(
        str(tmp_path / "data"), src=str(manifest), fps=5, short_side=0, num_workers=1
    )
    report = read_report(builder)
    assert {s: (r["kept"], r["skipped"]) for s, r in report.items()} == {
        "train": (2, 0),
        "validation": (1, 1),
    }
    assert report["validation"]["skipped_by_reason"] == {"missing": 1}
    train = builder.as_data_source("train")
    np.testing.assert_array_equal(frame_ids(decode_jpegs(train[0]["frames"])), [7, 10, 13, 16])
    assert decode_jpegs(train[1]["frames"]).shape == (10, H, W, 3)  # short_side=0: native
    assert [int(train[i]["label"]) for i in range(2)] == [0, 1]
    assert len(builder.as_data_source("validation")) == 1
    os.remove(manifest)  # a prepared dataset no longer needs its source
    again = prepare_video_folder(
        str(tmp_path / "data"), src=str(manifest), fps=5, short_side=0, num_workers=1
    )
    assert again.info.features["label"].names == ["jump", "sit"]
    assert len(again.as_data_source("train")) == 2


def test_a_build_that_dies_leaves_nothing_prepared(videos, tmp_path, monkeypatch):
    from vjax.data import video_prepare
    from vjax.data.video_builder import VideoFolder, VideoFolderConfig, prepare_video_folder

    root, good = videos
    src = tmp_path / "src"
    for i in range(4):
        os.makedirs(src / f"c{i % 2}", exist_ok=True)
        shutil.copy(good["mp4"], src / f"c{i % 2}" / f"{i}.mp4")
    real = video_prepare.encode_entry
    calls = []

    def dies_on_third(entry, settings):
        calls.append(entry.path)
        if len(calls) == 3:
            raise OSError("disk full")
        return real(entry, settings)

    monkeypatch.setattr(video_prepare, "encode_entry", dies_on_third)
    data_dir = str(tmp_path / "data")
    with pytest.raises(OSError, match="disk full"):
        prepare_video_folder(data_dir, src=str(src), fps=5, short_side=16, num_workers=1)
    config = VideoFolderConfig(src=str(src), fps=5, short_side=16)
    assert not VideoFolder(config=config, data_dir=data_dir).is_prepared()
    monkeypatch.setattr(video_prepare, "encode_entry", real)
    builder = prepare_video_folder(data_dir, src=str(src), fps=5, short_side=16, num_workers=1)
    assert len(builder.as_data_source("train")) == 4
    leftovers = [n for n in os.listdir(os.path.dirname(str(builder.data_dir))) if n != "1.0.0"]
    assert not [n for n in leftovers if "incomplete" in n]


def test_sigterm_stops_prepare_as_ctrl_c_does(videos, tmp_path, monkeypatch, capsys):
    """``kill`` of ``vjax prepare`` mid-build unwinds (exit 143): TFDS's temporary folder is
    removed and a process pool would be shut down; the signal's default action left both (the
    workers blocked forever, the folder on disk). The test's own handler comes back after."""
    import signal

    from vjax.cli import main
    from vjax.data import video_prepare
    from vjax.data.video_builder import VideoFolderConfig

    class Killed(Exception):  # this test's stand-in for SIGTERM's default action
        pass

    def kill(signum, frame):
        raise Killed

    _, good = videos
    for i in range(3):
        os.makedirs(tmp_path / "src" / f"c{i}")
        shutil.copy(good["mp4"], tmp_path / "src" / f"c{i}" / "1.mp4")
    real, calls = video_prepare.encode_entry, []

    def signalled_on_second(entry, settings):
        calls.append(entry.path)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(entry, settings)

    monkeypatch.setattr(video_prepare, "encode_entry", signalled_on_second)
    data = tmp_path / "d"
    previous = signal.signal(signal.SIGTERM, kill)
    try:
        with pytest.raises(SystemExit) as stopped:
            main(["prepare", "video_folder", f"--src={tmp_path / 'src'}", f"--data_dir={data}",
                  "--num_workers=1"])  # fmt: skip
        assert signal.getsignal(signal.SIGTERM) is kill
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert stopped.value.code == 143 and len(calls) == 2
    left = [str(p) for p in data.rglob("*") if "incomplete" in p.name]
    assert not left, left
    # What a SIGKILL leaves (no cleanup can run) is named by the next preparation.
    name = VideoFolderConfig(src=str(tmp_path / "src")).name
    killed = data / "video_folder" / name / "incomplete.ABC_1.0.0"
    os.makedirs(killed)
    monkeypatch.setattr(video_prepare, "encode_entry", real)
    assert main(["prepare", "video_folder", f"--src={tmp_path / 'src'}", f"--data_dir={data}",
                 "--num_workers=1"]) == 0  # fmt: skip
    assert f"note: {killed} was left by a preparation that was killed" in capsys.readouterr().out


def test_a_decode_worker_that_dies_is_an_error_naming_the_videos_in_flight():
    """The out-of-memory killer ending a worker gave a raw BrokenProcessPool traceback that
    named no file."""
    import collections
    from concurrent.futures import Future
    from concurrent.futures.process import BrokenProcessPool

    from vjax.data.manifests import VideoEntry
    from vjax.data.video_prepare import _next_result
    from vjax.errors import UserError

    died, running = Future(), Future()
    died.set_exception(BrokenProcessPool("A process in the process pool was terminated"))
    entries = [VideoEntry(f"{i}.mp4", "x") for i in range(3)]
    pending = collections.deque([(1, died), (2, running)])
    with pytest.raises(UserError, match=r"decoding process died .* one of: 1.mp4, 2.mp4; try"):
        _next_result(pending, entries)


def test_prepare_command_and_load_dataset(videos, tmp_path, capsys):
    from vjax.cli import main
    from vjax.data.datasets import clip_spec, load_dataset

    _, good = videos
    src = tmp_path / "src"
    os.makedirs(src / "x"), os.makedirs(src / "y")
    shutil.copy(good["mp4"], src / "x" / "1.mp4")
    shutil.copy(good["mkv"], src / "y" / "2.mkv")
    (src / "y" / "3.avi").write_text("not a video")
    flags = [f"--src={src}", f"--data_dir={tmp_path / 'd'}", "--fps=5", "--short_side=16"]
    assert main(["prepare", "video_folder", *flags, "--num_workers=1"]) == 0
    out = capsys.readouterr().out
    assert "train: kept 2 of 3 (found 3); skipped 1 (unreadable 1)" in out
    builder = load_dataset(  # fps=5 as a Python config writes it; the command parsed 5.0
        {"name": "video_folder", "data_dir": str(tmp_path / "d"), "src": str(src), "fps": 5,
         "short_side": 16}
    )  # fmt: skip
    assert len(os.listdir(tmp_path / "d" / "video_folder")) == 1  # the same dataset, reused
    shape, names = clip_spec(builder, {"num_frames": 4, "crop_size": 8})
    assert shape == (4, 8, 8, 3) and names == ["x", "y"]
    assert main(["prepare", "video_folder", "--src=/nonexistent", f"--data_dir={tmp_path}"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_source_that_changed_since_it_was_prepared_is_not_reused_silently(
    videos, tmp_path, capsys, caplog
):
    """The source gains a class, or a video missing then is there now: ``vjax prepare``
    refuses (it reported the old dataset as prepared, the new videos never in it), and
    training says so and uses the dataset as it was prepared."""
    from conftest import REPO

    from vjax import train
    from vjax.cli import main
    from vjax.config_utils import apply_overrides, load_config

    _, good = videos
    src = tmp_path / "src"
    for name in ("x", "y"):
        os.makedirs(src / name)
        shutil.copy(good["mp4"], src / name / "1.mp4")
    manifest = tmp_path / "list.csv"
    manifest.write_text(f"path,label\n{src}/x/1.mp4,x\n{tmp_path}/later.mp4,y\n")
    for listing, change, expected in (
        (src, lambda: shutil.copytree(src / "y", src / "z"), "train: 3 videos listed, 2 then"),
        (manifest, lambda: shutil.copy(good["mp4"], tmp_path / "later.mp4"),
         "train: 1 videos missing then are there now"),
    ):  # fmt: skip
        flags = [f"--src={listing}", f"--data_dir={tmp_path / 'd'}", "--num_workers=1",
                 "--fps=10", "--short_side=16"]  # configs/videos.py:tiny's  # fmt: skip
        assert main(["prepare", "video_folder", *flags]) == 0
        assert main(["prepare", "video_folder", *flags]) == 0  # the same source: reused
        change()
        capsys.readouterr()
        assert main(["prepare", "video_folder", *flags]) == 2
        err = capsys.readouterr().err
        assert "was prepared before" in err and expected in err, err

    config = load_config(f"{REPO}/configs/videos.py:{src},tiny")
    apply_overrides(config, {"dataset.data_dir": str(tmp_path / "d")})
    with caplog.at_level("WARNING"):
        exp = train.setup(config)
    assert "train: 3 videos listed, 2 then" in caplog.text and "used as prepared" in caplog.text
    assert exp.class_names == ["x", "y"]


def test_a_split_with_no_usable_video_fails_clearly_and_writes_nothing(tmp_path):
    from vjax.data.video_builder import VideoFolder, VideoFolderConfig, prepare_video_folder

    os.makedirs(tmp_path / "src" / "a")
    (tmp_path / "src" / "a" / "x.mp4").write_bytes(b"")
    (tmp_path / "src" / "a" / "y.mp4").write_bytes(b"not a video")
    data_dir = str(tmp_path / "d")
    with pytest.raises(Exception, match=r"none of its 2 videos could be used \({'unreadable': 2}"):
        prepare_video_folder(data_dir, src=str(tmp_path / "src"), num_workers=1)
    config = VideoFolderConfig(src=str(tmp_path / "src"))
    assert not VideoFolder(config=config, data_dir=data_dir).is_prepared()


def test_a_new_dataset_leaves_no_empty_folder_in_the_temporary_directory(
    videos, tmp_path, monkeypatch
):
    """TFDS looks a dataset it has not prepared up on its GCS bucket from a temporary folder it
    never removes (one empty ``tmpXXXXXXXXtfds`` per fresh ``vjax prepare``, ~150 per test
    run); vjax's builders skip that look-up: their datasets are never there."""
    import tempfile

    from vjax.data.motion_builder import AvMotionConfig, MotionConfig, VjaxAvMotion, VjaxMotion
    from vjax.data.video_builder import VideoFolder, VideoFolderConfig

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    for name in ("c0", "c1"):
        (tmp_path / "src" / name).mkdir(parents=True)
        shutil.copy(videos[1]["mp4"], tmp_path / "src" / name / "0.mp4")
    builders = [(VjaxMotion, MotionConfig(num_train=4)),
                (VjaxAvMotion, AvMotionConfig(num_train=4)),
                (VideoFolder, VideoFolderConfig(src=str(tmp_path / "src"), fps=5))]  # fmt: skip
    for builder_class, config in builders:
        builder = builder_class(config=config, data_dir=str(tmp_path / "data"))
        assert not builder.is_prepared()
    assert sorted(os.listdir(scratch)) == []


def test_display_rotation_and_seeking(tmp_path):
    frames = np.zeros((4, 16, 32, 3), np.uint8)
    frames[:, :, :8] = 255  # a white band on the left
    path = str(tmp_path / "phone.mp4")
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 16, "yuv420p"
        stream.set_display_rotation(90)  # shown turned 90 degrees counterclockwise
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode(None))
    upright = decode_video(path).frames
    assert upright.shape == (4, 32, 16, 3)
    assert upright[:, -8:].min() > 200 and upright[:, :-9].max() < 50  # the band is at the bottom

    long = _write(tmp_path, "long.mp4", "libx264", counter_frames(30), fps=5)  # 6 s
    clip = decode_video(long, fps=5, start=4.0, end=5.0)  # seeks past the start
    np.testing.assert_array_equal(frame_ids(clip.frames), [20, 21, 22, 23, 24])


def test_generated_datasets_refuse_a_frame_too_small_to_render():
    """A 3x3 frame was accepted and named, then failed inside the TFDS generation with 'bad
    clip shape'; now the config itself says which sizes it needs."""
    from vjax.data.motion_builder import AvMotionConfig, MotionConfig

    for config in (MotionConfig, AvMotionConfig):
        with pytest.raises(UserError, match=r"height, width >= 4; got \d+ frames of 3x8"):
            config(height=3, width=8)
        with pytest.raises(UserError, match=r"num_frames must be >= 1"):
            config(num_frames=0)
    assert MotionConfig(height=4, width=4).name.startswith("c8_f16_4x4_")
