"""Damaged or conflicting checkpoints: a step that does not read is skipped with one readable
line naming it and why, moved aside when training would need its step number again, and never
deleted; a save that Orbax skips, or a conversion into a folder that holds a model already, is
an error instead of a silent no-op. Tiny Orbax checkpoints of a few arrays, made directly."""

import glob
import logging
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO, tiny_config

import vjax
from vjax import checkpoint
from vjax.checkpoint import CheckpointNotSavedError, UnreadableCheckpointError
from vjax.convert import ConversionError, pretrained_config, save_converted
from vjax.convert.common import expected_params

MODEL = {"name": "vivit", "size": "Ti/8x2", "num_layers": 1, "hidden_size": 32, "num_heads": 2}
# Arrays above OCDBT's 1 KiB inline limit even compressed, so their bytes live in the data
# files cut below.
SIZE = 4096


def _state(value: float) -> dict:
    """A small train-state-like tree whose arrays start with ``value``."""
    params = {f"w{i}": value + jnp.arange(SIZE, dtype=jnp.float32) for i in range(4)}
    return {"step": jnp.zeros((), jnp.int32), "params": params}


def _target(state: dict) -> dict:
    return checkpoint.abstract_like(state, jax.tree.map(lambda x: x.sharding, state))


def _saved(directory: str, *values_by_step: tuple[int, float]) -> str:
    """A checkpoints folder holding ``_state(value)`` at each ``(step, value)``."""
    manager = checkpoint.make_manager(directory, 5, async_save=False)
    for step, value in values_by_step:
        checkpoint.save(manager, step, _state(value), {"value": value})
    manager.close()
    return directory


def _truncate(directory: str, step: int) -> None:
    """Cuts the array data files of ``step`` to 10 bytes, as a crash mid-write could."""
    files = glob.glob(os.path.join(directory, str(step), "state", "ocdbt.process_*", "d", "*"))
    assert files
    for path in files:
        os.truncate(path, 10)


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "vjax.checkpoint"]


def test_resume_past_an_unreadable_step_moves_it_aside_and_saves_that_step_again(tmp_path, caplog):
    directory = _saved(str(tmp_path / "checkpoints"), (1, 1.0), (2, 2.0))
    _truncate(directory, 2)
    manager = checkpoint.make_manager(directory, 5, async_save=False)
    with caplog.at_level(logging.WARNING):  # an evaluation: the folder stays as it is
        _, step = checkpoint.restore_latest(manager, _target(_state(0.0)))
    assert step == 1 and sorted(os.listdir(directory)) == ["1", "2"]
    [line] = _warnings(caplog)
    assert "step 2" in line and "OUT_OF_RANGE" in line and "using step 1" in line, line
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # a resume, which will save step 2 again
        state, step = checkpoint.restore_latest(manager, _target(_state(0.0)), move_aside=True)
    assert step == 1 and float(state["params"]["w0"][0]) == 1.0
    # Out of Orbax's steps, kept on disk; one readable line names it, the cause and the move.
    assert sorted(os.listdir(directory)) == ["1", "2.unreadable"]
    assert os.path.isdir(os.path.join(directory, "2.unreadable", "state"))
    [line] = _warnings(caplog)
    assert "step 2" in line and "OUT_OF_RANGE" in line and "2.unreadable" in line, line
    assert "\n" not in line and "TensorStore(" not in line and len(line) < 600, line

    checkpoint.save(manager, 2, _state(3.0), {"value": 3.0})  # the step trained again
    state, step = checkpoint.restore_latest(
        checkpoint.make_manager(directory, 5), _target(_state(0.0))
    )
    assert step == 2 and float(state["params"]["w0"][0]) == 3.0


def test_a_save_orbax_skips_is_an_error(tmp_path):
    directory = _saved(str(tmp_path / "checkpoints"), (5, 5.0))
    manager = checkpoint.make_manager(directory, 5, async_save=False)
    with pytest.raises(CheckpointNotSavedError, match=r"step 3 was not saved.*holds step 5"):
        checkpoint.save(manager, 3, _state(3.0), {})
    assert os.listdir(directory) == ["5"]


