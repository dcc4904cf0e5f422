"""TFDS builder ``video_folder``: a user's own videos, prepared once into ArrayRecord.

Usage (or ``vjax prepare video_folder --src=DIR_OR_MANIFEST --data_dir=DIR``)::

    builder = prepare_video_folder("/data/tfds", src="~/videos/actions", fps=10, short_side=256)
    source = builder.as_data_source("train")     # random access
    ex = source[i]   # {"frames": [jpeg bytes, ...], "label", "fps", "height", "width",
                     #  "path", "index"; with audio_sample_rate > 0 also "audio" (int16
                     #  mono), "has_audio", "sample_rate"}; multi-task datasets
                     #  (Epic-Kitchens) have one label feature per task (``TASKS``:
                     #  "verb", "noun") instead of "label"
    report = read_report(builder)   # kept / skipped counts per split and the skipped files
    names = builder.video_names("test")  # each record's video name, in record order

A source without classes (a folder of videos, or a manifest without labels) makes a dataset
with no label feature at all: that is how it records that it is unlabelled (for pre-training;
``dataset_class_names`` gives ``[]`` and a classification run on it is an error).

Each record holds one whole video as JPEG frames at the stored rate and short side, so the
input pipeline decodes only the frames a clip needs (see :mod:`vjax.data.sampling`). Bad files
(see :data:`vjax.data.video_io.REASONS`) are skipped, counted and listed in
``prepare_report.json`` inside the dataset folder. TFDS writes into a temporary folder that is
renamed only when everything (records, dataset info, report) is written, so a build that dies
midway leaves nothing TFDS would read as prepared; the next call starts over.

``prepare_videos(..., beam_runner="DirectRunner")`` (or Dataflow, Flink, Spark, with
``beam_options``) runs the same encoding on Apache Beam workers through TFDS's Beam support:
the same records, the same report.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import os
import shlex
from collections.abc import Sequence

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from vjax.data import annotations
from vjax.data.audio import audio_features, audio_record
from vjax.data.builder_info import local_only
from vjax.data.datasets import prepare_builder, require_local_data_dir
from vjax.data.manifests import (
    DEFAULT_SPLIT_FRACTIONS,
    VideoEntry,
    by_split,
    check_split_fractions,
    class_names,
    read_entries,
    split_by_class,
    warn_shared_clips,
)
from vjax.data.video_prepare import Encoded, Skipped, VideoSettings, encode_entries, encode_entry
from vjax.errors import NotFoundError, UserError
from vjax.tasks import SINGLE_TASK, ClassNames, task_class_names

REPORT_FILE = "prepare_report.json"
VIDEOS_FILE = "videos.json"  # {split: each record's video name (video_name), in record order}
# A Beam build's working files per split, in TFDS's temporary folder (which the workers share):
# the entries to encode (a file, not the job graph, which Dataflow caps at a few MB), and the
# skipped ones, read back into the report once the pipeline has run.
_BEAM_ENTRIES, _BEAM_SKIPPED = "{split}.beam-entries.json", "{split}.beam-skipped.json"
_BEAM_SOUND = "{split}.beam-sound.json"  # with sound stored: each kept video's sound status


@dataclasses.dataclass(eq=False)
class VideoFolderConfig(tfds.core.BuilderConfig):
    """Where the videos are (a folder or manifest) and how they are stored. ``name`` is derived
    from the source's base name and a hash of every field, so each setting gets its own folder
    under ``data_dir/video_folder/``."""

    name: str = ""
    src: str = ""
    fps: float = 0.0
    short_side: int = 256
    min_frames: int = 1
    jpeg_quality: int = 90
    fold: int = 1  # the official split, for datasets that have several (UCF101, HMDB51)
    # A listing with only training videos (a folder without train/validation/test
    # sub-folders) is split per class in these fractions, by this seed (split_by_class).
    split_fractions: tuple[float, float, float] = DEFAULT_SPLIT_FRACTIONS
    split_seed: int = 0
    # > 0: each video's sound track is stored too, mono at this rate (16000 is usual).
    audio_sample_rate: int = 0

    def __post_init__(self) -> None:
        if not self.src:
            raise UserError("video_folder needs src= (a folder of class sub-folders or a manifest)")
        self.src = os.path.abspath(os.path.expanduser(self.src))
        # One type per field before hashing: fps=5 and fps=5.0 (a Python config, the CLI)
        # are the same dataset, not two folders each prepared in full.
        self.fps = float(self.fps)
        for name in ("short_side", "min_frames", "jpeg_quality", "fold", "split_seed",
                     "audio_sample_rate"):  # fmt: skip
            setattr(self, name, int(getattr(self, name)))
        if self.fps < 0 or self.short_side < 0 or self.min_frames < 1 or self.audio_sample_rate < 0:
            raise UserError(
                f"need fps >= 0, short_side >= 0, min_frames >= 1 and audio_sample_rate >= 0, "
                f"got fps={self.fps}, short_side={self.short_side}, "
                f"min_frames={self.min_frames}, audio_sample_rate={self.audio_sample_rate}"
            )
        if not 1 <= self.jpeg_quality <= 100:
            raise UserError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")
        self.split_fractions = check_split_fractions(self.split_fractions)
        fields = [self.src, self.fps, self.short_side, self.min_frames, self.jpeg_quality]
        fields += [self.fold] if self.fold != 1 else []
        split = (self.split_fractions, self.split_seed)
        fields += [list(split[0]), split[1]] if split != (DEFAULT_SPLIT_FRACTIONS, 0) else []
        fields += [f"audio{self.audio_sample_rate}"] if self.audio_sample_rate else []
        key = json.dumps(fields)
        stem = "".join(c if c.isalnum() else "_" for c in os.path.basename(self.src))
        derived = f"{stem}_{hashlib.sha1(key.encode()).hexdigest()[:10]}"
        if self.name and self.name != derived:
            raise ValueError(f"VideoFolderConfig name must be {derived!r}, got {self.name!r}")
        self.name = derived
        if not self.description:
            self.description = (
                f"Videos from {self.src} at {self.fps or 'native'} fps, short side "
                f"{self.short_side or 'native'}, at least {self.min_frames} frames."
            )

    @property
    def settings(self) -> VideoSettings:
        return VideoSettings(
            self.fps, self.short_side, self.min_frames, self.jpeg_quality, self.audio_sample_rate
        )


class VideoFolder(tfds.core.GeneratorBasedBuilder):
    """Videos listed by a folder of class sub-folders or a CSV/JSON manifest."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIG_CLASS = VideoFolderConfig
    LISTING: str | None = None  # a key of annotations.LISTINGS; None: folder or manifest
    TASKS: tuple[str, ...] = (SINGLE_TASK,)  # one ClassLabel feature per task, named by it
    STORES_ID = False  # records carry the listing's own id of each video ("id")
    # Several classes per video: "label" is a sequence of class ids, "actions" their times.
    MULTI_LABEL = False
    AUDIO_SAMPLE_RATE = 0  # audio_sample_rate when prepare_videos is given none (0: no sound)

    def __init__(self, *, num_workers: int | None = None, progress_bar: bool = True, **kwargs):
        self._num_workers = num_workers
        self._progress_bar = progress_bar
        self._report: dict[str, dict] = {}
        self._names: dict[str, list[str]] = {}  # per split, each kept video's video_name
        self._beam_splits: dict[str, list[VideoEntry]] = {}
        self._use_beam = False
        self._listed: tuple[list[VideoEntry], ClassNames] | None = None
        self._auto_split = False  # the listing's splits were made by split_by_class
        super().__init__(**kwargs)

    def _listing(self) -> tuple[list[VideoEntry], ClassNames]:
        """``(entries, class_names)`` of the source (read once)."""
        if self._listed is None:
            cfg: VideoFolderConfig = self.builder_config
            listing = annotations.LISTINGS[self.LISTING] if self.LISTING else read_entries
            takes_fold = "fold" in inspect.signature(listing).parameters
            if cfg.fold != 1 and not takes_fold:
                raise UserError(  # it would only change the folder's name: a second copy
                    f"{self.name} has no official folds (fold={cfg.fold}); UCF101 and HMDB51 "
                    f"have three: leave fold at 1"
                )
            if self.LISTING is None:
                entries = read_entries(cfg.src)
                if {e.split for e in entries} == {"train"}:  # no split given: make one
                    entries = split_by_class(entries, cfg.split_fractions, cfg.split_seed)
                    self._auto_split = True
                self._listed = entries, class_names(entries)
            else:
                self._listed = listing(cfg.src, **({"fold": cfg.fold} if takes_fold else {}))
            warn_shared_clips(self._listed[0], self.name)
        return self._listed

    def _class_names(self) -> dict[str, list[str]]:
        """``{task: class names}``: those stored once prepared (the source may be gone, and
        listing a large one is slow), else the source's; ``{}`` for unlabelled videos."""
        folder = epath.Path(self.data_dir)
        stored = {task: folder / f"{task}.labels.txt" for task in self.TASKS}
        if all(path.is_file() for path in stored.values()):
            return {task: path.read_text().splitlines() for task, path in stored.items()}
        if (folder / "features.json").is_file():  # prepared without a label feature
            return {}
        listed = self._listing()[1]
        if not listed:  # videos without classes
            return {}
        names = task_class_names(listed)
        if tuple(names) != self.TASKS:
            raise ValueError(f"{self.name}: the listing has tasks {list(names)}, not {self.TASKS}")
        return names

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        """This file (TFDS 4.9's default needs the ``importlib_resources`` backport)."""
        return epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        labels = {
            task: tfds.features.ClassLabel(names=names)
            for task, names in self._class_names().items()
        }
        if self.MULTI_LABEL:
            labels = {
                SINGLE_TASK: tfds.features.Sequence(labels[SINGLE_TASK], doc="Every class shown."),
                "actions": tfds.features.Tensor(
                    shape=(None, 3), dtype=np.float32,
                    doc="Timed actions: class id, start, end (seconds from the video's start).",
                ),
            }  # fmt: skip
        ids = {"id": tfds.features.Text(doc="The dataset's own id of the video.")}
        sound = audio_features() if self.builder_config.audio_sample_rate else {}
        info = self.dataset_info_from_configs(
            description=f"{self.__doc__} Stored as JPEG frames, one record per video.",
            features=tfds.features.FeaturesDict(
                {
                    "frames": tfds.features.Sequence(
                        tfds.features.Tensor(shape=(), dtype=np.object_),
                        doc="JPEG-encoded RGB frames at `fps`.",
                    ),
                    **labels,
                    "fps": tfds.features.Scalar(dtype=np.float32, doc="Stored frame rate."),
                    "height": tfds.features.Scalar(dtype=np.int32),
                    "width": tfds.features.Scalar(dtype=np.int32),
                    "path": tfds.features.Text(doc="The source file."),
                    "index": tfds.features.Scalar(dtype=np.int64, doc="Position in the listing."),
                    **(ids if self.STORES_ID else {}),
                    **sound,
                }
            ),
            supervised_keys=None,
            disable_shuffling=True,  # records in listing order; the pipeline shuffles
        )
        return local_only(info)

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # The videos are local (the user's own files).
        splits = by_split(self._listing()[0])
        self._report = {split: {} for split in splits}  # the report lists splits in this order
        generators = {}
        for split, entries in splits.items():
            if any(os.path.isfile(e.path) for e in entries):
                generators[split] = self._generate_examples(split, entries)
            else:  # TFDS cannot write an empty split: report it and leave it out
                missing = {
                    i: Skipped(e.path, "missing", "no such file") for i, e in enumerate(entries)
                }
                self._record(split, entries, missing)
        if not generators:
            src = self.builder_config.src
            raise NotFoundError(f"none of the videos {src!r} lists exist; check src=")
        return generators

    def _record_maker(self) -> _RecordMaker:
        label_ids = {
            task: {name: i for i, name in enumerate(names)}
            for task, names in self._class_names().items()
        }
        rate = self.builder_config.audio_sample_rate
        return _RecordMaker(label_ids, self.STORES_ID, self.MULTI_LABEL, rate)

    def _generate_examples(self, split: str, entries: list[VideoEntry]):
        """The split's ``(index, record)`` pairs: a generator over a local process pool, or a
        Beam ``PTransform`` when preparation runs on Apache Beam."""
        if self._use_beam:
            self._beam_splits[split] = entries
            folder = epath.Path(self.data_dir)
            settings = self.builder_config.settings
            return _beam_examples(split, entries, settings, self._record_maker(), folder)
        return self._local_examples(split, entries)

    def _local_examples(self, split: str, entries: list[VideoEntry]):
        make_record = self._record_maker()
        skipped: dict[int, Skipped] = {}
        sound = []
        progress = f"decoding {split}" if self._progress_bar else None
        settings = self.builder_config.settings
        for i, result in encode_entries(entries, settings, self._num_workers, progress):
            if isinstance(result, Encoded):
                sound.append(_sound_status(entries[i], result))
                yield i, make_record(i, entries[i], result)
            else:
                skipped[i] = result
        self._record(split, entries, skipped)
        if settings.audio_sample_rate:
            self._report[split]["audio"] = _audio_counts(sound)
        _check_kept(split, len(entries), list(skipped.values()))

    def _record(self, split: str, entries, skipped_at: dict[int, Skipped]) -> dict:
        """Counts a split's kept and skipped videos (``skipped_at``: by listing index, in
        listing order) into the preparation report, and names its kept ones."""
        skipped = list(skipped_at.values())
        reasons = _count_reasons(skipped)
        root = self.builder_config.src
        kept = [video_name(e, root) for i, e in enumerate(entries) if i not in skipped_at]
        if kept:  # records in listing order (disable_shuffling): the names in that order
            self._names[split] = kept
        self._report[split] = {
            "listed": len(entries),
            "listing_sha1": _fingerprint(entries),
            "found": len(entries) - reasons.get("missing", 0),
            "kept": len(entries) - len(skipped),
            "skipped": len(skipped),
            "skipped_by_reason": reasons,
            "skipped_files": [dataclasses.asdict(s) for s in skipped],
        }
        if self._auto_split:  # how this split was made, and its videos per class
            cfg: VideoFolderConfig = self.builder_config
            per_class: dict[str, int] = {}
            for entry in entries:
                per_class[entry.label] = per_class.get(entry.label, 0) + 1
            self._report[split]["auto_split"] = {
                "fractions": list(cfg.split_fractions),
                "seed": cfg.split_seed,
                "listed_per_class": dict(sorted(per_class.items())),
            }
        return self._report[split]

    def video_names(self, split: str) -> list[str] | None:
        """Each of ``split``'s records' :func:`video_name`, in record order (what per-video
        results call their videos); None for a dataset prepared before vjax wrote them."""
        return self._prepared_names.get(split)

    @functools.cached_property
    def _prepared_names(self) -> dict[str, list[str]]:
        """:data:`VIDEOS_FILE` of the prepared dataset, read once (every validation asks)."""
        path = epath.Path(self.data_dir) / VIDEOS_FILE
        return json.loads(path.read_text()) if path.exists() else {}

    def source_changes(self) -> str:
        """What the source lists differently from when this dataset was prepared: other or
        more videos, labels or splits, or videos missing then that are there now. "" when it
        is the same, or when the source is gone (the prepared dataset stands on its own)."""
        folder = epath.Path(self.data_dir)
        if not os.path.exists(self.builder_config.src) or not (folder / REPORT_FILE).exists():
            return ""
        try:
            now = by_split(self._listing()[0])
        except (UserError, OSError):  # the annotations are gone: nothing to compare with
            return ""
        report, changes = read_report(self), []
        for split in dict.fromkeys([*report, *now]):
            then, entries = report.get(split, {}), now.get(split, [])
            if then.get("listed") != len(entries):
                was = then.get("listed", 0)
                changes.append(f"{split}: {len(entries)} videos listed, {was} then")
                continue
            # Missing files there now at the same path (a deletion since cannot hide them), or
            # more found than then (a listing that names a file only once it is there).
            missing = [f["path"] for f in then.get("skipped_files", []) if f["reason"] == "missing"]
            found = sum(os.path.isfile(e.path) for e in entries)
            back = max(
                sum(os.path.isfile(path) for path in missing),
                found - then.get("found", len(entries)),
            )
            if back > 0:  # fewer (deleted since) need nothing new
                changes.append(f"{split}: {back} videos missing then are there now")
            elif then.get("listing_sha1") not in (None, _fingerprint(entries)):
                changes.append(f"{split}: other videos, labels or segments listed")
        return "; ".join(changes)

    def source_change_note(self) -> str:
        """ "FOLDER was prepared before SRC changed (what changed)", or "" (see
        :meth:`source_changes`): what ``vjax prepare`` refuses and training warns about."""
        changes = self.source_changes()
        if not changes:
            return ""
        return f"{self.data_dir} was prepared before {self.builder_config.src} changed ({changes})"

    def _download_and_prepare(self, dl_manager, download_config=None):
        config = download_config
        self._use_beam = bool(config and (config.beam_runner or config.beam_options))
        super()._download_and_prepare(dl_manager, download_config=download_config)
        folder = epath.Path(self.data_dir)
        for split, entries in self._beam_splits.items():  # the pipeline has run
            skipped_file = folder / _BEAM_SKIPPED.format(split=split)
            skipped = {i: Skipped(**s) for i, s in json.loads(skipped_file.read_text())}
            self._record(split, entries, skipped)
            skipped_file.unlink()
            (folder / _BEAM_ENTRIES.format(split=split)).unlink()
            sound_file = folder / _BEAM_SOUND.format(split=split)
            if self.builder_config.audio_sample_rate:
                self._report[split]["audio"] = _audio_counts(json.loads(sound_file.read_text()))
                sound_file.unlink()
        # Still inside TFDS's temporary folder: the report appears with the records, atomically.
        (folder / REPORT_FILE).write_text(json.dumps(self._report, indent=1))
        (folder / VIDEOS_FILE).write_text(json.dumps(self._names))


