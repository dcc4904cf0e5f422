"""Audio through the data pipeline: real mp4 files with and without sound -> the prepared
dataset -> clips whose spectrogram covers the same seconds as their frames.

The "tone" videos (written here with PyAV: H.264 + AAC in mp4) are silent until a 1 kHz tone
starts exactly at frame ``ONSET`` and show grey level ``8 * i`` in frame ``i``, so the frame a
clip starts at is read off its pixels and where its spectrogram must turn loud follows.
"""

import fractions
import os
import subprocess
import sys
from types import SimpleNamespace

import av
import numpy as np
import pytest

from vjax.data import audio
from vjax.data.pipeline import TrainBatches
from vjax.data.transforms import (
    InputOptions,
    make_train_transform,
    make_view_iterator,
    transforms_for,
)
from vjax.errors import UserError

FPS, N, ONSET, TONE_HZ, SR = 10, 30, 12, 1000.0, 16000
HOP_MS = 10.0  # 10 spectrogram frames per video frame at FPS
AUDIO = dict(sample_rate=SR, mel_bins=32, window_ms=25.0, hop_ms=HOP_MS, frames=70)


def write_tone_video(
    path: str,
    with_audio: bool = True,
    codec: str = "aac",
    audio_delay: float = 0.0,
    channels: int = 1,
) -> str:
    """H.264 frames of grey level 8 * i; silence, then a tone from frame ONSET's time on; the
    sound track starts ``audio_delay`` seconds after the frames (the same in each channel)."""
    layout = {1: "mono", 2: "stereo"}[channels]
    rate = 44100  # a source rate other than SR: decoding resamples
    with av.open(path, "w") as container:
        video = container.add_stream("libx264", rate=fractions.Fraction(FPS))
        video.width = video.height = 32
        video.pix_fmt = "yuv420p"
        sound = container.add_stream(codec, rate=rate) if with_audio else None
        if sound is not None:
            sound.layout = layout
        for i in range(N):
            image = np.full((32, 32, 3), 8 * i, np.uint8)
            container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(video.encode(None))
        if sound is not None:
            first = round(audio_delay * rate)
            t = np.arange(first, N * rate // FPS) / rate
            wave = np.where(t >= ONSET / FPS, 0.5 * np.sin(2 * np.pi * TONE_HZ * t), 0.0)
            for k in range(0, len(wave), 1024):
                chunk = np.repeat(wave[k : k + 1024], channels)[None]  # interleaved
                frame = av.AudioFrame.from_ndarray(chunk.astype(np.float32), "flt", layout)
                frame.sample_rate, frame.pts = rate, first + k
                container.mux(sound.encode(frame))
            container.mux(sound.encode(None))
    return path


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, data_dir):
    """A video_folder with sound at SR: tone videos, silent-less (no track) videos and one
    whose sound track has an unknown codec; every split has some of each kind."""
    from vjax.data.video_builder import prepare_video_folder

    root = tmp_path_factory.mktemp("av_videos")
    for split in ("train", "validation", "test"):
        folder = root / split / "tone"
        os.makedirs(folder)
        write_tone_video(str(folder / "a.mp4"))
        write_tone_video(str(folder / "b.mp4"))
        write_tone_video(str(folder / "mute.mp4"), with_audio=False)
    mkv = open(write_tone_video(str(root / "x.mkv")), "rb").read()
    os.remove(root / "x.mkv")
    (root / "train" / "tone" / "badsound.mkv").write_bytes(mkv.replace(b"A_AAC", b"A_XYZ"))
    builder = prepare_video_folder(
        data_dir, src=str(root), fps=FPS, short_side=32, audio_sample_rate=SR, num_workers=1
    )
    return builder


def stored_frame(image: np.ndarray) -> int:
    """Which stored frame an image of a clip is (grey level / 8)."""
    return int(np.round(image.astype(np.float32).mean() / 8))


def tone_onset(spec: np.ndarray) -> int | None:
    """The first spectrogram frame whose loudest mel bin is well above silence."""
    loud = np.flatnonzero(spec.max(axis=1) > spec.min() + 2.0)
    return int(loud[0]) if loud.size else None


