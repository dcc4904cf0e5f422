"""``config.input`` -> the per-example train transform and the test-view sampler.

A stored video (``video_folder`` and the builders sharing its core) is a record of JPEG frames.
The train transform picks a clip's frame indices (:mod:`vjax.data.sampling`), decodes only those
frames, cuts and resizes them to ``crop_size`` with one box for the whole clip, flips, jitters
colours and erases (:mod:`vjax.data.augment`), all from the ``rng`` it is given; the pipeline
keys that rng on ``(seed, step, row)``, so a batch is a pure function of ``(seed, step)``.
The view sampler gives the deterministic test views: ``test_num_clips`` uniform clips (with
``sampling="tsn"``: frames at ``test_num_clips`` offsets within the segments,
:func:`~vjax.data.sampling.tsn_views`) x ``test_num_crops`` (1 centre, or 3 along the long
side) crops.

Keys of ``config.input`` read here (all optional; defaults in :class:`InputOptions`)::

    num_frames=16  frame_stride=2  fps=0 (0: stride counts stored frames; else target rate)
    sampling="random" | "tsn"      pad_mode="loop" | "pad"     crop_size=224
    train_crop="random_resized" | "scale_jitter" | "centre"
    crop_area=(0.08, 1.0)  crop_ratio=(0.75, 1.333)  jitter_short_side=(256, 320)
    flip=True  flip_label_map=()  (pairs of class names a mirror swaps, or "left_right")
    color_jitter=0.0  randaugment_ops=0  randaugment_magnitude=9  erase_prob=0.0
    color_augment_prob=0.0  color_drop_prob=0.0  (DMVR's colour augmentation as scenic's
        prob_color_augment / prob_color_drop: with the first probability a random brightness
        delta <= 32/255, saturation and contrast in [0.6, 1.4], hue turn <= 0.2; then with
        the second, grey; one draw per clip, after the crop and flip)
    mixup_alpha=0.0  cutmix_alpha=0.0  mix_switch_prob=0.5
    mixup_rate=None  (mixup only: each example mixed with this probability and a weight of its
        own, as AST; None: every example, one weight per batch, as timm)
    test_num_clips=1  test_num_crops=1  test_crop_fraction=1.0
    test_ensemble="mean" | "max"   (how a video's view logits are pooled; Charades: max)
    audio=None | dict(sample_rate, mel_bins, window_ms, hop_ms, frames, mean, std,
                      spec_augment=dict(time_masks, time_width, freq_masks, freq_width))

With ``audio`` set (a dataset prepared with its sound, :mod:`vjax.data.audio`), every clip
comes with the log-mel spectrogram of the seconds its frames cover: the train transform and
the views give ``{"video", "audio", "has_audio"}`` instead of the bare clip; SpecAugment draws
from the same rng after the video's augmentation, and mixup/cutmix mix the spectrograms of
the same rows with the same weight.

Multi-label data (a ``label`` holding a video's class ids, e.g. ``vjax_charades``) gives
multi-hot labels; with timed ``actions`` a training clip is labelled by the actions under way
during it (PySlowFast's Charades rule) and the test adds localisation targets
(:func:`evaluation_label`).

>>> options = InputOptions.from_config(config.input)
>>> transform = make_train_transform(options, class_names)
>>> video, label = transform(source[i], np.random.default_rng([seed, step, row]))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from vjax.data import augment, sampling
from vjax.data.audio import AudioOptions, clip_audio
from vjax.data.pipeline import stack
from vjax.data.video_io import require_uint8_frames
from vjax.errors import UserError
from vjax.tasks import ClassNames, is_multitask, task_class_names

# Keys of config.input that belong to the trainer, not to clip making.
TRAINER_KEYS = ("global_batch_size", "mean", "std", "clip", "num_workers")


def input_keys() -> list[str]:
    """Every key ``config.input`` may hold: the trainer's and the clip options."""
    return sorted({*TRAINER_KEYS, *(f.name for f in dataclasses.fields(InputOptions))})


