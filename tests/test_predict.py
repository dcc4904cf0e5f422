"""``vjax predict`` on generated video files with a saved tiny ViViT."""

import json

import flax.linen as nn
import jax
import numpy as np
import pytest
from conftest import randomized

from vjax.convert import pretrained_config, save_converted
from vjax.data.video_io import decode_video, encode_video
from vjax.models import build_model
from vjax.step import normalize_video

MODEL = {"name": "vivit", "size": "Ti/8x2", "num_layers": 1, "hidden_size": 32, "num_heads": 2}
NAMES = [f"c{i}" for i in range(5)]
MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    model = build_model(MODEL, num_classes=5)
    init = jax.jit(lambda key: model.init(key, np.zeros((1, 4, 16, 16, 3)), train=False))
    variables = randomized(jax.device_get(init(jax.random.key(0))))
    config = pretrained_config(MODEL, (4, 16, 16, 3), NAMES, mean=MEAN, std=STD, source="test")
    save_converted(str(root / "model"), config, jax.device_get(variables))
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (30, 32, 40, 3), np.uint8)  # 3 s at 10 fps, 32x40
    video = encode_video(str(root / "a.mp4"), frames, 10)
    broken = root / "broken.mp4"
    broken.write_bytes(b"")
    return str(root), model, variables, video, str(broken)


# A tiny MBT on 4x16x16 clips hearing 16x16 log-mel spectrograms (25 ms windows and hops).
MBT = {"name": "mbt", "size": "Ti/8x2", "hidden_size": 16, "num_layers": 2, "num_heads": 2,
       "mlp_dim": 32, "fusion_layer": 1}  # fmt: skip
MBT_AUDIO = dict(sample_rate=16000, mel_bins=16, window_ms=25.0, hop_ms=25.0, frames=16,
                 mean=-4.0, std=4.0)  # fmt: skip


def random_mbt(seed: int):
    """:data:`MBT` with every parameter random (its head starts at zero), so its logits
    depend on both inputs."""
    model = build_model(MBT, num_classes=5)
    shapes = {"video": (1, 4, 16, 16, 3), "audio": (1, 16, 16)}
    inputs = {k: np.zeros(v, np.float32) for k, v in shapes.items()}
    variables = jax.device_get(jax.jit(lambda k: model.init(k, inputs, train=False))(
        jax.random.key(0)))  # fmt: skip
    leaves, tree = jax.tree.flatten(variables)
    rng = np.random.default_rng(seed)
    noise = [0.3 * rng.standard_normal(x.shape).astype(x.dtype) for x in leaves]
    return model, jax.tree.unflatten(tree, noise)


def _expected_probs(model, variables, frames: np.ndarray) -> np.ndarray:
    """Centre clip of 4 frames, centre 16x16 crop of the 16x20 frames, by hand."""
    start = (len(frames) - 4) // 2
    clip = frames[start : start + 4, :, 2:18][None]
    logits = model.apply(variables, normalize_video(clip, MEAN, STD, np.float32), train=False)
    return np.asarray(jax.nn.softmax(logits[0]))


def test_predict_matches_a_hand_made_view_and_lists_bad_files(saved, capsys):
    from vjax.cli import main

    root, model, variables, video, broken = saved
    out_json = f"{root}/out.json"
    code = main(["predict", f"--model={root}/model", video, broken, "--top_k=3",
                 f"--json={out_json}"])  # fmt: skip
    assert code == 1  # one file skipped
    printed = capsys.readouterr().out
    result = json.load(open(out_json))
    assert "unreadable" in result["skipped"][broken] and "skipped" in printed
    top = result["files"][video]["top"]
    frames = decode_video(video, short_side=16).frames
    assert frames.shape == (30, 16, 20, 3)
    probs = _expected_probs(model, variables, frames)
    order = np.argsort(-probs)[:3]
    assert [t["label"] for t in top] == [NAMES[i] for i in order]
    np.testing.assert_allclose([t["score"] for t in top], probs[order], atol=1e-5)
    assert f"{top[0]['score']:.3f}  {top[0]['label']}" in printed


