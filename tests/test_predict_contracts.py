"""vjax predict and vjax.load against hand computations (found by mutation testing): a
multi-label model's sigmoid, window weighting, the trained frame rate and stride, pad mode,
the training normalisation, and sound of a file whose frames start late."""

import json
import os

import jax
import numpy as np
import pytest

MODEL = {"name": "vivit", "size": "Ti/8x2", "num_layers": 1, "hidden_size": 32, "num_heads": 2}
NAMES = [f"c{i}" for i in range(5)]
MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
CLIP = (4, 16, 16, 3)


def random_vivit(seed: int = 0, heads=5):
    """A tiny ViViT with every parameter perturbed (the zero-initialised head would give
    uniform scores and hide a mix-up)."""
    import flax.linen as nn

    from vjax.models import build_model

    model = build_model(MODEL, heads)
    variables = jax.device_get(
        nn.meta.unbox(
            jax.jit(lambda k: model.init(k, np.zeros((1, *CLIP)), train=False))(jax.random.key(0))
        )
    )
    rng = np.random.default_rng(seed)
    variables = jax.tree.map(
        lambda p: np.asarray(p + 0.3 * rng.standard_normal(p.shape), np.float32), variables
    )
    return model, variables  # fmt: skip


def write_model(folder: str, variables: dict, names=NAMES, input_settings=None, **metadata):
    """A ``vjax convert``-like folder (step 0) whose config's input has ``input_settings`` and
    whose metadata has the extra ``metadata`` keys (e.g. ``multi_label``)."""
    from vjax import checkpoint
    from vjax.config_utils import config_to_json
    from vjax.convert import pretrained_config

    config = pretrained_config(MODEL, CLIP, names, mean=MEAN, std=STD, source="test")
    config.input.update(input_settings or {})
    saved = {
        "config": json.loads(config_to_json(config)),
        "class_names": json.loads(json.dumps(config.class_names.to_dict()
                                             if hasattr(config.class_names, "to_dict")
                                             else list(config.class_names))),
        "clip_shape": list(CLIP),
        **metadata,
    }  # fmt: skip
    state = {"step": np.zeros((), np.int32), "params": variables["params"], "model_state": {}}
    checkpoint.write_single(os.path.join(folder, "checkpoints"), state, saved)
    return folder


def normalised(frames: np.ndarray) -> np.ndarray:
    """uint8 frames as the models here take them: /255, less MEAN, over STD (numpy)."""
    return (frames.astype(np.float32) / 255.0 - np.float32(MEAN)) / np.float32(STD)


def by_hand_logits(model, variables, clip: np.ndarray) -> np.ndarray:
    """The model's logits of one uint8 clip (T, H, W, 3), normalised with numpy."""
    return np.asarray(model.apply(variables, normalised(clip)[None], train=False))[0]


def softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def _scores(top):
    return {t["label"]: t["score"] for t in top}


def _video(path, frames, fps=10):
    from vjax.data.video_io import encode_video

    return encode_video(str(path), frames, fps)


# kills pd01, pd15, pd16, ex05
def test_a_multi_label_model_is_scored_with_a_sigmoid_per_class(tmp_path):
    """A multi-label checkpoint (``metadata["multi_label"]``, as Charades writes it) gives
    each class its own sigmoid in ``vjax predict``, on the checkpoint and on its export, and
    the export's ``probabilities`` output is that sigmoid too (numpy's, of the model's logits
    of the hand-cut centre view)."""
    from vjax.data.video_io import decode_video
    from vjax.deploy.export import export_model
    from vjax.deploy.runtime import load_exported
    from vjax.predict import predict_files

    model, variables = random_vivit(1)
    folder = write_model(str(tmp_path / "model"), variables, multi_label=True)
    frames = np.random.default_rng(0).integers(0, 256, (30, 32, 40, 3), np.uint8)
    video = _video(tmp_path / "a.mp4", frames)
    decoded = decode_video(video, short_side=16).frames  # (30, 16, 20, 3)
    logits = by_hand_logits(model, variables, decoded[13:17, :, 2:18])
    sigmoid = 1.0 / (1.0 + np.exp(-logits))
    assert sigmoid.sum() > 1.05 or sigmoid.sum() < 0.95  # not a softmax by accident
    export_model(folder, str(tmp_path / "exported"), ["stablehlo"])
    for where in (folder, str(tmp_path / "exported")):
        got = _scores(predict_files(where, [video], top_k=5)["files"][video]["top"])
        np.testing.assert_allclose([got[n] for n in NAMES], sigmoid, atol=1e-5, err_msg=where)
    _, probs = load_exported(str(tmp_path / "exported"))(decoded[None, 13:17, :, 2:18])
    np.testing.assert_allclose(probs[0], sigmoid, atol=1e-5)