def _fingerprint(entries: Sequence[VideoEntry]) -> str:
    """A hash of a split's listing: each video's path, label, segment, id and actions."""
    rows = [[e.path, e.label, e.start, e.end, e.id, e.actions] for e in entries]
    return hashlib.sha1(json.dumps(rows).encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class _RecordMaker:
    """Turns an encoded entry into its record (picklable, so Beam workers can use it too)."""

    label_ids: dict[str, dict[str, int]]  # task -> class name -> id, in task order
    stores_id: bool
    multi_label: bool = False
    audio_sample_rate: int = 0  # > 0: the record carries the sound (audio_features)

    def _labels(self, entry: VideoEntry) -> dict:
        if self.multi_label:
            ids = self.label_ids[SINGLE_TASK]
            actions = [(ids[name], start, end) for name, start, end in entry.actions]
            return {
                SINGLE_TASK: [ids[name] for name in entry.label],
                "actions": np.asarray(actions, np.float32).reshape(-1, 3),
            }
        labels = (entry.label,) if isinstance(entry.label, str) else entry.label or ()
        if len(labels) != len(self.label_ids):
            tasks = list(self.label_ids)
            raise UserError(f"{entry.path}: label {entry.label!r} is not one name per {tasks}")
        return {
            task: ids[name]
            for (task, ids), name in zip(self.label_ids.items(), labels, strict=True)
        }

    def __call__(self, index: int, entry: VideoEntry, encoded: Encoded) -> dict:
        record = self._labels(entry)
        record.update(
            frames=encoded.frames,
            fps=encoded.fps,
            height=encoded.height,
            width=encoded.width,
            path=entry.path,
            index=index,
        )
        if self.stores_id:
            record["id"] = entry.id
        if self.audio_sample_rate:
            record.update(audio_record(encoded.audio, self.audio_sample_rate))
        return record


def _sound_status(entry: VideoEntry, encoded: Encoded) -> tuple[str, bool, str]:
    """``(path, has sound, why not)`` of a kept video, for the report."""
    return entry.path, encoded.audio is not None, encoded.audio_error


def _audio_counts(statuses: list) -> dict:
    """The report's ``audio`` entry of a split from its kept videos' :func:`_sound_status`:
    how many have sound and how many not, and the files whose sound track could not be
    decoded (kept, marked without sound)."""
    errors = [{"path": path, "detail": error} for path, _, error in statuses if error]
    with_audio = sum(bool(has) for _, has, _ in statuses)
    return {
        "with_audio": with_audio,
        "without_audio": len(statuses) - with_audio,
        "audio_errors": errors,
    }


def _beam_examples(
    split: str,
    entries: list[VideoEntry],
    settings: VideoSettings,
    make_record: _RecordMaker,
    folder: epath.Path,
):
    """A Beam ``PTransform`` yielding a split's ``(index, record)`` pairs: the workers encode
    the entries with :func:`~vjax.data.video_prepare.encode_entry` and write the skipped ones,
    in listing order, to ``folder``. No record is emitted before that file is written (the
    records wait on it as a side input), so a split with nothing kept fails with the local
    build's error."""
    beam = tfds.core.lazy_imports.apache_beam
    entries_file = folder / _BEAM_ENTRIES.format(split=split)
    entries_file.write_text(json.dumps([dataclasses.asdict(e) for e in entries]))
    skipped_file = folder / _BEAM_SKIPPED.format(split=split)
    sound_file = folder / _BEAM_SOUND.format(split=split)

    def expand(pipeline):
        results = (
            pipeline
            | "Listing" >> beam.Create([entries_file])
            | "Read" >> beam.FlatMap(_read_entries)
            | "Distribute" >> beam.Reshuffle()
            | "Encode" >> beam.Map(_encode_at, settings)
        )
        skipped_count = (
            results
            | "Skipped" >> beam.FlatMap(_skipped_of)
            | "Gather" >> beam.combiners.ToList()
            | "Write" >> beam.Map(_write_skipped, skipped_file, split, len(entries))
        )
        checked = beam.pvalue.AsSingleton(skipped_count)
        if settings.audio_sample_rate:  # each kept video's sound status, for the report
            _ = (
                results
                | "Sound" >> beam.FlatMap(_sound_of)
                | "GatherSound" >> beam.combiners.ToList()
                | "WriteSound" >> beam.Map(_write_sound, sound_file)
            )
        return results | "Records" >> beam.FlatMap(_records_of, make_record, checked)

    return beam.ptransform_fn(expand)()


def _read_entries(path: epath.Path) -> list[tuple[int, VideoEntry]]:
    """The ``(index, entry)`` pairs of a split's listing file (JSON; labels back to tuples)."""
    entries = []
    for i, row in enumerate(json.loads(path.read_text())):
        label = row["label"]  # None (unlabelled), a name, or a tuple (several, or per task)
        label = label if label is None or isinstance(label, str) else tuple(label)
        actions = tuple(tuple(a) for a in row.get("actions", ()))
        entries.append((i, VideoEntry(**{**row, "label": label, "actions": actions})))
    return entries


def _encode_at(item: tuple[int, VideoEntry], settings: VideoSettings):
    index, entry = item
    return index, entry, encode_entry(entry, settings)


def _skipped_of(result) -> list[tuple[int, Skipped]]:
    index, _, outcome = result
    return [(index, outcome)] if isinstance(outcome, Skipped) else []


def _sound_of(result) -> list[tuple[int, tuple[str, bool, str]]]:
    index, entry, outcome = result
    return [(index, _sound_status(entry, outcome))] if isinstance(outcome, Encoded) else []


def _write_sound(indexed: list, path: epath.Path) -> None:
    """Writes a split's kept videos' sound statuses (listing order) as JSON."""
    path.write_text(json.dumps([status for _, status in sorted(indexed, key=lambda p: p[0])]))


def _records_of(result, make_record: _RecordMaker, skipped_count: int) -> list[tuple[int, dict]]:
    del skipped_count  # only orders the records after the skip check
    index, entry, outcome = result
    return [(index, make_record(index, entry, outcome))] if isinstance(outcome, Encoded) else []


def _write_skipped(indexed: list, path: epath.Path, split: str, listed: int) -> int:
    """Writes a split's skipped videos (listing order) as JSON ``[listing index, skipped]``
    pairs; raises if none was kept."""
    indexed = sorted(indexed, key=lambda pair: pair[0])
    _check_kept(split, listed, [s for _, s in indexed])
    path.write_text(json.dumps([(i, dataclasses.asdict(s)) for i, s in indexed]))
    return len(indexed)


def _count_reasons(skipped: list[Skipped]) -> dict[str, int]:
    reasons: dict[str, int] = {}
    for s in skipped:
        reasons[s.reason] = reasons.get(s.reason, 0) + 1
    return reasons


def _check_kept(split: str, listed: int, skipped: list[Skipped]) -> None:
    """Raises when every video of a split was skipped (TFDS cannot write an empty split)."""
    if len(skipped) == listed:
        first = "; ".join(f"{s.path}: {s.reason} ({s.detail})" for s in skipped[:3])
        raise UserError(
            f"split {split!r}: none of its {listed} videos could be used "
            f"({_count_reasons(skipped)}), e.g. {first}"
        )


class Kinetics(VideoFolder):
    """Kinetics-400/600/700 from a downloaded copy and the release's CSVs (``vjax_kinetics``)."""

    name = "vjax_kinetics"
    LISTING = "kinetics"
    MANUAL_DOWNLOAD_INSTRUCTIONS = "src= the folder holding the videos and {train,validate}.csv"


class SomethingSomethingV2(VideoFolder):
    """Something-Something v2 (``vjax_ssv2``); train with ``input.flip_label_map="left_right"``
    (or ``input.flip=False``): a mirror swaps its left/right classes."""

    name = "vjax_ssv2"
    LISTING = "ssv2"
    MANUAL_DOWNLOAD_INSTRUCTIONS = "src= the folder of <id>.webm files and the label JSONs"


class Ucf101(VideoFolder):
    """UCF101 with its official split ``fold`` (``vjax_ucf101``)."""

    name = "vjax_ucf101"
    LISTING = "ucf101"
    MANUAL_DOWNLOAD_INSTRUCTIONS = "src= the folder holding UCF-101/ and ucfTrainTestlist/"


class Hmdb51(VideoFolder):
    """HMDB51 with its official split ``fold`` (``vjax_hmdb51``)."""

    name = "vjax_hmdb51"
    LISTING = "hmdb51"
    MANUAL_DOWNLOAD_INSTRUCTIONS = "src= the class folders and testTrainMulti_7030_splits/"


class EpicKitchens100(VideoFolder):
    """Epic-Kitchens-100 action segments, labelled by ``verb`` and ``noun``; ``id`` is the
    narration id (``vjax_epic_kitchens``)."""

    name = "vjax_epic_kitchens"
    LISTING = "epic_kitchens"
    TASKS = ("verb", "noun")
    STORES_ID = True
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "src= the folder holding <participant>/videos/<video_id>.MP4 and the EPIC_100_*.csv "
        "annotations (there or in annotations/)"
    )