def test_multi_view_and_window_timeline(saved):
    from vjax.predict import format_result, predict_files

    root, model, variables, video, _ = saved
    result = predict_files(f"{root}/model", [video], top_k=5, clips=3, crops=3, window=1.0)
    entry = result["files"][video]
    assert [(w["start"], w["end"]) for w in entry["windows"]] == [(0, 1), (1, 2), (2, 3)]
    assert all(len(w["top"]) == 5 for w in entry["windows"])
    # The file's scores average the (equally long) windows' logits: log-probabilities differ
    # from logits by a per-window constant, which the softmax removes.
    probs = np.array([[dict((t["label"], t["score"]) for t in w["top"])[n] for n in NAMES]
                      for w in entry["windows"]])  # fmt: skip
    expected = np.exp(np.log(probs).mean(0))
    expected /= expected.sum()
    got = {t["label"]: t["score"] for t in entry["top"]}
    np.testing.assert_allclose([got[n] for n in NAMES], expected, atol=1e-5)
    # The first window alone, one centre view: its own 10 frames by hand.
    single = predict_files(f"{root}/model", [video], top_k=5, window=1.0)["files"][video]
    frames = decode_video(video, short_side=16).frames[:10]
    probs = _expected_probs(model, variables, frames)
    got = {t["label"]: t["score"] for t in single["windows"][0]["top"]}
    np.testing.assert_allclose([got[n] for n in NAMES], probs, atol=1e-5)
    assert not any("note" in w for w in single["windows"])  # 10 frames: a clip's worth
    # Windows of 2 frames, shorter than the clip: each one says so, in JSON and printed.
    short = predict_files(f"{root}/model", [video], window=0.2)
    windows = short["files"][video]["windows"]
    assert len(windows) == 15 and "note" not in short["files"][video]  # the file is long
    note = "2 frames, fewer than the 4 a clip spans: looped"  # 4 frames, stride 1
    assert all(w["note"] == note for w in windows)
    assert format_result(short).count(f"\n    ({note})") == 15


