"""Multi-task training end to end on a tiny Epic-Kitchens-100 copy (verb + noun heads): the
Epic recipe's tiny variant (ViViT factorised encoder, mixup) and a two-headed R(2+1)D train
through the same ``train.py``; validation, the multi-view test, the checkpoint, ``vjax.load``,
``vjax predict`` and the printed report cover every task."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from conftest import REPO
from test_epic_kitchens import NOUNS, VERBS, epic_root  # noqa: F401  (fixture: the copy)

import vjax
from vjax import train
from vjax.config_utils import apply_overrides, load_config
from vjax.evaluate.report import format_eval
from vjax.predict import format_result, predict_files

EPIC = os.path.join(REPO, "configs", "video_transformers.py") + ":vivit_l_fe_epic,tiny"
NAMES = {"verb": VERBS, "noun": NOUNS}


def _config(root, tmp_path, **overrides):
    config = load_config(EPIC)
    steps = {"train.num_steps": "3", "train.eval_every": "3", "train.checkpoint_every": "3"}
    paths = {"dataset.src": str(root), "dataset.data_dir": str(tmp_path / "tfds")}
    apply_overrides(config, {**paths, **steps, **overrides})
    return config


def _check_task_metrics(result, num_videos):
    assert result["class_names"] == NAMES
    for task, metrics in result["tasks"].items():
        assert metrics["num_videos"] == num_videos
        assert set(metrics["per_class_accuracy"]) == set(NAMES[task])
    # every task right is never more frequent than one task right
    assert result["top1"] <= min(m["top1"] for m in result["tasks"].values())
    assert np.isclose(result["loss"], sum(m["loss"] for m in result["tasks"].values()))


def test_epic_recipe_tiny_variant_trains_evaluates_and_predicts(epic_root, tmp_path):  # noqa: F811
    config = _config(epic_root, tmp_path)
    workdir = str(tmp_path / "run")
    result = train.train(config, workdir)
    _check_task_metrics(result, num_videos=2)  # the two validation segments

    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    train_record = next(r for r in records if r["split"] == "train")
    for key in ("loss_verb", "loss_noun", "top1_verb", "top1_noun"):
        assert np.isfinite(train_record[key])
    np.testing.assert_allclose(
        train_record["loss"], train_record["loss_verb"] + train_record["loss_noun"], rtol=1e-5
    )

    test = train.evaluate_checkpoint(config, workdir, "validation")  # the multi-view test
    _check_task_metrics(test, num_videos=2)
    printed = format_eval({**test, "split": "validation"})
    assert "verb: loss" in printed and "noun: loss" in printed and "knife" in printed

    _, model, variables = vjax.load(workdir)
    logits = jax.jit(lambda v: model.apply(v, jnp.zeros((1, 4, 16, 16, 3)), train=False))(variables)
    assert {t: x.shape for t, x in logits.items()} == {"verb": (1, 3), "noun": (1, 4)}

    video = os.path.join(epic_root, "P01", "videos", "P01_01.MP4")
    predicted = predict_files(workdir, [video], top_k=2)["files"][video]["top"]
    assert [t["label"] in VERBS for t in predicted["verb"]] == [True, True]
    assert [t["label"] in NOUNS for t in predicted["noun"]] == [True, True]
    assert sum(t["score"] for t in predicted["noun"]) <= 1.0  # two of the four nouns' softmax
    assert "verb: " in format_result({"files": {video: {"top": predicted}}, "skipped": {}})


def test_two_headed_conv_net_trains_through_the_same_loop(epic_root, tmp_path):  # noqa: F811
    conv = load_config(os.path.join(REPO, "configs", "conv3d.py") + ":r2plus1d_18_k400,tiny")
    config = _config(epic_root, tmp_path)
    config.unlock()
    config.model = conv.model
    config.lock()
    exp = train.setup(config, devices=jax.devices()[:1])
    assert exp.class_names == NAMES
    result = train.train(config, str(tmp_path / "run"))
    _check_task_metrics(result, num_videos=2)
