"""TFDS builders ``vjax_motion`` (the procedural motion dataset, :mod:`vjax.data.motion`) and
``vjax_av_motion`` (its audio-visual variant: a motion and a sound decide the class).

Usage::

    builder = prepare_motion("/path/to/data_dir", num_classes=8)
    source = builder.as_data_source("train")    # random access (ArrayRecord)
    ex = source[i]                              # {"video", "label", "index"}
    video = np.stack(ex["video"])               # list of (H, W, 3) uint8 -> (T, H, W, 3)

Examples are pure functions of ``(seed, split, index)`` via
:func:`vjax.data.motion.generate_example`, so preparation needs no network and
a dataset can always be regenerated bit for bit.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from vjax.data.audio import audio_features, audio_record, to_int16
from vjax.data.builder_info import local_only
from vjax.data.datasets import prepare_builder
from vjax.data.motion import (
    AV_CLASSES,
    MIN_SIDE,
    MOTIONS,
    generate_av_example,
    generate_example,
)
from vjax.errors import UserError

_SPLITS = ("train", "validation", "test")


def _check_clip_shape(num_frames: int, height: int, width: int) -> None:
    """Refuses, naming the sizes, a clip the renderer cannot draw (before a dataset name and
    folder are made for it)."""
    if num_frames < 1 or min(height, width) < MIN_SIDE:
        raise UserError(
            f"num_frames must be >= 1 and height, width >= {MIN_SIDE}; got {num_frames} "
            f"frames of {height}x{width}"
        )


def _split_sizes(config: tfds.core.BuilderConfig) -> dict[str, int]:
    """A generated dataset's examples per split (``num_train``, ``num_validation``,
    ``num_test``), leaving out the empty ones."""
    sizes = (config.num_train, config.num_validation, config.num_test)
    return {split: n for split, n in zip(_SPLITS, sizes, strict=True) if n > 0}


def _prepared(
    builder_class: type[tfds.core.GeneratorBasedBuilder],
    config: tfds.core.BuilderConfig,
    data_dir: str,
    progress_bar: bool,
) -> tfds.core.DatasetBuilder:
    """The builder of ``config`` under ``data_dir`` (ArrayRecord), generated unless it is
    there already. TFDS refuses a new config object that shares a name with a predefined one,
    so a predefined config of the same name is used."""
    if not progress_bar:
        tfds.disable_progress_bar()
    config = builder_class.builder_configs.get(config.name, config)
    builder = builder_class(config=config, data_dir=data_dir, file_format="array_record")
    prepare_builder(builder, data_dir)
    return builder


@dataclasses.dataclass(eq=False)
class MotionConfig(tfds.core.BuilderConfig):
    """Dataset geometry, sizes and seed. ``name`` is derived from all of them.

    Two configs that differ in any value get different names, hence different
    directories under ``data_dir/vjax_motion/``.
    """

    name: str = ""
    num_classes: int = 8
    num_frames: int = 16
    height: int = 32
    width: int = 32
    num_train: int = 2000
    num_validation: int = 400
    num_test: int = 400
    seed: int = 0

    def __post_init__(self) -> None:
        if not 2 <= self.num_classes <= len(MOTIONS):
            raise UserError(f"num_classes must be in [2, {len(MOTIONS)}], got {self.num_classes}")
        _check_clip_shape(self.num_frames, self.height, self.width)
        if self.seed < 0:
            raise UserError(f"seed must be >= 0, got {self.seed}")
        if self.num_train < 1 or min(self.num_validation, self.num_test) < 0:
            raise UserError("need num_train >= 1 and num_validation, num_test >= 0")
        derived = (
            f"c{self.num_classes}_f{self.num_frames}_{self.height}x{self.width}"
            f"_n{self.num_train}-{self.num_validation}-{self.num_test}_s{self.seed}"
        )
        if self.name and self.name != derived:
            raise ValueError(f"MotionConfig name must be {derived!r} (derived), got {self.name!r}")
        self.name = derived
        if not self.description:
            self.description = (
                f"{self.num_classes} motion classes {list(MOTIONS[: self.num_classes])}, "
                f"{self.num_frames} frames of {self.height}x{self.width}, seed {self.seed}."
            )

    @property
    def split_sizes(self) -> dict[str, int]:
        """Number of examples per split (splits with 0 examples are not generated)."""
        return _split_sizes(self)


class VjaxMotion(tfds.core.GeneratorBasedBuilder):
    """Procedural videos of one textured object on a torus; the motion is the class."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIG_CLASS = MotionConfig
    BUILDER_CONFIGS = [MotionConfig()]  # the default geometry; any other is a custom config

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        """This file. Overridden because TFDS 4.9's default lazily imports the
        ``importlib_resources`` backport, which this environment does not ship."""
        return epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        cfg: MotionConfig = self.builder_config
        info = self.dataset_info_from_configs(
            description=(
                "Procedurally generated videos in which MOTION decides the class. Each clip "
                "shows one rotationally asymmetric, textured, bright object over a static "
                "smooth dark colour background with per-frame pixel noise, on a torus (the "
                "object wraps around the frame edges). Classes: translate right/left/down/"
                "up, rotate clockwise/counter-clockwise (as seen on screen), speed up/slow "
                "down along a random direction, approach/recede (grow/shrink). The middle "
                "frame (T//2) has the same distribution for every class. "
                "Label = index % num_classes."
            ),
            features=tfds.features.FeaturesDict(
                {
                    # What tfds.features.Video stores (one PNG per frame), without its
                    # constructor's TensorFlow import: reading the data needs no TensorFlow.
                    "video": tfds.features.Sequence(
                        tfds.features.Image(
                            shape=(cfg.height, cfg.width, 3), encoding_format="png"
                        ),
                        length=cfg.num_frames,
                    ),
                    "label": tfds.features.ClassLabel(names=list(MOTIONS[: cfg.num_classes])),
                    "index": tfds.features.Scalar(
                        dtype=np.int64, doc="Index of the example within its split."
                    ),
                }
            ),
            supervised_keys=("video", "label"),
            # Records are stored in index order: ``as_data_source(split)[i]["index"] == i``.
            # Shuffle in the input pipeline instead.
            disable_shuffling=True,
        )
        return local_only(info)

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # Nothing to download: everything is rendered.
        cfg: MotionConfig = self.builder_config
        return {split: self._generate_examples(split, n) for split, n in cfg.split_sizes.items()}

    def _generate_examples(self, split: str, num_examples: int):
        cfg: MotionConfig = self.builder_config
        for i in range(num_examples):
            video, label = generate_example(
                cfg.seed, split, i, cfg.num_classes, cfg.num_frames, cfg.height, cfg.width
            )
            yield i, {"video": video, "label": label, "index": i}


