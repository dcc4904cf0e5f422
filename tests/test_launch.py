"""Launch scripts: dry runs print valid commands for TPU pods and a SLURM GPU cluster, and the
multi-process start-up picks the right mode from the environment."""

import os
import shlex
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

from vjax import distributed

# What srun sets in each of its tasks (besides the job's variables).
SRUN_TASK = {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "16", "SLURM_STEP_NODELIST": "node[01-02]",
             "SLURM_PROCID": "3", "SLURM_LOCALID": "3"}  # fmt: skip
TRAIN = ["--", "vjax", "train", "--config=configs/demo.py", "--workdir=gs://bucket/runs/demo"]


def _dry_run(script: str, *args: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "launch", script), *args, "--dry_run", *TRAIN[0:1],
         *TRAIN[1:]],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return result.stdout.splitlines()


def _assert_valid_shell(line: str) -> list[str]:
    subprocess.run(["bash", "-n", "-c", line], check=True)  # syntax check, runs nothing
    return shlex.split(line)


@pytest.mark.parametrize(
    "accelerator, accel_type, hosts, runtime",
    [
        ("v5e-32", "v5litepod-32", 8, "v2-alpha-tpuv5-lite"),
        ("v4-64", "v4-64", 8, "tpu-ubuntu2204-base"),
        ("v4-8", "v4-8", 1, "tpu-ubuntu2204-base"),
        ("v5p-16", "v5p-16", 2, "v2-alpha-tpuv5"),
        ("v6e-16", "v6e-16", 4, "v2-alpha-tpuv6e"),
    ],
)
def test_tpu_pod_dry_run(accelerator, accel_type, hosts, runtime):
    lines = _dry_run(
        "tpu_pod.py", "all", "--name=pod", "--zone=us-central2-b",
        f"--accelerator={accelerator}", "--queued", "--spot",
    )  # fmt: skip
    assert lines[0].startswith(f"# {accel_type}: ") and f"{hosts} processes" in lines[0]
    commands = [_assert_valid_shell(line) for line in lines[1:]]
    create, wait, archive, scp, install, run, teardown = commands
    setup = next(a for a in install if a.startswith("--command="))[len("--command=") :]
    _assert_valid_shell(setup)
    assert "uv venv -q --allow-existing -p 3.11 .venv" in setup  # the images' python3 is 3.10
    assert create[:5] == ["gcloud", "compute", "tpus", "queued-resources", "create"]
    assert f"--accelerator-type={accel_type}" in create and "--spot" in create
    assert f"--runtime-version={runtime}" in create  # the generation's documented runtime
    assert archive[:2] == ["bash", "-c"] and "git archive" in archive[2]
    assert wait[:2] == ["bash", "-c"] and "queued-resources describe pod" in wait[2]
    assert scp[3:5] == ["tpu-vm", "scp"] and "--worker=all" in scp
    assert run[3:6] == ["tpu-vm", "ssh", "pod"] and "--worker=all" in run
    remote = next(a for a in run if a.startswith("--command="))[len("--command=") :]
    _assert_valid_shell(remote)
    assert remote.endswith(
        'export PATH="$HOME/vjax/.venv/bin:$PATH" VJAX_DISTRIBUTED=1 && '
        "vjax train --config=configs/demo.py --workdir=gs://bucket/runs/demo"
    )
    assert teardown[3:5] == ["queued-resources", "delete"]


FAKE_GCLOUD = """#!/bin/sh
echo "$*" >> "$GCLOUD_LOG"
case "$*" in *"queued-resources describe"*) echo "$FAKE_STATE";; esac
case "$FAKE_STATE $*" in "EXISTS compute tpus queued-resources create"*) exit 1;; esac
exit 0
"""


def _git_checkout(root) -> None:
    """A small git checkout: a committed file edited since, a new file, an ignored one."""

    def git(*args):
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)

    git("init", "-q")
    (root / ".gitignore").write_text("runs/\n")
    (root / "train.py").write_text("committed\n")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    (root / "train.py").write_text("edited\n")
    (root / "new_config.py").write_text("new\n")
    (root / "runs").mkdir()
    (root / "runs" / "big.ckpt").write_text("ignored\n")


