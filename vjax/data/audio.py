"""Audio: decode a video's sound track, cut the window a clip covers, log-mel spectrograms.

A prepared video stores its sound as mono int16 samples at ``sample_rate``, sample 0 at the
time of frame 0, so stored frames ``[i, j)`` cover samples ``[i / fps * sr, j / fps * sr)``.
The model gets the log-mel spectrogram of the ``frames`` spectrogram frames centred on those
seconds (:func:`clip_window`: the window moves to lie within the track, so a spectrogram longer
than the clip, as MBT's 8 s beside a 2-3 s clip, hears the sound around the clip, not silence;
scenic's MBT likewise cuts its audio window apart from the frames' length), from
:func:`log_mel` (scipy's STFT with a periodic Hann window, TF's HTK mel filterbank), time
first, normalised as AST does: ``(logmel - mean) / (2 * std)``; SpecAugment masks
(:func:`spec_augment`) are set to 0. A track shorter than the window ends in silence. A video
without a sound track gets an all-zero spectrogram and ``has_audio`` False.

``config.input.audio`` (None or absent: video only)::

    sample_rate=16000  mel_bins=128  window_ms=25.0  hop_ms=10.0  frames=100
    mean=-4.27  std=4.57  (the dataset's log-mel statistics: :func:`log_mel_statistics`;
                           the defaults are AST's AudioSet values for Kaldi fbank features,
                           close to but not the same as these)
    spec_augment=dict(time_masks=2, time_width=20, freq_masks=2, freq_width=24)

>>> options = AudioOptions.from_config(config.input.audio)
>>> samples = decode_audio("talk.mp4", 16000)          # float32 mono, or None: no sound
>>> spec = normalized_log_mel(samples[:16000], options)  # float32 (frames, mel_bins)

This module must stay free of tensorflow imports at import time (TF's mel matrix is loaded
when a spectrogram is first made).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

LOG_EPS = 1e-6
"""``log(mel + LOG_EPS)``: the floor of the log-mel spectrogram (the value of silence)."""
INT16_SCALE = 32767.0
"""Stored samples are ``round(clip(x, -1, 1) * INT16_SCALE)`` as int16."""


class AudioDecodeError(ValueError):
    """A sound track that is there but cannot be decoded (names the file)."""

    def __init__(self, path: str, detail: str):
        self.path, self.detail = path, detail
        super().__init__(f"{path}: its audio track cannot be decoded ({detail})")


@dataclasses.dataclass(frozen=True)
class AudioOptions:
    """``config.input.audio``: the spectrogram the model takes (see the module docstring)."""

    sample_rate: int = 16000
    mel_bins: int = 128
    window_ms: float = 25.0
    hop_ms: float = 10.0
    frames: int = 100
    mean: float = -4.27
    std: float = 4.57
    time_masks: int = 0
    time_width: int = 0
    freq_masks: int = 0
    freq_width: int = 0

    def __post_init__(self) -> None:
        if self.sample_rate < 1 or self.mel_bins < 1 or self.frames < 1:
            raise ValueError("input.audio.sample_rate, mel_bins and frames must be >= 1")
        if self.hop_ms <= 0 or self.window_ms <= 0:
            raise ValueError("input.audio.window_ms and hop_ms must be > 0")
        if self.std <= 0:
            raise ValueError(f"input.audio.std must be > 0, got {self.std}")
        if min(self.time_masks, self.time_width, self.freq_masks, self.freq_width) < 0:
            raise ValueError("input.audio.spec_augment counts and widths must be >= 0")

    @classmethod
    def from_config(cls, audio_config: Mapping[str, Any]) -> AudioOptions:
        """Reads ``config.input.audio``; an unknown key is an error naming the valid ones."""
        from vjax.config_utils import unknown_key_error

        values = dict(audio_config)
        masks = dict(values.pop("spec_augment", None) or {})
        fields = [f.name for f in dataclasses.fields(cls)]
        mask_keys = ("time_masks", "time_width", "freq_masks", "freq_width")
        for key in values:
            if key not in fields or key in mask_keys:
                valid = [f"input.audio.{k}" for k in fields if k not in mask_keys]
                raise unknown_key_error(f"input.audio.{key}", [*valid, "input.audio.spec_augment"])
        for key in masks:
            if key not in mask_keys:
                valid = [f"input.audio.spec_augment.{k}" for k in mask_keys]
                raise unknown_key_error(f"input.audio.spec_augment.{key}", valid)
        return cls(**values, **masks)

    @property
    def window(self) -> int:
        """STFT window length in samples."""
        return max(1, round(self.sample_rate * self.window_ms / 1000))

    @property
    def hop(self) -> int:
        """STFT hop in samples."""
        return max(1, round(self.sample_rate * self.hop_ms / 1000))

    @property
    def num_samples(self) -> int:
        """Samples that make exactly ``frames`` spectrogram frames."""
        return (self.frames - 1) * self.hop + self.window


def decode_audio(
    path: str, sample_rate: int, start: float = 0.0, end: float | None = None
) -> np.ndarray | None:
    """The file's first sound track as float32 mono samples at ``sample_rate`` (PyAV's
    resampler), sample 0 at time ``start`` (seconds on the file's clock, as frame times are),
    up to ``end`` (None: the track's end); silence where the track does not reach. None when
    the file has no sound track; :class:`AudioDecodeError` when it has one that fails.

    >>> decode_audio("walk.mp4", 16000, start=0.0, end=2.0).shape   # (32000,)
    """
    import av

    try:
        container = av.open(path)
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise AudioDecodeError(path, f"{type(e).__name__}: {e}") from e
    with container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        if start > 1.0 and stream.time_base:
            try:  # to the packet before start; decoding from the file's start is the fallback
                container.seek(int(start / stream.time_base), stream=stream, backward=True)
            except av.FFmpegError:
                container.seek(0, stream=stream)
        # Planar, the source's channels kept and averaged here: swresample's float downmix to
        # mono sums them at 1/sqrt(2) each, a stereo track 1.41x louder than the same mono one
        # (and clipped where it is stored as int16).
        resampler = av.AudioResampler(format="fltp", rate=sample_rate)
        chunks: list[np.ndarray] = []
        first: float | None = None
        count = 0
        try:
            for frame in container.decode(stream):
                if first is None:
                    first = float(frame.time) if frame.time is not None else 0.0
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().mean(axis=0))
                    count += len(chunks[-1])
                if end is not None and first + count / sample_rate >= end + 1.0:
                    break  # a second past the end: the resampler's delay is covered
            chunks += [out.to_ndarray().mean(axis=0) for out in resampler.resample(None)]
        except (av.FFmpegError, OSError, ValueError) as e:
            raise AudioDecodeError(path, f"{type(e).__name__}: {e}") from e
    if first is None:
        raise AudioDecodeError(path, "the sound track has no decodable frame")
    samples = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    offset = round((start - first) * sample_rate)
    length = len(samples) - offset if end is None else round((end - start) * sample_rate)
    return window(samples, offset, max(length, 0))


def window(samples: np.ndarray, offset: int, length: int) -> np.ndarray:
    """``samples[offset : offset + length]`` as float32, zeros (silence) where that reaches
    outside ``samples`` (a negative ``offset`` too); int16 samples are scaled to [-1, 1]."""
    samples = np.asarray(samples)
    out = np.zeros(length, np.float32)
    lo, hi = max(offset, 0), min(offset + length, len(samples))
    if hi > lo:
        part = samples[lo:hi].astype(np.float32)
        if samples.dtype == np.int16:
            part /= INT16_SCALE
        out[lo - offset : hi - offset] = part
    return out


def to_int16(samples: np.ndarray) -> np.ndarray:
    """float samples in [-1, 1] -> the int16 samples a dataset stores."""
    return np.round(np.clip(samples, -1.0, 1.0) * INT16_SCALE).astype(np.int16)


def audio_features() -> dict[str, Any]:
    """The TFDS features of a stored sound track (:func:`audio_record` fills them)."""
    import tensorflow_datasets as tfds

    return {
        "audio": tfds.features.Tensor(
            shape=(None,), dtype=np.int16, doc="Mono samples from frame 0's time on (int16)."
        ),
        "has_audio": tfds.features.Scalar(
            dtype=np.bool_, doc="False: no sound track (audio is then empty)."
        ),
        "sample_rate": tfds.features.Scalar(dtype=np.int32, doc="Audio samples per second."),
    }


def audio_record(samples: np.ndarray | None, sample_rate: int) -> dict:
    """The audio features of a record: int16 ``samples``, or None for a video without sound."""
    empty = np.zeros(0, np.int16)
    return {
        "audio": empty if samples is None else np.asarray(samples, np.int16),
        "has_audio": samples is not None,
        "sample_rate": sample_rate,
    }


def clip_window(
    samples: np.ndarray,
    sample_rate: int,
    fps: float,
    indices: Sequence[int],
    num_available: int,
    length: int,
) -> np.ndarray:
    """``length`` samples around a clip of stored frames ``indices`` (at ``fps``): centred on
    the seconds the clip covers (its first frame's start to its last frame's end), moved to lie
    within the track where the track is that long, so a window longer than the clip hears the
    sound before and after it rather than silence; a shorter track starts at 0 and ends in
    silence. A clip that loops past the video's end (``pad_mode="loop"``) continues its time.

    >>> clip_window(audio, 16000, 8.0, [4, 5, 6, 7], 16, 8000)  # 0.5 s from 0.5 s on (of 2 s)
    """
    indices = np.asarray(indices, np.int64)
    steps = np.diff(indices)
    steps = np.where(steps < 0, steps + num_available, steps)  # a loop wrapped to frame 0
    first, last = int(indices[0]), int(indices[0] + steps.sum())
    centre = (first + last + 1) / 2 / fps * sample_rate
    start = max(0, min(round(centre - length / 2), len(samples) - length))
    return window(samples, start, length)


@functools.lru_cache(maxsize=8)
def mel_matrix(sample_rate: int, fft_size: int, mel_bins: int) -> np.ndarray:
    """float32 ``(fft_size // 2 + 1, mel_bins)``: the triangular mel filterbank of TF's
    ``tf.signal.linear_to_mel_weight_matrix`` (HTK mel scale, 20 Hz to ``sample_rate / 2``,
    no weight on the DC bin), computed as it does in float32 (equal within its logarithm's
    last bits) without importing TensorFlow: 5 s in every loader process, and the GPU image
    has none."""

    def hertz_to_mel(hertz):
        return np.float32(1127.0) * np.log(1 + np.asarray(hertz, np.float32) / np.float32(700.0))

    bins = np.linspace(0.0, sample_rate / 2, fft_size // 2 + 1, dtype=np.float32)[1:]
    bin_mel = hertz_to_mel(bins)[:, None]
    edges = np.linspace(hertz_to_mel(20.0), hertz_to_mel(sample_rate / 2), mel_bins + 2)
    lower, centre, upper = (edges[i : i + mel_bins].astype(np.float32) for i in range(3))
    rising = (bin_mel - lower) / (centre - lower)
    falling = (upper - bin_mel) / (upper - centre)
    weights = np.maximum(np.float32(0.0), np.minimum(rising, falling))
    return np.pad(weights, ((1, 0), (0, 0))).astype(np.float32)


def log_mel(samples: np.ndarray, options: AudioOptions) -> np.ndarray:
    """float32 ``(options.frames, mel_bins)``: ``log(mel power + LOG_EPS)`` of ``samples``
    (float, [-1, 1]), framed every ``hop`` samples from sample 0 with a periodic Hann window
    of ``window`` samples, FFT size the next power of two; samples are cut or padded with
    silence to exactly ``frames`` frames."""
    from scipy import signal

    win, hop = options.window, options.hop
    x = np.zeros(options.num_samples, np.float64)
    count = min(len(samples), len(x))
    x[:count] = samples[:count]
    fft_size = 1 << (win - 1).bit_length()
    hann = signal.get_window("hann", win)  # periodic, as for spectral analysis
    _, _, z = signal.stft(
        x, window=hann, nperseg=win, noverlap=win - hop, nfft=fft_size, detrend=False,
        boundary=None, padded=False, scaling="spectrum",
    )  # fmt: skip
    power = (np.abs(z) * hann.sum()) ** 2  # "spectrum" scaling divides by the window's sum
    mel = power.T @ mel_matrix(options.sample_rate, fft_size, options.mel_bins)
    return np.log(mel + LOG_EPS).astype(np.float32)


def normalized_log_mel(samples: np.ndarray, options: AudioOptions) -> np.ndarray:
    """:func:`log_mel` normalised as AST: ``(logmel - mean) / (2 * std)``."""
    return ((log_mel(samples, options) - options.mean) / (2 * options.std)).astype(np.float32)


def log_mel_statistics(
    source: Sequence[Mapping[str, Any]], options: AudioOptions, count: int = 1000
) -> tuple[float, float]:
    """``(mean, std)`` of the log-mel values (:func:`log_mel`, before normalisation) of the
    first ``count`` videos of ``source`` that have sound, each from its first sample for up
    to ``options.frames`` frames of real samples (no padding): the ``input.audio.mean`` and
    ``std`` a dataset needs.

    >>> source = load_dataset(config.dataset).as_data_source("train")
    >>> mean, std = log_mel_statistics(source, AudioOptions.from_config(config.input.audio))
    """
    from vjax.errors import UserError

    values = []
    for i in range(min(len(source), count)):
        example = source[i]
        if "audio" not in example or not bool(example["has_audio"]):
            continue
        samples = window(example["audio"], 0, len(example["audio"]))
        real = max(1, 1 + (len(samples) - options.window) // options.hop)
        values.append(log_mel(samples, options)[: min(real, options.frames)])
    if not values:
        raise UserError(f"none of the first {count} videos has sound: nothing to measure")
    stacked = np.concatenate(values)
    return float(stacked.mean()), float(stacked.std())


def spec_augment(spec: np.ndarray, rng: np.random.Generator, options: AudioOptions) -> np.ndarray:
    """SpecAugment (Park et al. 2019) without time warping: ``time_masks`` runs of up to
    ``time_width`` frames and ``freq_masks`` runs of up to ``freq_width`` mel bins set to 0
    (the normalised mean), widths and positions drawn from ``rng``."""
    out = spec.copy()
    for axis, count, width in (
        (0, options.time_masks, options.time_width),
        (1, options.freq_masks, options.freq_width),
    ):
        size = out.shape[axis]
        for _ in range(count):
            w = int(rng.integers(0, min(width, size) + 1))
            lo = int(rng.integers(0, size - w + 1))
            if axis == 0:
                out[lo : lo + w] = 0.0
            else:
                out[:, lo : lo + w] = 0.0
    return out


def clip_audio(
    example: Mapping[str, Any],
    indices: Sequence[int],
    options: AudioOptions,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, bool]:
    """``(spectrogram float32 (frames, mel_bins), has_audio)`` of the clip of stored frames
    ``indices`` of ``example`` (a record with ``audio``, ``has_audio``, ``sample_rate``,
    ``fps``); SpecAugment from ``rng`` when given. No sound track: exact zeros, False."""
    from vjax.errors import UserError

    if "audio" not in example:
        raise UserError(
            "config.input.audio is set but this dataset was prepared without audio; prepare "
            "it with audio_sample_rate=16000 (vjax prepare ... --audio_sample_rate=16000) or "
            "set input.audio=None"
        )
    stored_rate = int(example["sample_rate"])
    if stored_rate != options.sample_rate:
        raise UserError(
            f"the dataset stores audio at {stored_rate} Hz but input.audio.sample_rate is "
            f"{options.sample_rate}; set input.audio.sample_rate={stored_rate}"
        )
    shape = (options.frames, options.mel_bins)
    if not bool(example["has_audio"]):
        return np.zeros(shape, np.float32), False
    frames = example["frames"] if "frames" in example else example["video"]
    samples = clip_window(
        example["audio"], stored_rate, float(example["fps"]), indices, len(frames),
        options.num_samples,
    )  # fmt: skip
    spec = normalized_log_mel(samples, options)
    if rng is not None:
        spec = spec_augment(spec, rng, options)
    return spec, True
