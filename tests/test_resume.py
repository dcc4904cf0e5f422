"""Exact resume after SIGKILL (classification and masked-video pre-training), and restore that
survives a kill in the middle of a save."""

import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from conftest import DEMO_CONFIG, PRETRAIN_CONFIG, REPO, tiny_config

import vjax
from vjax import checkpoint, train
from vjax.config_utils import apply_overrides, load_config

# The tiny config of each objective (classification; masked-video pre-training).
OBJECTIVES = {"classification": f"{DEMO_CONFIG}:tiny", "reconstruction": PRETRAIN_CONFIG}
# (steps, checkpoint every) of each resume test; pre-training's are its shared run's.
RESUME_STEPS = {"classification": (48, 12), "reconstruction": (100, 20)}


def _flags(data_dir: str, *extra: str) -> list[str]:
    return [
        f"--config.dataset.data_dir={data_dir}",
        "--config.train.log_every=10",
        "--config.train.eval_every=1000",
        *extra,
    ]


def _command(workdir: str, data_dir: str, *extra: str, config: str = f"{DEMO_CONFIG}:tiny"):
    return [sys.executable, "-m", "vjax.main", "--mode=train", f"--config={config}",
            f"--workdir={workdir}", *_flags(data_dir, *extra)]  # fmt: skip


def _steps(workdir: str) -> list[int]:
    folder = os.path.join(workdir, "checkpoints")
    return (
        sorted(int(e) for e in os.listdir(folder) if e.isdigit()) if os.path.isdir(folder) else []
    )


def _run_and_kill(command: list[str], workdir: str, after_steps: int, delay: float = 0.0) -> None:
    """Starts training and SIGKILLs it once ``after_steps`` checkpoints exist (+ ``delay``)."""
    process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 240
    while len(_steps(workdir)) < after_steps:
        assert process.poll() is None, "training ended before it could be killed"
        assert time.time() < deadline, "no checkpoint appeared in time"
        time.sleep(0.02)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.fixture(scope="module")
def prepared(data_dir):
    """Prepare the tiny dataset once, so subprocesses only read it."""
    train.setup(tiny_config(data_dir))
    return data_dir


@pytest.mark.parametrize("objective", list(OBJECTIVES))
def test_sigkill_then_resume_is_bitwise_identical(prepared, tmp_path, objective, request, capsys):
    """A run SIGKILLed in its own process after its first checkpoint, resumed (in this process,
    as a restarted job would: from its folder alone) to the end, ends bitwise where an
    uninterrupted run ends."""
    spec, steps = OBJECTIVES[objective], RESUME_STEPS[objective]
    flags = [f"--config.train.num_steps={steps[0]}", f"--config.train.checkpoint_every={steps[1]}"]
    overrides = dict(f[9:].split("=") for f in _flags(prepared, *flags))

    def config():
        c = load_config(spec)
        apply_overrides(c, overrides)
        return c

    killed = str(tmp_path / "killed")
    # The uninterrupted run, in this process (no start-up to pay): pre-training's is shared
    # with its other tests (its extra validations leave the parameters alone).
    if objective == "reconstruction":
        straight = request.getfixturevalue("pretrained_run")[1]
    else:
        straight = str(tmp_path / "straight")
        train.train(config(), straight)

    _run_and_kill(_command(killed, prepared, *flags, config=spec), killed, after_steps=1)
    resumed_from = max(_steps(killed))
    assert 0 < resumed_from < steps[0]
    capsys.readouterr()
    train.train(config(), killed)
    assert f"Restored checkpoint at step {resumed_from}" in capsys.readouterr().out

    _, _, a = vjax.load(straight)
    _, _, b = vjax.load(killed)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)  # bitwise, not approximately


@pytest.mark.parametrize("delay", [0.05, 0.3])
def test_kill_during_frequent_saves_never_leaves_a_checkpoint_that_fails(prepared, tmp_path, delay):
    workdir = str(tmp_path)
    args = [
        "--config.train.num_steps=5000",  # as the SIGTERM test's run: one compile for both
        "--config.train.checkpoint_every=1",
        "--config.train.keep_checkpoints=3",
    ]
    _run_and_kill(_command(workdir, prepared, *args), workdir, after_steps=2, delay=delay)
    survivors = _steps(workdir)
    config = tiny_config(prepared, **{"train.num_steps": str(max(survivors) + 2)})
    train.train(config, workdir)  # restores the newest complete step and finishes
    assert max(_steps(workdir)) == max(survivors) + 2


def test_truncated_newest_checkpoint_falls_back_to_the_previous_one(prepared, tmp_path, caplog):
    workdir = str(tmp_path)
    train.train(tiny_config(prepared), workdir)  # checkpoints at 3 and 6
    _, _, at3 = vjax.load(os.path.join(workdir, "checkpoints", "3"))
    # Damage step 6 the way a crash mid-write could: array data files cut to nothing.
    for root, _, files in os.walk(os.path.join(workdir, "checkpoints", "6", "state")):
        for name in files:
            if "d" == os.path.basename(root) or name.endswith(".zarray") or "ocdbt" in root:
                open(os.path.join(root, name), "wb").close()
    # A leftover temporary folder of an interrupted save is ignored too.
    shutil.copytree(
        os.path.join(workdir, "checkpoints", "3"),
        os.path.join(workdir, "checkpoints", "9.orbax-checkpoint-tmp-1"),
    )

    exp = train.setup(tiny_config(prepared))
    manager = checkpoint.make_manager(os.path.join(workdir, "checkpoints"), 2)
    state, step = train.restore_state(exp, manager)
    assert step == 3
    assert "step 6" in caplog.text
    for x, y in zip(
        jax.tree.leaves(at3), jax.tree.leaves(jax.device_get(state.params)), strict=True
    ):
        np.testing.assert_array_equal(x, y)


