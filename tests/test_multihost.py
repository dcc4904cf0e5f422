"""Real multi-process training: 2 processes x 2 CPU devices over jax.distributed on localhost
prepare their dataset and end with the same parameters as 1 process with 4 devices."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, tiny_config

from vjax.checkpoint import read_checkpoint

STEPS = 4
# One process, this one: data=4 x fsdp=2 over its 8 host devices (tests/conftest.py).
ONE_HOST = {"sharding.mesh": "(('data', 4), ('fsdp', 2), ('tensor', 1))"}
# Two processes as two "slices": fsdp=2 inside each (ICI), data=2 across them (DCN), so the
# multi-slice mesh code runs too.
TWO_SLICES = [
    "--config.sharding.mesh=(('data', 1), ('fsdp', 2), ('tensor', 1))",
    "--config.sharding.dcn_mesh=(('data', 2),)",
]


# SGD: updates are linear in the gradients, so the (legitimately) different reduction order
# across processes stays at rounding level; Adam's g/sqrt(v) would amplify it for near-zero
# gradients.
OVERRIDES = {"train.num_steps": str(STEPS), "train.checkpoint_every": "2",
             "optimizer.name": "sgd", "optimizer.lr": "0.5"}  # fmt: skip


def _train_command(data_dir: str, workdir: str, mesh: list[str]) -> list[str]:
    return [
        sys.executable, "-m", "vjax.main", "--mode=train", f"--workdir={workdir}",
        f"--config={REPO}/configs/demo.py:tiny", f"--config.dataset.data_dir={data_dir}",
        *[f"--config.{key}={value}" for key, value in OVERRIDES.items()], *mesh,
    ]  # fmt: skip


def _records(workdir: str, split: str) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r.get("split") == split]


def _losses(workdir: str) -> list[float]:
    return [r["loss"] for r in _records(workdir, "train")]


def _launch_two(devices_per_process: int, command: list[str]) -> str:
    """Runs ``command`` as 2 local processes (launch/local.py) of ``devices_per_process`` CPU
    devices each; returns their output after checking that they succeeded."""
    launcher = [sys.executable, os.path.join(REPO, "launch", "local.py")]
    result = subprocess.run(
        [*launcher, "--num_processes=2", f"--devices_per_process={devices_per_process}", "--",
         *command],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:]
    return result.stdout


@pytest.fixture(scope="module")
def prepared(data_dir):
    from vjax.data.datasets import load_dataset

    load_dataset(tiny_config(data_dir).dataset)  # prepare once, before processes share it
    return data_dir


def test_two_processes_match_one_process(prepared, tmp_path):
    from vjax import train

    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    train.train(tiny_config(prepared, **OVERRIDES, **ONE_HOST), one)

    # The processes prepare the dataset themselves, into a new folder: process 0 first, the
    # other then reads it (both at once wrote over each other and one failed).
    fresh = str(tmp_path / "tfds")
    output = _launch_two(2, _train_command(fresh, two, TWO_SLICES))
    # Both processes ran; only process 0 reported progress.
    assert "[p1]" in output and "[p0]" in output
    assert not any(line.startswith("[p1] step") for line in output.splitlines())

    meta_one, vars_one, step_one = read_checkpoint(one)
    meta_two, vars_two, step_two = read_checkpoint(two)
    assert step_one == step_two == STEPS
    flat_one, flat_two = (
        {"/".join(map(str, k)): v for k, v in _flatten(t)} for t in (vars_one, vars_two)
    )
    assert flat_one.keys() == flat_two.keys()
    for key in flat_one:
        np.testing.assert_allclose(flat_two[key], flat_one[key], rtol=1e-5, atol=1e-6, err_msg=key)
    np.testing.assert_allclose(_losses(two), _losses(one), rtol=1e-5)


def test_tensor_parallel_across_processes_trains_on_the_batch_one_process_sees(prepared, tmp_path):
    """tensor=2 over 2 processes of 1 device (SLURM's one process per GPU): the batch is
    replicated across them, so both must load the same examples. Each loaded its own half
    into rows meant to be replicas (a global batch of 4, not 8; a tensor-parallel layer summed
    parts of two examples; step 1's grad norm 3.02 against 2.32) and nothing said so."""
    from vjax import train

    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    mesh = "(('data', 1), ('fsdp', 1), ('tensor', 2))"
    here = "(('data', 4), ('fsdp', 1), ('tensor', 2))"  # this process's 8 devices
    train.train(tiny_config(prepared, **OVERRIDES, **{"sharding.mesh": here}), one)
    output = _launch_two(1, _train_command(prepared, two, [f"--config.sharding.mesh={mesh}"]))
    assert "input (8, 4, 16, 16, 3)" in output, output[-4000:]
    np.testing.assert_allclose(_losses(two), _losses(one), rtol=1e-5)
    validation = [_records(workdir, "validation")[-1] for workdir in (one, two)]
    for key in ("loss", "top1"):  # every validation clip once: none doubled by the replicas
        np.testing.assert_allclose(validation[1][key], validation[0][key], rtol=1e-5)


def _flatten(tree, prefix=()):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _flatten(value, (*prefix, key))
    else:
        yield prefix, np.asarray(tree)


def test_dry_run_prints_each_process(capsys):
    sys.path.insert(0, os.path.join(REPO, "launch"))
    import local

    assert local.main(["--num_processes=3", "--port=1234", "--dry_run", "--", "vjax", "train"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "wait" and len(lines) == 4
    for i, line in enumerate(lines[:3]):
        assert f"VJAX_PROCESS_ID={i} " in line and "VJAX_COORDINATOR_ADDRESS=localhost:1234" in line
        assert line.endswith("vjax train &")


def _start_two(command: list[str]) -> list[subprocess.Popen]:
    """``command`` as processes 0 and 1 of a 2-process jax.distributed run (2 CPU devices
    each), their output merged and piped."""
    sys.path.insert(0, os.path.join(REPO, "launch"))
    import local

    port = local.free_port()
    return [
        subprocess.Popen(
            command,
            cwd=REPO,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **local.process_env(i, 2, port, "cpu", 2)},
        )
        for i in range(2)
    ]


def test_preemption_of_one_host_saves_on_all_and_exits_cleanly(prepared, tmp_path):
    """SIGTERM to process 1 only: JAX's preemption service agrees on a step, every process
    saves its shards of that step and exits 0; the checkpoint then restores. An evaluation of
    it by two processes ends at SIGTERM."""
    import re
    import signal

    workdir = str(tmp_path)
    command = [
        *_train_command(prepared, workdir, TWO_SLICES),
        "--config.train.num_steps=5000", "--config.train.checkpoint_every=5000",
        "--config.train.log_every=1", "--config.train.eval_every=5000",
    ]  # fmt: skip
    procs = _start_two(command)
    for line in procs[0].stdout:  # process 0 prints progress once training is under way
        if line.startswith("step "):
            break
    procs[1].send_signal(signal.SIGTERM)
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[1][-3000:]
    saved = int(re.search(r"Preempted: saved a checkpoint at step (\d+)", outputs[0]).group(1))
    assert 0 < saved < 5000
    _, _, step = read_checkpoint(workdir)
    assert step == saved

    # Evaluation has nothing to save: SIGTERM ends both processes at once (JAX's preemption
    # service, if left on, caught it and the evaluation ran to its end).
    procs = _start_two([a.replace("--mode=train", "--mode=eval") for a in command])
    for line in procs[0].stdout:  # the processes have connected: jax.distributed is up
        if "connected" in line:
            break
    for p in procs:
        p.send_signal(signal.SIGTERM)
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [-signal.SIGTERM] * 2, outputs[0][-3000:]
    assert not any(name.startswith("eval_") for name in os.listdir(workdir))

    # Resumed, with a validation of 4 slow batches after each step: process 1 gets SIGTERM in
    # the first one, which stops on both within it and saves that step (the validation ran
    # to its end, then one more step, before).
    resumed = [*command, "--config.train.eval_every=1", "--config.input.global_batch_size=4"]
    procs = _start_two([sys.executable, "-c", SIGTERM_IN_FIRST_VALIDATION, *resumed[3:]])
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[1][-3000:]
    stopped = rf"validation @ {saved + 1}: preempted, stopped before batch [234] of 4"
    assert re.search(stopped, outputs[0]), outputs[0][-3000:]
    assert read_checkpoint(workdir)[2] == saved + 1


# `vjax train` whose process 1 receives SIGTERM at the start of its first validation batch,
# and whose validation batches are slow on both processes (as a real validation's are: with
# nothing shared per batch, a fast process 0 ran through the validation before the processes
# had agreed, and the stop fell, correctly, on the next step's question). JAX's watcher polls
# for the signal once a second, then the processes meet at a barrier to agree.
SIGTERM_IN_FIRST_VALIDATION = """
import os, signal, sys, time
import jax
from vjax import main, train
make_apply, signalled = train._apply, []
def signalling_apply(*args):
    apply = make_apply(*args)
    def slow_batches(batch):
        if jax.process_index() == 1 and not signalled:
            signalled.append(os.kill(os.getpid(), signal.SIGTERM))
        time.sleep(2)
        return apply(batch)
    return slow_batches
train._apply = signalling_apply
sys.exit(main.main(sys.argv[1:]))
"""
