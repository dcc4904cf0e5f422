"""Train on a multi-node GPU cluster under SLURM: write an sbatch script that starts one
process per GPU (or per node) with ``srun`` and submit it.

    python launch/slurm.py --nodes=2 --gpus_per_node=8 --partition=gpu --time=24:00:00 -- \\
        vjax train --config=configs/demo.py --workdir=/shared/runs/demo

``vjax.distributed`` sees SLURM's variables and starts ``jax.distributed`` (coordinator on
the first node). One process per GPU is JAX's default under SLURM; ``--per=node`` runs one
process per node that drives all its GPUs. SLURM sends SIGTERM on preemption and 120 s
before the time limit: vjax saves a checkpoint at that step and exits; a preempted job is
requeued (``--requeue``) and resumes from it, and after a time limit submitting the same
script again resumes. The workdir must be on a file system every node sees. ``--dry_run``
prints the script and the sbatch command only.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence

from common import count, execute, split_command

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sbatch_script(args: argparse.Namespace, command: Sequence[str]) -> str:
    """The batch script: SLURM resources, the environment, and the srun line."""
    per_gpu = args.per == "gpu"
    tasks = args.gpus_per_node if per_gpu else 1
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={args.job_name}",
        f"#SBATCH --nodes={args.nodes}",
        f"#SBATCH --ntasks-per-node={tasks}",
        f"#SBATCH --gpus-per-node={args.gpus_per_node}",
        f"#SBATCH --cpus-per-task={args.cpus_per_task}",
        f"#SBATCH --time={args.time}",
        "#SBATCH --signal=TERM@120",  # vjax saves and exits on SIGTERM; requeue resumes
        "#SBATCH --requeue",
        "#SBATCH --open-mode=append",
        f"#SBATCH --output={args.log_dir}/%x-%j.out",
    ]
    lines += [f"#SBATCH --partition={args.partition}"] if args.partition else []
    lines += [f"#SBATCH --account={args.account}"] if args.account else []
    # The venv's programs first on PATH (srun passes the environment on): the command runs as
    # typed (``env KEY=VALUE vjax ...``, ``bash -c ...``), its vjax and python the venv's.
    venv_bin = os.path.join(args.repo, ".venv", "bin")
    env = [f'export PATH={shlex.quote(venv_bin)}:"$PATH"', "export VJAX_DISTRIBUTED=1"]
    if not per_gpu:
        ids = ",".join(str(i) for i in range(args.gpus_per_node))
        env.append(f"export VJAX_LOCAL_DEVICE_IDS={ids}")
    srun = ["srun", "--kill-on-bad-exit=1", f"--chdir={args.repo}"]
    return "\n".join([*lines, "", "set -euo pipefail", *env, shlex.join([*srun, *command]), ""])


def main(argv: Sequence[str] | None = None) -> int:
    options, command = split_command(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=count, required=True)
    parser.add_argument("--gpus_per_node", type=count, default=8)
    parser.add_argument("--per", choices=("gpu", "node"), default="gpu", help="one process per")
    parser.add_argument("--cpus_per_task", type=count, default=8)
    parser.add_argument("--time", default="24:00:00")
    parser.add_argument("--partition", default=None)
    parser.add_argument("--account", default=None)
    parser.add_argument("--job_name", default="vjax")
    parser.add_argument("--repo", default=REPO, help="this checkout, as the nodes see it "
                        "(default: the one this script is in)")  # fmt: skip
    parser.add_argument("--log_dir", default="slurm_logs")
    parser.add_argument("--script", default="vjax.sbatch", help="where to write the script")
    parser.add_argument("--dry_run", action="store_true", help="print, do not submit")
    args = parser.parse_args(options)
    if not os.path.isdir(os.path.join(args.repo, ".venv", "bin")):
        print(f"# warning: {args.repo} has no .venv (make install there; --repo names the "
              "checkout as the nodes see it)", file=sys.stderr)  # fmt: skip
    script = sbatch_script(args, command)
    processes = args.nodes * (args.gpus_per_node if args.per == "gpu" else 1)
    print(f"# {args.nodes} nodes x {args.gpus_per_node} GPUs, {processes} processes")
    if args.dry_run:
        print(script)
    else:
        os.makedirs(args.log_dir, exist_ok=True)
        with open(args.script, "w") as f:
            f.write(script)
    return execute([["sbatch", args.script]], args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