@dataclasses.dataclass(frozen=True)
class InputOptions:
    """How clips are cut from stored videos (see the module docstring for each field)."""

    num_frames: int = 16
    frame_stride: float = 2
    fps: float = 0.0
    sampling: str = "random"
    pad_mode: str = "loop"
    crop_size: int = 224
    train_crop: str = "random_resized"
    crop_area: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    jitter_short_side: tuple[int, int] = (256, 320)
    flip: bool = True
    flip_label_map: tuple | str = ()
    color_jitter: float = 0.0
    randaugment_ops: int = 0
    randaugment_magnitude: int = 9
    erase_prob: float = 0.0
    color_augment_prob: float = 0.0
    color_drop_prob: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_switch_prob: float = 0.5
    mixup_rate: float | None = None
    test_num_clips: int = 1
    test_num_crops: int = 1
    test_crop_fraction: float = 1.0
    test_ensemble: str = "mean"
    audio: AudioOptions | None = None

    def __post_init__(self) -> None:
        choices = {
            "sampling": ("random", "tsn"),
            "pad_mode": sampling.PAD_MODES,
            "train_crop": ("random_resized", "scale_jitter", "centre"),
            "test_num_crops": (1, 3),
            "test_ensemble": ("mean", "max"),
        }
        for key, valid in choices.items():
            if getattr(self, key) not in valid:
                raise ValueError(f"input.{key} must be one of {valid}, got {getattr(self, key)!r}")
        if self.num_frames < 1 or self.crop_size < 1 or self.test_num_clips < 1:
            raise ValueError("input.num_frames, crop_size and test_num_clips must be >= 1")
        if self.frame_stride <= 0 or self.fps < 0:
            raise ValueError("input.frame_stride must be > 0 and input.fps >= 0")
        for key in ("color_augment_prob", "color_drop_prob", "erase_prob", "mix_switch_prob"):
            if not 0 <= getattr(self, key) <= 1:
                raise ValueError(f"input.{key} must be in [0, 1], got {getattr(self, key)!r}")
        for key in ("color_jitter", "mixup_alpha", "cutmix_alpha"):
            if getattr(self, key) < 0:
                raise ValueError(f"input.{key} must be >= 0, got {getattr(self, key)!r}")
        if self.mixup_rate is not None and not 0 < self.mixup_rate <= 1:
            raise ValueError(f"input.mixup_rate must be in (0, 1] or None, got {self.mixup_rate!r}")
        if self.mixup_rate is not None and self.cutmix_alpha > 0:
            raise ValueError("input.mixup_rate is per-example mixup, which cutmix does not have: "
                             "set input.cutmix_alpha=0 or input.mixup_rate=None")  # fmt: skip
        if not 0 < self.test_crop_fraction <= 1:
            raise ValueError(
                f"input.test_crop_fraction must be in (0, 1], got {self.test_crop_fraction!r}"
            )
        low, high = self.crop_area
        if not 0 < low <= high <= 1:
            raise ValueError(f"input.crop_area must be (low, high) with 0 < low <= high <= 1, "
                             f"got {self.crop_area!r}")  # fmt: skip
        low, high = self.crop_ratio
        if not 0 < low <= high:
            raise ValueError(f"input.crop_ratio must be (low, high) with 0 < low <= high, got "
                             f"{self.crop_ratio!r}")  # fmt: skip
        low, high = self.jitter_short_side
        if self.train_crop == "scale_jitter" and not self.crop_size <= low <= high:
            raise ValueError(f"input.jitter_short_side must be (low, high) with crop_size "
                             f"({self.crop_size}) <= low <= high, got "
                             f"{self.jitter_short_side!r}")  # fmt: skip
        if not 0 <= self.randaugment_magnitude < 31:  # torchvision's 31 bins
            raise ValueError(f"input.randaugment_magnitude must be in [0, 30], got "
                             f"{self.randaugment_magnitude!r}")  # fmt: skip
        if isinstance(self.flip_label_map, str) and self.flip_label_map not in ("", "left_right"):
            raise ValueError(f"input.flip_label_map must be 'left_right' or pairs of class "
                             f"names, got {self.flip_label_map!r}")  # fmt: skip
        if self.test_num_crops == 3 and self.test_crop_fraction != 1:
            raise ValueError("input.test_crop_fraction applies to one centre crop; three crops "
                             "are full-height squares along the long side (PySlowFast): set "
                             "input.test_num_crops=1 or input.test_crop_fraction=1.0")  # fmt: skip

    @classmethod
    def from_config(cls, input_config: Mapping[str, Any] | None) -> InputOptions:
        """Reads the clip keys of ``config.input``; an unknown key is an error naming it."""
        from vjax.config_utils import unknown_key_error

        fields = {f.name for f in dataclasses.fields(cls)}
        values = {}
        for key, value in dict(input_config or {}).items():
            if key in TRAINER_KEYS:
                continue
            if key not in fields:
                raise unknown_key_error(f"input.{key}", [f"input.{k}" for k in input_keys()])
            if key == "audio":
                values[key] = AudioOptions.from_config(value) if value else None
                continue
            values[key] = tuple(value) if isinstance(value, list | tuple) else value
        return cls(**values)

    @property
    def clip_shape(self) -> tuple[int, int, int, int]:
        """``(T, H, W, C)`` of every clip this input makes."""
        return (self.num_frames, self.crop_size, self.crop_size, 3)

    def stride_for(self, stored_fps: float) -> float:
        """Frame stride in stored frames (``fps`` set: resampled from ``stored_fps``)."""
        if self.fps and stored_fps:
            return self.frame_stride * stored_fps / self.fps
        return self.frame_stride