def test_tpu_pod_all_waits_for_the_queued_resource_and_always_tears_it_down(tmp_path):
    """``all --queued`` copies and runs only once the queued resource is ACTIVE (it described
    it once and went on), and deletes it whatever happened before (it was left allocated);
    the copy is the working tree as it is (it shipped the last commit)."""
    import tarfile

    checkout = tmp_path / "checkout"
    checkout.mkdir()
    _git_checkout(checkout)
    fake = tmp_path / "bin" / "gcloud"
    fake.parent.mkdir()
    fake.write_text(FAKE_GCLOUD)
    fake.chmod(0o755)
    log = tmp_path / "gcloud.log"
    argv = [sys.executable, os.path.join(REPO, "launch", "tpu_pod.py"), "all", "--name=qr",
            "--zone=z", "--accelerator=v4-8", "--queued", *TRAIN]  # fmt: skip
    for state, code in (("FAILED", 1), ("ACTIVE", 0), ("EXISTS", 1)):
        log.unlink(missing_ok=True)
        env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}",
               "GCLOUD_LOG": str(log), "FAKE_STATE": state}  # fmt: skip
        result = subprocess.run(argv, cwd=checkout, env=env, capture_output=True, text=True)
        assert result.returncode == code, result.stdout + result.stderr
        calls = log.read_text().splitlines()
        # What this launch created is deleted; a resource of that name already there is not.
        deleted = calls[-1].startswith("compute tpus queued-resources delete qr")
        assert deleted == (state != "EXISTS"), calls
        assert any("tpu-vm ssh" in c for c in calls) == (state == "ACTIVE")
    with tarfile.open("/tmp/vjax-qr.tar.gz") as archive:
        names = set(archive.getnames())
        assert archive.extractfile("train.py").read() == b"edited\n"
    assert "new_config.py" in names and not any(n.startswith("runs") for n in names)
    os.unlink("/tmp/vjax-qr.tar.gz")
    staged = subprocess.run(["git", "diff", "--cached", "--name-only"], cwd=checkout,
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert staged == ""  # the user's index is untouched


def test_tpu_vm_runtime_defaults_by_generation_and_version_overrides():
    (create,) = [_assert_valid_shell(line) for line in _dry_run(
        "tpu_pod.py", "create", "--name=vm", "--zone=z", "--accelerator=v6e-8")[1:]]  # fmt: skip
    assert create[3:5] == ["tpu-vm", "create"] and "--version=v2-alpha-tpuv6e" in create
    (create,) = [_assert_valid_shell(line) for line in _dry_run(
        "tpu_pod.py", "create", "--name=vm", "--zone=z", "--accelerator=v5e-8",
        "--version=my-runtime")[1:]]  # fmt: skip
    assert "--version=my-runtime" in create


def test_tpu_multislice_runs_every_slice_at_once_and_fails_when_one_does(tmp_path):
    lines = _dry_run(
        "tpu_pod.py", "run", "--name=ms", "--zone=z", "--accelerator=v5e-32", "--queued",
        "--num_slices=2",
    )  # fmt: skip
    assert "16 processes" in lines[0]
    (run,) = [_assert_valid_shell(line) for line in lines[1:]]
    assert run[:2] == ["bash", "-c"]
    assert "ssh ms-0 " in run[2] and "ssh ms-1 " in run[2]
    # The launcher fails when any slice fails: a fake gcloud that fails on one slice.
    fake = tmp_path / "gcloud"
    for failing, code in (("ms-1", 1), ("nothing", 0)):
        fake.write_text(f'#!/bin/sh\ncase "$*" in *"{failing}"*) exit 3;; esac\nexit 0\n')
        fake.chmod(0o755)
        env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
        assert subprocess.run(run, env=env).returncode == code


def _launch(script: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(REPO, "launch", script), *args],
                          capture_output=True, text=True, env=env)  # fmt: skip


@pytest.mark.parametrize(
    "accelerator, message",
    [("v9-8", "unknown TPU generation 'v9'"), ("v4-8x", "is not of the form v4-64 or v5e-32")],
)
def test_unknown_tpu_type_is_one_line(accelerator, message):
    result = _launch("tpu_pod.py", "run", "--name=x", "--zone=z", f"--accelerator={accelerator}",
                     "--dry_run", *TRAIN)  # fmt: skip
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr and result.stderr.splitlines()[-1].startswith(
        "tpu_pod.py: error: --accelerator: "
    )


