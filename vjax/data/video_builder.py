"""TFDS builder ``video_folder``: a user's own videos, prepared once into ArrayRecord.

Usage (or ``vjax prepare video_folder --src=DIR_OR_MANIFEST --data_dir=DIR``)::

    builder = prepare_video_folder("/data/tfds", src="~/videos/actions", fps=10, short_side=256)
    source = builder.as_data_source("train")     # random access
    ex = source[i]   # {"frames": [jpeg bytes, ...], "label", "fps", "height", "width",
                     #  "path", "index"}
    report = read_report(builder)   # kept / skipped counts per split and the skipped files

Each record holds one whole video as JPEG frames at the stored rate and short side, so the
input pipeline decodes only the frames a clip needs (see :mod:`vjax.data.sampling`). Bad files
(see :data:`vjax.data.video_io.REASONS`) are skipped, counted and listed in
``prepare_report.json`` inside the dataset folder. TFDS writes into a temporary folder that is
renamed only when everything (records, dataset info, report) is written, so a build that dies
midway leaves nothing TFDS would read as prepared; the next call starts over.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import os

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from vjax.data import annotations
from vjax.data.manifests import VideoEntry, by_split, class_names, read_entries
from vjax.data.video_prepare import Encoded, Skipped, VideoSettings, encode_entries

REPORT_FILE = "prepare_report.json"


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

    def __post_init__(self) -> None:
        if not self.src:
            raise ValueError(
                "video_folder needs src= (a folder of class sub-folders or a manifest)"
            )
        self.src = os.path.abspath(os.path.expanduser(self.src))
        if self.fps < 0 or self.short_side < 0 or self.min_frames < 1:
            raise ValueError(
                f"need fps >= 0, short_side >= 0 and min_frames >= 1, got fps={self.fps}, "
                f"short_side={self.short_side}, min_frames={self.min_frames}"
            )
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")
        fields = [self.src, self.fps, self.short_side, self.min_frames, self.jpeg_quality]
        key = json.dumps(fields + ([self.fold] if self.fold != 1 else []))
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
        return VideoSettings(self.fps, self.short_side, self.min_frames, self.jpeg_quality)


class VideoFolder(tfds.core.GeneratorBasedBuilder):
    """Videos listed by a folder of class sub-folders or a CSV/JSON manifest."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIG_CLASS = VideoFolderConfig
    LISTING: str | None = None  # a key of annotations.LISTINGS; None: folder or manifest

    def __init__(self, *, num_workers: int | None = None, progress_bar: bool = True, **kwargs):
        self._num_workers = num_workers
        self._progress_bar = progress_bar
        self._report: dict[str, dict] = {}
        self._listed: tuple[list[VideoEntry], list[str]] | None = None
        super().__init__(**kwargs)

    def _listing(self) -> tuple[list[VideoEntry], list[str]]:
        """``(entries, class_names)`` of the source (read once)."""
        if self._listed is None:
            cfg: VideoFolderConfig = self.builder_config
            if self.LISTING is None:
                entries = read_entries(cfg.src)
                self._listed = entries, class_names(entries)
            else:
                listing = annotations.LISTINGS[self.LISTING]
                takes_fold = "fold" in inspect.signature(listing).parameters
                self._listed = listing(cfg.src, **({"fold": cfg.fold} if takes_fold else {}))
        return self._listed

    def _class_names(self) -> list[str]:
        """The stored class names once prepared (the source may be gone, and listing a large
        one is slow), else the source's."""
        stored = os.path.join(str(self.data_dir), "label.labels.txt")
        if os.path.isfile(stored):
            with open(stored) as f:
                return f.read().splitlines()
        return self._listing()[1]

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        """This file (TFDS 4.9's default needs the ``importlib_resources`` backport)."""
        return epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=f"{self.__doc__} Stored as JPEG frames, one record per video.",
            features=tfds.features.FeaturesDict(
                {
                    "frames": tfds.features.Sequence(
                        tfds.features.Tensor(shape=(), dtype=np.object_),
                        doc="JPEG-encoded RGB frames at `fps`.",
                    ),
                    "label": tfds.features.ClassLabel(names=self._class_names()),
                    "fps": tfds.features.Scalar(dtype=np.float32, doc="Stored frame rate."),
                    "height": tfds.features.Scalar(dtype=np.int32),
                    "width": tfds.features.Scalar(dtype=np.int32),
                    "path": tfds.features.Text(doc="The source file."),
                    "index": tfds.features.Scalar(dtype=np.int64, doc="Position in the listing."),
                }
            ),
            supervised_keys=None,
            disable_shuffling=True,  # records in listing order; the pipeline shuffles
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # The videos are local (the user's own files).
        generators = {}
        for split, entries in by_split(self._listing()[0]).items():
            if any(os.path.isfile(e.path) for e in entries):
                generators[split] = self._generate_examples(split, entries)
            else:  # TFDS cannot write an empty split: report it and leave it out
                missing = [Skipped(e.path, "missing", "no such file") for e in entries]
                self._record(split, entries, missing)
        if not generators:
            src = self.builder_config.src
            raise FileNotFoundError(f"none of the videos {src!r} lists exist; check src=")
        return generators

    def _generate_examples(self, split: str, entries):
        cfg: VideoFolderConfig = self.builder_config
        label_ids = {name: i for i, name in enumerate(self.info.features["label"].names)}
        skipped = []
        progress = f"decoding {split}" if self._progress_bar else None
        for i, result in encode_entries(entries, cfg.settings, self._num_workers, progress):
            if isinstance(result, Encoded):
                yield (
                    i,
                    {
                        "frames": result.frames,
                        "label": label_ids[entries[i].label],
                        "fps": result.fps,
                        "height": result.height,
                        "width": result.width,
                        "path": entries[i].path,
                        "index": i,
                    },
                )
            else:
                skipped.append(result)
        report = self._record(split, entries, skipped)
        if not report["kept"]:
            first = "; ".join(f"{s.path}: {s.reason} ({s.detail})" for s in skipped[:3])
            raise ValueError(
                f"split {split!r}: none of its {len(entries)} videos could be used "
                f"({report['skipped_by_reason']}), e.g. {first}"
            )

    def _record(self, split: str, entries, skipped: list[Skipped]) -> dict:
        """Counts a split's kept and skipped videos into the preparation report."""
        reasons: dict[str, int] = {}
        for s in skipped:
            reasons[s.reason] = reasons.get(s.reason, 0) + 1
        self._report[split] = {
            "listed": len(entries),
            "found": len(entries) - reasons.get("missing", 0),
            "kept": len(entries) - len(skipped),
            "skipped": len(skipped),
            "skipped_by_reason": reasons,
            "skipped_files": [dataclasses.asdict(s) for s in skipped],
        }
        return self._report[split]

    def _download_and_prepare(self, dl_manager, download_config=None):
        super()._download_and_prepare(dl_manager, download_config=download_config)
        # Still inside TFDS's temporary folder: the report appears with the records, atomically.
        with open(os.path.join(self.data_dir, REPORT_FILE), "w") as f:
            json.dump(self._report, f, indent=1)


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