def expected_onset(first: int, last: int, frames: int) -> int | None:
    """Where the tone starts in the spectrogram of a clip of stored frames ``first..last``:
    its window of ``frames`` hops is centred on the clip's seconds, within the 3 s track."""
    length = (frames - 1) * HOP_MS + 25.0  # ms, the STFT window of AUDIO is 25 ms
    centre = (first + last + 1) / 2 * 1000 / FPS
    start = max(0.0, min(centre - length / 2, N * 1000 / FPS - length))
    at = round((ONSET * 1000 / FPS - start) / HOP_MS)
    return max(at, 0) if at < frames else None


def check_aligned(clip: np.ndarray, spec: np.ndarray) -> int:
    start = stored_frame(clip[0])
    want = expected_onset(start, stored_frame(clip[-1]), spec.shape[0])
    got = tone_onset(spec)
    if want is None:
        assert got is None or got >= spec.shape[0] - 3, (start, got)
    else:  # AAC spreads an onset over a few ms: within 3 spectrogram frames (30 ms)
        assert got is not None and abs(got - want) <= 3, (start, want, got)
    return start


def test_preparation_keeps_and_marks_videos_with_and_without_sound(prepared):
    from vjax.data.video_builder import format_report, read_report

    report = read_report(prepared)
    assert report["train"]["kept"] == 4 and report["train"]["skipped"] == 0
    assert report["train"]["audio"]["with_audio"] == 2
    assert report["train"]["audio"]["without_audio"] == 2
    (error,) = report["train"]["audio"]["audio_errors"]
    assert error["path"].endswith("badsound.mkv") and "Decoder" in error["detail"]
    assert report["test"]["audio"] == {"with_audio": 2, "without_audio": 1, "audio_errors": []}
    assert "with sound 2, without 2 (1 undecodable)" in format_report(report)
    source = prepared.as_data_source("train")
    by_name = {os.path.basename(str(source[i]["path"].decode())): source[i] for i in range(4)}
    assert not by_name["mute.mp4"]["has_audio"] and by_name["mute.mp4"]["audio"].size == 0
    assert not by_name["badsound.mkv"]["has_audio"]
    stored = by_name["a.mp4"]
    assert stored["has_audio"] and stored["sample_rate"] == SR and stored["audio"].dtype == np.int16
    assert abs(len(stored["audio"]) - N / FPS * SR) <= 1  # exactly the frames' time span
    onset = np.flatnonzero(np.abs(stored["audio"]) > 0.05 * audio.INT16_SCALE)[0]
    assert abs(onset - ONSET / FPS * SR) < 0.003 * SR  # the tone starts at frame ONSET's time
    decoded = audio.decode_audio(str(stored["path"].decode()), SR, 0.0, N / FPS)
    np.testing.assert_array_equal(stored["audio"], audio.to_int16(decoded))
    assert audio.decode_audio(str(by_name["mute.mp4"]["path"].decode()), SR) is None


def test_clip_audio_is_aligned_with_the_frames_in_every_sampling_mode(prepared):
    source = prepared.as_data_source("train")
    tone = next(source[i] for i in range(len(source)) if source[i]["has_audio"])
    starts = set()
    for mode in [dict(), dict(sampling="tsn"), dict(pad_mode="pad")]:
        options = InputOptions.from_config(
            dict(num_frames=4, frame_stride=2, crop_size=32, flip=False, audio=AUDIO, **mode)
        )
        transform = make_train_transform(options, ["tone"])
        for seed in range(6):
            inputs, _ = transform(tone, np.random.default_rng([seed, 0, 0]))
            assert inputs["audio"].shape == (70, 32) and inputs["has_audio"]
            starts.add(check_aligned(inputs["video"], inputs["audio"]))
    assert len(starts) >= 4  # random starts before, at and after the onset
    tsn = InputOptions.from_config(
        dict(num_frames=4, crop_size=32, sampling="tsn", audio={**AUDIO, "frames": 300})
    )
    view = next(iter(make_view_iterator(tsn)(tone)))  # segment middles 3, 10, 18, 25
    assert check_aligned(view["video"], view["audio"]) == 3
    views = InputOptions.from_config(
        dict(num_frames=4, frame_stride=2, crop_size=32, test_num_clips=3, test_num_crops=3,
             audio=AUDIO)
    )  # fmt: skip
    seen = [check_aligned(v["video"], v["audio"]) for v in make_view_iterator(views)(tone)]
    assert seen == [0] * 3 + [11] * 3 + [23] * 3  # uniform clips x 3 crops sharing the audio


