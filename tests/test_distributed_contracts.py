"""What multi-process start-up, the launch scripts, the preflight, the compile options, the
huge-page tunable and the multi-process checkpoint restore promise and the suite did not
check (found by mutation testing, audit 21). Each against a hand-made expectation: the
environment a scheduler sets, the flags given, two real ``jax.distributed`` processes, or a
checkpoint folder that one of two processes cannot read."""

import logging
import os
import shlex
import signal
import subprocess
import sys
import types

import jax
import numpy as np
import pytest
from conftest import REPO, tiny_config

from vjax import distributed
from vjax.config_utils import ConfigError
from vjax.errors import UserError

TRAIN = ["--", "vjax", "train", "--config=configs/demo.py", "--workdir=gs://bucket/runs/demo"]
# Every variable vjax.distributed reads, cleared for the tests that set their own.
READ = ("VJAX_COORDINATOR_ADDRESS", "VJAX_NUM_PROCESSES", "VJAX_PROCESS_ID", "VJAX_DISTRIBUTED",
        "VJAX_LOCAL_DEVICE_IDS", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK",
        "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_MCA_orte_hnp_uri", "SLURM_JOB_ID", "SLURM_NTASKS",
        "SLURM_STEP_NODELIST", "SLURM_PROCID", "SLURM_LOCALID")  # fmt: skip


# ---------------------------------------------------------------- vjax/distributed.py

# What an sbatch script sees outside srun (the batch step): the job's variables and
# SLURM_PROCID/SLURM_LOCALID 0, but no step's node list (as `env | grep SLURM` in a batch
# script of 4 tasks prints). vjax is one process there; JAX's SLURM start-up would fail.
BATCH_SCRIPT = {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "16", "SLURM_PROCID": "0",
                "SLURM_LOCALID": "0", "SLURM_NODELIST": "node[01-02]",
                "SLURM_JOB_NODELIST": "node[01-02]"}  # fmt: skip


@pytest.mark.parametrize(
    "env",
    [
        BATCH_SCRIPT,
        {"VJAX_DISTRIBUTED": "0"},
        {"OMPI_COMM_WORLD_SIZE": "1", "OMPI_COMM_WORLD_RANK": "0"},
    ],  # fmt: skip
    ids=["sbatch_script_outside_srun", "vjax_distributed_0", "mpirun_of_one"],
)
def test_one_process_environments_start_nothing(env):
    assert distributed.detect(env) == "single"


@pytest.fixture
def started(monkeypatch) -> list:
    """``jax.distributed.initialize`` replaced by a recorder of its calls, the variables
    vjax.distributed reads cleared."""
    calls = []
    monkeypatch.setattr(distributed.jax.distributed, "initialize",
                        lambda *args, **kw: calls.append((args, kw)))  # fmt: skip
    monkeypatch.setattr(distributed.jax.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed, "log", types.SimpleNamespace(info=lambda *a: None))
    for name in READ:
        monkeypatch.delenv(name, raising=False)
    return calls


