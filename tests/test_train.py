"""The training loop end to end on the tiny demo config: logs, checkpoints, evaluation, load,
and a NaN that stops the run without touching the last good checkpoint."""

import json
import os

import jax
import numpy as np
import pytest
from conftest import DEMO_CONFIG, tiny_config

import vjax
from vjax import train
from vjax.metric_writers import read_metrics
from vjax.step import normalize_video


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("run"))
    config = tiny_config(data_dir)
    last_eval = train.train(config, workdir)
    return config, workdir, last_eval


def test_eval_with_a_model_that_does_not_fit_is_refused_before_its_data(trained, tmp_path):
    """vjax eval --config=OTHER prepared OTHER's dataset (for Kinetics, hours) before the
    restore found that the model does not fit; a fitting config still evaluates."""
    from vjax.checkpoint import CheckpointMismatchError
    from vjax.config_utils import apply_overrides, load_config

    config, workdir, _ = trained
    other = load_config(f"{DEMO_CONFIG}:vivit")  # the full-size demo ViViT, another dataset
    apply_overrides(other, {"dataset.data_dir": str(tmp_path / "tfds")})
    with pytest.raises(CheckpointMismatchError, match=r"params/.*checkpoint has shape"):
        train.evaluate_checkpoint(other, workdir, "test")
    assert not (tmp_path / "tfds").exists()


def test_train_writes_metrics_tensorboard_and_checkpoints(trained):
    config, workdir, last_eval = trained
    records = read_metrics(workdir)
    train_steps = [r["step"] for r in records if r["split"] == "train"]
    assert train_steps == [2, 4, 6]
    assert all(
        np.isfinite(r["loss"]) and r["steps_per_sec"] > 0 for r in records if r["split"] == "train"
    )
    assert [r["step"] for r in records if r["split"] == "validation"] == [3, 6]
    assert os.listdir(os.path.join(workdir, "tensorboard", "train"))
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]
    assert last_eval["num_examples"] == config.dataset.num_validation
    assert json.load(open(os.path.join(workdir, "config.json")))["model"]["name"] == "vivit"


def test_eval_mode_reports_per_class_accuracy_and_confusion(trained, capsys):
    config, workdir, _ = trained
    result = train.evaluate_checkpoint(config, workdir, "test")
    n = config.dataset.num_classes
    confusion = np.asarray(result["confusion_matrix"])
    assert confusion.shape == (n, n) and confusion.sum() == config.dataset.num_test
    assert result["step"] == config.train.num_steps
    assert result["top1"] == pytest.approx(np.trace(confusion) / confusion.sum())
    per_class = [result["per_class_accuracy"][c] for c in result["class_names"]]
    np.testing.assert_allclose(per_class, confusion.diagonal() / confusion.sum(axis=1))
    assert result["top5"] == 1.0  # 4 classes: the label is always among the top 5


def test_main_eval_mode_prints_table_and_writes_json(trained, capsys):
    from conftest import DEMO_CONFIG

    from vjax.main import main

    config, workdir, _ = trained
    code = main(
        [
            "--mode=eval",
            f"--config={DEMO_CONFIG}:tiny",
            f"--workdir={workdir}",
            "--split=validation",
            f"--config.dataset.data_dir={config.dataset.data_dir}",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "confusion matrix" in out and "right" in out
    saved = json.load(open(os.path.join(workdir, "eval_validation_step6.json")))
    assert saved["num_examples"] == config.dataset.num_validation


def test_load_returns_a_model_ready_to_apply(trained):
    config, workdir, _ = trained
    for path in (workdir, os.path.join(workdir, "checkpoints", "3")):
        loaded_config, model, variables = vjax.load(path)
        assert loaded_config.model.to_dict() == config.model.to_dict()
    from vjax.data.datasets import load_dataset

    source = load_dataset(config.dataset).as_data_source("test")
    video = np.stack([np.stack(source[i]["video"]) for i in range(4)])
    inputs = normalize_video(video, config.input.mean, config.input.std, np.float32)
    logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, inputs)
    assert logits.shape == (4, config.dataset.num_classes)
    # The same predictions as the eval path of the trainer (checkpoint 3 loaded last).
    result = train.evaluate_checkpoint(config, workdir, "test")
    _, model6, variables6 = vjax.load(workdir)
    preds = np.argmax(jax.jit(lambda v, x: model6.apply(v, x, train=False))(variables6, inputs), -1)
    labels = np.asarray([source[i]["label"] for i in range(4)])
    assert result["num_examples"] >= 4
    assert result["per_video"]["label"][:4] == labels.tolist()
    assert result["per_video"]["predicted"][:4] == preds.tolist()


def test_nan_loss_stops_run_naming_step_and_keeps_last_good_checkpoint(data_dir, tmp_path):
    workdir = str(tmp_path)
    train.train(tiny_config(data_dir, **{"train.num_steps": "3"}), workdir)
    good = vjax.load(workdir)[2]
    # Resume with an exploding learning rate: the loss goes non-finite within a few steps.
    exploding = tiny_config(
        data_dir,
        **{
            "train.num_steps": "12",
            "train.log_every": "1",
            "train.checkpoint_every": "1",
            "optimizer.lr": "1e30",
            "optimizer.warmup_steps": "0",
        },
    )
    with pytest.raises(train.NonFiniteLossError, match=r"at step (\d+)") as err:
        train.train(exploding, workdir)
    bad_step = int(err.value.args[0].split("at step ")[1].split(":")[0])
    assert 4 <= bad_step <= 12
    entries = os.listdir(os.path.join(workdir, "checkpoints"))
    assert all(e.isdigit() for e in entries), entries  # no half-written step left behind
    steps = sorted(int(s) for s in entries)
    assert max(steps) < bad_step  # nothing at or after the bad step was saved
    _, _, latest = vjax.load(workdir)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(latest))
    if max(steps) == 3:
        jax.tree.map(np.testing.assert_array_equal, good, latest)


def test_bfloat16_compute_trains_with_float32_state(data_dir, tmp_path):
    config = tiny_config(data_dir, **{"train.dtype": "bfloat16", "train.num_steps": "3"})
    train.train(config, str(tmp_path))
    loaded_config, model, variables = vjax.load(str(tmp_path))
    assert loaded_config.train.dtype == "bfloat16" and model.dtype == jax.numpy.bfloat16
    assert {x.dtype for x in jax.tree.leaves(variables)} == {np.dtype(np.float32)}
    records = [r for r in read_metrics(str(tmp_path)) if r["split"] == "train"]
    assert records and all(np.isfinite(r["loss"]) for r in records)


def test_clip_not_divisible_into_tubelets_fails_in_setup_naming_the_numbers(data_dir, monkeypatch):
    def no_compilation(*args, **kwargs):
        pytest.fail("setup compiled something before validating the clip shape")

    monkeypatch.setattr(jax, "jit", no_compilation)
    config = tiny_config(data_dir, **{"dataset.num_frames": "5"})
    with pytest.raises(ValueError, match=r"frames \(5\) is not divisible .* \(2\)"):
        train.setup(config)
