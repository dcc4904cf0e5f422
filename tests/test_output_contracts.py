"""vjax.explain's overlay, ``vjax predict``, ``vjax compare`` and the eval report against hand
computations (found by mutation testing, audit 20): the heat map's time steps over non-square
frames and its alpha, the views --clips and --crops name on the command line, a multi-label
timeline's sigmoids, a window's own seconds of sound, a sub-frame window, a file whose sound
track cannot be decoded, compare's flags and plot range, and the numbers an evaluation writes."""

import json
import os

import numpy as np
import pytest
from test_compare_contracts import _eval
from test_predict_contracts import (
    NAMES,
    _scores,
    _video,
    by_hand_logits,
    random_vivit,
    softmax,
    video_and_sound_streams,
    write_model,
)

# ============================================================================ vjax/explain.py


def _heat(values: np.ndarray) -> np.ndarray:
    """The inferno colour (0-255 RGB) of each value scaled to the largest."""
    from matplotlib import colormaps

    return colormaps["inferno"](values / values.max())[..., :3] * 255.0


# kills ex28
def test_overlay_of_time_steps_covers_non_square_frames():
    """A per-time-step relevance ``(t,)`` colours every pixel of its frames, on 16x24 frames."""
    from vjax.explain import overlay

    frames = np.random.default_rng(0).integers(0, 256, (4, 16, 24, 3), np.uint8)
    relevance = np.array([0.25, 1.0])  # two tubelets of 2 frames along time
    shown = overlay(frames, relevance, (2, 8, 8))
    heat = _heat(relevance)[[0, 0, 1, 1]][:, None, None, :]  # frame -> its time step's colour
    expected = np.clip(0.5 * frames + 0.5 * heat, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(shown, expected)


# kills ex30, ex31
def test_overlay_weighs_the_heat_map_by_alpha_per_tubelet():
    """``alpha=0.25``: a quarter heat map, three quarters frame; pixel (t, y, x) takes the colour
    of tubelet (t // 2, y // 8, x // 4) for a 2x8x4 tubelet."""
    from vjax.explain import overlay

    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (4, 16, 16, 3), np.uint8)
    relevance = rng.uniform(size=(2, 2, 4))
    shown = overlay(frames, relevance, (2, 8, 4), alpha=0.25)
    t, y, x = np.meshgrid(np.arange(4), np.arange(16), np.arange(16), indexing="ij")
    heat = _heat(relevance)[t // 2, y // 8, x // 4]
    expected = np.clip(0.75 * frames + 0.25 * heat, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(shown, expected)


# ============================================================================ vjax/predict.py


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory):
    """``(folder, model, variables, video)``: a random tiny ViViT saved as a model folder, and
    a 3 s, 10 fps, 32x40 mp4 of random frames (decoded at 16x20)."""
    root = tmp_path_factory.mktemp("mutants_predict")
    model, variables = random_vivit(30)
    folder = write_model(str(root / "model"), variables)
    frames = np.random.default_rng(31).integers(0, 256, (30, 32, 40, 3), np.uint8)
    return folder, model, variables, _video(root / "a.mp4", frames)


# kills pr07, pr08, pr33, pr34
def test_cli_clips_and_crops_are_the_views_whose_logits_are_averaged(clip_file, tmp_path):
    """``vjax predict --clips=2 --crops=3``: the softmax of the mean logits of 6 views, cut
    here by hand: clips at frames 0-3 and 26-29 of 30, squares at x = 0, 2, 4 of 16x20."""
    from vjax.cli import main
    from vjax.data.video_io import decode_video

    folder, model, variables, video = clip_file
    out = str(tmp_path / "out.json")
    assert main(["predict", f"--model={folder}", video, "--clips=2", "--crops=3",
                 f"--json={out}"]) == 0  # fmt: skip
    decoded = decode_video(video, short_side=16).frames
    assert decoded.shape == (30, 16, 20, 3)
    views = [decoded[t : t + 4, :, x : x + 16] for t in (0, 26) for x in (0, 2, 4)]
    expected = softmax(np.mean([by_hand_logits(model, variables, v) for v in views], 0))
    centre = softmax(by_hand_logits(model, variables, decoded[13:17, :, 2:18]))
    assert np.abs(expected - centre).max() > 1e-3  # the views matter
    got = _scores(json.load(open(out))["files"][video]["top"])
    np.testing.assert_allclose([got[n] for n in NAMES], expected, atol=1e-5)


# kills pr22, pr23
def test_a_multi_label_timeline_scores_windows_and_the_file_with_sigmoids(tmp_path):
    """``--window`` on a multi-label model: each window's scores are the sigmoid of its centre
    clip's logits and the file's the sigmoid of the windows' logits averaged by length
    (10, 10, 5 frames of 2.5 s at 10 fps), not softmaxes."""
    from vjax.data.video_io import decode_video
    from vjax.predict import predict_files

    model, variables = random_vivit(32)
    folder = write_model(str(tmp_path / "model"), variables, multi_label=True)
    frames = np.random.default_rng(33).integers(0, 256, (25, 32, 40, 3), np.uint8)
    video = _video(tmp_path / "b.mp4", frames)
    entry = predict_files(folder, [video], top_k=5, window=1.0)["files"][video]
    decoded = decode_video(video, short_side=16).frames
    logits = []
    for a, b in ((0, 10), (10, 20), (20, 25)):
        start = a + (b - a - 4) // 2
        logits.append(by_hand_logits(model, variables, decoded[start : start + 4, :, 2:18]))

    def sigmoid(x):
        return 1.0 / (1.0 + np.exp(-x))

    for window, row in zip(entry["windows"], logits, strict=True):
        got = _scores(window["top"])
        np.testing.assert_allclose([got[n] for n in NAMES], sigmoid(row), atol=1e-5)
    overall = sigmoid((10 * logits[0] + 10 * logits[1] + 5 * logits[2]) / 25)
    assert abs(overall.sum() - 1) > 0.05  # not a softmax by accident
    got = _scores(entry["top"])
    np.testing.assert_allclose([got[n] for n in NAMES], overall, atol=1e-5)


# kills pr29
def test_a_window_shorter_than_a_frame_is_one_frame_per_window(clip_file, tmp_path):
    """``--window=0.04`` at 10 fps: one window per frame (not one window of the whole file);
    window 2's view is frame 2 looped to 4 frames."""
    from vjax.data.video_io import decode_video
    from vjax.predict import predict_files

    _, model, variables, _ = clip_file
    folder = clip_file[0]
    frames = np.random.default_rng(34).integers(0, 256, (5, 32, 40, 3), np.uint8)
    video = _video(tmp_path / "short.mp4", frames)
    entry = predict_files(folder, [video], top_k=5, window=0.04)["files"][video]
    assert [(w["start"], w["end"]) for w in entry["windows"]] == [
        (i / 10, (i + 1) / 10) for i in range(5)
    ]
    frame = decode_video(video, short_side=16).frames[2, :, 2:18]
    expected = softmax(by_hand_logits(model, variables, np.stack([frame] * 4)))
    got = _scores(entry["windows"][2]["top"])
    np.testing.assert_allclose([got[n] for n in NAMES], expected, atol=1e-5)


# A tiny MBT hearing 0.8 s of sound per clip (32 spectrogram frames, 25 ms hops): longer than
# its 0.4 s clip, so a clip near a window's end needs sound from past the window.
LONG_AUDIO = dict(sample_rate=16000, mel_bins=16, window_ms=25.0, hop_ms=25.0, frames=32,
                  mean=-4.0, std=4.0)  # fmt: skip


def _hearing_model(folder: str, audio: dict, seed: int):
    """``(model, variables)`` of test_predict's tiny MBT with every parameter random, saved in
    ``folder`` with ``config.input.audio = audio``."""
    import flax.linen as nn
    import jax
    import ml_collections
    from test_predict import MBT
    from test_predict_contracts import CLIP, MEAN, STD

    from vjax.convert import pretrained_config, save_converted
    from vjax.models import build_model

    model = build_model(MBT, num_classes=5)
    inputs = {"video": np.zeros((1, *CLIP), np.float32),
              "audio": np.zeros((1, audio["frames"], audio["mel_bins"]), np.float32)}  # fmt: skip
    shapes = nn.meta.unbox(jax.eval_shape(lambda: model.init(jax.random.key(0), inputs,
                                                             train=False)))  # fmt: skip
    rng = np.random.default_rng(seed)  # weights drawn on the host: no init to compile
    variables = jax.tree.map(lambda s: 0.3 * rng.standard_normal(s.shape).astype(s.dtype), shapes)
    config = pretrained_config(MBT, CLIP, NAMES, mean=MEAN, std=STD, source="test")
    config.input.audio = ml_collections.ConfigDict(audio)
    save_converted(folder, config, variables)
    return model, variables


# kills pr28, pr42
def test_a_window_hears_its_own_seconds_and_silence_after_them(tmp_path, monkeypatch):
    """``--window=0.7`` on test_audio_data's tone file (10 fps, tone from 1.2 s): window 1 is
    0.7-1.4 s; its centre clip (file frames 8-11) needs 0.8 s of sound, which is the window's
    0.7 s (ending in the tone) then 0.1 s of silence, not the file's sound past 1.4 s nor a
    window cut a frame short (0.7-1.3 s). The spectrogram the model is given is compared with
    the one of those samples (stored as int16, as predict stores a window's sound)."""
    from test_audio_data import write_tone_video

    from vjax import predict
    from vjax.data.audio import AudioOptions, decode_audio, normalized_log_mel

    _hearing_model(str(tmp_path / "model"), LONG_AUDIO, seed=35)
    path = write_tone_video(str(tmp_path / "tone.mp4"))
    heard = []

    def spy(config, module, variables):  # the model's input, view by view; uniform scores
        return lambda batch: heard.append(np.asarray(batch["audio"])) or np.zeros((1, 5))

    monkeypatch.setattr(predict, "make_apply", spy)
    result = predict.predict_files(str(tmp_path / "model"), [path], window=0.7, chunk_size=1)
    assert [w["start"] for w in result["files"][path]["windows"]][:2] == [0.0, 0.7]
    sound = decode_audio(path, 16000)
    need = 12800  # (32 - 1) * 400 + 400 samples: 0.8 s

    def spectrogram(samples):
        samples = np.round(np.clip(samples, -1, 1) * 32767) / 32767  # int16, as stored
        samples = np.concatenate([samples, np.zeros(need - len(samples))]).astype(np.float32)
        return normalized_log_mel(samples, AudioOptions(**LONG_AUDIO))

    expected = spectrogram(sound[11200:22400])  # 0.7-1.4 s, then silence
    for other in (sound[11200 : 11200 + need], sound[11200:20800]):  # past 1.4 s; to 1.3 s
        assert np.abs(expected - spectrogram(other)).max() > 1.0
    np.testing.assert_allclose(heard[1][0], expected, atol=1e-4)


def _write_corrupt_sound(path: str) -> str:
    """An mp4 of 10 good frames whose AAC track's packets are random bytes (it exists, and
    fails to decode)."""
    import av

    rng = np.random.default_rng(36)
    with av.open(path, "w") as container:
        video, sound = video_and_sound_streams(container)
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 8 * i, np.uint8), "rgb24")
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        wave = (0.5 * np.sin(np.arange(16000) / 5)).astype(np.float32)
        packets = []
        for k in range(0, len(wave), 1024):
            frame = av.AudioFrame.from_ndarray(wave[None, k : k + 1024], format="flt",
                                               layout="mono")  # fmt: skip
            frame.sample_rate, frame.pts = 16000, k
            packets += sound.encode(frame)
        for packet in packets + list(sound.encode(None)):
            garbage = av.Packet(rng.integers(0, 256, packet.size, np.uint8).tobytes())
            garbage.pts, garbage.dts, garbage.time_base = packet.pts, packet.dts, packet.time_base
            garbage.stream = sound
            container.mux(garbage)
    return path