class Charades(VideoFolder):
    """Charades v1 (``vjax_charades``): 157 everyday action classes, several per video, each
    with its times; ``id`` is the video id. Trains with a sigmoid loss, tests by mAP."""

    name = "vjax_charades"
    LISTING = "charades"
    STORES_ID = True
    MULTI_LABEL = True
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "src= the folder holding Charades_v1_480/<id>.mp4 (or any folder of <id>.mp4 below it) "
        "and Charades_v1_{train,test}.csv, Charades_v1_classes.txt (there or in Charades/)"
    )


class VggSound(VideoFolder):
    """VGGSound (``vjax_vggsound``, Chen et al. 2020): 10 s YouTube clips of 309 sound
    classes, prepared with their sound (16 kHz unless ``audio_sample_rate`` says otherwise);
    ``id`` is ``<youtube_id>_<start:06>``. Splits train and test."""

    name = "vjax_vggsound"
    LISTING = "vggsound"
    STORES_ID = True
    AUDIO_SAMPLE_RATE = 16000
    MANUAL_DOWNLOAD_INSTRUCTIONS = "src= the folder holding vggsound.csv and the clips"


class KineticsSounds(VideoFolder):
    """Kinetics-Sounds (``vjax_kinetics_sounds``): the Kinetics-400 videos of the 31 classes
    that can be heard (:data:`~vjax.data.annotations.KINETICS_SOUNDS`), with their sound."""

    name = "vjax_kinetics_sounds"
    LISTING = "kinetics_sounds"
    AUDIO_SAMPLE_RATE = 16000
    MANUAL_DOWNLOAD_INSTRUCTIONS = "src= a Kinetics-400 folder (videos, {train,validate}.csv)"


