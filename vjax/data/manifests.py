"""Which videos a dataset holds: a folder of class sub-folders, or a CSV/JSON manifest.

Folder layouts (hidden files and files whose suffix says they are no video, such as
``notes.txt``, ``cover.jpg`` or ``clip.srt`` (:data:`NOT_VIDEO_SUFFIXES`), are left out, the
latter with a warning; every other file is a video candidate)::

    SRC/<class>/<video>                 no split given (see below)
    SRC/<split>/<class>/<video>         splits named train / validation / test
    SRC/<video>, SRC/<split>/<video>    no class sub-folders: unlabelled videos

Manifests list ``path,label[,start,end][,split]`` (paths relative to the manifest's folder;
``start``/``end`` in seconds, empty for the whole file; ``split`` defaults to ``train``). A CSV
may start with a header row naming those columns in any order; a JSON manifest is a list of
objects with those keys, or ``{split: [objects]}``. A manifest without labels (no ``label``
column, or every label empty) lists unlabelled videos. Unlabelled entries have ``label=None``;
their dataset has no classes (for pre-training, e.g. ``train.objective=reconstruction``).

A listing that names no split (every video in ``train``) is split per class into train /
validation / test by :func:`split_by_class` when the dataset is prepared.

>>> entries = read_entries("~/videos/my_actions")      # or "labels.csv" / "labels.json"
>>> class_names(entries)                                # sorted labels
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence

from vjax.errors import NotFoundError, UserError

SPLIT_NAMES = ("train", "validation", "test")
# (train, validation, test) of a listing that names no split (see split_by_class).
DEFAULT_SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
_COLUMNS = ("path", "label", "start", "end", "split")
# Files beside the videos in a class folder that ffmpeg would not read as a video (notes,
# metadata, subtitles, thumbnails, sound, archives, yt-dlp's partial downloads): listed, they
# would take a validation or test place of their class and then be skipped as unreadable.
NOT_VIDEO_SUFFIXES = frozenset(
    ".txt .md .json .csv .tsv .xml .yaml .yml .nfo .log .html .pdf .srt .vtt .ass .ssa .sub "
    ".jpg .jpeg .png .bmp .webp .tif .tiff .heic .wav .mp3 .flac .m4a .aac .opus .zip .tar .gz "
    ".7z .rar .db .ini .lnk .url .py .sh .part .ytdl .description".split()
)
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class VideoEntry:
    """One video of a dataset: its file, label (a tuple of names, one per task, in a multi-task
    dataset; every class of the video in a multi-label one; None when unlabelled), optional
    segment (seconds), split, the dataset's own id of it (if any) and its timed ``actions``
    (``(name, start, end)`` in seconds from the video's start; multi-label datasets such as
    Charades)."""

    path: str
    label: str | tuple[str, ...] | None
    start: float | None = None
    end: float | None = None
    split: str = "train"
    id: str = ""
    actions: tuple[tuple[str, float, float], ...] = ()


def read_entries(src: str) -> list[VideoEntry]:
    """The videos that ``src`` (a folder, ``.csv`` or ``.json`` manifest) lists, in a stable
    order (sorted by split, then as listed; folders are listed in sorted order)."""
    src = os.path.abspath(os.path.expanduser(src))
    if os.path.isdir(src):
        entries = _folder_entries(src)
    elif src.lower().endswith(".csv"):
        entries = _csv_entries(src)
    elif src.lower().endswith(".json"):
        entries = _json_entries(src)
    elif not os.path.exists(src):
        raise NotFoundError(f"the videos' src {src!r} does not exist")
    else:
        raise UserError(f"the videos' src {src!r} is neither a folder nor a .csv/.json manifest")
    if not entries:
        raise UserError(f"the videos' src {src!r} lists no videos")
    unlabelled = [e.path for e in entries if e.label is None]
    if unlabelled and len(unlabelled) < len(entries):
        raise UserError(
            f"--src={src!r} lists {len(unlabelled)} videos without a label (e.g. "
            f"{unlabelled[0]!r}) among labelled ones: label every video, or none (an "
            f"unlabelled dataset, for pre-training)"
        )
    return entries


def class_names(entries: Iterable[VideoEntry]) -> list[str]:
    """Sorted distinct labels (numerically when every label is an integer); ``[]`` for
    unlabelled entries."""
    labels = {e.label for e in entries if e.label is not None}
    if all(label.lstrip("-").isdigit() for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def check_split_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """``(train, validation, test)`` fractions as floats; a UserError unless they are three
    numbers >= 0 with a positive train fraction, summing to 1."""
    values = tuple(float(f) for f in fractions)
    if len(values) != 3 or min(values) < 0 or values[0] <= 0 or abs(sum(values) - 1) > 1e-6:
        raise UserError(
            f"split_fractions must be (train, validation, test) fractions >= 0 summing to 1 "
            f"with train > 0, got {tuple(fractions)}; e.g. --config.dataset.split_fractions="
            f"'(0.8, 0.1, 0.1)'"
        )
    return values  # type: ignore[return-value]


def _split_counts(count: int, fractions: tuple[float, float, float]) -> tuple[int, int]:
    """How many of a class's ``count`` videos go to validation and test: the fraction rounded,
    at least one each (for a positive fraction) once the class has a video for every split,
    never leaving train empty."""
    held = []
    for fraction in fractions[1:]:
        k = int(count * fraction + 0.5)
        held.append(max(k, 1) if fraction > 0 and count >= len(SPLIT_NAMES) else k)
    while sum(held) > count - 1 and any(held):  # train keeps at least one video
        held[held.index(max(held))] -= 1
    return held[0], held[1]


def split_by_class(
    entries: Sequence[VideoEntry], fractions: Sequence[float], seed: int
) -> list[VideoEntry]:
    """A listing with only training videos (a folder without split sub-folders, a manifest
    without a split column) split into train / validation / test per class, in the
    ``fractions`` given: each class's videos are ordered by a hash of ``seed``, the label and
    the file name (not on where the folder lives), the first go to validation, the next to
    test. Entries come back by split, in listing order within each.

    >>> split_by_class(read_entries("~/videos"), (0.8, 0.1, 0.1), seed=0)
    """
    fractions = check_split_fractions(fractions)

    def key(entry: VideoEntry) -> tuple[str, str]:
        name = f"{seed}/{entry.label}/{os.path.basename(entry.path)}"
        return hashlib.sha1(name.encode()).hexdigest(), entry.path

    split_of: dict[int, str] = {}
    classes: dict[str | tuple[str, ...], list[int]] = {}
    for i, entry in enumerate(entries):
        classes.setdefault(entry.label, []).append(i)
    for members in classes.values():
        validation, test = _split_counts(len(members), fractions)
        ordered = sorted(members, key=lambda i: key(entries[i]))
        for rank, i in enumerate(ordered):
            split_of[i] = SPLIT_NAMES[
                1 if rank < validation else 2 if rank < validation + test else 0
            ]
    return _sorted_by_split(
        [dataclasses.replace(e, split=split_of[i]) for i, e in enumerate(entries)]
    )


def shared_clips(entries: Iterable[VideoEntry]) -> dict[tuple, list[str]]:
    """``{(path, start, end): splits}`` of each clip (a file, or the same segment of it) that
    the listing puts in more than one split, its splits in listing order."""
    splits: dict[tuple, list[str]] = {}
    for entry in entries:
        listed = splits.setdefault((entry.path, entry.start, entry.end), [])
        if entry.split not in listed:
            listed.append(entry.split)
    return {clip: names for clip, names in splits.items() if len(names) > 1}


def warn_shared_clips(entries: Iterable[VideoEntry], dataset: str) -> None:
    """Logs one warning naming the clips listed in more than one split (a manifest listing a
    clip twice, or a row repeated before the listing was split): a validation or test clip
    that is also trained on scores what the model memorised, not what it learnt."""
    shared = shared_clips(entries)
    if not shared:
        return
    examples = [
        f"{path}" + ("" if start is None and end is None else f" [{start}, {end})")
        + f" in {' and '.join(names)}"
        for (path, start, end), names in list(shared.items())[:3]
    ]  # fmt: skip
    more = f" and {len(shared) - 3} more" if len(shared) > 3 else ""
    log.warning(
        "%s: %d clip(s) are listed in more than one split, so their evaluation scores clips "
        "the model trained on: %s%s. List each clip in one split.",
        dataset, len(shared), "; ".join(examples), more,
    )  # fmt: skip


def by_split(entries: Sequence[VideoEntry]) -> dict[str, list[VideoEntry]]:
    """Entries grouped by split, keeping their order."""
    out: dict[str, list[VideoEntry]] = {}
    for entry in entries:
        out.setdefault(entry.split, []).append(entry)
    return out


def _visible(folder: str) -> list[str]:
    return sorted(n for n in os.listdir(folder) if not n.startswith("."))


def _folder_entries(src: str) -> list[VideoEntry]:
    top = [n for n in _visible(src) if os.path.isdir(os.path.join(src, n))]
    if top and set(top) <= set(SPLIT_NAMES):
        roots = [(split, os.path.join(src, split)) for split in top]
    else:
        roots = [("train", src)]
    entries, not_videos = [], []
    for split, root in roots:
        names = _visible(root)
        classes = any(os.path.isdir(os.path.join(root, n)) for n in names)
        folders = [(os.path.join(root, n), n) for n in names] if classes else [(root, None)]
        for folder, label in folders:
            if not os.path.isdir(folder):
                continue
            for name in _visible(folder):
                path = os.path.join(folder, name)
                if os.path.splitext(name)[1].lower() in NOT_VIDEO_SUFFIXES:
                    not_videos.append(path)
                elif os.path.isfile(path):
                    entries.append(VideoEntry(path, label, split=split))
    if not_videos:
        log.warning("%s: left out %d file(s) whose suffix says they are not videos (e.g. %s)",
                    src, len(not_videos), os.path.relpath(not_videos[0], src))  # fmt: skip
    return entries


def _entry(row: Mapping[str, object], base: str, where: str) -> VideoEntry:
    unknown = set(row) - set(_COLUMNS)
    if unknown:
        raise UserError(f"{where}: unknown column(s) {sorted(unknown)}; valid: {_COLUMNS}")
    if not row.get("path"):
        raise UserError(f"{where}: every row needs a path, got {dict(row)}")

    def seconds(key: str) -> float | None:
        value = row.get(key)
        if value in (None, ""):
            return None
        try:
            return float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise UserError(
                f"{where}: {key} must be a number of seconds, got {value!r} (a row without a "
                f"header is path,label[,start,end][,split]: name the columns in a header row "
                f"to give a split without times)"
            ) from None

    start, end = seconds("start"), seconds("end")
    if start is not None and end is not None and end <= start:
        raise UserError(f"{where}: end ({end}) must be after start ({start})")
    path = os.path.join(base, os.path.expanduser(str(row["path"])))
    split = str(row.get("split") or "train")
    label = None if row.get("label") in (None, "") else str(row["label"])
    return VideoEntry(os.path.normpath(path), label, start, end, split)


def _csv_entries(manifest: str) -> list[VideoEntry]:
    base = os.path.dirname(manifest)
    with open(manifest, newline="", encoding="utf-8-sig") as f:  # as Excel saves "CSV UTF-8"
        reader = csv.reader(f)  # its line_num: the file's line, blank lines counted
        rows = [(reader.line_num, r) for r in reader if r and any(c.strip() for c in r)]
    if not rows:
        return []
    header = [c.strip().lower() for c in rows[0][1]]
    if "path" in header:
        names, rows = header, rows[1:]
    else:
        names = list(_COLUMNS)
    entries = []
    for line, row in rows:
        if len(row) > len(names):
            raise UserError(f"{manifest}:{line}: {len(row)} columns, expected <= {len(names)}")
        cells = {k: v.strip() for k, v in zip(names, row, strict=False)}
        entries.append(_entry(cells, base, f"{manifest}:{line}"))
    return _sorted_by_split(entries)


def _json_entries(manifest: str) -> list[VideoEntry]:
    base = os.path.dirname(manifest)
    with open(manifest, encoding="utf-8-sig") as f:
        data = json.load(f)
    if isinstance(data, Mapping):
        data = [{**row, "split": split} for split, rows in data.items() for row in rows]
    entries = [_entry(row, base, f"{manifest}[{i}]") for i, row in enumerate(data)]
    return _sorted_by_split(entries)


def _sorted_by_split(entries: list[VideoEntry]) -> list[VideoEntry]:
    order = {s: i for i, s in enumerate(SPLIT_NAMES)}
    return sorted(entries, key=lambda e: (order.get(e.split, len(order)), e.split))