def test_checkpoint_of_another_model_is_an_error_naming_the_parameter(prepared, tmp_path):
    workdir = str(tmp_path)
    train.train(tiny_config(prepared), workdir)
    from vjax.checkpoint import CheckpointMismatchError

    wider = tiny_config(prepared, **{"model.hidden_size": "48", "train.num_steps": "9"})
    with pytest.raises(
        CheckpointMismatchError,
        match=r"does not fit.*: params/classifier/head/kernel: "
        r"checkpoint has shape \(32, 4\), model expects \(48, 4\)",
    ):
        train.train(wider, workdir)
    assert _steps(workdir) == [3, 6]  # nothing was overwritten


def test_sigterm_saves_the_current_step_and_exits_cleanly(prepared, tmp_path):
    """A preemption notice (SIGTERM) mid-run: checkpoint at that step, exit 0, resume there.
    The signal goes to the whole process group, as Slurm and systemd send it, loader
    workers included (they died of it and broke the pool before the save)."""
    import re

    workdir = str(tmp_path)
    args = ["--config.train.num_steps=5000", "--config.train.checkpoint_every=5000"]
    command = [*_command(workdir, prepared, *args), "--config.train.log_every=1",
               "--config.input.num_workers=1"]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        start_new_session=True,
    )  # fmt: skip
    for line in process.stdout:  # wait until training is really under way
        if line.startswith("step "):
            break
    os.killpg(process.pid, signal.SIGTERM)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 0, out
    saved = int(re.search(r"Preempted: saved a checkpoint at step (\d+)", out).group(1))
    assert 0 < saved < 5000 and _steps(workdir) == [saved]  # not a scheduled checkpoint

    config = tiny_config(prepared, **{"train.num_steps": str(saved + 2)})
    train.train(config, workdir)
    assert max(_steps(workdir)) == saved + 2


def test_sigterm_during_validation_saves_that_step_without_finishing_it(
    prepared, tmp_path, monkeypatch
):
    """A preemption notice in the middle of a validation stops it at the next batch and saves
    the step it validates: it was acted on only after the whole validation and one more
    step, and a long validation outlasted Slurm's grace time."""
    applied = []
    make_apply = train._apply

    def signalling_apply(*args):
        apply = make_apply(*args)

        def first_batch_signals(batch):
            if not applied:
                os.kill(os.getpid(), signal.SIGTERM)  # handled by the training loop
            applied.append(len(batch["label"]))
            return apply(batch)

        return first_batch_signals

    monkeypatch.setattr(train, "_apply", signalling_apply)
    workdir = str(tmp_path)
    result = train.train(tiny_config(prepared, **{"train.num_steps": "6"}), workdir)  # eval at 3
    assert result == {"preempted_at": 3}
    assert len(applied) == 1  # of its 2 validation batches
    assert _steps(workdir) == [3] and checkpoint.read_checkpoint(workdir)[2] == 3
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        assert not [line for line in f if '"validation"' in line]


def test_a_validation_cut_short_by_preemption_runs_when_the_run_resumes(
    prepared, tmp_path, monkeypatch
):
    """A preemption notice during the final validation: the step is saved owing it, the same
    command again validates that step (as the uninterrupted run did: the same loss) instead of
    saying "nothing to train", and a third submission does not validate it again. Before, the
    run never got its final validation."""
    from vjax.metric_writers import read_metrics

    config = tiny_config(prepared, **{"train.num_steps": "3"})  # its validation at 3 is final
    whole = train.train(config, str(tmp_path / "whole"))
    make_apply, applied = train._apply, []

    def signalling_apply(*args):
        apply = make_apply(*args)

        def first_batch_signals(batch):
            if not applied:
                os.kill(os.getpid(), signal.SIGTERM)  # handled by the training loop
            applied.append(1)
            return apply(batch)

        return first_batch_signals

    workdir = str(tmp_path / "cut")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train, "_apply", signalling_apply)
        assert train.train(config, workdir) == {"preempted_at": 3}
    resumed = train.train(config, workdir)
    assert resumed["loss"] == pytest.approx(whole["loss"], rel=1e-6) and _steps(workdir) == [3]
    assert train.train(config, workdir) == {}  # validated: a finished run
    validations = [r["step"] for r in read_metrics(workdir) if r["split"] == "validation"]
    assert validations == [3]


def test_sigterm_while_the_last_checkpoint_is_written_keeps_it(prepared, tmp_path, monkeypatch):
    """A SIGTERM that arrives while the last checkpoint is still being written (it is saved
    asynchronously) waits for the save: the training loop's handler was removed first, so
    the signal's default action ended the process and lost that checkpoint."""
    import orbax.checkpoint as ocp

    class Killed(Exception):  # this test's stand-in for SIGTERM's default action
        pass

    def kill(signum, frame):
        raise Killed

    wait = ocp.CheckpointManager.wait_until_finished

    def signalled_wait(manager):
        os.kill(os.getpid(), signal.SIGTERM)  # delivered before the wait, in this thread
        return wait(manager)

    monkeypatch.setattr(ocp.CheckpointManager, "wait_until_finished", signalled_wait)
    previous = signal.signal(signal.SIGTERM, kill)
    try:
        train.train(tiny_config(prepared, **{"train.num_steps": "2"}), str(tmp_path))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert _steps(str(tmp_path)) == [2]
    assert checkpoint.read_checkpoint(str(tmp_path))[2] == 2
