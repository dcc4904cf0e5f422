"""``vjax predict`` on generated video files with a saved tiny ViViT."""

import json

import jax
import numpy as np
import pytest

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
    variables = init(jax.random.key(0))
    config = pretrained_config(MODEL, (4, 16, 16, 3), NAMES, mean=MEAN, std=STD, source="test")
    save_converted(str(root / "model"), config, jax.device_get(variables))
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (30, 32, 40, 3), np.uint8)  # 3 s at 10 fps, 32x40
    video = encode_video(str(root / "a.mp4"), frames, 10)
    broken = root / "broken.mp4"
    broken.write_bytes(b"")
    return str(root), model, variables, video, str(broken)


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
    from vjax.predict import predict_files

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