class AudioSet(VideoFolder):
    """AudioSet (``vjax_audioset``, Gemmeke et al. 2017): 10 s YouTube clips, each with all of
    its 527 sound classes (multi-label: a sigmoid loss, mAP), prepared with their sound;
    ``id`` is ``<YTID>_<start:06>``. Splits train (balanced, plus unbalanced when listed) and
    test (eval)."""

    name = "vjax_audioset"
    LISTING = "audioset"
    STORES_ID = True
    MULTI_LABEL = True
    AUDIO_SAMPLE_RATE = 16000
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "src= the folder holding class_labels_indices.csv, balanced_train_segments.csv, "
        "eval_segments.csv (and unbalanced_train_segments.csv) and the clips"
    )


BUILDERS: dict[str, type[VideoFolder]] = {
    "video_folder": VideoFolder,
    "kinetics": Kinetics,
    "ssv2": SomethingSomethingV2,
    "ucf101": Ucf101,
    "hmdb51": Hmdb51,
    "epic_kitchens": EpicKitchens100,
    "charades": Charades,
    "vggsound": VggSound,
    "kinetics_sounds": KineticsSounds,
    "audioset": AudioSet,
}
"""Dataset names (as in ``config.dataset.name`` and ``vjax prepare NAME``) -> builders."""