@pytest.mark.parametrize("script, flag", [
    ("local.py", "--num_processes=0"), ("local.py", "--devices_per_process=-1"),
    ("slurm.py", "--nodes=0"), ("slurm.py", "--gpus_per_node=0"), ("tpu_pod.py", "--num_slices=0"),
])  # fmt: skip
def test_a_count_below_one_is_refused_not_a_launch_of_nothing(script, flag):
    """``local.py --num_processes=0`` ran nothing and exited 0, as if the run had succeeded."""
    required = {"slurm.py": ["--nodes=1"],
                "tpu_pod.py": ["run", "--name=x", "--zone=z", "--accelerator=v4-8"]}  # fmt: skip
    result = _launch(script, *required.get(script, []), flag, "--dry_run", *TRAIN)
    assert result.returncode == 2, result.stdout
    assert f"{flag.split('=')[0]}: takes a whole number of 1 or more" in result.stderr


@pytest.mark.parametrize("script", ["local.py", "slurm.py", "tpu_pod.py"])
def test_launcher_help_exits_0_and_a_missing_command_is_one_line_exit_2(script):
    """``--help`` printed the missing-command usage and exited 1 (nothing after ``--``)."""
    result = _launch(script, "--help")
    assert result.returncode == 0 and "--dry_run" in result.stdout, result.stderr
    result = _launch(script, "--dry_run")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr == f"{script}: error: no command: [options] -- COMMAND (e.g. -- vjax " \
                            "train --config=...)\n"  # fmt: skip


@pytest.mark.parametrize("launcher", ["slurm.py", "tpu_pod.py"])
def test_a_command_with_its_own_environment_runs_as_typed_with_the_venvs_vjax(tmp_path, launcher):
    """``-- env KEY=VALUE vjax ...`` ran ``.venv/bin/env`` (a path to nothing); the command now
    runs as typed, with the venv's programs first on PATH. Run here as a node would: the
    script's lines (SLURM: srun replaced by running its command) on a fake checkout."""
    repo = tmp_path / "home" / "vjax"
    vjax = repo / ".venv" / "bin" / "vjax"
    vjax.parent.mkdir(parents=True)
    vjax.write_text('#!/bin/sh\necho "venv vjax $* key=$WANDB_KEY $VJAX_DISTRIBUTED"\n')
    vjax.chmod(0o755)
    command = ["--", "env", "WANDB_KEY=k1", "vjax", "train", "--workdir=w"]
    if launcher == "slurm.py":
        args = ["--nodes=1", f"--repo={repo}", "--dry_run", *command]
        lines = [line for line in _launch(launcher, *args).stdout.splitlines()[1:-1] if line]
        srun = shlex.split(lines[-1])
        script = "\n".join([*lines[:-1], shlex.join(srun[3:])])
    else:
        args = ["run", "--name=pod", "--zone=z", "--accelerator=v4-8", "--dry_run", *command]
        (run,) = [shlex.split(line) for line in _launch(launcher, *args).stdout.splitlines()[1:]]
        script = next(a for a in run if a.startswith("--command="))[len("--command=") :]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home")}
    result = subprocess.run(["bash", "-c", script], env=env, cwd=repo, capture_output=True,
                            text=True)  # fmt: skip
    assert result.stdout == "venv vjax train --workdir=w key=k1 1\n", result.stderr


def test_a_program_that_cannot_be_started_is_one_line(tmp_path):
    """A launcher run where its program is not on PATH (the venv not activated: no ``vjax``; no
    SLURM client: no ``sbatch``) printed a FileNotFoundError traceback."""
    result = _launch("local.py", "--num_processes=2", "--", "vjaxx", "train")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        "local.py: cannot start 'vjaxx': No such file or directory (is it installed and on "
        "PATH? vjax's own command needs its virtual environment activated)")  # fmt: skip
    no_slurm = {**os.environ, "PATH": str(tmp_path)}  # no sbatch anywhere on it
    result = _launch("slurm.py", "--nodes=1", f"--script={tmp_path / 'job.sbatch'}", *TRAIN,
                     env=no_slurm)  # fmt: skip
    assert result.returncode == 127 and "Traceback" not in result.stderr
    assert "cannot start 'sbatch': No such file or directory" in result.stderr