def prepare_motion(
    data_dir: str,
    *,
    num_classes: int = 8,
    num_frames: int = 16,
    height: int = 32,
    width: int = 32,
    num_train: int = 2000,
    num_validation: int = 400,
    num_test: int = 400,
    seed: int = 0,
    progress_bar: bool = False,
) -> tfds.core.DatasetBuilder:
    """Generate (once) and return the ``vjax_motion`` builder for this configuration.

    Files go to ``data_dir/vjax_motion/<config name>/1.0.0/`` in ArrayRecord format, so
    ``builder.as_data_source(split)[i]`` gives random access. A second call with the
    same arguments finds the prepared data and does not rewrite anything.

    ``progress_bar=False`` calls ``tfds.disable_progress_bar()``, which is a global
    TFDS setting for the rest of the process.
    """
    config = MotionConfig(
        num_classes=num_classes,
        num_frames=num_frames,
        height=height,
        width=width,
        num_train=num_train,
        num_validation=num_validation,
        num_test=num_test,
        seed=seed,
    )
    return _prepared(VjaxMotion, config, data_dir, progress_bar)


@dataclasses.dataclass(eq=False)
class AvMotionConfig(tfds.core.BuilderConfig):
    """The audio-visual variant's geometry, frame and sample rates, sizes and seed; ``name``
    is derived from all of them."""

    name: str = ""
    num_frames: int = 8
    height: int = 32
    width: int = 32
    fps: float = 8.0
    sample_rate: int = 16000
    num_train: int = 600
    num_validation: int = 120
    num_test: int = 240
    seed: int = 0

    def __post_init__(self) -> None:
        _check_clip_shape(self.num_frames, self.height, self.width)
        if self.sample_rate < 1 or self.fps <= 0:
            raise UserError("sample_rate and fps must be positive")
        if self.seed < 0 or self.num_train < 1 or min(self.num_validation, self.num_test) < 0:
            raise UserError("need seed >= 0, num_train >= 1 and num_validation, num_test >= 0")
        derived = (
            f"f{self.num_frames}_{self.height}x{self.width}_{self.fps:g}fps_{self.sample_rate}hz"
            f"_n{self.num_train}-{self.num_validation}-{self.num_test}_s{self.seed}"
        )
        if self.name and self.name != derived:
            raise ValueError(
                f"AvMotionConfig name must be {derived!r} (derived), got {self.name!r}"
            )
        self.name = derived

    @property
    def split_sizes(self) -> dict[str, int]:
        return _split_sizes(self)