def test_no_step_that_reads_is_one_error_naming_each_and_moves_nothing(tmp_path):
    directory = _saved(str(tmp_path / "checkpoints"), (1, 1.0), (2, 2.0))
    _truncate(directory, 1)
    _truncate(directory, 2)
    manager = checkpoint.make_manager(directory, 5, async_save=False)
    with pytest.raises(
        UnreadableCheckpointError, match=r"step 2: ValueError: OUT_OF_RANGE.*step 1"
    ):
        checkpoint.restore_latest(manager, _target(_state(0.0)))
    assert sorted(os.listdir(directory)) == ["1", "2"]


def test_failure_reason_is_the_innermost_cause_on_one_short_line():
    try:
        try:
            raise ValueError("OUT_OF_RANGE: Error reading " + "x" * 1000)
        except ValueError as e:
            raise Exception("Encountered error while reading. TensorStore({\n  'base'\n})") from e
    except Exception as e:  # noqa: BLE001
        reason = checkpoint.failure_reason(e)
    assert reason.startswith("ValueError: OUT_OF_RANGE: Error reading xxx")
    assert reason.endswith("...") and len(reason) <= checkpoint.MAX_REASON_CHARS + 20


def _model_folder(path: str, classes: int) -> str:
    """A ``vjax convert`` folder (step 0) of a tiny ViViT, its parameters zeros."""
    config = pretrained_config(MODEL, (4, 16, 16, 3), [f"c{i}" for i in range(classes)])
    zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), expected_params(config))
    save_converted(path, config, {"params": zeros})
    return path


def test_load_past_an_unreadable_newest_step_warns_and_records_the_step_used(tmp_path, caplog):
    model_dir = _model_folder(str(tmp_path / "model"), 3)
    directory = os.path.join(model_dir, "checkpoints")
    manager = checkpoint.make_manager(directory, 5, async_save=False)
    checkpoint.save(manager, 1, _state(1.0), checkpoint.read_metadata(model_dir))
    manager.close()
    _truncate(directory, 1)
    with caplog.at_level(logging.WARNING):
        loaded = vjax.load(model_dir)
    assert loaded.step == 0
    [line] = _warnings(caplog)
    assert "step 1" in line and "OUT_OF_RANGE" in line and "using step 0" in line, line
    assert sorted(os.listdir(directory)) == ["0", "1"]  # reading moves nothing


def test_newest_metadata_json_corrupt_falls_back_with_a_warning(tmp_path, caplog):
    directory = _saved(str(tmp_path / "checkpoints"), (1, 1.0), (2, 2.0))
    with open(os.path.join(directory, "2", "metadata", "metadata"), "w") as f:
        f.write("{garbage")
    with caplog.at_level(logging.WARNING):
        assert checkpoint.read_metadata(directory) == {"value": 1.0}
    [line] = _warnings(caplog)
    assert "step 2" in line and "JSONDecodeError" in line and "using step 1" in line, line
    # Resuming or evaluating takes the same step, and then training can save step 2 again.
    manager = checkpoint.make_manager(directory, 5)
    _, step = checkpoint.restore_latest(manager, _target(_state(0.0)), move_aside=True)
    assert step == 1 and sorted(os.listdir(directory)) == ["1", "2.unreadable"]
    # A folder whose only metadata is corrupt is one error (vjax eval prints it as one line).
    with open(os.path.join(directory, "1", "metadata", "metadata"), "w") as f:
        f.write("{garbage")
    with pytest.raises(UnreadableCheckpointError, match=r"step 1: JSONDecodeError"):
        checkpoint.read_metadata(directory)


def test_a_step_every_read_skips_is_named_once(tmp_path, caplog):
    """``vjax eval`` reads the newest step's metadata, then its arrays: an empty step folder
    (a save cut short before it wrote anything) was named three times, with Orbax's own
    "Metadata file does not exist" lines between."""
    directory = _saved(str(tmp_path / "checkpoints"), (1, 1.0), (2, 2.0))
    os.makedirs(os.path.join(directory, "3"))
    with caplog.at_level(logging.WARNING):
        assert checkpoint.read_metadata(directory) == {"value": 2.0}
        manager = checkpoint.make_manager(directory, 5, async_save=False)
        assert checkpoint.restore_latest(manager, _target(_state(0.0)))[1] == 2
        assert checkpoint.read_metadata(str(tmp_path)) == {"value": 2.0}
    [line] = _warnings(caplog)
    assert "step 3" in line and "using step 2" in line, line
    assert not [r for r in caplog.records if "Metadata file does not exist" in r.getMessage()]
    assert sorted(os.listdir(directory)) == ["1", "2", "3"]  # reading moves nothing


