"""Run one vjax command as N cooperating processes on this machine (``jax.distributed`` over
localhost): the multi-host code path without a cluster. The tests use it.

    python launch/local.py --num_processes=2 --devices_per_process=2 -- \\
        vjax train --config=configs/demo.py:tiny --workdir=runs/two_procs

Each process gets ``VJAX_COORDINATOR_ADDRESS``/``VJAX_NUM_PROCESSES``/``VJAX_PROCESS_ID`` (read
by ``vjax.distributed.initialize``) and ``--devices_per_process`` devices: that many host CPU
devices with ``--platform=cpu``, its own accelerators (``VJAX_LOCAL_DEVICE_IDS``) with
``native``.
Output lines are prefixed with ``[pN]``. If one process fails, the others are stopped and its
exit code is returned. ``--dry_run`` prints the commands and environment instead.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

from common import cannot_start, count, split_command


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


def host_device_flags(devices: int) -> str:
    """The caller's ``XLA_FLAGS`` with the number of host CPU devices set to ``devices``
    (the caller's other XLA flags are kept)."""
    flags = os.environ.get("XLA_FLAGS", "").split()
    kept = [f for f in flags if not f.startswith(DEVICE_COUNT_FLAG)]
    return " ".join([*kept, f"{DEVICE_COUNT_FLAG}={devices}"])


def process_env(
    process_id: int, num_processes: int, port: int, platform: str, devices_per_process: int
) -> dict[str, str]:
    """The environment variables (beyond the current ones) process ``process_id`` runs with."""
    env = {
        "VJAX_COORDINATOR_ADDRESS": f"localhost:{port}",
        "VJAX_NUM_PROCESSES": str(num_processes),
        "VJAX_PROCESS_ID": str(process_id),
    }
    if platform == "cpu":
        env["JAX_PLATFORMS"] = "cpu"
        env["XLA_FLAGS"] = host_device_flags(devices_per_process)
    else:  # this process's own accelerators (vjax.distributed passes them to JAX)
        first = process_id * devices_per_process
        ids = range(first, first + devices_per_process)
        env["VJAX_LOCAL_DEVICE_IDS"] = ",".join(str(i) for i in ids)
    return env


def _relay(stream, prefix: str) -> None:
    for line in iter(stream.readline, ""):
        sys.stdout.write(f"{prefix}{line}")
        sys.stdout.flush()


def run(command: Sequence[str], envs: Sequence[dict[str, str]]) -> int:
    """Starts one process per env, relays their output, returns the first non-zero exit code."""
    procs, relays = [], []
    for i, extra in enumerate(envs):
        try:
            proc = subprocess.Popen(
                list(command),
                env={**os.environ, **extra},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        except OSError as e:
            _signal_all(procs, signal.SIGTERM)
            raise SystemExit(f"local.py: {cannot_start(command[0], e)}") from None
        relays.append(threading.Thread(target=_relay, args=(proc.stdout, f"[p{i}] "), daemon=True))
        relays[-1].start()
        procs.append(proc)
    code = 0
    try:
        remaining = list(procs)
        while remaining:
            for proc in list(remaining):
                try:
                    rc = proc.wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    continue
                remaining.remove(proc)
                if rc and not code:
                    code = 128 - rc if rc < 0 else rc  # killed by a signal: the shell's code
                    how = f"exited with {rc}"
                    if rc < 0:
                        how = f"was killed by {signal.Signals(-rc).name}"
                    print(f"process {procs.index(proc)} {how}; stopping the others")
                    for other in remaining:
                        os.killpg(other.pid, signal.SIGTERM)
    except KeyboardInterrupt:  # as a preemption: each process saves its step, then exits
        print("Ctrl-C: every process saves its step and stops (Ctrl-C again: kill them now)")
        _signal_all(procs, signal.SIGTERM)
        try:
            for proc in procs:  # their output is still relayed (a closed pipe would hang them)
                proc.wait()
        except KeyboardInterrupt:
            _signal_all(procs, signal.SIGKILL)
        _drain(relays)
        return 130
    _drain(relays)
    return code


def _drain(relays: Sequence[threading.Thread], seconds: float = 5.0) -> None:
    """Waits (up to ``seconds`` in all) for the relays to print what the processes wrote before
    they exited: returning at once lost their last lines (a process's "saved" after Ctrl-C)."""
    deadline = time.monotonic() + seconds
    for relay in relays:
        relay.join(max(0.0, deadline - time.monotonic()))


def _signal_all(procs: Sequence[subprocess.Popen], signum: int) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signum)


def main(argv: Sequence[str] | None = None) -> int:
    options, command = split_command(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num_processes", type=count, default=2)
    parser.add_argument("--devices_per_process", type=count, default=2)
    parser.add_argument("--platform", choices=("cpu", "native"), default="cpu")
    parser.add_argument("--port", type=int, default=0, help="coordinator port (0: a free one)")
    parser.add_argument("--dry_run", action="store_true", help="print what would run")
    args = parser.parse_args(options)
    port = args.port or free_port()
    envs = [
        process_env(i, args.num_processes, port, args.platform, args.devices_per_process)
        for i in range(args.num_processes)
    ]
    if args.dry_run:
        for env in envs:
            assignments = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
            print(f"{assignments} {shlex.join(command)} &")
        print("wait")
        return 0
    return run(command, envs)


if __name__ == "__main__":
    sys.exit(main())
