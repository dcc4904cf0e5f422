"""Training on bad input loses nothing already saved and says what is wrong in one line: counts
below one, a workdir that is a file, a state gone non-finite, a rejected resume or
init_from, and a run that is already finished."""

import os
import shutil

import jax
import numpy as np
import pytest
from conftest import DEMO_CONFIG, tiny_config

import vjax
from vjax import checkpoint, train
from vjax.checkpoint import CheckpointMismatchError
from vjax.config_utils import ConfigError
from vjax.errors import UserError
from vjax.main import main
from vjax.preflight import check_config


@pytest.fixture(scope="module")
def finished(data_dir, tmp_path_factory) -> str:
    """A tiny run trained to its end, step 3 (one checkpoint); tests train on copies of it."""
    workdir = str(tmp_path_factory.mktemp("finished"))
    train.train(tiny_config(data_dir, **{"train.num_steps": "3"}), workdir)
    return workdir


@pytest.fixture
def run_copy(finished, tmp_path) -> str:
    """A copy of the finished run, for a test to change."""
    return shutil.copytree(finished, str(tmp_path / "run"))


def _steps(workdir: str) -> list[int]:
    return sorted(int(e) for e in os.listdir(os.path.join(workdir, "checkpoints")))


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _train_command(data_dir: str, workdir: str, **overrides: str) -> int:
    """``vjax train`` on the tiny demo config (in this process); its exit code."""
    flags = [f"--config.{k}={v}" for k, v in {"dataset.data_dir": data_dir, **overrides}.items()]
    return main(["--mode=train", f"--config={DEMO_CONFIG}:tiny", f"--workdir={workdir}", *flags])


