"""Epic-Kitchens-100 (verb and noun labels) from a tiny copy laid out like the real download:
``<participant>/videos/<video_id>.MP4`` long videos cut into the segments of the official
annotation CSVs, with a missing and a corrupt video."""

import csv
import math
import os
import shutil

import numpy as np
import pytest

from vjax.data.video_io import decode_jpegs, encode_video

SOURCE_FPS = 25
SHADE_STEP = 1.5  # frame k of every video is a flat grey of value k * SHADE_STEP

VERBS = ["take", "put", "open"]  # ids 0, 1, 2 (listed out of order in the CSV)
NOUNS = ["tap", "cup", "door", "knife"]

# (narration_id, video_id, start, stop, verb_class, noun_class) per split
TRAIN = [
    ("P01_01_0", "P01_01", "00:00:00.50", "00:00:02.10", 0, 1),
    ("P01_01_1", "P01_01", "00:00:02.00", "00:00:03.00", 2, 2),
    ("P01_01_2", "P01_01", "00:00:03.37", "00:00:05.93", 1, 3),
    ("P01_02_0", "P01_02", "00:00:01.00", "00:00:02.00", 0, 0),  # P01_02 is missing
    ("P01_02_1", "P01_02", "00:00:03.00", "00:00:04.00", 1, 1),
    ("P02_02_0", "P02_02", "00:00:00.00", "00:00:01.00", 2, 3),  # P02_02 is corrupt
]
VALIDATION = [
    ("P02_01_0", "P02_01", "00:00:00.00", "00:00:01.20", 2, 0),
    ("P02_01_1", "P02_01", "00:00:01.40", "00:00:03.60", 0, 2),
]
COLUMNS = (
    "narration_id,participant_id,video_id,narration_timestamp,start_timestamp,stop_timestamp,"
    "start_frame,stop_frame,narration,verb,verb_class,noun,noun_class,all_nouns,all_noun_classes"
).split(",")


def _seconds(timestamp: str) -> float:
    h, m, s = timestamp.split(":")
    return 3600 * int(h) + 60 * int(m) + float(s)


def _write_csv(path, header, rows) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def _annotation_rows(segments):
    for nid, video, start, stop, verb, noun in segments:
        frames = [round(_seconds(t) * SOURCE_FPS) for t in (start, stop)]
        yield [nid, video.split("_")[0], video, start, start, stop, *frames,
               f"{VERBS[verb]} {NOUNS[noun]}", VERBS[verb], verb, NOUNS[noun], noun,
               f"['{NOUNS[noun]}']", f"[{noun}]"]  # fmt: skip


def _video(path, seconds: float) -> None:
    count = int(seconds * SOURCE_FPS)
    shades = np.round(SHADE_STEP * np.arange(count)).astype(np.uint8)
    frames = np.broadcast_to(shades[:, None, None, None], (count, 24, 32, 3))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    encode_video(str(path), frames, SOURCE_FPS)


@pytest.fixture(scope="module")
def epic_root(tmp_path_factory):
    """A copy with class lists at the top and split CSVs in the annotations repository's folder."""
    root = tmp_path_factory.mktemp("EPIC-KITCHENS")
    header = ["id", "key", "instances", "category"]
    _write_csv(root / "EPIC_100_verb_classes.csv", header,
               [[2, "open", "['open']", "access"], [0, "take", "['take', 'grab']", "retrieve"],
                [1, "put", "['put']", "leave"]])  # fmt: skip
    _write_csv(root / "EPIC_100_noun_classes.csv", header,
               [[i, n, f"['{n}']", "things"] for i, n in enumerate(NOUNS)])  # fmt: skip
    annotations = root / "epic-kitchens-100-annotations"
    _write_csv(annotations / "EPIC_100_train.csv", COLUMNS, _annotation_rows(TRAIN))
    _write_csv(annotations / "EPIC_100_validation.csv", COLUMNS, _annotation_rows(VALIDATION))
    _write_csv(annotations / "EPIC_100_test_timestamps.csv", COLUMNS[:8], [])
    _video(root / "P01" / "videos" / "P01_01.MP4", 6.0)
    _video(root / "P02" / "videos" / "P02_01.MP4", 4.0)
    (root / "P02" / "videos" / "P02_02.MP4").write_bytes(bytes(range(256)) * 16)  # corrupt
    return root