def _frames_and_size(example: Mapping[str, Any]) -> tuple[Sequence, int, int]:
    """A stored video's frames (JPEG bytes or arrays) and its frame height and width."""
    frames = example["frames"] if "frames" in example else example["video"]
    if "height" in example and "width" in example:
        return frames, int(example["height"]), int(example["width"])
    first = frames[0]
    if isinstance(first, bytes | np.bytes_):
        from vjax.data.video_io import decode_jpegs

        return frames, *decode_jpegs([first]).shape[1:3]
    require_uint8_frames(first, "a video's frames")  # as decoded
    return frames, *np.shape(first)[:2]


def _decode_indices(frames: Sequence, indices: np.ndarray, box, size: int, flip: bool):
    """Decodes each distinct frame once, then repeats as ``indices`` asks."""
    unique, inverse = np.unique(indices, return_inverse=True)
    clip = augment.decode_crop_resize([frames[i] for i in unique], box, size, flip)
    if len(unique) == len(indices) and np.array_equal(unique, indices):
        return clip  # the usual case: no repeats, in order; no copy
    return clip[inverse.reshape(-1)]


def multi_hot(class_ids: Sequence[int], num_classes: int) -> np.ndarray:
    """int32 ``(num_classes,)`` with 1 at each of ``class_ids``."""
    out = np.zeros(num_classes, np.int32)
    out[np.asarray(class_ids, np.int64)] = 1
    return out


def label_reader(class_names: ClassNames) -> Callable[[Mapping[str, Any]], Any]:
    """``label(example)``: its int ``label``; for multi-label data (``label`` a sequence of
    class ids) their multi-hot vector; or (several tasks, ``class_names`` a mapping) the
    int32 vector of its tasks' labels, read from the features named by the tasks; -1 for
    unlabelled videos (no ``label``), which only objectives that ignore labels train on."""
    if is_multitask(class_names):
        tasks = list(class_names)
        return lambda example: np.asarray([example[t] for t in tasks], np.int32)
    num_classes = len(class_names)

    def read(example: Mapping[str, Any]) -> Any:
        if "label" not in example:  # unlabelled videos
            return -1
        label = example["label"]
        return multi_hot(label, num_classes) if np.ndim(label) else int(label)

    return read


def actions_between(actions: np.ndarray, start: float, end: float, num_classes: int):
    """Multi-hot of the timed ``actions`` (rows ``class id, start, end`` in seconds) under way
    at some time in ``[start, end]``."""
    actions = np.asarray(actions, np.float64).reshape(-1, 3)
    during = (actions[:, 1] <= end) & (actions[:, 2] >= start)
    return multi_hot(actions[during, 0].astype(np.int64), num_classes)


# Charades' localisation protocol (Charades_v1_localize.m): 25 time points per video.
LOCALIZATION_POINTS = 25