@pytest.mark.parametrize("per, tasks", [("gpu", 8), ("node", 1)])
def test_slurm_dry_run_two_nodes_of_eight_gpus(tmp_path, per, tasks):
    lines = _dry_run("slurm.py", "--nodes=2", "--gpus_per_node=8", f"--per={per}",
                     "--partition=gpu", "--repo=/shared/vjax")  # fmt: skip
    assert lines[0] == f"# 2 nodes x 8 GPUs, {2 * tasks} processes"
    assert lines[-1] == "sbatch vjax.sbatch"
    script = "\n".join(lines[1:-1])
    path = tmp_path / "job.sbatch"
    path.write_text(script)
    subprocess.run(["bash", "-n", str(path)], check=True)
    for directive in ("--nodes=2", f"--ntasks-per-node={tasks}", "--gpus-per-node=8",
                      "--signal=TERM@120", "--requeue", "--partition=gpu"):  # fmt: skip
        assert f"#SBATCH {directive}" in script
    srun = shlex.split(script.strip().splitlines()[-1])
    assert srun[0] == "srun" and srun[3:5] == ["vjax", "train"]
    assert 'export PATH=/shared/vjax/.venv/bin:"$PATH"' in script.splitlines()
    assert ("VJAX_LOCAL_DEVICE_IDS=0,1,2,3,4,5,6,7" in script) == (per == "node")


@pytest.mark.parametrize(
    "env, mode",
    [
        ({}, "single"),
        ({"VJAX_COORDINATOR_ADDRESS": "host:1234"}, "explicit"),
        (SRUN_TASK, "auto"),
        # An salloc shell, or the batch script outside srun: job variables only, one process
        # (JAX's SLURM detection needs a step's; it failed with a raw ValueError).
        ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "16"}, "single"),
        ({**SRUN_TASK, "SLURM_NTASKS": "1"}, "single"),
        ({"OMPI_COMM_WORLD_SIZE": "4", "OMPI_MCA_orte_hnp_uri": "1@tcp://h:1"}, "auto"),
        ({"VJAX_DISTRIBUTED": "1"}, "auto"),
    ],
)
def test_distributed_mode_from_environment(env, mode):
    assert distributed.detect(env) == mode


