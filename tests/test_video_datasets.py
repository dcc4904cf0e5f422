"""Kinetics, SSv2, UCF101 and HMDB51 builders from trees laid out like the real downloads:
real (tiny) video files, official annotation formats, missing and broken files."""

import json
import os
import shutil

import numpy as np
import pytest

from vjax.data.video_io import decode_jpegs, encode_video

FRAMES = np.broadcast_to((8 * np.arange(20))[:, None, None, None], (20, 24, 32, 3)).astype(np.uint8)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    return {
        "mp4": encode_video(str(root / "c.mp4"), FRAMES, 10),  # 2 s
        "webm": encode_video(str(root / "c.webm"), FRAMES, 10, codec="libvpx-vp9"),
        "avi": encode_video(str(root / "c.avi"), FRAMES, 10, codec="mpeg4"),
    }


def _put(src: str, dest) -> None:
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    shutil.copy(src, dest)


def _prepare(name, tmp_path, src, **kw):
    from vjax.data.video_builder import prepare_videos, read_report

    builder = prepare_videos(name, str(tmp_path / "tfds"), src=str(src), fps=5, short_side=16,
                             num_workers=1, **kw)  # fmt: skip
    report = read_report(builder)
    counts = {s: {k: r[k] for k in ("listed", "found", "kept")} for s, r in report.items()}
    return builder, report, counts


def test_kinetics(clips, tmp_path):
    root = tmp_path / "k400"
    header = "label,youtube_id,time_start,time_end,split\n"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "train.csv").write_text(
        header + "abseiling,aaaaaaaaaaa,10,20,train\nabseiling,bbbbbbbbbbb,0,10,train\n"
        "zumba,ccccccccccc,0,1,train\nzumba,ddddddddddd,5,15,train\n"
    )
    (root / "annotations" / "validate.csv").write_text(
        header + "zumba,eeeeeeeeeee,0,10,val\nabseiling,fffffffffff,3,13,val\n"
    )
    (root / "annotations" / "test.csv").write_text(
        "youtube_id,time_start,time_end,split\nx,0,1,test\n"
    )
    _put(clips["mp4"], root / "train" / "abseiling" / "aaaaaaaaaaa_000010_000020.mp4")
    _put(clips["webm"], root / "train" / "abseiling" / "bbbbbbbbbbb_000000_000010.webm")
    _put(clips["mp4"], root / "raw" / "ccccccccccc.mp4")  # a whole video: cut to 0-1 s
    _put(clips["mp4"], root / "val" / "eeeeeeeeeee_000000_000010.mp4")
    (root / "val" / "fffffffffff_000003_000013.mp4").write_bytes(b"")  # broken
    builder, report, counts = _prepare("kinetics", tmp_path, root)
    assert counts == {
        "train": {"listed": 4, "found": 3, "kept": 3},
        "validation": {"listed": 2, "found": 2, "kept": 1},
    }
    assert report["train"]["skipped_by_reason"] == {"missing": 1}
    assert report["validation"]["skipped_by_reason"] == {"unreadable": 1}
    assert builder.name == "vjax_kinetics"
    assert builder.info.features["label"].names == ["abseiling", "zumba"]
    train = builder.as_data_source("train")
    lengths = [len(train[i]["frames"]) for i in range(3)]
    assert lengths == [10, 10, 5]  # the whole video was cut to its 1 s segment (5 fps)
    assert [int(train[i]["label"]) for i in range(3)] == [0, 0, 1]
    assert builder.video_names("train") == [  # each record's file under src, a cut's seconds
        "train/abseiling/aaaaaaaaaaa_000010_000020.mp4",
        "train/abseiling/bbbbbbbbbbb_000000_000010.webm",
        "raw/ccccccccccc.mp4@0-1",
    ]
    assert builder.video_names("validation") == ["val/eeeeeeeeeee_000000_000010.mp4"]
    assert builder.source_changes() == ""
    # The missing video downloaded since: the prepared dataset lacks it, and says so.
    _put(clips["mp4"], root / "train" / "zumba" / "ddddddddddd_000005_000015.mp4")
    again = type(builder)(config=builder.builder_config, data_dir=str(tmp_path / "tfds"))
    assert again.source_changes() == "train: 1 videos missing then are there now"