class VjaxAvMotion(tfds.core.GeneratorBasedBuilder):
    """``vjax_motion``'s object moving right or left, with a rising, falling or pulsed tone:
    the class is the pair (:data:`vjax.data.motion.AV_CLASSES`). Stored like a prepared video
    with its sound (``frames``, ``fps``, ``audio``...), so clips and their audio windows are
    cut by the same code as for real videos (``config.input``, ``input.audio``)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIG_CLASS = AvMotionConfig
    BUILDER_CONFIGS = [AvMotionConfig()]

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        """This file (TFDS 4.9's default needs the ``importlib_resources`` backport)."""
        return epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        cfg: AvMotionConfig = self.builder_config
        shape = (cfg.num_frames, cfg.height, cfg.width, 3)
        info = self.dataset_info_from_configs(
            description=(
                f"{self.__doc__} Label = index % 6; video alone caps at 1/3, audio alone at 1/2."
            ),
            features=tfds.features.FeaturesDict(
                {
                    "frames": tfds.features.Tensor(shape=shape, dtype=np.uint8, encoding="zlib"),
                    "label": tfds.features.ClassLabel(names=list(AV_CLASSES)),
                    "fps": tfds.features.Scalar(dtype=np.float32, doc="Stored frame rate."),
                    "height": tfds.features.Scalar(dtype=np.int32),
                    "width": tfds.features.Scalar(dtype=np.int32),
                    "index": tfds.features.Scalar(dtype=np.int64, doc="Index within the split."),
                    **audio_features(),
                }
            ),
            supervised_keys=None,
            disable_shuffling=True,  # records in index order; the pipeline shuffles
        )
        return local_only(info)

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # Nothing to download: everything is rendered.
        cfg: AvMotionConfig = self.builder_config
        return {split: self._generate_examples(split, n) for split, n in cfg.split_sizes.items()}

    def _generate_examples(self, split: str, num_examples: int):
        cfg: AvMotionConfig = self.builder_config
        for i in range(num_examples):
            video, sound, label = generate_av_example(
                cfg.seed, split, i, cfg.num_frames, cfg.height, cfg.width, cfg.fps, cfg.sample_rate
            )
            yield (
                i,
                {
                    "frames": video,
                    "label": label,
                    "fps": cfg.fps,
                    "height": cfg.height,
                    "width": cfg.width,
                    "index": i,
                    **audio_record(to_int16(sound), cfg.sample_rate),
                },
            )


def prepare_av_motion(
    data_dir: str,
    *,
    num_frames: int = 8,
    height: int = 32,
    width: int = 32,
    fps: float = 8.0,
    sample_rate: int = 16000,
    num_train: int = 600,
    num_validation: int = 120,
    num_test: int = 240,
    seed: int = 0,
    progress_bar: bool = False,
) -> tfds.core.DatasetBuilder:
    """Generate (once) and return the ``vjax_av_motion`` builder for this configuration
    (``data_dir/vjax_av_motion/<config name>/1.0.0/``, ArrayRecord).

    >>> builder = prepare_av_motion("/tmp/tfds")
    >>> ex = builder.as_data_source("train")[0]   # frames (8, 32, 32, 3), audio int16 (16000,)
    """
    config = AvMotionConfig(
        num_frames=num_frames,
        height=height,
        width=width,
        fps=fps,
        sample_rate=sample_rate,
        num_train=num_train,
        num_validation=num_validation,
        num_test=num_test,
        seed=seed,
    )
    return _prepared(VjaxAvMotion, config, data_dir, progress_bar)