def test_open_mpi_5_processes_are_told_how_to_start_and_read_their_rank(monkeypatch):
    """Open MPI 5 (PMIx) has no OMPI_MCA_orte_hnp_uri, so JAX cannot find the coordinator;
    with VJAX_COORDINATOR_ADDRESS the count and id come from mpirun's variables."""
    mpirun = {"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1"}
    with pytest.raises(ValueError, match="give every process VJAX_COORDINATOR_ADDRESS"):
        distributed.detect(mpirun)
    called = {}
    monkeypatch.setattr(distributed.jax.distributed, "initialize",
                        lambda *args, **kw: called.update(args=args, **kw))  # fmt: skip
    monkeypatch.setattr(distributed.jax.distributed, "is_initialized", lambda: False)
    for name in ("VJAX_NUM_PROCESSES", "VJAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    explicit = {**mpirun, "VJAX_COORDINATOR_ADDRESS": "host0:1234", "VJAX_LOCAL_DEVICE_IDS": "2,3"}
    for name, value in explicit.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(distributed, "log", type("Quiet", (), {"info": lambda *a: None}))
    distributed.initialize()
    assert called["args"] == ("host0:1234", 2, 1) and called["local_device_ids"] == [2, 3]
    # Without it, the rank's own device, as JAX gives an Open MPI 4 rank (not every GPU).
    monkeypatch.delenv("VJAX_LOCAL_DEVICE_IDS")
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1")
    distributed.initialize()
    assert called["local_device_ids"] == [1]


def test_coordinator_without_process_count_is_an_error(monkeypatch):
    for name in ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VJAX_COORDINATOR_ADDRESS", "localhost:1")
    monkeypatch.delenv("VJAX_NUM_PROCESSES", raising=False)
    with pytest.raises(ValueError, match="without the process count and id"):
        distributed.initialize()
    # The count and id without an address: each process would train alone as "0 of 1".
    monkeypatch.delenv("VJAX_COORDINATOR_ADDRESS")
    for given in ({"num_processes": 2}, {"process_id": 1}):
        with pytest.raises(ValueError, match="need --coordinator_address"):
            distributed.initialize(**given)


def test_multi_slice_mesh_of_one_process_per_gpu_groups_a_nodes_processes():
    """sharding.dcn_mesh with SLURM's default of one process per GPU: each process counted
    as a slice (16 for 2 nodes of 8), so dcn_mesh=(('data', 2),) was refused. Consecutive
    processes now make a slice; here 4 processes of 2 devices in 2 slices."""
    from types import SimpleNamespace

    from vjax.parallel import hybrid_by_process_groups

    devices = [SimpleNamespace(process_index=p, id=10 * p + i) for p in range(4) for i in (0, 1)]
    ids = np.vectorize(lambda d: d.id)
    # data spans the 2 slices over DCN, fsdp the 4 devices inside each.
    grid = hybrid_by_process_groups([1, 4], [2, 1], devices[::-1])
    np.testing.assert_array_equal(ids(grid), [[0, 1, 10, 11], [20, 21, 30, 31]])
    grid = hybrid_by_process_groups([2, 2], [1, 2], devices)
    np.testing.assert_array_equal(ids(grid), [[0, 1, 20, 21], [10, 11, 30, 31]])
    with pytest.raises(ValueError, match="4 processes cannot form 3 slices"):
        hybrid_by_process_groups([1, 1], [3, 1], devices)


def test_a_mesh_axis_of_size_zero_is_an_error_naming_the_mesh():
    import jax

    from vjax import parallel

    for bad in ((("data", 0),), (("data", -1), ("fsdp", 0)), (("data", -2),)):
        with pytest.raises(ValueError, match="axis sizes must be >= 1"):
            parallel.make_mesh(bad, jax.devices()[:1])


def test_local_processes_keep_the_callers_xla_flags_but_their_own_device_count(monkeypatch):
    from local import process_env

    monkeypatch.setenv(
        "XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_force_host_platform_device_count=8"
    )
    env = process_env(1, 2, 1234, "cpu", 2)
    assert env["XLA_FLAGS"].split() == [
        "--xla_backend_optimization_level=0",
        "--xla_force_host_platform_device_count=2",
    ]
    assert env["VJAX_PROCESS_ID"] == "1" and env["VJAX_COORDINATOR_ADDRESS"] == "localhost:1234"
    # On accelerators each process drives its own devices (every process claimed every GPU).
    native = process_env(1, 2, 1234, "native", 4)
    assert native["VJAX_LOCAL_DEVICE_IDS"] == "4,5,6,7" and "JAX_PLATFORMS" not in native


CHILD = """
import os, signal, sys, time
def on_term(*_):
    time.sleep(1.0)  # the preemption checkpoint is written
    print("saved", flush=True)
    open(os.path.join(sys.argv[1], os.environ["VJAX_PROCESS_ID"]), "w").write("saved")
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
print("step 1", flush=True)
while True:
    time.sleep(0.1)
"""


def test_ctrl_c_on_the_local_launcher_lets_every_process_save_then_exits(tmp_path):
    """Ctrl-C reaches the launcher only (its processes have their own sessions): it passes a
    SIGTERM on, as a preemption, and keeps relaying their output until they have saved (it
    exited at once, so their next print hit a closed pipe and they hung in a barrier)."""
    import signal
    import time

    child = tmp_path / "child.py"
    child.write_text(CHILD)
    # SIGINT as a terminal delivers it: a shell running the tests in the background (no job
    # control) hands every child SIGINT ignored, and Python then keeps ignoring it.
    launcher = subprocess.Popen(
        [sys.executable, os.path.join(REPO, "launch", "local.py"), "--num_processes=2", "--",
         sys.executable, str(child), str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    started = 0
    for line in launcher.stdout:
        started += "step 1" in line
        if started == 2:
            break
    time.sleep(0.2)
    launcher.send_signal(signal.SIGINT)
    out = launcher.communicate(timeout=60)[0]
    assert launcher.returncode == 130, out
    assert "[p0] saved" in out and "[p1] saved" in out, out
    assert (tmp_path / "0").read_text() == (tmp_path / "1").read_text() == "saved"


def test_the_local_launcher_relays_every_line_before_it_returns(monkeypatch, capsys):
    """The launcher returned as soon as its processes had exited, while its relay threads could
    still be printing what they wrote last (a process's "saved" after Ctrl-C went missing on a
    loaded machine): with relays running half a second behind, every line still comes out."""
    import time

    import local

    relay = local._relay

    def behind(stream, prefix):
        time.sleep(0.5)  # a relay thread behind its process, as on a loaded machine
        relay(stream, prefix)

    monkeypatch.setattr(local, "_relay", behind)
    assert local.run([sys.executable, "-c", "print('saved')"], [{}, {}]) == 0
    out = capsys.readouterr().out
    assert "[p0] saved" in out and "[p1] saved" in out


# A TPU worker's programs for the ``--mount`` script: each logs its call; apt-get's install puts
# a gcsfuse on PATH, which marks its mount point as mounted (what mountpoint checks).
FAKE_WORKER = {
    "sudo": 'exec "$@"',
    "lsb_release": "echo jammy",
    "curl": 'echo "curl $*" >> "$WORKER_LOG"; echo KEY',
    "apt-get": """echo "apt-get $*" >> "$WORKER_LOG"
here=$(dirname "$0")
case "$*" in *"install -y -q gcsfuse"*) cp "$here/../gcsfuse.sh" "$here/gcsfuse";; esac
once="$here/../updated_once"  # the first update fails, as while the boot-time one runs
case "$*" in
  *update*) [ -e "$once" ] && [ -z "$FAKE_UPDATE_FAILS" ] || { touch "$once"; exit 100; };;
esac""",
    "sleep": 'echo "sleep $*" >> "$WORKER_LOG"',
    "mountpoint": 'test -e "$2/.mounted" && ! test -e "$2/.dead"',
    # A dead FUSE mount: still listed, and its folder can be neither made nor mounted on
    # until it is detached.
    "findmnt": 'test -e "$2/.dead"',
    "mkdir": 'for p; do ! test -e "$p/.dead" || exit 1; done; exec /bin/mkdir "$@"',
    "umount": 'echo "umount $*" >> "$WORKER_LOG"; rm -f "$2/.dead" "$2/.mounted"',
    "../gcsfuse.sh": """#!/bin/sh
echo "gcsfuse $*" >> "$WORKER_LOG"
[ "$FAKE_MOUNT_FAILS" = 1 ] && exit 1
touch "$3/.mounted\"""",
}


def test_tpu_pod_mount_installs_cloud_storage_fuse_once_and_mounts_each_bucket_before_the_run(
    tmp_path,
):
    """``--mount`` (a dataset prepared in a bucket is read through a FUSE mount): the run's
    remote command, executed on a fake worker, installs gcsfuse from Google's apt repository
    for the image's release, mounts each bucket at /mnt/BUCKET, then runs vjax; a second run
    (a resume) installs and mounts nothing again; a failed mount runs no training."""
    lines = _dry_run("tpu_pod.py", "run", "--name=pod", "--zone=z", "--accelerator=v4-16",
                     "--mount=gs://my-data/", "--mount=runs.b")  # fmt: skip
    (run,) = [_assert_valid_shell(line) for line in lines[1:]]
    remote = next(a for a in run if a.startswith("--command="))[len("--command=") :]
    # The worker's root folders, moved into tmp_path; the rest of the script as it is.
    for root, here in (("/mnt/", "mnt/"), ("/etc/apt/sources.list.d/", "etc/"),
                       ("/usr/share/keyrings/", "keyrings/")):  # fmt: skip
        (tmp_path / here).mkdir()
        remote = remote.replace(root, f"{tmp_path / here}/")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in FAKE_WORKER.items():
        path = bin_dir / name
        path.write_text(body if body.startswith("#!") else f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    vjax = tmp_path / "home" / "vjax" / ".venv" / "bin" / "vjax"
    vjax.parent.mkdir(parents=True)
    mounted = f"$(find {tmp_path}/mnt -name .mounted | wc -l)"
    vjax.write_text(
        f'#!/bin/sh\necho "vjax $* $VJAX_DISTRIBUTED mounted: {mounted}" >> "$WORKER_LOG"\n'
    )
    vjax.chmod(0o755)
    log = tmp_path / "worker.log"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path / "home"),
           "WORKER_LOG": str(log)}  # fmt: skip

    def on_worker(**extra: str) -> tuple[int, list[str]]:
        log.unlink(missing_ok=True)
        code = subprocess.run(["bash", "-c", remote], env={**env, **extra}).returncode
        return code, log.read_text().splitlines() if log.exists() else []

    code, calls = on_worker()
    assert code == 0, calls
    # The package lists' update failed once (the boot-time update's lock), and was retried.
    assert [c.split()[0] for c in calls] == ["curl", "apt-get", "sleep", "apt-get", "apt-get",
                                             "gcsfuse", "gcsfuse", "vjax"]  # fmt: skip
    assert calls[1].endswith("update -q") and calls[3] == calls[1] and calls[2] == "sleep 30"
    assert calls[4].endswith("install -y -q gcsfuse")
    assert calls[5] == f"gcsfuse --implicit-dirs my-data {tmp_path}/mnt/my-data"
    assert calls[6] == f"gcsfuse --implicit-dirs runs.b {tmp_path}/mnt/runs.b"
    assert calls[7].startswith("vjax train --config=configs/demo.py --workdir=gs://bucket/runs/")
    assert calls[7].endswith(" 1 mounted: 2")  # VJAX_DISTRIBUTED=1; both mounted before it
    source = (tmp_path / "etc" / "gcsfuse.list").read_text()
    keyring = f"[signed-by={tmp_path}/keyrings/cloud.google.asc]"
    repository = ["https://packages.cloud.google.com/apt", "gcsfuse-jammy", "main"]
    assert source.split() == ["deb", keyring, *repository]
    assert (tmp_path / "keyrings" / "cloud.google.asc").read_text() == "KEY\n"

    code, calls = on_worker()  # the same workers, run again
    assert code == 0 and [c.split()[0] for c in calls] == ["vjax"]

    (tmp_path / "mnt" / "runs.b" / ".dead").touch()  # its gcsfuse died: detached, mounted
    code, calls = on_worker()
    assert code == 0 and [c.split()[0] for c in calls] == ["umount", "gcsfuse", "vjax"]
    assert calls[0] == f"umount -l {tmp_path}/mnt/runs.b" and calls[2].endswith("mounted: 2")

    (tmp_path / "mnt" / "runs.b" / ".mounted").unlink()
    code, calls = on_worker(FAKE_MOUNT_FAILS="1")
    assert code != 0 and [c.split()[0] for c in calls] == ["gcsfuse"]

    (bin_dir / "gcsfuse").unlink()  # a worker where the package lists never update
    code, calls = on_worker(FAKE_UPDATE_FAILS="1")
    assert code != 0 and [c.split()[0] for c in calls] == ["curl", *["apt-get", "sleep"] * 9,
                                                           "apt-get"]  # fmt: skip


@pytest.mark.parametrize("bucket", ["gs://my-data/tfds", "My_Bucket", "b", "/mnt/my-data"])
def test_tpu_pod_mount_takes_a_whole_bucket(bucket):
    result = _launch("tpu_pod.py", "run", "--name=x", "--zone=z", "--accelerator=v4-8",
                     f"--mount={bucket}", "--dry_run", *TRAIN)  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"tpu_pod.py: error: argument --mount: {bucket!r} is not a bucket name (lowercase "
        "letters, digits, '-', '_' and '.'; a whole bucket, e.g. my-bucket or gs://my-bucket, "
        "not a folder in it)")  # fmt: skip


def test_tpu_pod_mount_is_refused_for_a_step_that_runs_no_command():
    result = _launch("tpu_pod.py", "copy", "--name=x", "--zone=z", "--accelerator=v4-8",
                     "--mount=my-data", "--dry_run", *TRAIN)  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "tpu_pod.py: error: --mount mounts before run's command: give it to run or all, not copy"
    )