def make_train_transform(
    options: InputOptions, class_names: ClassNames
) -> Callable[[Mapping[str, Any], np.random.Generator], tuple[np.ndarray, Any]]:
    """``transform(example, rng) -> (uint8 (T, S, S, 3) clip, label)`` for training
    (``label``: see :func:`label_reader`; a flip remaps it by ``flip_label_map``, one task
    only)."""
    several = is_multitask(class_names)
    if several and options.flip_label_map:
        raise ValueError("input.flip_label_map remaps one task's labels; this data has several")
    flip_map = {} if several else augment.flip_map_from_names(options.flip_label_map, class_names)
    read_label = label_reader(class_names)
    size = options.crop_size

    def transform(example: Mapping[str, Any], rng: np.random.Generator):
        frames, height, width = _frames_and_size(example)
        stride = options.stride_for(float(example.get("fps", 0.0)))
        if options.sampling == "tsn":
            indices = sampling.tsn_segments(len(frames), options.num_frames, rng)
        else:
            indices = sampling.random_clip(
                rng, len(frames), options.num_frames, stride, options.pad_mode
            )
        if options.train_crop == "random_resized":
            box = augment.random_resized_crop_box(
                rng, height, width, options.crop_area, options.crop_ratio
            )
        elif options.train_crop == "scale_jitter":
            box = augment.scale_jitter_box(rng, height, width, options.jitter_short_side, size)
        else:
            box = augment.centre_box(height, width)
        flip = bool(options.flip and rng.integers(2))
        clip = _decode_indices(frames, indices, box, size, flip)
        label = read_label(example)
        if "actions" in example:  # the actions under way during the clip
            fps = float(example["fps"])
            start, end = indices.min() / fps, indices.max() / fps
            label = actions_between(example["actions"], start, end, len(class_names))
        if flip and flip_map:
            label = augment.flip_label(label, flip_map)
        if options.randaugment_ops > 0:
            from vjax.data.randaugment import rand_augment  # needs torchvision

            ops, magnitude = options.randaugment_ops, options.randaugment_magnitude
            clip = rand_augment(clip, rng, ops, magnitude)
        if options.color_jitter > 0:
            s = options.color_jitter
            clip = augment.color_jitter(clip, rng, s, s, s)
        if options.color_augment_prob > 0 or options.color_drop_prob > 0:
            probs = options.color_augment_prob, options.color_drop_prob
            clip = augment.dmvr_color_augment(clip, rng, *probs)
        if options.erase_prob > 0 and rng.uniform() < options.erase_prob:
            clip = augment.random_erase(clip, rng)
        if options.audio is not None:  # drawn last: the video's draws are as without audio
            spec, has_audio = clip_audio(example, indices, options.audio, rng)
            return {"video": clip, "audio": spec, "has_audio": has_audio}, label
        return clip, label

    return transform


def make_view_sampler(
    options: InputOptions,
) -> Callable[[Mapping[str, Any]], Any]:
    """``views(example) -> uint8 (clips * crops, T, S, S, 3)``: the deterministic test views,
    clip-major (all crops of clip 0, then of clip 1, ...); with ``audio``, a dict of those
    ``"video"``, each view's ``"audio"`` spectrogram and ``"has_audio"``."""
    iterate = make_view_iterator(options)
    return lambda example: stack(list(iterate(example)))


def make_view_iterator(
    options: InputOptions,
) -> Callable[[Mapping[str, Any]], Iterator[np.ndarray]]:
    """Like :func:`make_view_sampler`, one view at a time (decoded when asked for), so a
    multi-view test holds only the views of one model call, whatever the number of clips.
    With ``audio`` each view is ``{"video", "audio", "has_audio"}``; the crops of a clip
    share its spectrogram."""
    size = options.crop_size

    def views(example: Mapping[str, Any]) -> Iterator[np.ndarray]:
        frames, height, width = _frames_and_size(example)
        clips = _test_clips(options, len(frames), float(example.get("fps", 0.0)))
        if options.test_num_crops == 3:
            boxes = augment.three_crop_boxes(height, width)
        else:
            boxes = [augment.centre_box(height, width, options.test_crop_fraction)]
        for idx in clips:
            sound = {}
            if options.audio is not None:
                spec, has_audio = clip_audio(example, idx, options.audio)
                sound = {"audio": spec, "has_audio": has_audio}
            for box in boxes:
                clip = _decode_indices(frames, idx, box, size, False)
                yield {"video": clip, **sound} if sound else clip

    return views


def _test_clips(options: InputOptions, num_frames: int, fps: float) -> np.ndarray:
    """The frame indices ``(clips, T)`` of a video's test clips."""
    if options.sampling == "tsn":
        return sampling.tsn_views(num_frames, options.num_frames, options.test_num_clips)
    stride = options.stride_for(fps)
    return sampling.uniform_clips(
        num_frames, options.num_frames, stride, options.test_num_clips, options.pad_mode
    )


def evaluation_label(
    options: InputOptions, class_names: ClassNames
) -> Callable[[Mapping[str, Any]], Any]:
    """``label(example)`` for the test: :func:`label_reader`'s, or for a video with timed
    ``actions`` (Charades) a dict of it (``"label"``: every action of the video) and the
    localisation targets: ``view_times`` (each test view's centre, seconds, in view order),
    ``frame_times`` (:data:`LOCALIZATION_POINTS` points ``j / 25 * duration``) and
    ``frame_labels`` (the actions under way at each point, multi-hot), which
    :func:`vjax.evaluate.metrics.frame_level_map` scores."""
    read_label = label_reader(class_names)

    def label(example: Mapping[str, Any]) -> Any:
        value = read_label(example)
        if "actions" not in example:
            return value
        fps, count = float(example["fps"]), len(example["frames"])
        clips = _test_clips(options, count, fps)
        centres = (clips.min(axis=1) + clips.max(axis=1)) / 2 / fps
        times = np.arange(LOCALIZATION_POINTS) / LOCALIZATION_POINTS * (count / fps)
        frame_labels = [actions_between(example["actions"], t, t, len(class_names)) for t in times]
        return {
            "label": value,
            "view_times": np.repeat(centres, options.test_num_crops).astype(np.float32),
            "frame_times": times.astype(np.float32),
            "frame_labels": np.stack(frame_labels),
        }

    return label