# kills pd03, pd05
def test_a_files_score_weighs_its_windows_by_length_and_keeps_the_short_last_one(tmp_path):
    """``--window``: 2.5 s at 10 fps in 1 s windows is three windows, the last 0.5 s long;
    the file's top-k is the softmax of the windows' logits averaged by their frame counts
    (10, 10, 5), each window's logits those of its own centre clip, cut here by hand."""
    from vjax.data.video_io import decode_video
    from vjax.predict import predict_files

    model, variables = random_vivit(2)
    folder = write_model(str(tmp_path / "model"), variables)
    frames = np.random.default_rng(3).integers(0, 256, (25, 32, 40, 3), np.uint8)
    video = _video(tmp_path / "b.mp4", frames)
    entry = predict_files(folder, [video], top_k=5, window=1.0)["files"][video]
    assert [(w["start"], w["end"]) for w in entry["windows"]] == [(0, 1), (1, 2), (2, 2.5)]
    decoded = decode_video(video, short_side=16).frames
    logits = []
    for a, b in ((0, 10), (10, 20), (20, 25)):
        start = (b - a - 4) // 2  # the centre clip of the window's frames
        logits.append(by_hand_logits(model, variables, decoded[a + start : a + start + 4, :, 2:18]))
    overall = softmax((10 * logits[0] + 10 * logits[1] + 5 * logits[2]) / 25)
    assert np.abs(overall - softmax(np.mean(logits, 0))).max() > 1e-3  # the weights matter
    got = _scores(entry["top"])
    np.testing.assert_allclose([got[n] for n in NAMES], overall, atol=1e-5)


# kills pd12, pd14, sg03
def test_predict_cuts_frames_frame_stride_apart_at_the_trained_frame_rate(tmp_path):
    """A model trained on clips of 4 frames 2 apart at 5 fps (``input.fps=5``,
    ``input.frame_stride=2``) sees, in a 10 fps file of 30 frames, 15 frames at 5 fps whose
    centre clip is frames 4, 6, 8, 10 of them: frames 8, 12, 16, 20 of the file (as the
    evaluation's ``stride_for(10) = 4`` stored frames: span 13, start (30 - 13) // 2 = 8)."""
    from vjax.data.video_io import decode_video
    from vjax.predict import predict_files

    model, variables = random_vivit(4)
    folder = write_model(str(tmp_path / "model"), variables,
                          input_settings={"fps": 5.0, "frame_stride": 2})  # fmt: skip
    frames = np.random.default_rng(5).integers(0, 256, (30, 32, 40, 3), np.uint8)
    video = _video(tmp_path / "c.mp4", frames)
    decoded = decode_video(video, short_side=16).frames
    expected = softmax(by_hand_logits(model, variables, decoded[[8, 12, 16, 20], :, 2:18]))
    got = _scores(predict_files(folder, [video], top_k=5)["files"][video]["top"])
    np.testing.assert_allclose([got[n] for n in NAMES], expected, atol=1e-5)


# kills pd13, sg07
def test_predict_pads_a_short_file_as_the_models_pad_mode_says(tmp_path):
    """``input.pad_mode="pad"``: a 3-frame file's 4-frame clip repeats the last frame
    (frames 0, 1, 2, 2), where the default ``loop`` would wrap to frame 0."""
    from vjax.data.video_io import decode_video
    from vjax.predict import predict_files

    model, variables = random_vivit(6)
    folder = write_model(str(tmp_path / "model"), variables, input_settings={"pad_mode": "pad"})
    frames = np.random.default_rng(7).integers(0, 256, (3, 32, 40, 3), np.uint8)
    video = _video(tmp_path / "d.mp4", frames)
    decoded = decode_video(video, short_side=16).frames
    assert len(decoded) == 3
    expected = softmax(by_hand_logits(model, variables, decoded[[0, 1, 2, 2], :, 2:18]))
    looped = softmax(by_hand_logits(model, variables, decoded[[0, 1, 2, 0], :, 2:18]))
    assert np.abs(expected - looped).max() > 1e-3
    got = _scores(predict_files(folder, [video], top_k=5)["files"][video]["top"])
    np.testing.assert_allclose([got[n] for n in NAMES], expected, atol=1e-5)