def test_a_spectrogram_longer_than_its_clip_hears_the_sound_around_it():
    """MBT's 8 s of audio beside a 2.5 s clip (configs/mbt.py): all 800 frames are the track's
    sound, centred on the clip and moved inside the track at its ends; a track shorter than
    the window starts at 0 and ends in silence."""
    options = audio.AudioOptions(sample_rate=SR, mel_bins=32, frames=800)  # 10 ms hops
    assert options.num_samples == 128240  # 799 hops of 160 samples + a 400-sample window
    track = audio.to_int16(0.3 * np.random.default_rng(0).standard_normal(10 * SR))
    record = dict(audio=track, has_audio=True, sample_rate=SR, fps=25.0, frames=[0] * 250)

    def heard(start: int, samples: np.ndarray = track) -> np.ndarray:
        return audio.normalized_log_mel(audio.window(samples, start, 128240), options)

    for frames, start in [
        (np.arange(93, 156, 2), 15560),  # the clip's 3.72-6.24 s: centre 4.98 s = 79680 - 64120
        (np.arange(0, 63, 2), 0),  # centre 1.26 s: the window would start before the track
        (np.arange(187, 250, 2), 31760),  # centre 8.74 s: the track's last 128240 samples
    ]:
        spec, has_audio = audio.clip_audio(record, frames, options)
        assert has_audio
        np.testing.assert_array_equal(spec, heard(start))
    silence = (np.log(audio.LOG_EPS) - options.mean) / (2 * options.std)
    assert not np.isclose(spec, silence).all(axis=1).any()  # no frame is padding
    short = {**record, "audio": track[:SR], "frames": [0] * 25}  # 1 s of sound
    spec, _ = audio.clip_audio(short, np.arange(0, 25, 2), options)
    np.testing.assert_array_equal(spec, heard(0, track[:SR]))
    padded = np.isclose(spec, silence).all(axis=1)
    assert not padded[:98].any() and padded[100:].all()  # sound for 1 s, then silence