BUILDERS: dict[str, type[VideoFolder]] = {
    "video_folder": VideoFolder,
    "kinetics": Kinetics,
    "ssv2": SomethingSomethingV2,
    "ucf101": Ucf101,
    "hmdb51": Hmdb51,
}
"""Dataset names (as in ``config.dataset.name`` and ``vjax prepare NAME``) -> builders."""


def read_report(builder: tfds.core.DatasetBuilder) -> dict[str, dict]:
    """The preparation report: per split ``listed``, ``found`` (listed minus missing),
    ``kept``, ``skipped``, ``skipped_by_reason`` and ``skipped_files`` (path, reason, detail)."""
    with open(os.path.join(str(builder.data_dir), REPORT_FILE)) as f:
        return json.load(f)


def format_report(report: dict[str, dict]) -> str:
    """One line per split: kept/listed and skipped counts by reason."""
    lines = []
    for split, r in report.items():
        why = ", ".join(f"{k} {v}" for k, v in sorted(r["skipped_by_reason"].items())) or "none"
        lines.append(
            f"{split}: kept {r['kept']} of {r['listed']} (found {r['found']}); "
            f"skipped {r['skipped']} ({why})"
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
    num_workers: int | None = None,
    progress_bar: bool = False,
) -> tfds.core.DatasetBuilder:
    """Prepares (once) and returns the builder of ``dataset`` (a key of :data:`BUILDERS`) for
    ``src`` and these settings.

    Files go to ``data_dir/<builder name>/<config name>/1.0.0/`` (ArrayRecord). ``num_workers``
    decode processes (default: all cores). A second call with the same arguments reads what is
    there.

    >>> builder = prepare_videos("ucf101", "~/tfds", src="~/data/ucf101", fps=10, fold=2)
    """
    if dataset not in BUILDERS:
        raise ValueError(f"unknown video dataset {dataset!r}; valid: {sorted(BUILDERS)}")
    if not progress_bar:
        tfds.disable_progress_bar()
    config = VideoFolderConfig(
        src=src,
        fps=fps,
        short_side=short_side,
        min_frames=min_frames,
        jpeg_quality=jpeg_quality,
        fold=fold,
    )
    builder = BUILDERS[dataset](
        config=config,
        data_dir=data_dir,
        file_format="array_record",
        num_workers=num_workers,
        progress_bar=progress_bar,
    )
    builder.download_and_prepare()
    return builder


prepare_video_folder = functools.partial(prepare_videos, "video_folder")
prepare_video_folder.__doc__ = "``prepare_videos('video_folder', ...)``: a user's own videos."