# kills pr16
def test_a_file_whose_sound_track_cannot_be_decoded_is_skipped_and_named(tmp_path):
    """An audio-visual model on [corrupt sound, good file]: the first is listed as skipped
    with the reason, the second still predicted (no exception that loses both)."""
    from test_audio_data import write_tone_video
    from test_predict import MBT_AUDIO

    from vjax.predict import predict_files

    _hearing_model(str(tmp_path / "model"), MBT_AUDIO, seed=37)
    bad = _write_corrupt_sound(str(tmp_path / "bad.mp4"))
    good = write_tone_video(str(tmp_path / "good.mp4"))
    result = predict_files(str(tmp_path / "model"), [bad, good], top_k=2)
    assert "audio track cannot be decoded" in result["skipped"][bad]
    assert list(result["files"]) == [good] and len(result["files"][good]["top"]) == 2


# ================================================================== vjax/evaluate/compare.py


# kills cp10
def test_compare_shows_only_the_metrics_both_runs_have():
    """A baseline evaluated before a metric existed (no ``ece``) is compared on the rest, not a
    KeyError."""
    from vjax.evaluate.compare import format_compare

    text = format_compare(_eval(dict(x=0.5), ece=0.25), _eval(dict(x=0.75)), ["a", "b"])
    assert not any(line.startswith("ece") for line in text.splitlines())
    assert f"{'loss':<24}{1.0:>10.4f}{1.0:>10.4f}{0.0:>+10.4f}" in text