def test_convert_into_a_folder_that_holds_a_checkpoint_is_refused(tmp_path, capsys):
    from vjax.cli import main

    model_dir = _model_folder(str(tmp_path / "model"), 3)
    with pytest.raises(ConversionError, match="already holds a checkpoint; choose a new --out"):
        _model_folder(model_dir, 5)
    assert len(checkpoint.read_metadata(model_dir)["class_names"]) == 3  # the old model stays
    code = main(["convert", "--from=hf", f"--src={tmp_path / 'absent'}", f"--out={model_dir}"])
    assert code == 2 and "already holds a checkpoint" in capsys.readouterr().err
    with pytest.raises(CheckpointNotSavedError):  # a direct write is an error too
        checkpoint.write_single(os.path.join(model_dir, "checkpoints"), _state(5.0), {})


FALLBACK_SCRIPT = """
import gc
import sys
import time
sys.path.insert(0, {tests!r})
import test_checkpoint_robustness as t
from vjax import checkpoint
directory = t._saved({directory!r}, (1, 1.0), (2, 2.0))
t._truncate(directory, 2)
manager = checkpoint.make_manager(directory, 5, async_save=False)
print("restored", checkpoint.restore_latest(manager, t._target(t._state(0.0)))[1])
for _ in range(5):  # as a run goes on: the reads left in flight end, and are collected
    time.sleep(0.1)
    gc.collect()
"""


def test_fallback_past_a_truncated_step_prints_one_line_not_orbax_tracebacks(tmp_path):
    """Orbax's abandoned reads (hundreds of lines of asyncio tracebacks, each with a whole
    TensorStore spec) are not printed: stderr is vjax's one line."""
    script = FALLBACK_SCRIPT.format(
        tests=os.path.join(REPO, "tests"), directory=str(tmp_path / "checkpoints")
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and "restored 1" in done.stdout, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if "overriding jax.Array" not in line]
    assert len(lines) == 1 and "cannot be read (ValueError: OUT_OF_RANGE" in lines[0], lines[:20]


def test_evaluating_a_run_that_is_saving_leaves_its_step_in_flight(data_dir, tmp_path):
    """``vjax eval`` of a workdir whose training is writing a step: its manager removed every
    ``*.orbax-checkpoint-tmp`` folder when it opened (a writing manager's clean-up), and the
    training's save then failed. Evaluation only reads."""
    from vjax import train

    config = tiny_config(data_dir, **{"train.num_steps": "2", "train.eval_every": "2",
                                      "train.checkpoint_every": "2"})  # fmt: skip
    train.train(config, str(tmp_path))
    in_flight = tmp_path / "checkpoints" / "4.orbax-checkpoint-tmp"
    (in_flight / "state").mkdir(parents=True)
    result = train.evaluate_checkpoint(config, str(tmp_path), "validation")
    assert result["step"] == 2 and in_flight.is_dir()


def test_a_resume_into_other_dtypes_says_what_it_casts(tmp_path, caplog):
    """A float32 checkpoint resumed into bfloat16 parameters (``train.param_dtype`` changed)
    restores cast, with one warning naming the dtypes and how many arrays; the same dtypes
    restore without one."""
    directory = _saved(str(tmp_path / "checkpoints"), (1, 1.0))
    as_bf16 = jax.tree.map(
        lambda x: x.astype(jnp.bfloat16) if x.dtype == jnp.float32 else x, _state(0.0)
    )
    manager = checkpoint.make_manager(directory, 5, async_save=False)
    with caplog.at_level(logging.WARNING, logger="vjax.checkpoint"):
        same, _ = checkpoint.restore_latest(manager, _target(_state(0.0)))
        assert _warnings(caplog) == []
        cast, step = checkpoint.restore_latest(manager, _target(as_bf16))
    manager.close()
    assert step == 1 and cast["params"]["w0"].dtype == jnp.bfloat16
    assert float(cast["params"]["w0"][3]) == float(same["params"]["w0"][3]) == 4.0
    (line,) = _warnings(caplog)
    assert "stores 4 arrays as float32 that this run keeps as bfloat16 (e.g. params/w0)" in line