def test_epic_kitchens_listing(epic_root):
    from vjax.data.annotations import epic_kitchens_entries

    entries, names = epic_kitchens_entries(str(epic_root))
    assert names == {"verb": VERBS, "noun": NOUNS}
    assert [e.id for e in entries] == [s[0] for s in TRAIN + VALIDATION]
    assert [e.split for e in entries] == ["train"] * len(TRAIN) + ["validation"] * 2
    first = entries[2]
    assert (first.label, first.start, first.end) == (("put", "knife"), 3.37, 5.93)
    assert first.path == str(epic_root / "P01" / "videos" / "P01_01.MP4")
    assert not os.path.exists(entries[3].path)  # P01_02: listed but not downloaded


def test_epic_kitchens_listing_errors(epic_root, tmp_path):
    from vjax.data.annotations import epic_kitchens_entries

    with pytest.raises(FileNotFoundError, match="EPIC_100_verb_classes.csv"):
        epic_kitchens_entries(str(tmp_path))
    root = tmp_path / "bad"
    shutil.copytree(epic_root / "epic-kitchens-100-annotations", root / "annotations")
    for task in ("verb", "noun"):
        shutil.copy(epic_root / f"EPIC_100_{task}_classes.csv", root / "annotations")
    rows = list(_annotation_rows(TRAIN[:1]))
    rows[0][COLUMNS.index("noun_class")] = 4  # only 4 nouns: ids 0..3
    _write_csv(root / "annotations" / "EPIC_100_train.csv", COLUMNS, rows)
    with pytest.raises(ValueError, match=r"EPIC_100_train.csv:2: class '4' is not in 0..3"):
        epic_kitchens_entries(str(root))


def test_epic_kitchens_builder(epic_root, tmp_path):
    from vjax.data.video_builder import prepare_videos, read_report

    fps = 5
    data_dir = str(tmp_path / "tfds")
    builder = prepare_videos("epic_kitchens", data_dir, src=str(epic_root), fps=fps,
                             short_side=16, num_workers=1)  # fmt: skip
    assert builder.name == "vjax_epic_kitchens"
    report = read_report(builder)
    counts = {s: {k: r[k] for k in ("listed", "found", "kept")} for s, r in report.items()}
    assert counts == {
        "train": {"listed": 6, "found": 4, "kept": 3},
        "validation": {"listed": 2, "found": 2, "kept": 2},
    }
    assert report["train"]["skipped_by_reason"] == {"missing": 2, "unreadable": 1}
    features = builder.info.features
    assert "label" not in features
    assert (features["verb"].names, features["noun"].names) == (VERBS, NOUNS)
    for split, segments in (("train", TRAIN[:3]), ("validation", VALIDATION)):
        source = builder.as_data_source(split)
        assert len(source) == len(segments)
        for i, (nid, _, start, stop, verb, noun) in enumerate(segments):
            record = source[i]
            assert (record["id"].decode(), int(record["verb"]), int(record["noun"])) == (
                nid, verb, noun)  # fmt: skip
            start, stop = _seconds(start), _seconds(stop)
            frames = decode_jpegs(record["frames"])
            assert len(frames) == math.ceil((stop - start) * fps - 1e-3)
            assert frames.shape[1:] == (16, 21, 3) and float(record["fps"]) == fps
            # The segment's first frame is the source frame shown at its start.
            shade = SHADE_STEP * math.floor(start * SOURCE_FPS + 1e-6)
            assert abs(frames[0].mean() - shade) < 4, (nid, frames[0].mean(), shade)

    # Prepared once: a second call reads the stored class names, without the annotations.
    moved = shutil.move(str(epic_root / "EPIC_100_noun_classes.csv"), str(tmp_path / "n.csv"))
    try:
        again = prepare_videos("epic_kitchens", data_dir, src=str(epic_root), fps=fps,
                               short_side=16)  # fmt: skip
        assert again.info.features["noun"].names == NOUNS
        assert again.info.splits["train"].num_examples == 3
    finally:
        shutil.move(moved, str(epic_root / "EPIC_100_noun_classes.csv"))