def test_a_sound_track_that_starts_late_keeps_its_time(tmp_path):
    path = write_tone_video(str(tmp_path / "late.mp4"), audio_delay=0.5)
    samples = audio.decode_audio(path, SR, 0.0, N / FPS)
    assert len(samples) == N / FPS * SR and not samples[: SR // 2].any()  # silence before
    onset = np.flatnonzero(np.abs(samples) > 0.05)[0]
    assert abs(onset - ONSET / FPS * SR) < 0.003 * SR  # still at frame ONSET's time
    later = audio.decode_audio(path, SR, 1.0, 2.0)  # a segment: sample 0 at 1 s
    assert len(later) == SR and abs(np.flatnonzero(np.abs(later) > 0.05)[0] - 0.2 * SR) < 50


def test_a_stereo_track_decodes_as_loud_as_the_same_sound_in_mono(tmp_path):
    """The channels are averaged: swresample's own float downmix summed them at 1/sqrt(2)
    each, so the stereo copy of a 0.5 tone decoded at 0.71 (and a loud one clipped)."""
    peaks = {}
    for channels in (1, 2):
        path = write_tone_video(str(tmp_path / f"{channels}.mp4"), channels=channels)
        samples = audio.decode_audio(path, SR, 0.0, N / FPS)
        peaks[channels] = np.abs(samples[round((ONSET / FPS + 0.2) * SR) :]).max()
    np.testing.assert_allclose(peaks[1], 0.5, atol=0.02)
    np.testing.assert_allclose(peaks[2], peaks[1], rtol=0.05)  # AAC codes each differently


def test_spectrogram_against_a_dft_matrix_and_the_htk_mel_formula():
    options = audio.AudioOptions(**AUDIO)
    rng = np.random.default_rng(0)
    samples = (0.3 * rng.standard_normal(8000)).astype(np.float32)
    got = audio.log_mel(samples, options)
    # Independent: frames every hop from 0 (zero-padded to `frames`), a periodic Hann window,
    # an explicit DFT matrix, power, TF-style triangles on the HTK mel scale from 20 Hz.
    win, hop, n_fft = 400, 160, 512
    padded = np.zeros((options.frames - 1) * hop + win)
    padded[: len(samples)] = samples[: len(padded)]
    frames = np.stack([padded[j * hop : j * hop + win] for j in range(options.frames)])
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)
    k, n = np.arange(n_fft // 2 + 1)[:, None], np.arange(win)[None, :]
    dft = np.exp(-2j * np.pi * k * n / n_fft)
    power = np.abs((frames * hann) @ dft.T) ** 2

    def hz_to_mel(f):
        return 1127.0 * np.log(1.0 + f / 700.0)

    edges = np.linspace(hz_to_mel(20.0), hz_to_mel(SR / 2), 32 + 2)
    bin_mel = hz_to_mel(np.linspace(0, SR / 2, n_fft // 2 + 1))
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    up = (bin_mel[:, None] - lower) / (centre - lower)
    down = (upper - bin_mel[:, None]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(up, down))
    weights[0] = 0.0  # TF leaves out the DC bin
    want = np.log(power @ weights + audio.LOG_EPS)
    np.testing.assert_allclose(got, want, atol=2e-3)
    normalized = audio.normalized_log_mel(samples, options)
    np.testing.assert_allclose(normalized, (want - options.mean) / (2 * options.std), atol=1e-3)


@pytest.mark.parametrize("rate, fft_size, mel_bins", [(16000, 512, 128), (8000, 256, 40),
                                                     (44100, 2048, 64)])  # fmt: skip
def test_the_mel_filterbank_is_tensorflows(rate, fft_size, mel_bins):
    tf = pytest.importorskip("tensorflow")
    want = tf.signal.linear_to_mel_weight_matrix(
        num_mel_bins=mel_bins, num_spectrogram_bins=fft_size // 2 + 1, sample_rate=rate,
        lower_edge_hertz=20.0, upper_edge_hertz=rate / 2,
    ).numpy()  # fmt: skip
    got = audio.mel_matrix(rate, fft_size, mel_bins)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=3e-5)


def test_a_spectrogram_is_computed_without_tensorflow():
    """Each loader process computes spectrograms: importing TensorFlow for the filterbank cost
    it 5 s, and the GPU image has no TensorFlow."""
    script = (
        "import sys, numpy as np\n"
        "from vjax.data import audio\n"
        f"spec = audio.log_mel(np.zeros(8000, np.float32), audio.AudioOptions(**{AUDIO!r}))\n"
        "assert np.isfinite(spec).all()\n"
        "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]


def test_train_batches_with_audio_resume_exactly_and_mix_like_the_video(prepared):
    source = prepared.as_data_source("train")
    masks = dict(time_masks=2, time_width=10, freq_masks=2, freq_width=6)
    base = dict(num_frames=4, frame_stride=2, crop_size=32, audio={**AUDIO, "spec_augment": masks})

    def batches(**extra):
        from vjax.data.transforms import make_batch_transform

        options = InputOptions.from_config({**base, **extra})
        return TrainBatches(
            source, 4, seed=1, transform=make_train_transform(options, ["tone"]),
            batch_transform=make_batch_transform(options, 1),
        )  # fmt: skip

    mixed = batches(mixup_alpha=0.8)
    first = [mixed(step) for step in range(3)]
    fresh = batches(mixup_alpha=0.8)(2)  # a resumed run: step 2 without steps 0 and 1
    for key in ("video", "audio", "has_audio", "label_probs"):
        np.testing.assert_array_equal(first[2][key], fresh[key])
    plain = batches()(2)  # the same clips, unmixed
    assert plain["audio"].dtype == np.float32 and plain["has_audio"].dtype == bool
    assert not plain["audio"][~plain["has_audio"]].any()  # no sound: exact zeros
    voiced = plain["audio"][plain["has_audio"]]
    assert (voiced == 0).all(axis=1).any() and (voiced == 0).all(axis=2).any()  # masks drawn
    lam = _mix_weight(plain["video"], fresh["video"])  # read off the mixed pixels
    assert 0.1 < lam < 0.9, lam  # a step where both partners count
    want = lam * plain["audio"] + (1 - lam) * plain["audio"][::-1]
    assert np.abs(fresh["audio"] - plain["audio"]).max() > 0.1  # the audio did mix
    np.testing.assert_allclose(fresh["audio"], want, atol=0.01 * np.abs(want).max())
    np.testing.assert_array_equal(fresh["has_audio"], plain["has_audio"] | plain["has_audio"][::-1])


def _mix_weight(video: np.ndarray, mixed: np.ndarray) -> float:
    """The mixup weight lam with ``mixed ~ lam * video + (1 - lam) * video[::-1]`` (least
    squares over the pixels that differ between the partners)."""
    a, b = video.astype(np.float64), video[::-1].astype(np.float64)
    d = (a - b).ravel()
    return float(((mixed.astype(np.float64) - b).ravel() @ d) / (d @ d))


def test_audio_config_errors_name_the_fix():
    options = audio.AudioOptions(**AUDIO)
    record = {"frames": [b""] * 4, "fps": 10.0}
    with pytest.raises(UserError, match="prepared without audio.*audio_sample_rate"):
        audio.clip_audio(record, [0, 1], options)
    record.update(audio=np.zeros(100, np.int16), has_audio=True, sample_rate=8000)
    with pytest.raises(UserError, match="input.audio.sample_rate=8000"):
        audio.clip_audio(record, [0, 1], options)
    with pytest.raises(Exception, match="input.audio.mels"):
        InputOptions.from_config({"audio": {"mels": 64}})
    with pytest.raises(Exception, match="spec_augment.time_mask"):
        audio.AudioOptions.from_config({"spec_augment": {"time_mask": 2}})
    fixed_clips = SimpleNamespace(name="vjax_motion", info=SimpleNamespace(features={"video": 0}))
    with pytest.raises(UserError, match="vjax_motion stores fixed clips without sound"):
        transforms_for(fixed_clips, {"audio": AUDIO})
    # A window past the stored samples is silence; one before sample 0 too.
    window = audio.window(np.ones(4, np.float32), -2, 8)
    np.testing.assert_array_equal(window, [0, 0, 1, 1, 1, 1, 0, 0])


def test_vggsound_kinetics_sounds_and_audioset_prepare_with_sound(tmp_path):
    from vjax.data.video_builder import prepare_videos, read_report

    vgg = tmp_path / "vggsound"
    (vgg / "clips").mkdir(parents=True)
    (vgg / "vggsound.csv").write_text(
        'aaaaaaaaaaa,0,"dog barking, whining",train\n'
        "bbbbbbbbbbb,1,playing piano,train\n"
        "ccccccccccc,20,playing piano,test\n"
        'ddddddddddd,0,"dog barking, whining",test\n'
    )
    write_tone_video(str(vgg / "clips" / "aaaaaaaaaaa_000000.mp4"))
    write_tone_video(str(vgg / "clips" / "bbbbbbbbbbb.mp4"))  # a whole video: cut from 1 s
    write_tone_video(str(vgg / "clips" / "ddddddddddd_000000_000010.mp4"), with_audio=False)
    data = str(tmp_path / "tfds")
    builder = prepare_videos("vggsound", data, src=str(vgg), fps=FPS, short_side=16,
                             num_workers=1)  # fmt: skip
    assert builder.name == "vjax_vggsound"
    assert builder.info.features["label"].names == ["dog barking, whining", "playing piano"]
    report = read_report(builder)
    assert report["train"]["audio"]["with_audio"] == 2
    assert report["test"]["kept"] == 1 and report["test"]["skipped_by_reason"] == {"missing": 1}
    assert report["test"]["audio"]["without_audio"] == 1
    train = builder.as_data_source("train")
    cut = next(train[i] for i in range(2) if train[i]["id"] == b"bbbbbbbbbbb_000001")
    assert len(cut["frames"]) == (N - FPS) and cut["has_audio"]
    onset = np.flatnonzero(np.abs(cut["audio"]) > 0.05 * audio.INT16_SCALE)[0]
    assert abs(onset - (ONSET / FPS - 1.0) * SR) < 0.003 * SR  # the segment's sound from 1 s

    kinetics = tmp_path / "k400"
    kinetics.mkdir()
    header = "label,youtube_id,time_start,time_end,split\n"
    (kinetics / "train.csv").write_text(
        header + "playing piano,eeeeeeeeeee,0,3,train\nabseiling,fffffffffff,0,3,train\n"
    )
    (kinetics / "validate.csv").write_text(header + "tickling,ggggggggggg,0,3,val\n")
    for video_id in ("eeeeeeeeeee", "fffffffffff", "ggggggggggg"):
        write_tone_video(str(kinetics / f"{video_id}_000000_000003.mp4"))
    sounds = prepare_videos("kinetics_sounds", data, src=str(kinetics), fps=FPS,
                            short_side=16, num_workers=1)  # fmt: skip
    assert sounds.info.features["label"].names == ["playing piano", "tickling"]
    assert {s: i.num_examples for s, i in sounds.info.splits.items()} == {
        "train": 1, "validation": 1,
    }  # fmt: skip
    assert sounds.as_data_source("train")[0]["has_audio"]

    audioset = tmp_path / "audioset"
    audioset.mkdir()
    (audioset / "class_labels_indices.csv").write_text(
        'index,mid,display_name\n1,/m/b,"Dog, bark"\n0,/m/a,Speech\n'
    )
    comment = "# Segments csv created Sun Mar  5 10:54:31 2017\n# YTID, start_seconds, ...\n"
    (audioset / "balanced_train_segments.csv").write_text(
        comment + 'hhhhhhhhhhh, 0.000, 3.000, "/m/a,/m/b"\niiiiiiiiiii, 0.000, 3.000, "/m/b"\n'
    )
    (audioset / "eval_segments.csv").write_text(comment + 'jjjjjjjjjjj, 0.000, 3.000, "/m/a"\n')
    write_tone_video(str(audioset / "hhhhhhhhhhh_000000.mp4"))
    write_tone_video(str(audioset / "iiiiiiiiiii.mp4"))
    write_tone_video(str(audioset / "jjjjjjjjjjj_000000_000003.mp4"), with_audio=False)
    tagged = prepare_videos("audioset", data, src=str(audioset), fps=FPS, short_side=16,
                            num_workers=1)  # fmt: skip
    assert tagged.info.features["label"].feature.names == ["Speech", "Dog, bark"]
    train = tagged.as_data_source("train")
    labels = {train[i]["id"].decode(): sorted(train[i]["label"]) for i in range(2)}
    assert labels == {"hhhhhhhhhhh_000000": [0, 1], "iiiiiiiiiii_000000": [1]}
    assert all(train[i]["has_audio"] for i in range(2))
    assert not tagged.as_data_source("test")[0]["has_audio"]


# (vjax/data/audio.py)


# kills ad04
def test_a_looped_clip_hears_the_time_it_continues_to():
    """A clip that loops (frames 6, 8, 0, 2 of 10) covers 0.6-1.3 s of continued time: its
    window is centred on 0.95 s, then moved inside the track."""
    from vjax.data import audio

    samples = np.arange(100, dtype=np.float32)  # 1 s at 100 Hz, frames at 10 fps
    got = audio.clip_window(samples, 100, 10.0, [6, 8, 0, 2], 10, 10)
    np.testing.assert_array_equal(got, samples[90:100])


# kills ad11, ad12
def test_spec_augment_masks_whole_rows_or_columns_up_to_the_width():
    """Time masks blank whole time frames, freq masks whole mel bins, widths 0..width inclusive."""
    from vjax.data import audio

    spec = np.ones((20, 8), np.float32)
    for axis, opts in (
        (0, dict(time_masks=1, time_width=3)),
        (1, dict(freq_masks=1, freq_width=3)),
    ):
        options = audio.AudioOptions(frames=20, mel_bins=8, **opts)
        widths = set()
        for s in range(200):
            out = audio.spec_augment(spec, np.random.default_rng(s), options)
            zero = out == 0
            lines = zero.all(axis=1 - axis)  # whole frames (axis 0) or whole bins (axis 1)
            assert (zero == (lines[:, None] if axis == 0 else lines[None, :])).all()
            widths.add(int(lines.sum()))
        assert widths == {0, 1, 2, 3}


# kills ad13
def test_log_mel_statistics_leave_out_the_padding_of_a_short_track():
    """A track shorter than the window: statistics of its real frames only, no silence."""
    import dataclasses

    from vjax.data import audio

    options = audio.AudioOptions(mel_bins=16, frames=100)
    noise = 0.3 * np.random.default_rng(0).standard_normal(8000)  # 0.5 s: 48 real frames
    record = {"audio": audio.to_int16(noise), "has_audio": True}
    mean, std = audio.log_mel_statistics([record], options)
    real = 1 + (8000 - 400) // 160
    alone = audio.log_mel(audio.window(record["audio"], 0, 8000),
                          dataclasses.replace(options, frames=real))  # fmt: skip
    assert mean == pytest.approx(alone.mean(), rel=1e-5) and std == pytest.approx(alone.std(), 1e-5)