@pytest.mark.skipif("libvpx-vp9" not in __import__("av").codecs_available, reason="no VP9")
def test_something_something_v2(clips, tmp_path):
    root = tmp_path / "ssv2"
    labels = {
        "Pushing something from left to right": "1",
        "Pushing something from right to left": "0",
    }
    train = [
        {"id": "11", "template": "Pushing [something] from left to right", "placeholders": ["a"]},
        {"id": "12", "template": "Pushing [something] from right to left", "placeholders": ["b"]},
        {"id": "13", "template": "Pushing [something] from right to left", "placeholders": ["c"]},
    ]
    valid = [{"id": "21", "template": "Pushing [something] from left to right"}]
    (root / "labels").mkdir(parents=True)
    for name, data in (("labels", labels), ("train", train), ("validation", valid)):
        (root / "labels" / f"something-something-v2-{name}.json").write_text(json.dumps(data))
    for vid in ("11", "12", "21"):
        _put(clips["webm"], root / "20bn-something-something-v2" / f"{vid}.webm")
    builder, report, counts = _prepare("ssv2", tmp_path, root)
    assert counts == {
        "train": {"listed": 3, "found": 2, "kept": 2},
        "validation": {"listed": 1, "found": 1, "kept": 1},
    }
    names = builder.info.features["label"].names
    assert names == ["Pushing something from right to left", "Pushing something from left to right"]
    source = builder.as_data_source("train")
    assert [int(source[i]["label"]) for i in range(2)] == [1, 0]
    assert decode_jpegs(source[0]["frames"]).shape == (10, 16, 21, 3)


def test_ucf101_folds(clips, tmp_path):
    root = tmp_path / "ucf"
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Archery\n")
    names = {
        "a1": "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi",
        "a2": "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi",
        "b1": "Archery/v_Archery_g01_c01.avi",
        "b2": "Archery/v_Archery_g08_c02.avi",
    }
    (lists / "trainlist01.txt").write_text(f"{names['a2']} 1\n{names['b2']} 2\n")
    (lists / "testlist01.txt").write_text(f"{names['a1']}\n{names['b1']}\n")
    (lists / "trainlist02.txt").write_text(f"{names['a1']} 1\n{names['a2']} 1\n{names['b2']} 2\n")
    (lists / "testlist02.txt").write_text(f"{names['b1']}\n")
    for key in ("a1", "a2", "b2"):  # b1 is missing
        _put(clips["avi"], root / "UCF-101" / names[key])
    builder, report, counts = _prepare("ucf101", tmp_path, root)
    assert counts == {
        "train": {"listed": 2, "found": 2, "kept": 2},
        "test": {"listed": 2, "found": 1, "kept": 1},
    }
    assert builder.info.features["label"].names == ["ApplyEyeMakeup", "Archery"]
    assert report["test"]["skipped_files"][0]["path"].endswith(names["b1"])
    _, _, counts2 = _prepare("ucf101", tmp_path, root, fold=2)
    assert counts2 == {
        "train": {"listed": 3, "found": 3, "kept": 3},
        "test": {"listed": 1, "found": 0, "kept": 0},
    }


def test_hmdb51(clips, tmp_path):
    root = tmp_path / "hmdb"
    splits = root / "testTrainMulti_7030_splits"
    splits.mkdir(parents=True)
    (splits / "brush_hair_test_split1.txt").write_text("a.avi 1\nb.avi 2\nc.avi 0\n")
    (splits / "cartwheel_test_split1.txt").write_text("d.avi 1\ne.avi 1\n")
    for label, name in (("brush_hair", "a"), ("brush_hair", "b"), ("brush_hair", "c"),
                        ("cartwheel", "d")):  # fmt: skip
        _put(clips["avi"], root / label / f"{name}.avi")
    with open(root / "cartwheel" / "d.avi", "r+b") as f:  # cut short: the index is at the end
        f.truncate(os.path.getsize(root / "cartwheel" / "d.avi") // 2)
    builder, report, counts = _prepare("hmdb51", tmp_path, root)
    assert counts == {
        "train": {"listed": 3, "found": 2, "kept": 1},
        "test": {"listed": 1, "found": 1, "kept": 1},
    }
    reasons = report["train"]["skipped_by_reason"]
    assert reasons.pop("missing") == 1 and sum(reasons.values()) == 1
    assert builder.info.features["label"].names == ["brush_hair", "cartwheel"]
    with pytest.raises(FileNotFoundError, match="testTrainMulti_7030_splits"):
        _prepare("hmdb51", tmp_path, tmp_path / "nothing_here")


def _records(builder, split):
    keys = ("frames", "label", "fps", "height", "width", "path", "index")
    source = builder.as_data_source(split)
    return [{k: source[i][k] for k in keys} for i in range(len(source))]


def test_kinetics_as_the_cvdf_mirror_lays_it_out_with_thumbnails_beside_the_videos(clips, tmp_path):
    """The CVDF download (today's Kinetics source) names its validation CSV ``val.csv``: that
    split was silently left out. yt-dlp's ``<id>.jpg`` thumbnail and ``<id>.description``
    beside ``<id>.mp4`` sort first and took the video's place (a 1-frame "video", or a
    skipped one), as a VGGSound ``audio/<id>.wav`` beside ``video/<id>.mp4`` did."""
    from PIL import Image

    root = tmp_path / "k400"
    header = "label,youtube_id,time_start,time_end,split\n"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "train.csv").write_text(
        header + "abseiling,aaaaaaaaaaa,0,10,train\nzumba,bbbbbbbbbbb,0,10,train\n"
    )
    (root / "annotations" / "val.csv").write_text(header + "zumba,ccccccccccc,0,10,val\n")
    for split, name in (("train", "aaaaaaaaaaa"), ("train", "bbbbbbbbbbb"), ("val", "ccccccccccc")):
        _put(clips["mp4"], root / split / f"{name}_000000_000010.mp4")
    Image.new("RGB", (32, 24)).save(root / "train" / "aaaaaaaaaaa_000000_000010.jpg")
    (root / "train" / "bbbbbbbbbbb_000000_000010.description").write_text("a video")
    builder, _, counts = _prepare("kinetics", tmp_path, root)
    assert counts == {"train": {"listed": 2, "found": 2, "kept": 2},
                      "validation": {"listed": 1, "found": 1, "kept": 1}}  # fmt: skip
    assert builder.video_names("train") == ["train/aaaaaaaaaaa_000000_000010.mp4",
                                            "train/bbbbbbbbbbb_000000_000010.mp4"]  # fmt: skip
    train = builder.as_data_source("train")
    assert [len(train[i]["frames"]) for i in range(2)] == [10, 10]