# kills ld02
def test_a_loaded_models_normalize_is_the_training_normalisation(tmp_path):
    """``model.normalize(video)`` (the module docstring's ``module.apply(variables,
    model.normalize(video))``) is ``(video / 255 - mean) / std`` with the config's mean and
    std, per channel, and the module applied to it gives ``model(video)``."""
    from vjax.loaded import load

    _, variables = random_vivit(18)
    model = load(write_model(str(tmp_path / "model"), variables))
    video = np.random.default_rng(19).integers(0, 256, (2, *CLIP), np.uint8)
    by_hand = (video.astype(np.float32) / 255.0 - np.asarray(MEAN, np.float32)) / np.asarray(
        STD, np.float32)  # fmt: skip
    np.testing.assert_allclose(np.asarray(model.normalize(video)), by_hand, rtol=1e-6, atol=1e-6)
    logits = model.module.apply(model.variables, model.normalize(video), train=False)
    np.testing.assert_allclose(np.asarray(logits), model(video), atol=1e-5)


def test_a_loaded_model_names_a_clip_in_the_wrong_layout_or_size(tmp_path):
    """PyTorch's layouts, (B, C, T, H, W) and (B, T, C, H, W), failed deep in JAX (a broadcast
    of the mean), a clip of other frames or pixels in Flax's parameter-shape check, nested
    lists with an AttributeError; the vjax.load folder of an export said it held no
    checkpoint."""
    from vjax.deploy.export import export_model
    from vjax.errors import UserError
    from vjax.loaded import load

    _, variables = random_vivit(20)
    folder = write_model(str(tmp_path / "model"), variables)
    model = load(folder)
    video = np.random.default_rng(21).integers(0, 256, (2, *CLIP), np.uint8)  # (2, 4, 16, 16, 3)
    three = np.concatenate([video, video[:1]])  # a batch of 3, as many as the channels
    for clips, layout, order in (
        (video, (0, 4, 1, 2, 3), "0, 2, 3, 4, 1"),
        (video, (0, 1, 4, 2, 3), "0, 1, 3, 4, 2"),
        (three, (0, 4, 1, 2, 3), "0, 2, 3, 4, 1"),
    ):
        with pytest.raises(
            UserError, match=rf"C = 3 last .*channels-first\? video.transpose\({order}\)"
        ):
            model(clips.transpose(layout))
    with pytest.raises(
        UserError, match=r"takes inputs of \[4, 16, 16, 3\] .*got \(8, 16, 16, 3\): "
    ):
        model(np.concatenate([video, video], axis=1))
    np.testing.assert_array_equal(model(list(video)), model(video))
    export_model(folder, str(tmp_path / "exported"), ["stablehlo"])
    with pytest.raises(UserError, match=r"holds a model `vjax export` wrote.*load_exported"):
        load(str(tmp_path / "exported"))


# ============================================================ tests/test_predict.py (sound)
def video_and_sound_streams(container):
    """``(video, sound)`` streams added to an open PyAV ``container``: H.264 32x32 at 10 fps,
    mono AAC at 16 kHz."""
    import fractions

    video = container.add_stream("libx264", rate=fractions.Fraction(10))
    video.width = video.height = 32
    video.pix_fmt = "yuv420p"
    sound = container.add_stream("aac", rate=16000)
    sound.layout = "mono"
    return video, sound


