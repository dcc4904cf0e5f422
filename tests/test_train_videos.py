"""The trainer on real video files (``configs/videos.py``): a ``video_folder`` dataset trains
with clip sampling and augmentation, and ``vjax eval`` runs the multi-view test (clips x crops
averaged per video)."""

import os

import jax
import numpy as np
import pytest

import vjax
from vjax import train
from vjax.data.transforms import InputOptions, make_view_iterator
from vjax.data.video_io import encode_video
from vjax.evaluate.scoring import video_scores
from vjax.step import normalize_video

SPLITS = {"train": 3, "validation": 1, "test": 2}  # videos per class


def _video(seed: int, moving_right: bool) -> np.ndarray:
    """A bright bar that moves right or left over 20 frames of 32x40."""
    frames = np.full((20, 32, 40, 3), 20, np.uint8)
    start = np.random.default_rng(seed).integers(0, 40)
    for t in range(20):
        x = (start + (2 * t if moving_right else -2 * t)) % 36
        frames[t, :, x : x + 4] = 230
    return frames


@pytest.fixture(scope="module")
def video_config(tmp_path_factory):
    src = tmp_path_factory.mktemp("videos")
    for s, (split, count) in enumerate(SPLITS.items()):
        for label in ("left", "right"):
            os.makedirs(src / split / label)
            for i in range(count):
                encode_video(str(src / split / label / f"{i}.mp4"),
                             _video(10 * s + i, label == "right"), 10.0)  # fmt: skip
    from conftest import REPO

    from vjax.config_utils import apply_overrides, load_config

    config = load_config(f"{REPO}/configs/videos.py:{src},tiny")
    apply_overrides(config, {"dataset.data_dir": str(tmp_path_factory.mktemp("tfds"))})
    config.train.update(num_steps=3, eval_every=3, checkpoint_every=3)
    return config


def test_train_then_multiview_eval_on_video_files(video_config, tmp_path):
    workdir = str(tmp_path)
    last = train.train(video_config, workdir)
    assert last["num_examples"] == 2 * SPLITS["validation"]  # one centre view per video

    result = train.evaluate_checkpoint(video_config, workdir, "test")
    assert result["num_examples"] == 2 * SPLITS["test"]
    # Every row of the per-video results named by its file, in the split's order.
    assert result["videos"] == ["test/left/0.mp4", "test/left/1.mp4", "test/right/0.mp4",
                                "test/right/1.mp4"]  # fmt: skip
    assert result["per_video"]["label"] == [0, 0, 1, 1]
    assert last["videos"] == ["validation/left/0.mp4", "validation/right/0.mp4"]
    assert np.asarray(result["confusion_matrix"]).sum() == 2 * SPLITS["test"]

    # The same test on one device, outside the trainer: the loaded model over the views.
    config, model, variables = vjax.load(workdir)
    mean, std = config.input.mean, config.input.std
    apply = jax.jit(lambda v: model.apply(variables, normalize_video(v, mean, std, model.dtype),
                                          train=False))  # fmt: skip
    exp = train.setup(video_config)
    source = exp.builder.as_data_source("test")
    views = make_view_iterator(InputOptions.from_config(video_config.input))
    scores, labels = video_scores(apply, (source[i] for i in range(len(source))), views, 6)
    shifted = scores - scores.max(axis=1, keepdims=True)
    loss = -(shifted - np.log(np.exp(shifted).sum(1, keepdims=True)))[np.arange(4), labels]
    assert result["top1"] == pytest.approx(float((scores.argmax(1) == labels).mean()))
    assert result["loss"] == pytest.approx(float(loss.mean()), rel=1e-5)


def test_loader_processes_train_and_test_exactly_like_one_process(video_config, tmp_path):
    """``input.num_workers=2``: training batches, validation batches and the multi-view test's
    views made by two loader processes; the same run and the same metrics."""
    import copy

    from vjax.checkpoint import read_checkpoint

    runs = {}
    for workers in (0, 2):
        config = copy.deepcopy(video_config)
        config.input.num_workers = workers
        workdir = str(tmp_path / f"workers{workers}")
        validation = train.train(config, workdir)
        test = train.evaluate_checkpoint(config, workdir, "test")
        runs[workers] = validation, test, read_checkpoint(workdir)[1]
    for key in ("loss", "top1", "confusion_matrix"):
        assert runs[2][0][key] == runs[0][0][key]  # validation after 3 steps
        assert runs[2][1][key] == runs[0][1][key]  # the 2 clips x 3 crops test
    for a, b in zip(jax.tree.leaves(runs[0][2]), jax.tree.leaves(runs[2][2]), strict=True):
        np.testing.assert_array_equal(a, b)