def test_explicit_arguments_start_it_and_win_over_the_environment(started, monkeypatch):
    """``--coordinator_address/--num_processes/--process_id`` alone start the run (process 0
    included), and win over ``VJAX_*`` variables (the module doc's promise)."""
    distributed.initialize("host0:1234", 2, 0)
    assert started == [(("host0:1234", 2, 0), {"local_device_ids": None})]
    for name, value in {"VJAX_COORDINATOR_ADDRESS": "other:1", "VJAX_NUM_PROCESSES": "4",
                        "VJAX_PROCESS_ID": "3"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    distributed.initialize("host0:1234", 2, 1)
    assert started[1] == (("host0:1234", 2, 1), {"local_device_ids": None})


def test_a_coordinator_with_only_the_process_id_names_the_count(started, monkeypatch):
    """Only one of the two given (a launcher script that forgot VJAX_NUM_PROCESSES) is the
    one-line error naming both, not int(None)'s TypeError."""
    monkeypatch.setenv("VJAX_COORDINATOR_ADDRESS", "h:1")
    monkeypatch.setenv("VJAX_PROCESS_ID", "1")
    with pytest.raises(UserError, match="given without the process count and id"):
        distributed.initialize()
    assert started == []


def test_a_process_own_device_list_wins_over_the_mpi_local_rank(started, monkeypatch):
    """One process per node under mpirun drives the devices VJAX_LOCAL_DEVICE_IDS names, not
    only its local rank's."""
    for name, value in {"VJAX_COORDINATOR_ADDRESS": "h:1", "OMPI_COMM_WORLD_SIZE": "2",
                        "OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
                        "VJAX_LOCAL_DEVICE_IDS": "4,5,6,7"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    distributed.initialize()
    assert started == [(("h:1", 2, 1), {"local_device_ids": [4, 5, 6, 7]})]


def test_automatic_start_passes_the_devices_of_a_process_per_node(started, monkeypatch):
    """``launch/slurm.py --per=node`` exports VJAX_DISTRIBUTED=1 and the node's GPUs: JAX
    finds the coordinator itself and the process drives all of them."""
    monkeypatch.setenv("VJAX_DISTRIBUTED", "1")
    monkeypatch.setenv("VJAX_LOCAL_DEVICE_IDS", "0,1,2,3")
    distributed.initialize()
    assert started == [((), {"local_device_ids": [0, 1, 2, 3]})]


def test_one_process_or_a_second_initialize_starts_nothing(started, monkeypatch):
    distributed.initialize()  # no launcher, scheduler or flag: one process
    assert started == []
    monkeypatch.setattr(distributed.jax.distributed, "is_initialized", lambda: True)
    distributed.initialize("host0:1234", 2, 0)
    assert started == []


# Two real processes: process 0 prepares slowly, the other must wait and then see its output;
# a Ctrl-C on process 0 is an error naming the work on the other (not a week's wait); later
# calls still pair up.
ZERO_FIRST = """
import os, sys, time
from vjax import distributed
from vjax.errors import UserError
distributed.initialize()
import jax
pid = jax.process_index()
marker = os.path.join(sys.argv[1], "prepared")

def prepare():
    if pid == 0:
        time.sleep(1.0)
        open(marker, "w").write("done")
    return os.path.exists(marker)

print("first", distributed.process_zero_first(prepare, "preparing"), flush=True)

def interrupted():
    if pid == 0:
        raise KeyboardInterrupt
    return "ran"

try:
    print("second", distributed.process_zero_first(interrupted, "preparing again"), flush=True)
except KeyboardInterrupt:
    print("second interrupted", flush=True)
except UserError as e:
    print("second error:", e, flush=True)
print("third", distributed.process_zero_first(lambda: pid, "counting"), flush=True)
"""


def test_process_zero_first_on_two_real_processes(tmp_path):
    import local

    script = tmp_path / "zero_first.py"
    script.write_text(ZERO_FIRST)
    port = local.free_port()
    env = {**os.environ, "PYTHONPATH": REPO}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(tmp_path)],
            cwd=REPO,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**env, **local.process_env(i, 2, port, "cpu", 1)},
        )  # fmt: skip
        for i in range(2)
    ]
    try:
        outputs = [p.communicate(timeout=60)[0] for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            os.killpg(p.pid, signal.SIGKILL)
        pytest.fail("a process waited on the other: " + " / ".join(
            p.communicate()[0][-1500:] for p in procs))  # fmt: skip
    lines = [[line for line in out.splitlines() if line.startswith(("first", "second", "third"))]
             for out in outputs]  # fmt: skip
    assert lines[0] == ["first True", "second interrupted", "third 0"], outputs[0][-3000:]
    assert lines[1] == [
        "first True",
        "second error: preparing again failed on process 0 (its output says why)",
        "third 1",
    ], outputs[1][-3000:]


# ---------------------------------------------------------------- launch/common.py, local.py


def test_a_failed_teardown_fails_the_launch_and_the_first_failure_is_its_code(capsys):
    import common

    def exits(code):
        return [sys.executable, "-c", f"raise SystemExit({code})"]

    assert common.execute([exits(0)], False, always=[exits(1)]) == 1  # left allocated
    assert common.execute([exits(3)], False, always=[exits(1)]) == 3


def test_a_launch_without_a_command_is_one_usage_line():
    slurm = os.path.join(REPO, "launch", "slurm.py")
    argv = [sys.executable, slurm, "--nodes=2", "--dry_run", "--"]
    result = subprocess.run(argv, capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "slurm.py: error: no command: [options] -- COMMAND" in result.stderr


FAKE_GCLOUD_INTERRUPTED = """#!/bin/sh
echo "$*" >> "$GCLOUD_LOG"
case "$*" in *"VJAX_DISTRIBUTED=1"*) kill -INT $PPID; sleep 1;; esac
exit 0
"""


def test_ctrl_c_during_the_tpu_run_still_tears_the_tpu_down(tmp_path):
    """``all``: Ctrl-C while the command runs on the workers deletes the TPU VM (the module
    doc: the teardown runs when a later step fails or is interrupted) and exits 130."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "train.py").write_text("x\n")
    for args in (["init", "-q"], ["add", "-A"],
                 ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c"]):  # fmt: skip
        subprocess.run(["git", *args], cwd=checkout, check=True, capture_output=True)
    fake = tmp_path / "bin" / "gcloud"
    fake.parent.mkdir()
    fake.write_text(FAKE_GCLOUD_INTERRUPTED)
    fake.chmod(0o755)
    log = tmp_path / "gcloud.log"
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}", "GCLOUD_LOG": str(log)}
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "launch", "tpu_pod.py"), "all", "--name=intr",
         "--zone=z", "--accelerator=v4-8", *TRAIN],
        cwd=checkout, env=env, capture_output=True, text=True, timeout=60,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    if os.path.exists("/tmp/vjax-intr.tar.gz"):
        os.unlink("/tmp/vjax-intr.tar.gz")
    calls = log.read_text().splitlines()
    assert result.returncode == 130, result.stdout + result.stderr
    assert calls[-1].startswith("compute tpus tpu-vm delete intr"), calls


CHILD_FAILS = """
import os, signal, sys, time
ready = os.path.join(sys.argv[1], "ready")
def on_term(*_):
    print("terminated", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
signal.signal(signal.SIGINT, signal.SIG_IGN)
if os.environ["VJAX_PROCESS_ID"] == "1":
    for _ in range(100):  # until process 0 handles SIGTERM (its start can be slow)
        if os.path.exists(ready):
            break
        time.sleep(0.1)
    sys.exit(3)
open(ready, "w").close()
for _ in range(150):  # 15 s at most, so nothing outlives the test
    time.sleep(0.1)
"""


def test_one_failed_process_stops_the_others_and_is_the_exit_code(tmp_path):
    """launch/local.py's doc: if one process fails, the others are stopped (SIGTERM: as a
    preemption) and its exit code is returned (the others would wait in a collective)."""
    child = tmp_path / "child.py"
    child.write_text(CHILD_FAILS)
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "launch", "local.py"), "--num_processes=2", "--",
         sys.executable, str(child), str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 3, result.stdout
    assert "process 1 exited with 3; stopping the others" in result.stdout
    assert "[p0] terminated" in result.stdout, result.stdout


def test_a_process_killed_by_a_signal_is_the_shells_exit_code(tmp_path):
    """A process killed by SIGKILL is exit code 137, as a shell reports it (Popen's -9 became
    sys.exit(-9): 247), and the line names the signal."""
    kill_one = 'if [ "$VJAX_PROCESS_ID" = 1 ]; then kill -9 $$; fi; sleep 15'
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "launch", "local.py"), "--num_processes=2", "--",
         "bash", "-c", kill_one],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 137, result.stdout
    assert "process 1 was killed by SIGKILL; stopping the others" in result.stdout


def test_local_processes_are_told_the_process_count():
    from local import process_env

    for pid in range(3):
        env = process_env(pid, 3, 1234, "cpu", 2)
        assert (env["VJAX_NUM_PROCESSES"], env["VJAX_PROCESS_ID"]) == ("3", str(pid))


# ---------------------------------------------------------------- launch/slurm.py


def _dry_run(script: str, *args: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "launch", script), *args, "--dry_run", *TRAIN],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return result.stdout.splitlines()


def test_slurm_script_carries_every_resource_flag():
    lines = _dry_run("slurm.py", "--nodes=3", "--gpus_per_node=4", "--cpus_per_task=6",
                     "--time=01:30:00", "--account=proj", "--job_name=exp",
                     "--log_dir=/logs", "--repo=/r")  # fmt: skip
    script = lines[1:-1]
    directives = ("--job-name=exp", "--nodes=3", "--ntasks-per-node=4", "--gpus-per-node=4",
                  "--cpus-per-task=6", "--time=01:30:00", "--signal=TERM@120", "--requeue",
                  "--open-mode=append", "--output=/logs/%x-%j.out", "--account=proj")  # fmt: skip
    for directive in directives:
        assert f"#SBATCH {directive}" in script, directive
    assert not any("--partition" in line for line in script)  # none given: the default one
    (srun,) = [shlex.split(line) for line in script if line.startswith("srun ")]
    # One task failing ends the step (the others would wait in a collective until --time).
    assert srun[:2] == ["srun", "--kill-on-bad-exit=1"]
    assert srun[-4:] == ["vjax", "train", "--config=configs/demo.py",
                         "--workdir=gs://bucket/runs/demo"]  # fmt: skip
    assert 'export PATH=/r/.venv/bin:"$PATH"' in script  # the venv's vjax


def test_slurm_submits_the_script_it_writes_with_its_log_folder(tmp_path):
    """Not a dry run: the script goes where --script says, sbatch gets that file, and the log
    folder exists (SLURM does not create it; the job would fail with no log)."""
    fake = tmp_path / "bin" / "sbatch"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "$@" > "$SBATCH_LOG"\n')
    fake.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}",
           "SBATCH_LOG": str(tmp_path / "sbatch.log")}  # fmt: skip
    subprocess.run(
        [sys.executable, os.path.join(REPO, "launch", "slurm.py"), "--nodes=1",
         "--script=job.sh", "--log_dir=logs", "--repo=/r", *TRAIN],
        cwd=work, env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    assert (tmp_path / "sbatch.log").read_text().split() == ["job.sh"]
    assert "#SBATCH --output=logs/%x-%j.out" in (work / "job.sh").read_text().splitlines()
    assert (work / "logs").is_dir()


# ---------------------------------------------------------------- launch/tpu_pod.py


@pytest.mark.parametrize(
    "accelerator, expected",
    [("v5e-8", ("v5litepod-8", 8, 1)), ("v6e-8", ("v6e-8", 8, 1)), ("v2-8", ("v2-8", 4, 1)),
     ("v3-32", ("v3-32", 16, 4)), ("v5p-8", ("v5p-8", 4, 1))],
)  # fmt: skip
def test_accelerator_types_give_their_chips_and_hosts(accelerator, expected):
    """Cloud TPU's tables: v5e/v6e -8 are one host of 8 chips; v2/v3/v4/v5p count two
    TensorCores a chip, 4 chips a host."""
    import tpu_pod

    assert tpu_pod.parse_accelerator(accelerator) == expected


def test_tpu_vm_spot_project_and_a_teardown_that_asks_nothing():
    lines = _dry_run("tpu_pod.py", "all", "--name=vm", "--zone=z", "--project=p",
                     "--accelerator=v4-8", "--spot")  # fmt: skip
    commands = [shlex.split(line) for line in lines[1:]]
    create, teardown = commands[0], commands[-1]
    assert create[3:6] == ["tpu-vm", "create", "vm"] and "--spot" in create
    assert teardown[3:6] == ["tpu-vm", "delete", "vm"] and "--quiet" in teardown
    gcloud = [c for c in commands if c[0] == "gcloud"]
    assert len(gcloud) == 5 and all("--project=p" in c for c in gcloud), gcloud


@pytest.mark.parametrize("state, code", [("SUSPENDED", 1), ("FAILED", 1), ("ACTIVE", 0)])
def test_the_queue_wait_ends_on_a_suspended_resource(tmp_path, state, code):
    """The wait of ``create --queued`` ends (failing, so ``all`` tears down) once the queued
    resource is SUSPENDED or FAILED, instead of polling it every 30 s for ever."""
    lines = _dry_run(
        "tpu_pod.py", "create", "--name=qr", "--zone=z", "--accelerator=v4-8", "--queued"
    )
    (_create, wait) = [shlex.split(line) for line in lines[1:]]
    fake = tmp_path / "gcloud"
    fake.write_text(f"#!/bin/sh\necho {state}\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    assert subprocess.run(wait, env=env, capture_output=True, timeout=20).returncode == code


def test_multi_slice_create_names_its_slices_and_needs_a_queued_resource():
    (create, _wait) = [shlex.split(line) for line in _dry_run(
        "tpu_pod.py", "create", "--name=ms", "--zone=z", "--accelerator=v5e-32", "--queued",
        "--num_slices=2")[1:]]  # fmt: skip
    assert "--node-count=2" in create and "--node-prefix=ms" in create  # slices ms-0, ms-1
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "launch", "tpu_pod.py"), "create", "--name=ms",
         "--zone=z", "--accelerator=v5e-32", "--num_slices=2", "--dry_run", *TRAIN],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode != 0 and "--num_slices > 1 needs --queued" in result.stderr


# ---------------------------------------------------------------- vjax/preflight.py


def test_a_batch_that_does_not_split_over_the_devices_is_refused_on_the_devices_given(data_dir):
    from vjax.preflight import check_config

    config = tiny_config(data_dir, **{"input.global_batch_size": "6"})
    with pytest.raises(ConfigError, match=r"^input.global_batch_size \(6\) must be divisible "
                                          r"by the number of devices \(8\)"):  # fmt: skip
        check_config(config)
    assert check_config(config, jax.devices()[:2]).size == 2  # 6 clips split over 2 devices


@pytest.mark.parametrize(
    "overrides, message",
    [({"input.num_workers": "-2"}, r"input.num_workers must be >= -1"),
     ({"input.std": "(0.25, 0.25)"}, r"config.input: input.mean and input.std are one value"),
     ({"sharding.mesh": "(('data', 1), ('fsdp', -1), ('tensor', 1))",
       "sharding.dcn_mesh": "(('data', 2),)"},
      r"config.sharding.mesh: 1 processes cannot form 2 slices")],
    ids=["num_workers_-2", "std_of_two_values", "dcn_mesh_on_one_process"],
)  # fmt: skip
def test_a_bad_setting_the_suite_missed_is_a_config_error(data_dir, overrides, message):
    from vjax.preflight import check_config

    with pytest.raises(ConfigError, match=rf"^{message}"):
        check_config(tiny_config(data_dir, **overrides))


# ---------------------------------------------------------------- compile options, huge pages


def test_tpus_get_no_cpu_compile_options():
    from vjax.compile_options import compiler_options

    assert compiler_options("tpu") is None and compiler_options("cuda") is None


def test_glibc_2_35_is_the_first_to_take_the_tunable(monkeypatch):
    from vjax import huge_pages

    monkeypatch.setattr(huge_pages, "huge_pages_on_request", lambda: True)
    for version, wanted in (((2, 34), False), ((2, 35), True), ((3, 0), True)):
        monkeypatch.setattr(huge_pages, "glibc_version", lambda v=version: v)
        assert huge_pages.takes_effect() is wanted, version


# ---------------------------------------------------------------- vjax/checkpoint.py


class _Process:
    """``jax`` as process ``index`` of ``count`` sees it, for vjax.checkpoint only."""

    def __init__(self, index: int, count: int):
        self._index, self._count = index, count

    def __getattr__(self, name):
        return getattr(jax, name)

    def process_index(self) -> int:
        return self._index

    def process_count(self) -> int:
        return self._count


def _two_steps(directory: str) -> None:
    from vjax import checkpoint

    manager = checkpoint.make_manager(directory, 5, async_save=False)
    for step in (1, 2):
        checkpoint.save(manager, step, {"w": np.full(4, float(step), np.float32)}, {"s": step})
    manager.close()


def _target():
    from vjax import checkpoint

    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return checkpoint.abstract_like({"w": np.zeros(4, np.float32)}, {"w": sharding})


@pytest.fixture
def step_2_unreadable_elsewhere(monkeypatch):
    """``as_process(index)``: this process is ``index`` of 2, and the other one cannot read
    step 2 (it reads step 1); process 0 broadcasts ``moved_failed[0]``."""
    from jax.experimental import multihost_utils

    from vjax import checkpoint

    moved_failed = [0]

    def as_process(index: int):
        monkeypatch.setattr(checkpoint, "jax", _Process(index, 2))
        other = iter([0, 1])  # the other process's verdict on step 2, then on step 1

        def allgather(mine):
            pair = [int(mine), next(other)]
            return np.asarray(pair if index == 0 else pair[::-1], np.int32)

        def broadcast(value):
            return np.int32(value) if index == 0 else np.int32(moved_failed[0])

        monkeypatch.setattr(multihost_utils, "process_allgather", allgather)
        monkeypatch.setattr(multihost_utils, "broadcast_one_to_all", broadcast)

    return as_process, moved_failed


def test_a_step_another_process_cannot_read_is_skipped_by_every_process(
    tmp_path, caplog, step_2_unreadable_elsewhere
):
    """Every process restores the same step (else their collectives would not match): step 2
    reads here but not on the other process, so both take step 1; evaluating moves nothing,
    resuming has process 0 (only) move step 2 aside."""
    from vjax import checkpoint

    as_process, _ = step_2_unreadable_elsewhere
    for index, move_aside, listing in ((0, False, ["1", "2"]), (1, True, ["1", "2"]),
                                       (0, True, ["1", "2.unreadable"])):  # fmt: skip
        directory = str(tmp_path / f"p{index}_{move_aside}")
        _two_steps(directory)
        as_process(index)
        manager = checkpoint.make_manager(directory, 5, async_save=False)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            state, step = checkpoint.restore_latest(manager, _target(), move_aside=move_aside)
        manager.close()
        assert step == 1 and np.asarray(state["w"]).tolist() == [1.0] * 4, (index, move_aside)
        assert sorted(os.listdir(directory)) == listing, (index, move_aside)
        if index == 0:
            assert "step 2" in caplog.text and "cannot be read on another process" in caplog.text


def test_a_step_process_0_could_not_move_aside_stops_the_other_process_too(
    tmp_path, step_2_unreadable_elsewhere
):
    from vjax import checkpoint

    as_process, moved_failed = step_2_unreadable_elsewhere
    moved_failed[0] = 1
    directory = str(tmp_path / "checkpoints")
    _two_steps(directory)
    as_process(1)
    manager = checkpoint.make_manager(directory, 5, async_save=False)
    with pytest.raises(UserError, match="a step could not be moved aside on process 0"):
        checkpoint.restore_latest(manager, _target(), move_aside=True)
    manager.close()
    assert sorted(os.listdir(directory)) == ["1", "2"]
