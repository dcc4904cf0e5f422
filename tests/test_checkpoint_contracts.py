"""What the checkpoint module promises and the suite did not check (found by mutation
testing): a mismatch names missing and extra parameters, a step folder reads that step,
a step unreadable twice is moved aside twice, keep_checkpoints, eval of an untrained
workdir."""

import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest


def _ckpt_state(value: float, names=("w0", "w1")) -> dict:
    """Arrays above OCDBT's 1 KiB inline limit, so truncating the data files damages them."""
    params = {n: value + jnp.arange(4096, dtype=jnp.float32) for n in names}
    return {"step": jnp.zeros((), jnp.int32), "params": params}


def _ckpt_target(state: dict) -> dict:
    from vjax import checkpoint

    return checkpoint.abstract_like(state, jax.tree.map(lambda x: x.sharding, state))


def _ckpt_saved(directory: str, *values_by_step) -> str:
    from vjax import checkpoint

    manager = checkpoint.make_manager(directory, 5, async_save=False)
    for step, value in values_by_step:
        checkpoint.save(manager, step, _ckpt_state(value), {"value": value})
    manager.close()
    return directory


# kills ck02, ck03
def test_missing_and_extra_parameters_are_a_mismatch_naming_each(tmp_path):
    """A complete checkpoint of another model is CheckpointMismatchError naming the parameter
    the model has and the checkpoint lacks, and the one the checkpoint has and the model
    lacks (the module docstring's promise); never a fallback to an older step."""
    from vjax import checkpoint

    directory = _ckpt_saved(str(tmp_path / "checkpoints"), (1, 1.0))
    manager = checkpoint.make_manager(directory, 5, async_save=False)
    missing = _ckpt_target(_ckpt_state(0.0, ("w0", "w1", "w2")))
    with pytest.raises(checkpoint.CheckpointMismatchError, match=r"params/w2: missing from"):
        checkpoint.restore_latest(manager, missing)
    extra = _ckpt_target(_ckpt_state(0.0, ("w0",)))
    with pytest.raises(checkpoint.CheckpointMismatchError, match=r"params/w1: in the checkpoint"):
        checkpoint.restore_latest(manager, extra)
    manager.close()


# kills ck09, cp02
def test_a_step_folder_reads_that_step_not_the_newest(tmp_path):
    """``vjax.load``/``read_checkpoint`` of ``checkpoints/1`` read step 1 even when step 2 is
    newer (the documented ``locate`` contract: a step folder means that step)."""
    from vjax import checkpoint

    directory = _ckpt_saved(str(tmp_path / "checkpoints"), (1, 1.0), (2, 2.0))
    assert checkpoint.read_metadata(os.path.join(directory, "1")) == {"value": 1.0}
    metadata, variables, step = checkpoint.read_checkpoint(os.path.join(directory, "1"))
    assert step == 1 and metadata == {"value": 1.0}
    np.testing.assert_array_equal(variables["params"]["w0"], 1.0 + np.arange(4096))
    assert checkpoint.read_checkpoint(directory)[2] == 2  # the folder itself: the newest


# kills ck11
def test_a_step_unreadable_twice_is_moved_aside_twice(tmp_path, caplog):
    """A step that is unreadable again after it was trained again goes to ``N.unreadable.2``
    (the documented suffix), and the resume still takes the older step."""
    import glob

    from vjax import checkpoint

    directory = _ckpt_saved(str(tmp_path / "checkpoints"), (1, 1.0), (2, 2.0))

    def truncate(step):
        files = glob.glob(os.path.join(directory, str(step), "state", "ocdbt.process_*", "d", "*"))
        assert files
        for path in files:
            os.truncate(path, 10)

    manager = checkpoint.make_manager(directory, 5, async_save=False)
    for _ in range(2):
        truncate(2)
        with caplog.at_level(logging.WARNING):
            _, step = checkpoint.restore_latest(manager, _ckpt_target(_ckpt_state(0.0)),
                                                move_aside=True)  # fmt: skip
        assert step == 1
        checkpoint.save(manager, 2, _ckpt_state(3.0), {"value": 3.0})
        manager.wait_until_finished()
    manager.close()
    assert sorted(os.listdir(directory)) == ["1", "2", "2.unreadable", "2.unreadable.2"]


# kills ck13
def test_a_manager_keeps_only_the_newest_max_to_keep_steps(tmp_path):
    """``make_manager(dir, 2)`` (``train.keep_checkpoints=2``) leaves the two newest steps on
    disk: older ones are deleted as newer ones are saved."""
    from vjax import checkpoint

    directory = str(tmp_path / "checkpoints")
    manager = checkpoint.make_manager(directory, 2, async_save=False)
    for step in (1, 2, 3, 4):
        checkpoint.save(manager, step, _ckpt_state(float(step)), {"value": step})
    manager.wait_until_finished()
    manager.close()
    assert sorted(os.listdir(directory), key=int) == ["3", "4"]


# kills cp05
def test_evaluating_a_workdir_without_checkpoints_is_refused_before_anything_is_made(tmp_path):
    """``vjax eval`` of a workdir that holds no checkpoint says so (NotFoundError) and leaves
    the folder as it was: no empty checkpoints folder, no dataset prepared."""
    from vjax.config_utils import RECIPES, load_config
    from vjax.errors import NotFoundError
    from vjax.train import evaluate_checkpoint

    config = load_config(os.path.join(RECIPES, "demo.py") + ":tiny")
    with config.unlocked():
        config.dataset.data_dir = str(tmp_path / "data")
    workdir = tmp_path / "run"
    workdir.mkdir()
    with pytest.raises(NotFoundError, match="no checkpoint to evaluate"):
        evaluate_checkpoint(config, str(workdir), "test")
    assert os.listdir(workdir) == [] and not os.path.exists(tmp_path / "data")