def video_name(entry: VideoEntry, root: str) -> str:
    """What results call a video: the dataset's own id (Epic-Kitchens' narration id,
    Charades' video id, VGGSound's and AudioSet's ``youtube_id_start``), else its file
    relative to the source ``root`` (a folder, or a manifest's folder) with a segment's
    ``@start-end`` seconds after it (a Kinetics video cut from a longer download)."""
    if entry.id:
        return entry.id
    folder = root if os.path.isdir(root) else os.path.dirname(root)
    inside = entry.path.startswith(os.path.join(folder, ""))
    name = os.path.relpath(entry.path, folder) if inside else entry.path
    if entry.start is not None or entry.end is not None:
        name += f"@{entry.start or 0:g}-{'end' if entry.end is None else f'{entry.end:g}'}"
    return name


def read_report(builder: tfds.core.DatasetBuilder) -> dict[str, dict]:
    """The preparation report: per split ``listed``, ``found`` (listed minus missing),
    ``kept``, ``skipped``, ``skipped_by_reason`` and ``skipped_files`` (path, reason, detail)."""
    return json.loads((epath.Path(builder.data_dir) / REPORT_FILE).read_text())


def format_report(report: dict[str, dict]) -> str:
    """One line per split: kept/listed and skipped counts by reason."""
    lines = []
    for split, r in report.items():
        why = ", ".join(f"{k} {v}" for k, v in sorted(r["skipped_by_reason"].items())) or "none"
        sound = r.get("audio")
        lines.append(
            f"{split}: kept {r['kept']} of {r['listed']} (found {r['found']}); "
            f"skipped {r['skipped']} ({why})"
            + (
                f"; with sound {sound['with_audio']}, without {sound['without_audio']}"
                f" ({len(sound['audio_errors'])} undecodable)"
                if sound
                else ""
            )
        )
    auto = next((r["auto_split"] for r in report.values() if "auto_split" in r), None)
    if auto:
        lines.append(
            f"(no train/validation/test given: split per class by split_fractions="
            f"{tuple(auto['fractions'])}, split_seed={auto['seed']})"
        )
    return "\n".join(lines)


