"""Multi-process start-up: ``jax.distributed.initialize`` when (and only when) a run spans
several processes, before any JAX computation.

The decision, in order:

1. explicit: a coordinator address (``--coordinator_address`` or ``VJAX_COORDINATOR_ADDRESS``,
   with the process count and id), as the local launcher (``launch/local.py``) sets it;
2. automatic on a Cloud TPU VM, in each task of a SLURM ``srun`` step of several tasks, and
   under Open MPI's ``mpirun`` of several processes (up to Open MPI 4): JAX detects the
   coordinator, process count and id itself. Under Open MPI 5 give ``VJAX_COORDINATOR_ADDRESS``
   (explicit; the count and id come from ``OMPI_COMM_WORLD_SIZE``/``RANK``);
3. forced automatic with ``VJAX_DISTRIBUTED=1`` (any other environment JAX can detect);
   ``VJAX_LOCAL_DEVICE_IDS`` lists the devices of a process that drives several GPUs;
4. otherwise one process, nothing to do.

>>> from vjax import distributed
>>> distributed.initialize()   # at the top of main(), before jax.devices() is first called
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import TypeVar

import jax

from vjax.errors import UserError

log = logging.getLogger(__name__)
T = TypeVar("T")


def _on_cloud_tpu_vm() -> bool:
    try:  # JAX's own probe (a private module, hence the guard)
        from jax._src.cloud_tpu_init import running_in_cloud_tpu_vm
    except ImportError:
        return False
    return bool(running_in_cloud_tpu_vm)


# What JAX's SLURM detection reads: set for each task of an ``srun`` step.
SLURM_STEP = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_PROCID", "SLURM_LOCALID")


def detect(env: Mapping[str, str] | None = None) -> str:
    """Which start-up applies: ``"explicit"``, ``"auto"`` or ``"single"`` (see module doc);
    several Open MPI processes JAX cannot start up by itself are a UserError saying how."""
    env = os.environ if env is None else env
    if env.get("VJAX_COORDINATOR_ADDRESS"):
        return "explicit"
    if env.get("VJAX_DISTRIBUTED") == "1":
        return "auto"
    if int(env.get("SLURM_NTASKS", "1")) > 1 and all(name in env for name in SLURM_STEP):
        return "auto"  # a task of srun (in an salloc shell or the batch script: one process)
    if int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
        if "OMPI_MCA_orte_hnp_uri" in env:  # what JAX's Open MPI detection reads
            return "auto"
        raise UserError(
            "mpirun started several processes, but JAX cannot find this Open MPI's coordinator "
            "(Open MPI 5 has no OMPI_MCA_orte_hnp_uri): give every process "
            "VJAX_COORDINATOR_ADDRESS=HOST:PORT (mpirun -x; HOST runs rank 0), and the count "
            "and id are read from OMPI_COMM_WORLD_SIZE and OMPI_COMM_WORLD_RANK"
        )
    if env is os.environ and _on_cloud_tpu_vm():
        return "auto"
    return "single"


def _local_ids() -> list[int] | None:
    """``VJAX_LOCAL_DEVICE_IDS`` (``0,1``): the accelerators this process drives. Under
    SLURM/MPI on GPUs JAX gives each process one device (one process per GPU); with one process
    per node, ``0,1,...,7`` gives it all of them; ``launch/local.py --platform=native`` sets
    each process's own. Under Open MPI 5 (which JAX does not detect) the default is JAX's
    Open MPI one: the device of the process's local rank."""
    ids = os.environ.get("VJAX_LOCAL_DEVICE_IDS") or os.environ.get("OMPI_COMM_WORLD_LOCAL_RANK")
    return [int(i) for i in ids.split(",")] if ids else None


def _process_count_and_id(address: str, num: int | str, pid: int | str) -> tuple[int, int]:
    """The process count and id, checked with the coordinator's ``HOST:PORT`` before JAX sees
    them (it fails on them with a traceback, or an IndexError for an address without a port)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(
            f"coordinator address {address!r} is not HOST:PORT (e.g. 10.0.0.1:12345, the same "
            "on every process)"
        )
    try:
        num, pid = int(num), int(pid)
    except ValueError:
        raise UserError(f"the process count and id must be whole numbers, got {num!r} and "
                        f"{pid!r}") from None  # fmt: skip
    if num < 1 or not 0 <= pid < num:
        raise UserError(
            f"process id {pid} of {num} processes: the count must be 1 or more and the id "
            f"in 0..count-1 (--num_processes, --process_id or VJAX_NUM_PROCESSES, VJAX_PROCESS_ID)"
        )
    return num, pid


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """Starts JAX's distributed runtime if this run has several processes; see the module doc.

    Explicit arguments win over the ``VJAX_*`` environment variables. Safe to call twice.
    """
    if jax.distributed.is_initialized():
        return
    address = coordinator_address or os.environ.get("VJAX_COORDINATOR_ADDRESS")
    if not address and (num_processes is not None or process_id is not None):
        raise UserError(  # else each process would train alone, all into one workdir
            "--num_processes/--process_id need --coordinator_address=HOST:PORT (process 0's "
            "address, the same on every process)"
        )
    mode = "explicit" if address else detect()
    if mode == "single":
        return
    if mode == "explicit":
        env = os.environ
        num = num_processes if num_processes is not None else env.get("VJAX_NUM_PROCESSES")
        pid = process_id if process_id is not None else env.get("VJAX_PROCESS_ID")
        num = num if num is not None else env.get("OMPI_COMM_WORLD_SIZE")  # under mpirun
        pid = pid if pid is not None else env.get("OMPI_COMM_WORLD_RANK")
        if num is None or pid is None:
            raise UserError(
                f"coordinator address {address!r} given without the process count and id: set "
                "--num_processes and --process_id (or VJAX_NUM_PROCESSES and VJAX_PROCESS_ID)"
            )
        num, pid = _process_count_and_id(address, num, pid)
        jax.distributed.initialize(address, num, pid, local_device_ids=_local_ids())
    else:
        jax.distributed.initialize(local_device_ids=_local_ids())
    log.info(
        "jax.distributed: process %d of %d, %d local of %d devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )


def process_zero_first(task: Callable[[], T], what: str) -> T:
    """``task()`` on process 0, then, once it has succeeded, on every other process: for work
    whose first run leaves something the others read (a dataset prepared into a shared
    folder; run by all at once, they would write over each other). The others wait on the
    coordination service's key-value store, not in a collective (whose 30 s deadline a
    dataset's preparation outlasts); a failure on process 0 is raised on every process.

    >>> builder = process_zero_first(lambda: load_dataset(config.dataset), "preparing the data")
    """
    if jax.process_count() == 1:
        return task()
    from jax._src.distributed import global_state  # the store Orbax's barriers use too

    global _FIRST_CALLS
    _FIRST_CALLS += 1  # every process makes these calls in the same order
    key = f"vjax/process_zero_first/{_FIRST_CALLS}"
    if jax.process_index() == 0:
        try:
            result = task()
        except BaseException:
            global_state.client.key_value_set(key, "failed")
            raise
        global_state.client.key_value_set(key, "ok")
        return result
    outcome = global_state.client.blocking_key_value_get(key, _FIRST_WAIT_MS)
    if outcome != "ok":
        raise UserError(f"{what} failed on process 0 (its output says why)")
    return task()


_FIRST_CALLS = 0
_FIRST_WAIT_MS = 7 * 24 * 3600 * 1000  # a week: preparing a large dataset takes hours