# kills pd07
def test_a_file_whose_frames_start_late_is_heard_at_its_frames_seconds(tmp_path):
    """An MP4 whose video stream starts at 1.0 s (audio at 0, a tone from 2.0 s): a view's
    sound is cut at its frames' own times, 1.0 s + frame / fps, not frame / fps. By hand:
    the centre clip (frames 13..16 of 30 at 10 fps: 2.3-2.7 s, inside the tone) with the
    file's samples from 2.3 s, as test_predict's audio-visual test computes a view."""
    import fractions

    import av
    import ml_collections

    from vjax.convert import pretrained_config, save_converted
    from vjax.data.audio import AudioOptions, decode_audio, normalized_log_mel
    from vjax.data.video_io import decode_video
    from vjax.predict import predict_files

    path = str(tmp_path / "late.mp4")
    rng = np.random.default_rng(20)
    with av.open(path, "w") as container:
        video, sound = video_and_sound_streams(container)
        for i in range(30):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (32, 32, 3), np.uint8),
                                               format="rgb24")  # fmt: skip
            frame.pts, frame.time_base = i + 10, fractions.Fraction(1, 10)  # from 1.0 s
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        t = np.arange(4 * 16000) / 16000
        wave = (0.5 * np.sin(2 * np.pi * 1000 * t) * (t >= 2.0)).astype(np.float32)
        for k in range(0, len(wave), 1024):
            frame = av.AudioFrame.from_ndarray(wave[None, k : k + 1024], format="flt",
                                               layout="mono")  # fmt: skip
            frame.sample_rate, frame.pts = 16000, k
            for packet in sound.encode(frame):
                container.mux(packet)
        for packet in sound.encode(None):
            container.mux(packet)

    from test_predict import MBT, MBT_AUDIO, random_mbt

    audio = MBT_AUDIO
    model, variables = random_mbt(seed=21)
    config = pretrained_config(MBT, CLIP, NAMES, mean=MEAN, std=STD, source="test")
    config.input.audio = ml_collections.ConfigDict(audio)
    save_converted(str(tmp_path / "model"), config, variables)

    frames = decode_video(path, short_side=16).frames[13:17][None]
    x = normalised(frames)

    apply = jax.jit(lambda v, b: model.apply(v, b, train=False))

    def probs_hearing(seconds):
        samples = decode_audio(path, 16000)[round(seconds * 16000) :][: 4 * 16000 // 10]
        spec = normalized_log_mel(samples, AudioOptions(**audio))[None]
        batch = {"video": x, "audio": spec, "has_audio": np.full(1, True)}
        return softmax(np.asarray(apply(variables, batch))[0])

    expected, early = probs_hearing(1.0 + 13 / 10), probs_hearing(13 / 10)  # tone / silence
    got = _scores(predict_files(str(tmp_path / "model"), [path], top_k=5)["files"][path]["top"])
    got = np.asarray([got[n] for n in NAMES])
    # AAC's priming shifts the decoded track by a few ms: 1e-3, where silence is far off
    assert np.abs(expected - early).max() > 5e-3
    np.testing.assert_allclose(got, expected, atol=1e-3)


def test_every_recipe_is_predicted_with_the_clips_its_evaluation_cuts():
    """The signature's sampling (what vjax predict and an export cut clips by) equals the
    evaluation's InputOptions for every recipe, its defaults included: a recipe without
    input.frame_stride was predicted 1 frame apart where vjax eval takes InputOptions' 2."""
    import importlib

    from vjax.data.transforms import InputOptions
    from vjax.deploy.signature import sampling

    checked = []
    for family in ("conv3d", "video_transformers", "videomae", "mbt", "demo"):
        module = importlib.import_module(f"vjax.configs.{family}")
        for name in getattr(module, "RECIPES", {"vivit": None}):
            config = module.get_config(name)
            options = InputOptions.from_config(config.input)
            cut = sampling(config.to_dict(), list(options.clip_shape))
            for key in ("frame_stride", "sampling", "pad_mode", "test_ensemble"):
                assert cut[key] == getattr(options, key), (family, name, key)
            assert cut["test_crop_fraction"] == options.test_crop_fraction, (family, name)
            checked.append(name)
    assert {"r2plus1d_18_k400", "lrcn_ucf101"} <= set(checked) and len(checked) > 20
    # A vjax convert folder's config (no dataset) from before it recorded a stride: 1, as
    # it was predicted before.
    assert sampling({"input": {"clip": [4, 8, 8, 3]}}, [4, 8, 8, 3])["frame_stride"] == 1