def test_a_listing_of_unlabelled_videos_reads_back_for_beam(tmp_path):
    """Beam's workers read each split's listing back from JSON: an unlabelled entry (videos
    for pre-training) was a TypeError there, while the local build took it."""
    import dataclasses

    from etils import epath

    from vjax.data.manifests import VideoEntry
    from vjax.data.video_builder import _read_entries

    entries = [VideoEntry("a.mp4", None), VideoEntry("b.mp4", "cat"),
               VideoEntry("c.mp4", ("cut", "onion"), actions=(("c1", 0.0, 1.5),))]  # fmt: skip
    listing = epath.Path(tmp_path / "listing.json")
    listing.write_text(json.dumps([dataclasses.asdict(e) for e in entries]))
    assert _read_entries(listing) == list(enumerate(entries))


def test_beam_build_matches_local_build(clips, tmp_path, capsys):
    """``vjax prepare ... --beam_runner=DirectRunner`` writes the local build's records and
    report; a split with nothing usable fails on Beam too, leaving nothing prepared."""
    pytest.importorskip("apache_beam", reason="apache_beam is not installed (pip install .[beam])")
    from vjax.data.prepare import main
    from vjax.data.video_builder import prepare_video_folder, read_report

    src = tmp_path / "videos"
    for split, label, name, clip in (("train", "cat", "a.mp4", "mp4"),
                                     ("train", "cat", "b.avi", "avi"),
                                     ("train", "dog", "c.mp4", "mp4"),
                                     ("validation", "dog", "d.avi", "avi")):  # fmt: skip
        _put(clips[clip], src / split / label / name)
    (src / "train" / "dog" / "empty.mp4").write_bytes(b"")
    _put(clips["mp4"], src / "validation" / "cat" / "noise.mp4")
    (src / "validation" / "cat" / "noise.mp4").write_bytes(bytes(range(256)) * 8)
    with open(src / "train" / "cat" / "b.avi", "r+b") as f:  # cut short: no index
        f.truncate(os.path.getsize(src / "train" / "cat" / "b.avi") // 2)
    kwargs = dict(src=str(src), fps=5, short_side=16, audio_sample_rate=16000)  # + sound
    local = prepare_video_folder(str(tmp_path / "local"), num_workers=1, **kwargs)
    flags = [f"--{k}={v}" for k, v in kwargs.items()]
    beam_flags = ["--beam_runner=DirectRunner", "--beam_options=--direct_num_workers=1"]
    assert main(["video_folder", f"--data_dir={tmp_path / 'beam'}", *flags, *beam_flags]) == 0
    assert "train: kept 2 of 4 (found 4); skipped 2" in capsys.readouterr().out
    beam = prepare_video_folder(str(tmp_path / "beam"), **kwargs)  # prepared: read back
    report = read_report(local)
    assert {s: (r["kept"], r["skipped"]) for s, r in report.items()} == {
        "train": (2, 2), "validation": (1, 1)}  # fmt: skip
    assert report["train"]["audio"] == {"with_audio": 0, "without_audio": 2, "audio_errors": []}
    assert json.dumps(read_report(beam)) == json.dumps(report)  # same counts, files and order
    for split in ("train", "validation"):
        records = _records(beam, split)
        assert records == _records(local, split) and len(records) == report[split]["kept"]
        files = [os.path.relpath(r["path"].decode(), src) for r in records]  # skipped left out
        assert beam.video_names(split) == local.video_names(split) == files
    assert not list((tmp_path / "beam").rglob("*.beam-*"))  # the pipeline's working files

    (src / "validation" / "dog" / "d.avi").write_bytes(b"")
    with pytest.raises(Exception, match="split 'validation': none of its 2 videos could be used"):
        prepare_video_folder(str(tmp_path / "failed"), beam_runner="DirectRunner", **kwargs)
    assert not list((tmp_path / "failed").rglob("dataset_info.json"))