# kills cp16
def test_compare_plot_range_holds_the_largest_loss(tmp_path, monkeypatch):
    """The bars' range is +-1.05 x the largest change either way: a loss of 0.5 against a gain
    of 0.1 gets (-0.525, 0.525), so its bar is not cut off."""
    from vjax.evaluate import plots
    from vjax.evaluate.compare import plot_compare

    seen = []
    monkeypatch.setattr(plots, "plot_class_bars", lambda *args: seen.append(args) or args[3])
    plot_compare(_eval(dict(x=0.75, y=0.5)), _eval(dict(x=0.25, y=0.6)), str(tmp_path / "c.png"))
    ((deltas, _, _, _, limits),) = seen
    assert deltas == pytest.approx({"x": -0.5, "y": 0.1})
    assert limits == pytest.approx((-0.525, 0.525))


# kills cp20, cp21, cp22
def test_compare_command_passes_its_split_top_and_out(tmp_path, capsys):
    """``vjax compare A B --split=val --top=1 --out=FILE``: the val results (not test), one
    class per direction, and the plot written to FILE (not beside B)."""
    from vjax.cli import main

    for run, per_class in (("a", dict(x=0.5, y=0.5, z=0.5)), ("b", dict(x=0.9, y=0.7, z=0.2))):
        os.makedirs(tmp_path / run)
        for split, shift in (("val", 0.0), ("test", 0.05)):
            values = {n: v + shift for n, v in per_class.items()} if run == "b" else per_class
            result = {**_eval(values), "split": split}
            (tmp_path / run / f"eval_{split}_step1.json").write_text(json.dumps(result))
    out = tmp_path / "plots" / "cmp.png"
    out.parent.mkdir()
    argv = ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--split=val", "--top=1",
            f"--out={out}"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "eval_val_step1.json" in printed and "  x     +0.400" in printed
    assert "  y     +0.200" not in printed  # --top=1: the second gain is left out
    assert "  z     -0.300" in printed
    assert out.is_file() and not (tmp_path / "b" / "compare_val.png").exists()
    assert f"wrote {out}" in printed