def test_an_audio_visual_model_hears_each_clips_seconds_and_says_when_a_file_is_silent(
    tmp_path, capsys
):
    """MBT through ``vjax predict``: a file's view is its centre clip with the sound of that
    clip's seconds (computed here from the file's samples, by time), and a file without a
    sound track is predicted from its frames alone, which the output says."""
    import ml_collections
    from test_audio_data import FPS, N, write_tone_video

    from vjax.cli import main
    from vjax.data.audio import AudioOptions, decode_audio, normalized_log_mel

    audio = MBT_AUDIO
    model, variables = random_mbt(seed=1)
    config = pretrained_config(MBT, (4, 16, 16, 3), NAMES, mean=MEAN, std=STD, source="test")
    config.input.audio = ml_collections.ConfigDict(audio)
    save_converted(str(tmp_path / "model"), config, variables)
    loud = write_tone_video(str(tmp_path / "tone.mp4"))
    silent = write_tone_video(str(tmp_path / "silent.mp4"), with_audio=False)

    out = str(tmp_path / "out.json")
    assert main(["predict", f"--model={tmp_path}/model", loud, silent, f"--json={out}"]) == 0
    result = json.load(open(out))
    assert result["files"][loud]["has_audio"] and not result["files"][silent]["has_audio"]
    assert "no audio track" in capsys.readouterr().out

    # A timeline of two 1.5 s windows: the second one's clip lies past the tone's onset, the
    # first one's before it, so each window must hear its own seconds of the file.
    timeline = str(tmp_path / "timeline.json")
    assert main(["predict", f"--model={tmp_path}/model", loud, "--window=1.5",
                 f"--json={timeline}"]) == 0  # fmt: skip
    windows = json.load(open(timeline))["files"][loud]["windows"]

    apply = jax.jit(lambda v, b: model.apply(v, b, train=False))

    def probs_at(path: str, start: int, has_audio: bool) -> np.ndarray:
        """By hand: frames [start, start + 4) (32x32 scaled to 16x16) and their seconds."""
        frames = decode_video(path, short_side=16).frames[start : start + 4][None]
        spec = np.zeros((1, 16, 16), np.float32)
        if has_audio:
            sound = decode_audio(path, 16000)[round(start / FPS * 16000) :][: 4 * 16000 // FPS]
            spec = normalized_log_mel(sound, AudioOptions(**audio))[None]
        video = normalize_video(frames, MEAN, STD, np.float32)
        batch = {"video": video, "audio": spec, "has_audio": np.full(1, has_audio)}
        return np.asarray(jax.nn.softmax(apply(variables, batch)[0]))

    centre = (N - 4) // 2
    for top, probs in (
        (result["files"][loud]["top"], probs_at(loud, centre, True)),
        (result["files"][silent]["top"], probs_at(silent, centre, False)),
        (windows[0]["top"], probs_at(loud, (15 - 4) // 2, True)),
        (windows[1]["top"], probs_at(loud, 15 + (15 - 4) // 2, True)),
    ):
        assert [t["label"] for t in top] == [NAMES[i] for i in np.argsort(-probs)]
        np.testing.assert_allclose([t["score"] for t in top], np.sort(probs)[::-1], atol=1e-4)
    # The sound mattered: with silence instead, the tone file's scores differ.
    scores = [t["score"] for t in result["files"][loud]["top"]]
    assert not np.allclose(scores, [t["score"] for t in result["files"][silent]["top"]], atol=1e-3)


def test_predictions_exports_and_derived_models_name_the_checkpoint_step_they_came_from(
    saved, tmp_path, capsys
):
    """A workdir's newest step is not always the one read (an unreadable one is skipped), so
    predict's output, an export's signature and a quantized model's metadata say which."""
    pytest.importorskip("qwix", reason="qwix is not installed (pip install -e .[deploy])")
    from vjax import checkpoint
    from vjax.cli import main
    from vjax.deploy.export import export_model
    from vjax.deploy.quantize import quantize_checkpoint

    root, _, variables, video, _ = saved
    model_dir = str(tmp_path / "run")
    config = pretrained_config(MODEL, (4, 16, 16, 3), NAMES, mean=MEAN, std=STD, source="test")
    save_converted(model_dir, config, jax.device_get(variables))
    manager = checkpoint.make_manager(f"{model_dir}/checkpoints", 5, async_save=False)
    params = jax.device_get(nn.meta.unbox(variables["params"]))
    state = {"step": np.int32(7), "params": params, "model_state": {}}
    checkpoint.save(manager, 7, state, checkpoint.read_metadata(model_dir))
    manager.close()

    out_json = str(tmp_path / "out.json")
    assert main(["predict", f"--model={model_dir}", video, f"--json={out_json}"]) == 0
    assert f"model {model_dir} (step 7)" in capsys.readouterr().out
    assert json.load(open(out_json))["step"] == 7
    signature = export_model(model_dir, str(tmp_path / "exported"), ["stablehlo"])
    assert signature["source_step"] == 7
    exported = json.load(open(tmp_path / "exported" / "signature.json"))
    assert exported["source_step"] == 7
    from vjax.predict import predict_files

    assert predict_files(str(tmp_path / "exported"), [video])["step"] == 7
    quantize_checkpoint(model_dir, str(tmp_path / "w8"), "int8_weights")
    assert checkpoint.read_metadata(str(tmp_path / "w8"))["quantization"]["source_step"] == 7
    # The quantized folder's own step is 0: what it reports is the step it was made from.
    assert predict_files(str(tmp_path / "w8"), [video])["step"] == 7
    signature = export_model(str(tmp_path / "w8"), str(tmp_path / "w8_exported"), ["stablehlo"])
    assert signature["source_step"] == 7


def test_predict_cuts_and_pools_views_as_the_evaluation_of_its_config(saved, tmp_path):
    """``input.test_crop_fraction`` (torchvision's R(2+1)D recipe: 112/128), ``sampling="tsn"``
    (VideoMAE SSv2) and ``test_ensemble="max"`` (Charades) shape what ``vjax eval`` scores;
    predict, on the checkpoint and on its export, scores a file with the same views: the
    evaluation's view iterator of ``InputOptions.from_config(config.input)`` on frames stored
    at the short side whose centre crop is that fraction."""
    from vjax.data.transforms import InputOptions, make_view_iterator
    from vjax.deploy.export import export_model
    from vjax.evaluate.scoring import video_scores
    from vjax.predict import make_apply, predict_files

    _, model, variables, video, _ = saved
    noise = np.random.default_rng(4)  # larger weights: the settings' views differ more
    variables = jax.tree.map(lambda p: p + 0.3 * noise.standard_normal(p.shape),
                             jax.device_get(nn.meta.unbox(variables)))  # fmt: skip
    config = pretrained_config(MODEL, (4, 16, 16, 3), NAMES, mean=MEAN, std=STD, source="test")
    config.input.update(num_frames=4, crop_size=16, frame_stride=1, test_crop_fraction=0.75,
                        sampling="tsn", test_ensemble="max", test_num_clips=2)  # fmt: skip
    model_dir = save_converted(str(tmp_path / "model"), config, variables)
    options = InputOptions.from_config(config.input)
    stored = decode_video(video, short_side=round(16 / 0.75)).frames
    example = {"frames": list(stored), "fps": 10.0, "label": 0}
    apply = make_apply(config, model, variables)
    logits, _ = video_scores(apply, [example], make_view_iterator(options), 8, ensemble="max")
    expected = np.asarray(jax.nn.softmax(logits[0]))
    export_model(model_dir, str(tmp_path / "exported"), ["stablehlo"])
    for folder in (model_dir, str(tmp_path / "exported")):
        top = predict_files(folder, [video], top_k=5, clips=2)["files"][video]["top"]
        got = {t["label"]: t["score"] for t in top}
        np.testing.assert_allclose([got[n] for n in NAMES], expected, atol=1e-5, err_msg=folder)
    plain = predict_files(str(tmp_path / "exported"), [video], clips=1)["files"][video]["top"]
    assert abs(plain[0]["score"] - expected.max()) > 1e-3  # the settings change the scores


def test_a_file_shorter_than_a_clip_is_predicted_with_a_note(saved, tmp_path, capsys):
    """A still image or a video of fewer frames than a clip spans is predicted (the clip loops
    its frames, or holds the one) with a line that says so; it was predicted without a word."""
    from PIL import Image

    from vjax.cli import main

    root, model, variables, video, _ = saved
    frame = np.random.default_rng(3).integers(0, 256, (32, 40, 3), np.uint8)
    still = str(tmp_path / "still.png")
    Image.fromarray(frame).save(still)
    short = encode_video(str(tmp_path / "short.mp4"), np.stack([frame] * 2), 10)
    out_json = str(tmp_path / "out.json")
    argv = ["predict", f"--model={root}/model", video, still, short, f"--json={out_json}"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    files = json.load(open(out_json))["files"]
    assert "note" not in files[video]
    notes = {
        still: "1 frame, fewer than the 4 a clip spans: a still image to the model: its one "
        "frame throughout",
        short: "2 frames, fewer than the 4 a clip spans: looped",
    }
    for path, note in notes.items():
        assert files[path]["note"] == note and f"{path}\n  ({note})\n" in printed + "\n"
    # The still image is the clip of its one frame, 4 times (lossless PNG: checked by hand).
    frames = decode_video(still, short_side=16).frames
    probs = _expected_probs(model, variables, np.repeat(frames, 4, axis=0))
    got = {t["label"]: t["score"] for t in files[still]["top"]}
    np.testing.assert_allclose([got[n] for n in NAMES], probs, atol=1e-5)
    # One file given as a string (a pathlib.Path too): that file, not each of its characters.
    from vjax.predict import predict_files

    assert list(predict_files(f"{root}/model", tmp_path / "still.png")["files"]) == [still]
    for kwargs in ({"top_k": 0}, {"top_k": "3"}, {"window": -1.0}, {"clips": 0}):
        name, value = next(iter(kwargs.items()))  # K - 1 labels, no window, no view
        with pytest.raises(ValueError, match=rf"whole numbers >= 1 .*{name}={value!r}"):
            predict_files(f"{root}/model", [still], **kwargs)
    for crops in (2, 1.5):  # the centre, or three along the long side
        with pytest.raises(ValueError, match=rf"crops takes 1 .* or 3 .*, got {crops}"):
            predict_files(f"{root}/model", [still], crops=crops)
    # One window holding the whole still image: its note once, the file's.
    windowed = predict_files(f"{root}/model", still, window=1.0)["files"][still]
    assert windowed["note"] == notes[still] and "note" not in windowed["windows"][0]
    assert len(predict_files(f"{root}/model", still, top_k=np.int64(2))["files"][still]["top"]) == 2
    # TSN (VideoMAE's SSv2) takes one frame of each of its segments: no stride to span.
    from vjax.data.transforms import InputOptions
    from vjax.predict import _fewer_frames_than_a_clip

    tsn = InputOptions(num_frames=16, frame_stride=4, sampling="tsn")
    assert _fewer_frames_than_a_clip(48, tsn) == {}
    assert _fewer_frames_than_a_clip(10, tsn)["note"].endswith(
        "the 16 a clip spans: frames repeated"
    )
