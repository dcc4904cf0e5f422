"""``vjax_av_motion``: each clip's motion and sound are what its label says, and the demo's
``av`` config reads it (clips with their spectrograms) through the trainer's data functions."""

import numpy as np
import pytest
from conftest import tiny_config

from vjax.data.motion import AV_CLASSES, AV_MOTIONS, SOUNDS


@pytest.fixture(scope="module")
def av(data_dir):
    """The demo's tiny ``av`` config and its prepared dataset (48 / 12 / 12 clips)."""
    from vjax.data.datasets import load_dataset

    config = tiny_config(data_dir, "av")
    return config, load_dataset(config.dataset)


def horizontal_motion(frames: np.ndarray) -> int:
    """+1 when the content moves right, -1 left: the sign of the summed best circular shift
    between consecutive frames' column profiles (the static background subtracted)."""
    profile = frames.astype(np.float64).mean(axis=(1, 3))  # (T, W)
    profile -= profile.mean(axis=0)
    shifts = np.arange(-4, 5)
    total = 0
    for a, b in zip(profile[:-1], profile[1:], strict=True):
        total += shifts[np.argmax([b @ np.roll(a, s) for s in shifts])]
    return int(np.sign(total))


def sound_pattern(samples: np.ndarray, sample_rate: int) -> str:
    """rising / falling / pulsed from the loudest frequency of each 50 ms and the loudness
    of each 25 ms (independent of the generator: a Hann-windowed DFT per stretch)."""
    x = samples.astype(np.float64) / 32767
    n = sample_rate // 20
    peaks = []
    for k in range(0, len(x) - n + 1, n):
        spectrum = np.abs(np.fft.rfft(x[k : k + n] * np.hanning(n)))
        peaks.append(np.argmax(spectrum) * sample_rate / n)
    m = sample_rate // 40
    loudness = np.sqrt([np.mean(x[k : k + m] ** 2) for k in range(0, len(x) - m + 1, m)])
    if loudness.min() < 0.4 * loudness.max():
        return "pulsed"
    ratio = np.median(peaks[-3:]) / np.median(peaks[:3])
    return "rising" if ratio > 2.5 else "falling" if ratio < 0.4 else f"unclear ({ratio:.2f})"


def test_each_clip_moves_and_sounds_as_its_label_says(av):
    config, builder = av
    assert builder.info.features["label"].names == list(AV_CLASSES)
    assert {split: info.num_examples for split, info in builder.info.splits.items()} == {
        "train": 48, "validation": 12, "test": 12,
    }  # fmt: skip
    source = builder.as_data_source("train")
    for i in range(18):
        ex = source[i]
        label = int(ex["label"])
        assert label == i % 6 and ex["frames"].shape == (8, 32, 32, 3)
        assert ex["has_audio"] and ex["sample_rate"] == 16000 and ex["audio"].dtype == np.int16
        assert len(ex["audio"]) == 8 / 8.0 * 16000  # the sound lasts exactly the 8 frames
        assert horizontal_motion(ex["frames"]) == (1 if AV_MOTIONS[label // 3] == "right" else -1)
        assert sound_pattern(ex["audio"], 16000) == SOUNDS[label % 3], i


def test_the_av_config_yields_clips_with_their_spectrograms(av):
    from vjax.data.datasets import clip_spec
    from vjax.data.loaders import data_function

    config, builder = av
    clip_shape, names = clip_spec(builder, config.input)
    assert clip_shape == (8, 32, 32, 3) and names == list(AV_CLASSES)
    batch = data_function(builder, config, "train", "train", 0, 1)(0)
    assert batch["video"].shape == (8, 8, 32, 32, 3) and batch["video"].dtype == np.uint8
    audio = config.input.audio
    assert batch["audio"].shape == (8, audio.frames, audio.mel_bins)
    assert batch["has_audio"].all() and batch["label"].shape == (8,)
    # The evaluation clip is the whole stored video (in order), its audio the whole sound.
    first = data_function(builder, config, "eval", "validation", 0, 1)(0)
    stored = builder.as_data_source("validation")[0]
    np.testing.assert_array_equal(first["video"][0], stored["frames"])
    assert first["audio"].shape == (8, audio.frames, audio.mel_bins) and first["mask"].all()
    views = data_function(builder, config, "views", "test", 0, 1)(0)
    assert views["views"]["video"].shape == (1, 8, 32, 32, 3)
    assert views["views"]["audio"].shape == (1, audio.frames, audio.mel_bins)
    # The config's mean and std are the training split's log-mel statistics, so its
    # normalised spectrograms have mean ~0 and std ~1/2 (AST's (x - mean) / (2 std)).
    from vjax.data.audio import AudioOptions, log_mel_statistics

    source = builder.as_data_source("train")
    mean, std = log_mel_statistics(source, AudioOptions.from_config(audio))
    assert abs(mean - audio.mean) < 0.05 and abs(std - audio.std) < 0.05
    plain = data_function(builder, config, "eval", "train", 0, 1)  # no SpecAugment
    spec = np.concatenate([plain(k)["audio"] for k in range(len(source) // 8)])
    assert abs(spec.mean()) < 0.05 and abs(spec.std() - 0.5) < 0.05


def test_prepare_command(av, data_dir, capsys):
    from vjax.cli import main

    sizes = ["--num_train=48", "--num_validation=12", "--num_test=12"]
    assert main(["prepare", "vjax_av_motion", f"--data_dir={data_dir}", *sizes]) == 0
    out = capsys.readouterr().out
    assert "vjax_av_motion prepared in" in out and "train: 48 examples" in out