def prepare_videos(
    dataset: str,
    data_dir: str,
    *,
    src: str,
    fps: float = 0.0,
    short_side: int = 256,
    min_frames: int = 1,
    jpeg_quality: int = 90,
    fold: int = 1,
    split_fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS,
    split_seed: int = 0,
    audio_sample_rate: int | None = None,
    num_workers: int | None = None,
    progress_bar: bool = False,
    beam_runner: str | None = None,
    beam_options: str | Sequence[str] | None = None,
) -> tfds.core.DatasetBuilder:
    """Prepares (once) and returns the builder of ``dataset`` (a key of :data:`BUILDERS`) for
    ``src`` and these settings.

    Files go to ``data_dir/<builder name>/<config name>/1.0.0/`` (ArrayRecord). ``num_workers``
    decode processes (default: all cores). A second call with the same arguments reads what is
    there, even when the source has changed since (``builder.source_changes()`` says what
    changed; ``vjax prepare`` then refuses and training warns). ``beam_runner`` (e.g.
    ``"DirectRunner"``, ``"DataflowRunner"``) and/or
    ``beam_options`` (pipeline flags, a list or one shell-quoted string) prepare on Apache Beam
    instead (``pip install 'vjax[beam]'``); the records and report are the same. A
    ``video_folder`` source that names no split is split per class in ``split_fractions``
    (train, validation, test) by ``split_seed`` (see :func:`~vjax.data.manifests.split_by_class`;
    the report's ``auto_split`` records it). ``audio_sample_rate > 0`` (None: the builder's
    ``AUDIO_SAMPLE_RATE``, 16000 for VGGSound and Kinetics-Sounds, else 0) stores each video's
    sound (mono int16 at that rate, from frame 0's time; :mod:`vjax.data.audio`); a video
    without a sound track is kept with ``has_audio`` False, and the report counts both.

    >>> builder = prepare_videos("ucf101", "~/tfds", src="~/data/ucf101", fps=10, fold=2)
    >>> builder = prepare_videos("kinetics", "/mnt/bucket/tfds", src="/mnt/k400",  # the
    ...     beam_runner="FlinkRunner",       # workers mount the videos and the bucket (gcsfuse)
    ...     beam_options="--flink_master=host:8081")
    """
    require_local_data_dir(data_dir)  # ArrayRecord: a bucket only through a FUSE mount
    if dataset not in BUILDERS:
        raise UserError(f"unknown video dataset {dataset!r}; valid: {sorted(BUILDERS)}")
    if not progress_bar:
        tfds.disable_progress_bar()
    config = VideoFolderConfig(
        src=src,
        fps=fps,
        short_side=short_side,
        min_frames=min_frames,
        jpeg_quality=jpeg_quality,
        fold=fold,
        split_fractions=tuple(split_fractions),
        split_seed=split_seed,
        audio_sample_rate=(
            BUILDERS[dataset].AUDIO_SAMPLE_RATE if audio_sample_rate is None else audio_sample_rate
        ),
    )
    builder = BUILDERS[dataset](
        config=config,
        data_dir=data_dir,
        file_format="array_record",
        num_workers=num_workers,
        progress_bar=progress_bar,
    )
    prepare_builder(builder, data_dir, download_config=_beam_config(beam_runner, beam_options))
    return builder


def _beam_config(
    runner: str | None, options: str | Sequence[str] | None
) -> tfds.download.DownloadConfig | None:
    """TFDS's download config running the build on Beam (None: run it locally)."""
    if not runner and not options:
        return None
    beam = tfds.core.lazy_imports.apache_beam
    flags = shlex.split(options) if isinstance(options, str) else list(options or [])
    pipeline_options = beam.options.pipeline_options.PipelineOptions(flags=flags)
    return tfds.download.DownloadConfig(beam_runner=runner, beam_options=pipeline_options)


prepare_video_folder = functools.partial(prepare_videos, "video_folder")
prepare_video_folder.__doc__ = "``prepare_videos('video_folder', ...)``: a user's own videos."