def _error_line(capsys) -> str:
    """The one error line the command printed (and no traceback)."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("vjax: error: ")]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


COUNTS = [
    "train.num_steps",
    "train.num_steps=-3",
    "train.log_every",
    "train.eval_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "input.global_batch_size",
    "input.global_batch_size=-8",
]


@pytest.mark.parametrize("key", COUNTS)
def test_counts_below_one_are_a_config_error_naming_the_key(data_dir, key):
    key, _, value = key.partition("=")
    with pytest.raises(ConfigError, match=rf"^{key} \(.*\) must be >= 1, got {value or 0}"):
        check_config(tiny_config(data_dir, **{key: value or "0"}))


# Settings that were a Python traceback from the optimiser, the input pipeline or the mesh
# (after the model and state were built), or trained without a word: a negative learning rate
# or clip norm ascends the loss, label smoothing of 1.5 makes the true class the least likely
# target, a dropout rate of 1.5 zeroes every activation, three test crops ignored the crop
# fraction. Each is now one line naming the setting, before anything is built.
BAD_SETTINGS = [
    ({"optimizer.layer_decay": "2"}, r"config.optimizer: optimizer.layer_decay must be in"),
    ({"optimizer.lr": "-1"}, r"config.optimizer: optimizer.lr must be >= 0, got -1.0"),
    ({"optimizer.weight_decay": "-0.1"}, r"config.optimizer: optimizer.weight_decay must be >= 0"),
    ({"optimizer.grad_clip_norm": "-1"}, r"config.optimizer: optimizer.grad_clip_norm must be"),
    ({"optimizer.label_smoothing": "1.5"}, r"config.optimizer: optimizer.label_smoothing must"),
    ({"optimizer.b2": "1.0"}, r"config.optimizer: optimizer.b2 must be in \[0, 1\), got 1.0"),
    ({"optimizer.name": "adam"}, r"config.optimizer: unknown optimizer.name 'adam'; valid: adamw"),
    ({"optimizer.freeze": "encoder/(block"},
     r"config.optimizer: optimizer.freeze='encoder/\(block' is not a regular expression"),
    ({"model.dropout_rate": "1.5"}, r"config.model: model.dropout_rate must be in \[0, 1\)"),
    ({"train.init_inflation": "centre"}, r"config.train: train.init_inflation must be one of"),
    ({"seed": "-1"}, r"seed must be >= 0"),
    ({"input.num_workers": "-5"}, r"input.num_workers must be >= -1"),
    ({"input.mixup_alpha": "-1"}, r"config.input: input.mixup_alpha must be >= 0, got -1.0"),
    ({"input.mixup_rate": "1.5"}, r"config.input: input.mixup_rate must be in \(0, 1\]"),
    ({"input.std": "(0.25, 0.0, 0.25)"}, r"config.input: input.mean and input.std are one value"),
    ({"input.mean": "(0.5, 0.5)"}, r"config.input: input.mean and input.std are one value"),
    ({"input.randaugment_magnitude": "31"}, r"config.input: input.randaugment_magnitude must be"),
    ({"input.crop_ratio": "(1.5, 0.5)"}, r"config.input: input.crop_ratio must be"),
    ({"input.train_crop": "scale_jitter", "input.jitter_short_side": "(200, 300)"},
     r"config.input: input.jitter_short_side must be \(low, high\) with crop_size \(224\)"),
    ({"input.test_num_crops": "3", "input.test_crop_fraction": "0.875"},
     r"config.input: input.test_crop_fraction applies to one centre crop"),
    ({"sharding.mesh": "(('data', -1),)"},
     r"config.sharding: rules map to mesh axes \['fsdp', 'tensor'\] that the mesh \('data',\)"),
    # mmaction's / PyTorchVideo's 0..255 statistics: every normalised frame nearly constant
    ({"input.mean": "(123.675, 116.28, 103.53)", "input.std": "(58.395, 57.12, 57.375)"},
     r"config.input: input.mean and input.std are in 0..1 units \(frames are divided by 255"),
    ({"input.std": "(0.229, 0.224, 57.375)"}, r"config.input: input.mean and input.std are in 0"),
    # a one-pair tuple without its comma: Python reads it as the pair
    ({"sharding.mesh": "(('data', -1))"},
     r"config.sharding.mesh: mesh is a tuple of \(name, size\) pairs; got the pair \('data', -1\) "
     r"alone: write \(\('data', -1\),\)"),
]  # fmt: skip


@pytest.mark.parametrize(("overrides", "message"), BAD_SETTINGS)
def test_a_bad_setting_is_a_config_error_before_anything_is_built(data_dir, overrides, message):
    with pytest.raises(ConfigError, match=rf"^{message}"):
        check_config(tiny_config(data_dir, **overrides))


def test_an_empty_workdir_is_one_line(capsys):
    """``--workdir=$RUN`` with RUN unset was a FileNotFoundError traceback after the build."""
    from conftest import DEMO_CONFIG

    from vjax.cli import main

    assert main(["train", f"--config={DEMO_CONFIG}:tiny", "--workdir="]) == 2
    assert "--workdir is empty" in capsys.readouterr().err


def test_workdir_that_is_a_file_is_one_line(data_dir, tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    assert _train_command(data_dir, str(notes)) == 2
    assert "is a file" in _error_line(capsys)
    assert notes.read_text() == "keep me"


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")  # lr 1e39 in float32
def test_state_gone_non_finite_is_never_saved_and_the_message_is_true(data_dir, run_copy, capsys):
    """An infinite learning rate makes step 4's update non-finite while its metrics (of the
    parameters before it) are finite: step 4 is not saved, and with keep 1 the good step 3
    survives; the run stops with one line naming step 4 and the intact step 3."""
    code = _train_command(
        data_dir,
        run_copy,
        **{
            "train.num_steps": "6",
            "train.checkpoint_every": "1",
            "train.keep_checkpoints": "1",
            "train.log_every": "100",
            "train.eval_every": "100",
            "optimizer.lr": "1e39",
            "optimizer.warmup_steps": "0",
        },
    )
    assert code == 2
    line = _error_line(capsys)
    assert "non-finite parameters or optimiser state at step 4" in line
    assert "last good checkpoint (step 3) is intact" in line
    assert _steps(run_copy) == [3]
    _, _, variables = vjax.load(run_copy)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(variables))


def test_non_finite_checkpoint_saved_before_is_named_at_resume(data_dir, run_copy, capsys):
    """A non-finite checkpoint (as an older vjax could save) is not trained on: the error names
    its step folder, so the last good checkpoint a later error names is really good; no note
    about a warmup that will not run comes before it."""
    config = tiny_config(
        data_dir, **{"train.num_steps": "12", "train.log_every": "1", "train.eval_every": "100",
                     "optimizer.warmup_steps": "100"}
    )  # fmt: skip
    exp = train.setup(config)
    manager = checkpoint.make_manager(os.path.join(run_copy, "checkpoints"), 2)
    state, _ = train.restore_state(exp, manager)
    nan = state.replace(params=jax.tree.map(lambda p: p * np.nan, state.params))
    checkpoint.save(manager, 4, nan, checkpoint.read_metadata(run_copy))
    manager.wait_until_finished()
    capsys.readouterr()
    with pytest.raises(UserError, match=r"checkpoint at step 4 holds non-finite .*checkpoints/4"):
        train.train(config, run_copy)
    assert "warmup" not in capsys.readouterr().out
    assert _steps(run_copy) == [3, 4]


def test_rejected_resume_leaves_the_runs_config_as_it_was(data_dir, run_copy):
    before = _read(os.path.join(run_copy, "config.json"))
    wider = tiny_config(data_dir, **{"model.hidden_size": "48", "train.num_steps": "6"})
    with pytest.raises(CheckpointMismatchError):
        train.train(wider, run_copy)
    assert _read(os.path.join(run_copy, "config.json")) == before
    assert _steps(run_copy) == [3]


def test_init_from_that_does_not_fit_is_one_line_and_leaves_no_workdir(
    data_dir, finished, tmp_path, capsys
):
    workdir = str(tmp_path / "new")
    code = _train_command(
        data_dir, workdir, **{"train.init_from": finished, "model.hidden_size": "48"}
    )
    assert code == 2
    line = _error_line(capsys)
    assert f"train.init_from {finished!r} does not fit" in line and "cannot adapt" in line
    assert not os.path.exists(workdir)


def test_only_empty_folders_are_removed_and_a_full_one_raises_nothing(tmp_path):
    """What a failed start leaves: its empty folders go, one that holds anything stays (the
    start's own error is the one the user sees)."""
    full, empty = tmp_path / "full", tmp_path / "empty"
    full.mkdir()
    empty.mkdir()
    (full / "config.json").write_text("{}")
    train._remove_if_empty(str(full), str(empty), str(tmp_path / "never_made"))
    assert sorted(os.listdir(tmp_path)) == ["full"]


def test_init_from_a_quantized_model_names_the_float_model(data_dir, finished, tmp_path, capsys):
    """Its int8 kernels match no float parameter name: the run would have kept every weight
    matrix at its random initialisation and trained on as if pretrained."""
    pytest.importorskip("qwix", reason="qwix is not installed (pip install -e .[deploy])")
    from vjax.deploy import quantize

    int8 = str(tmp_path / "int8")
    quantize.quantize_checkpoint(finished, int8, "int8_weights")
    workdir = str(tmp_path / "new")
    assert _train_command(data_dir, workdir, **{"train.init_from": int8}) == 2
    line = _error_line(capsys)
    assert f"train.init_from {int8!r} is a quantized model" in line and repr(finished) in line
    assert not os.path.exists(workdir)


def test_finished_run_says_so_and_keeps_its_config(data_dir, run_copy, capsys):
    before = _read(os.path.join(run_copy, "config.json"))
    assert train.train(tiny_config(data_dir, **{"train.num_steps": "2"}), run_copy) == {}
    out = capsys.readouterr().out
    assert "already at step 3 of train.num_steps=2: nothing to train" in out
    assert _read(os.path.join(run_copy, "config.json")) == before
    assert _steps(run_copy) == [3]


def test_validation_that_cannot_be_scored_is_logged_and_the_step_saved(
    run_copy, data_dir, capsys, monkeypatch
):
    """A finite state whose validation logits are not (float16 overflow on validation clips)
    is logged for that step; the run saves it and trains on, losing nothing."""
    from vjax.evaluate.metrics import MetricInputError

    def unscorable(*args, **kwargs):
        raise MetricInputError("2 of 16 videos have non-finite logits")

    monkeypatch.setattr(train, "evaluate", unscorable)
    train.train(tiny_config(data_dir, **{"train.num_steps": "6"}), run_copy)
    out = capsys.readouterr().out
    assert "validation @ 6: not scored: 2 of 16 videos have non-finite logits" in out
    assert _steps(run_copy)[-1] == 6


def test_eval_notes_input_settings_other_than_the_runs(data_dir, tmp_path):
    """``vjax eval`` takes its config from the command line; with another normalisation or
    clip than the run trained with it scored another input without a word (while predict and
    export read the run's config.json). The settings that differ are named."""
    from vjax.config_utils import config_to_json
    from vjax.train import _changed_from_training

    trained = tiny_config(data_dir)
    (tmp_path / "config.json").write_text(config_to_json(trained))
    assert _changed_from_training(trained, str(tmp_path)) == ""
    other = tiny_config(data_dir, **{"input.std": "(0.5, 0.5, 0.5)", "input.num_workers": "2"})
    assert _changed_from_training(other, str(tmp_path)) == (
        "input.std=(0.5, 0.5, 0.5) (trained with (0.25, 0.25, 0.25))"
    )  # the number of loader workers changes nothing the model sees
    assert _changed_from_training(other, str(tmp_path / "no_run")) == ""
