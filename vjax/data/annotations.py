"""Listings of the public action datasets from their official annotation files.

Each function takes the folder a user has downloaded (videos anywhere below it, annotation
files where the dataset ships them) and returns ``(entries, class_names)``. A video the
annotations list but the folder lacks gets an entry whose path does not exist; preparation
counts it as ``missing`` (Kinetics copies are always incomplete). Splits without labels (the
Kinetics-700 and SSv2 test sets) are left out.

* Kinetics-400/600/700: ``{train,validate,test}.csv`` (``val.csv`` in the CVDF mirror;
  ``label,youtube_id,time_start,time_end,split``) in the folder or its ``annotations/``;
  videos named ``<id>_<start:06>_<end:06>.*`` (the official downloader's trimmed clips) or
  ``<id>.*`` (whole videos, cut to the segment).
* Something-Something v2: ``something-something-v2-{labels,train,validation}.json`` in the
  folder or its ``labels/``; videos ``<id>.webm``.
* UCF101: ``ucfTrainTestlist/{classInd,trainlist0F,testlist0F}.txt`` for fold F; videos
  ``<Class>/v_<Class>_gXX_cYY.avi``.
* HMDB51: ``testTrainMulti_7030_splits/<class>_test_split<F>.txt`` (``name.avi 1|2|0``: train,
  test, unused); videos ``<class>/<name>.avi``.
* Epic-Kitchens-100 (two tasks, ``verb`` and ``noun``): ``EPIC_100_{train,validation}.csv`` and
  ``EPIC_100_{verb,noun}_classes.csv`` in the folder, its ``annotations/`` or
  ``epic-kitchens-100-annotations/``; videos ``<participant>/videos/<video_id>.MP4``. Each CSV
  row is a segment of a long video; its label is ``(verb, noun)`` and its id the narration id.

* Charades (multi-label, 157 classes): ``Charades_v1_{train,test}.csv`` (``id, ...,
  actions, length``; ``actions`` like ``c092 11.90 21.20;c147 0.00 12.60``) and
  ``Charades_v1_classes.txt`` (``c000 Holding some clothes``) in the folder, its
  ``Charades/`` or ``annotations/``; videos ``<id>.mp4`` anywhere below (``Charades_v1_480/``).
  The test CSV is the ``validation`` split (PySlowFast's ``val``). A video's label is every
  class it shows; ``actions`` keeps their times.

* VGGSound (audio-visual, 309 classes): ``vggsound.csv`` (no header: ``youtube_id,
  start_seconds,label,split``, split ``train`` or ``test``) in the folder or its
  ``annotations/``; videos ``<id>_<start:06>.*`` or ``<id>_<start:06>_<start+10:06>.*`` (10 s
  clips) or ``<id>.*`` (whole videos, cut to ``[start, start + 10)``). No validation split.
* Kinetics-Sounds (audio-visual): the Kinetics listing kept to :data:`KINETICS_SOUNDS`.
* AudioSet (multi-label, 527 classes): ``class_labels_indices.csv`` (``index,mid,
  display_name``), ``balanced_train_segments.csv`` (and ``unbalanced_train_segments.csv``,
  AS-2M, when present) for train and ``eval_segments.csv`` for test (``# YTID, start_seconds,
  end_seconds, positive_labels``), in the folder or its ``annotations/``; videos named like
  VGGSound's (or whole, cut). Each label holds for the whole clip (its ``actions``).

Multi-task listings return ``class_names`` as ``{task: names}``.

>>> entries, names = ucf101_entries("~/data/ucf101", fold=1)
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterable

from vjax.data.manifests import NOT_VIDEO_SUFFIXES, VideoEntry
from vjax.errors import NotFoundError, UserError
from vjax.tasks import ClassNames


def _index_videos(root: str) -> dict[str, str]:
    """``relative key -> path`` for every file below ``root`` that may be a video: keyed by
    file stem and by ``parent/basename``, so both naming schemes can be looked up. Files that
    are not (annotations, thumbnails, sound, yt-dlp's descriptions: ``NOT_VIDEO_SUFFIXES``)
    are left out: sharing a video's stem, they took its place."""
    index: dict[str, str] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or os.path.splitext(name)[1].lower() in NOT_VIDEO_SUFFIXES:
                continue
            path = os.path.join(folder, name)
            index.setdefault(os.path.splitext(name)[0], path)
            index.setdefault(f"{os.path.basename(folder)}/{name}", path)
    return index


def _find(root: str, names: Iterable[str]) -> str:
    """The first of ``names`` (relative paths) that exists under ``root``."""
    names = list(names)
    for name in names:
        path = os.path.join(root, name)
        if os.path.isfile(path):
            return path
    raise NotFoundError(f"none of {names} found under {root!r}: is this the right folder?")


def _open(root: str, dataset: str, fold: int | None = None) -> tuple[str, dict[str, str]]:
    """``(absolute root, video index)``, checking ``fold`` for datasets with three splits."""
    if fold is not None and fold not in (1, 2, 3):
        raise UserError(f"{dataset} has folds 1, 2, 3; got {fold}")
    root = os.path.abspath(os.path.expanduser(root))
    return root, _index_videos(root)


def _missing(root: str, name: str) -> str:
    return os.path.join(root, "<missing>", name)


def _youtube_clip(
    root: str,
    index: dict[str, str],
    video_id: str,
    start: float,
    end: float,
    names: list[str],
    **fields,
) -> VideoEntry:
    """A clip of a YouTube video: the trimmed file named by the first of ``names`` (file stems)
    found, else the whole video ``<video_id>.*`` cut to ``[start, end)``, else a missing file;
    ``fields``: the entry's label, split, id, actions."""
    found = next((index[name] for name in names if name in index), None)
    if found is not None:
        return VideoEntry(found, **fields)
    if video_id in index:
        return VideoEntry(index[video_id], start=start, end=end, **fields)
    return VideoEntry(_missing(root, names[0]), **fields)


def kinetics_entries(root: str) -> tuple[list[VideoEntry], list[str]]:
    """Kinetics-400/600/700 (whichever release's CSVs are in ``root``)."""
    root, index = _open(root, "Kinetics")
    entries: list[VideoEntry] = []
    labels: set[str] = set()
    # validate.csv in DeepMind's releases, val.csv in the CVDF mirror's (today's download)
    for names, split in ((["train"], "train"), (["validate", "val"], "validation"),
                         (["test"], "test")):  # fmt: skip
        try:
            path = _find(root, [f"{folder}{name}.csv" for name in names
                                for folder in ("", "annotations/")])  # fmt: skip
        except FileNotFoundError:
            if split == "train":
                raise
            continue
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows or "label" not in rows[0]:
            continue  # an unlabelled test set
        for row in rows:
            start, end = int(float(row["time_start"])), int(float(row["time_end"]))
            clip = f"{row['youtube_id']}_{start:06d}_{end:06d}"
            entries.append(
                _youtube_clip(root, index, row["youtube_id"], start, end, [clip],
                              label=row["label"], split=split)
            )  # fmt: skip
            labels.add(row["label"])
    return entries, sorted(labels)


KINETICS_SOUNDS: tuple[str, ...] = (
    "blowing nose", "blowing out candles", "bowling", "chopping wood", "dribbling basketball",
    "laughing", "mowing lawn", "playing accordion", "playing bagpipes", "playing bass guitar",
    "playing clarinet", "playing drums", "playing guitar", "playing harmonica",
    "playing keyboard", "playing organ", "playing piano", "playing saxophone",
    "playing trombone", "playing trumpet", "playing violin", "playing xylophone",
    "ripping paper", "shoveling snow", "shuffling cards", "singing", "stomping grapes",
    "tap dancing", "tapping guitar", "tapping pen", "tickling",
)  # fmt: skip
"""Kinetics-Sounds (Arandjelovic & Zisserman, "Look, Listen and Learn", 2017): the Kinetics-400
classes that can be heard, as the 31-class subset later audio-visual work uses (the paper's
34 include three names Kinetics-400 no longer has)."""


def kinetics_sounds_entries(root: str) -> tuple[list[VideoEntry], list[str]]:
    """Kinetics-Sounds: the Kinetics listing of ``root`` kept to :data:`KINETICS_SOUNDS`."""
    entries, names = kinetics_entries(root)
    keep = set(KINETICS_SOUNDS)
    entries = [e for e in entries if e.label in keep]
    if not entries:
        raise UserError(
            f"the Kinetics annotations in {root!r} list none of the {len(keep)} Kinetics-Sounds "
            f"classes (e.g. {KINETICS_SOUNDS[0]!r}); is this a Kinetics-400 download?"
        )
    return entries, sorted(keep.intersection(names))


VGGSOUND_SECONDS = 10
"""Each VGGSound clip lasts 10 s from its ``start_seconds``."""


def vggsound_entries(root: str) -> tuple[list[VideoEntry], list[str]]:
    """VGGSound's clips (labels as written in its CSV; splits train and test)."""
    root, index = _open(root, "VGGSound")
    path = _find(root, ["vggsound.csv", "annotations/vggsound.csv"])
    with open(path, newline="") as f:
        reader = csv.reader(f)
        rows = [(reader.line_num, r) for r in reader if r and not r[0].startswith("#")]
    if rows and rows[0][1][0].strip().lower() in ("youtube_id", "ytid", "youtube id"):
        rows = rows[1:]  # a header someone added
    entries: list[VideoEntry] = []
    for line, row in rows:
        if len(row) != 4 or row[3].strip() not in ("train", "test"):
            raise UserError(f"{path}:{line}: not youtube_id,start_seconds,label,train|test")
        video_id, start, label, split = (x.strip() for x in row)
        start_s = int(float(start))
        end_s = start_s + VGGSOUND_SECONDS
        clips = [f"{video_id}_{start_s:06d}", f"{video_id}_{start_s:06d}_{end_s:06d}"]
        entries.append(
            _youtube_clip(root, index, video_id, start_s, end_s, clips,
                          label=label, split=split, id=clips[0])
        )  # fmt: skip
    return entries, sorted({e.label for e in entries})


def audioset_entries(root: str) -> tuple[list[VideoEntry], list[str]]:
    """AudioSet's segments, each labelled with all its classes (display names, in index
    order); train = the balanced (plus, when present, the unbalanced) segments, test = eval."""
    root, index = _open(root, "AudioSet")

    def find(name: str) -> str:
        return _find(root, [name, f"annotations/{name}"])

    with open(find("class_labels_indices.csv"), newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda row: int(row["index"]))
    names = {row["mid"]: row["display_name"] for row in rows}
    entries: list[VideoEntry] = []
    for csv_name, split in (
        ("balanced_train_segments", "train"),
        ("unbalanced_train_segments", "train"),
        ("eval_segments", "test"),
    ):
        try:
            path = find(f"{csv_name}.csv")
        except NotFoundError:
            if csv_name == "unbalanced_train_segments":
                continue
            raise
        with open(path, newline="") as f:
            lines = (line for line in f if line.strip() and not line.startswith("#"))
            for number, row in enumerate(csv.reader(lines, skipinitialspace=True), 1):
                mids = row[3].split(",") if len(row) == 4 else []
                if not mids or any(m not in names for m in mids):
                    raise UserError(
                        f'{path}: segment {number} is not YTID, start, end, "labels" of '
                        f"classes in class_labels_indices.csv: {row}"
                    )
                start, end = float(row[1]), float(row[2])
                clip = f"{row[0]}_{int(start):06d}"
                label = tuple(dict.fromkeys(names[m] for m in mids))
                entries.append(
                    _youtube_clip(
                        root, index, row[0], start, end, [clip, f"{clip}_{int(end):06d}"],
                        label=label, split=split, id=clip,
                        actions=tuple((name, 0.0, end - start) for name in label),
                    )
                )  # fmt: skip
    return entries, list(names.values())


def ssv2_entries(root: str) -> tuple[list[VideoEntry], list[str]]:
    """Something-Something v2 (labels are the templates without their brackets)."""
    root, index = _open(root, "SSv2")

    def load(name: str):
        stem = f"something-something-v2-{name}.json"
        with open(_find(root, [stem, f"labels/{stem}"])) as f:
            return json.load(f)

    label_ids = load("labels")
    names = sorted(label_ids, key=lambda n: int(label_ids[n]))
    entries = []
    for split in ("train", "validation"):
        for item in load(split):
            label = item["template"].replace("[", "").replace("]", "")
            path = index.get(str(item["id"]), _missing(root, f"{item['id']}.webm"))
            entries.append(VideoEntry(path, label, split=split))
    return entries, names


def ucf101_entries(root: str, fold: int = 1) -> tuple[list[VideoEntry], list[str]]:
    """UCF101, official train/test split ``fold`` (1, 2 or 3)."""
    root, index = _open(root, "UCF101", fold)
    lists = "ucfTrainTestlist"
    with open(_find(root, [f"{lists}/classInd.txt"])) as f:
        names = [line.split()[1] for line in f if line.strip()]
    entries = []
    for split, name in (("train", "trainlist"), ("test", "testlist")):
        with open(_find(root, [f"{lists}/{name}0{fold}.txt"])) as f:
            for line in f:
                if not line.strip():
                    continue
                relative = line.split()[0]
                label, file = relative.split("/")
                path = index.get(f"{label}/{file}", _missing(root, relative))
                entries.append(VideoEntry(path, label, split=split))
    return entries, names


def hmdb51_entries(root: str, fold: int = 1) -> tuple[list[VideoEntry], list[str]]:
    """HMDB51, official 70/30 split ``fold`` (1, 2 or 3); videos marked 0 are unused."""
    root, index = _open(root, "HMDB51", fold)
    splits_dir = os.path.join(root, "testTrainMulti_7030_splits")
    suffix = f"_test_split{fold}.txt"
    if not os.path.isdir(splits_dir):
        raise NotFoundError(f"{splits_dir!r} not found: is this the right folder?")
    files = sorted(n for n in os.listdir(splits_dir) if n.endswith(suffix))
    names = [n[: -len(suffix)] for n in files]
    entries: dict[str, list[VideoEntry]] = {"train": [], "test": []}
    for label, file in zip(names, files, strict=True):
        with open(os.path.join(splits_dir, file)) as f:
            for line in f:
                parts = line.split()
                if len(parts) != 2 or parts[1] == "0":
                    continue
                split = "train" if parts[1] == "1" else "test"
                relative = f"{label}/{parts[0]}"
                path = index.get(relative, _missing(root, relative))
                entries[split].append(VideoEntry(path, label, split=split))
    return entries["train"] + entries["test"], names


def epic_kitchens_entries(root: str) -> tuple[list[VideoEntry], dict[str, list[str]]]:
    """Epic-Kitchens-100 action segments labelled ``(verb, noun)`` (the test set has no
    labels and is left out)."""
    root = os.path.abspath(os.path.expanduser(root))
    folders = ("", "annotations/", "epic-kitchens-100-annotations/")

    def find(name: str) -> str:
        return _find(root, [f"{folder}{name}" for folder in folders])

    names = {task: _epic_classes(find(f"EPIC_100_{task}_classes.csv")) for task in ("verb", "noun")}
    videos: dict[str, dict[str, str]] = {}  # participant -> {video id: path}
    entries = []
    for split in ("train", "validation"):
        try:
            path = find(f"EPIC_100_{split}.csv")
        except FileNotFoundError:
            if split == "train":
                raise
            continue
        with open(path, newline="") as f:
            reader = csv.DictReader(f)  # its line_num: the file's line, blank lines counted
            for row in reader:
                line = reader.line_num
                label = tuple(
                    _class_name(names[task], row[f"{task}_class"], f"{path}:{line}")
                    for task in ("verb", "noun")
                )
                participant, video = row["participant_id"], row["video_id"]
                if participant not in videos:
                    videos[participant] = _epic_videos(os.path.join(root, participant, "videos"))
                file = videos[participant].get(video, _missing(root, f"{participant}/{video}.MP4"))
                start, end = (_seconds(row[f"{k}_timestamp"]) for k in ("start", "stop"))
                entries.append(VideoEntry(file, label, start, end, split, row["narration_id"]))
    return entries, names


def _epic_classes(path: str) -> list[str]:
    """Class keys ordered by ``id`` (``id,key,instances,category``); the ids must be 0..K-1."""
    with open(path, newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: int(r["id"]))
    if [int(r["id"]) for r in rows] != list(range(len(rows))):
        raise UserError(f"{path}: class ids must be 0..{len(rows) - 1} without gaps")
    return [r["key"] for r in rows]


def _class_name(names: list[str], class_id: str, where: str) -> str:
    if not class_id.isdigit() or int(class_id) >= len(names):
        raise UserError(f"{where}: class {class_id!r} is not in 0..{len(names) - 1}")
    return names[int(class_id)]


def _epic_videos(folder: str) -> dict[str, str]:
    """``video id -> path`` of the ``.MP4``/``.mp4`` files in a participant's ``videos/``."""
    if not os.path.isdir(folder):
        return {}
    return {
        os.path.splitext(n)[0]: os.path.join(folder, n)
        for n in sorted(os.listdir(folder))
        if n.lower().endswith(".mp4")
    }


def _seconds(timestamp: str) -> float:
    """``HH:MM:SS.ff`` -> seconds."""
    hours, minutes, seconds = timestamp.split(":")
    return 3600 * int(hours) + 60 * int(minutes) + float(seconds)


def charades_entries(root: str) -> tuple[list[VideoEntry], list[str]]:
    """Charades v1: every video with all its actions (class names from the classes file, in
    id order; a label is the tuple of the video's distinct classes in order of appearance)."""
    root, index = _open(root, "Charades")
    folders = ("", "Charades/", "annotations/")

    def find(name: str) -> str:
        return _find(root, [f"{folder}{name}" for folder in folders])

    classes_file = find("Charades_v1_classes.txt")
    ids: dict[str, str] = {}  # "c092" -> its name
    with open(classes_file) as f:
        for line in f:
            if line.strip():
                key, _, name = line.strip().partition(" ")
                ids[key] = name.strip() or key
    entries = []
    for csv_name, split in (("train", "train"), ("test", "validation")):
        path = find(f"Charades_v1_{csv_name}.csv")
        with open(path, newline="") as f:
            reader = csv.DictReader(f)  # its line_num: the file's line, blank lines counted
            for row in reader:
                line = reader.line_num
                actions = []
                for item in filter(None, (row.get("actions") or "").split(";")):
                    parts = item.split()
                    if len(parts) != 3 or parts[0] not in ids:
                        raise UserError(
                            f"{path}:{line}: action {item!r} is not "
                            f"'<class id> <start> <end>' of a known class"
                        )
                    actions.append((ids[parts[0]], float(parts[1]), float(parts[2])))
                video = row["id"]
                file = index.get(video, _missing(root, f"{video}.mp4"))
                label = tuple(dict.fromkeys(name for name, _, _ in actions))
                entries.append(VideoEntry(file, label, split=split, id=video,
                                          actions=tuple(actions)))  # fmt: skip
    return entries, list(ids.values())


LISTINGS: dict[str, Callable[..., tuple[list[VideoEntry], ClassNames]]] = {
    "kinetics": kinetics_entries,
    "ssv2": ssv2_entries,
    "ucf101": ucf101_entries,
    "hmdb51": hmdb51_entries,
    "epic_kitchens": epic_kitchens_entries,
    "charades": charades_entries,
    "vggsound": vggsound_entries,
    "kinetics_sounds": kinetics_sounds_entries,
    "audioset": audioset_entries,
}
"""Dataset name -> its listing function (``fold`` argument for ucf101 and hmdb51)."""