# =================================================================== vjax/evaluate/report.py


# kills rp08, rp09, rp10, rp11
def test_scalars_hold_every_overall_metric_of_a_result():
    """TensorBoard and ``vjax compare`` get each overall metric a result has (mean class
    accuracy, frame mAP and ECE included); a loss-only (reconstruction) result its loss."""
    from vjax.evaluate.report import scalars

    values = {"loss": 1.5, "top1": 0.5, "top5": 0.875, "mean_class_accuracy": 0.375,
              "mAP": 0.25, "frame_mAP": 0.125, "ece": 0.0625}  # fmt: skip
    result = {"split": "test", "num_examples": 8, "class_names": ["a", "b"], **values}
    assert scalars(result) == values
    assert scalars({"split": "validation", "num_examples": 3, "loss": 0.75}) == {"loss": 0.75}


# kills rp14
def test_eval_scalars_are_logged_at_the_results_step(tmp_path):
    """``write_eval`` of a step-7 result logs its scalars at step 7 (metrics.jsonl and
    TensorBoard share the step), so evaluations of successive checkpoints form a curve."""
    from test_report import _hand_result

    from vjax.evaluate.report import write_eval
    from vjax.metric_writers import read_metrics

    write_eval({**_hand_result(), "step": 7}, str(tmp_path), plots=False)
    (record,) = read_metrics(str(tmp_path))
    assert (record["split"], record["step"], record["top1"]) == ("eval_test", 7, 0.5)


# kills rp04
def test_pr_curves_per_class_are_keyed_by_their_class():
    """Each class's precision-recall curve is stored under that class's name."""
    from vjax.evaluate.report import named_result

    curves = [{"precision": [1.0, p], "recall": [0.0, 1.0]} for p in (0.25, 0.5, 0.75)]
    result = named_result({"num_videos": 4, "pr_curves": {"per_class": curves}}, list("abc"), "x")
    assert result["pr_curves"]["per_class"] == dict(zip("abc", curves, strict=True))


# kills rp15
def test_average_rows_support_is_the_number_of_videos():
    """The macro and weighted rows' support is the sum of the classes' (1 + 2 + 3 = 6)."""
    from test_report import _hand_result

    from vjax.evaluate.report import format_eval

    lines = format_eval(_hand_result()).splitlines()
    for average in ("macro avg", "weighted avg"):
        (row,) = [line for line in lines if line.startswith(average)]
        assert row.split()[-1] == "6"