def make_eval_transform(
    options: InputOptions, class_names: ClassNames = ()
) -> Callable[[Mapping[str, Any]], tuple[np.ndarray, Any]]:
    """``transform(example) -> (clip, label)``: the first test view (one clip, one crop), for
    the trainer's quick single-view validation."""
    single = dataclasses.replace(options, test_num_clips=1, test_num_crops=1)
    views = make_view_iterator(single)
    read_label = label_reader(class_names)
    return lambda example: (next(iter(views(example))), read_label(example))


def make_batch_transform(
    options: InputOptions, num_classes: int | Sequence[int], multi_label: bool = False
) -> Callable[[dict[str, np.ndarray], np.random.Generator], dict[str, np.ndarray]] | None:
    """Mixup/cutmix over a batch (adds ``label_probs``; ``num_classes`` per task for
    several; ``multi_label``: multi-hot labels), or None when both are off."""
    if options.mixup_alpha <= 0 and options.cutmix_alpha <= 0:
        return None

    def batch_transform(batch: dict[str, np.ndarray], rng: np.random.Generator):
        mixed = augment.mix_batch(
            batch["video"],
            batch["label"],
            num_classes,
            rng,
            options.mixup_alpha,
            options.cutmix_alpha,
            options.mix_switch_prob,
            batch.get("audio"),
            batch.get("has_audio"),
            multi_label,
            options.mixup_rate,
        )
        return {**batch, **mixed}

    return batch_transform


MIXING_KEYS = ("mixup_alpha", "cutmix_alpha", "mix_switch_prob", "mixup_rate")


def _refuse_clip_options(dataset: str, options: InputOptions) -> None:
    """A dataset of fixed clips makes no clips, so a clip option set away from its default
    (``input.test_num_clips=4`` for a multi-view test, a crop, a colour augmentation) would
    silently do nothing: a UserError names them."""
    ignored = [
        f"input.{f.name}={getattr(options, f.name)!r}"
        for f in dataclasses.fields(InputOptions)
        if f.name not in (*MIXING_KEYS, "audio") and getattr(options, f.name) != f.default
    ]
    if ignored:
        raise UserError(
            f"{', '.join(ignored)}: {dataset} stores fixed clips, which are used as they are "
            f"(only input.{', input.'.join(MIXING_KEYS)} apply to them); remove "
            f"{'it' if len(ignored) == 1 else 'them'} or prepare videos (dataset.name="
            f"video_folder)"
        )


def transforms_for(builder, input_config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The pipeline's ``transform``, ``batch_transform`` and ``eval_transform`` for ``builder``.
    Fixed-clip datasets such as ``vjax_motion`` need no clip making: only the batch's mixup /
    cutmix (``input.mixup_alpha``, ``input.cutmix_alpha``) applies to them.

    >>> t = transforms_for(builder, config.input)
    >>> batches = TrainBatches(source, 32, seed, transform=t["transform"],
    ...                        batch_transform=t["batch_transform"])
    """
    from vjax.data.datasets import dataset_class_names, is_multilabel, stores_whole_videos

    if not stores_whole_videos(builder) and dict(input_config or {}).get("audio"):
        raise UserError(
            f"input.audio is set but {builder.name} stores fixed clips without sound; use "
            f"vjax_av_motion (configs/demo.py:av) or videos prepared with their sound, or "
            f"set input.audio=None"
        )

    options = InputOptions.from_config(input_config)
    names = dataset_class_names(builder)
    sizes = [len(task_names) for task_names in task_class_names(names).values()]
    batch_transform = make_batch_transform(options, sizes, is_multilabel(builder))
    if not stores_whole_videos(builder):
        _refuse_clip_options(builder.name, options)
        return {"transform": None, "batch_transform": batch_transform, "eval_transform": None}
    return {
        "transform": make_train_transform(options, names),
        "batch_transform": batch_transform,
        "eval_transform": make_eval_transform(options, names),
    }
