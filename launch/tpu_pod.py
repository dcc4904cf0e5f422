"""Train on a Cloud TPU VM pod: create it (directly or as a queued resource), copy this
checkout to every worker, run one vjax command on all workers at once, tear it down.

    python launch/tpu_pod.py all --name=vjax-v4 --zone=us-central2-b --accelerator=v4-64 \\
        --queued -- vjax train --config=configs/demo.py --workdir=gs://BUCKET/runs/demo

Steps: ``create`` (a queued resource: waits until it is ACTIVE), ``copy`` (this checkout as it
is, uncommitted edits included), ``run``, ``teardown``, or ``all`` (the four in order; once
its create call has succeeded, the teardown runs even when a later step fails or is
interrupted, so nothing it made is left allocated). Every
worker runs the same command; ``vjax.distributed`` detects the TPU pod and starts
``jax.distributed``, so each host feeds its own data shard and process 0 writes the logs.
Use a ``gs://`` workdir: checkpoints must be on storage every host sees. ``--mount=BUCKET``
mounts ``gs://BUCKET`` at ``/mnt/BUCKET`` on every worker (Cloud Storage FUSE, installed if
missing) before the command, for a dataset prepared there (``--config.dataset.data_dir=
/mnt/BUCKET/tfds``: the prepared format reads local paths only). ``--num_slices=N``
asks for N slices (multi-slice over DCN; set ``--config.sharding.dcn_mesh=(('data', N),)``).
The TPU VM runtime is the one Cloud TPU documents for the generation (``v2-alpha-tpuv6e``,
``v2-alpha-tpuv5``, ``v2-alpha-tpuv5-lite``, ``tpu-ubuntu2204-base`` for v4 and older) unless
``--version`` names another. ``--dry_run`` prints the gcloud commands instead of running them.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import NamedTuple

from common import count, execute, split_command

# generation -> (TensorCores per chip as counted in the type name, chips per host, most chips
# a single-host slice has: v5e and v6e come as 8-chip single hosts, the others 4 chips a host)
_GENERATIONS = {
    "v2": (2, 4, 4),
    "v3": (2, 4, 4),
    "v4": (2, 4, 4),
    "v5p": (2, 4, 4),
    "v5litepod": (1, 4, 8),
    "v6e": (1, 4, 8),
}
_ALIASES = {"v5e": "v5litepod"}
# generation -> the TPU VM runtime (software version) Cloud TPU documents for it; --version
# overrides. v4 and older run the plain Ubuntu base image.
_RUNTIMES = {
    "v5litepod": "v2-alpha-tpuv5-lite",
    "v5p": "v2-alpha-tpuv5",
    "v6e": "v2-alpha-tpuv6e",
}
_BASE_RUNTIME = "tpu-ubuntu2204-base"


def default_runtime(accelerator: str) -> str:
    """The runtime version for an accelerator type such as ``v5e-32`` or ``v4-64``."""
    generation = parse_accelerator(accelerator)[0].rsplit("-", 1)[0]
    return _RUNTIMES.get(generation, _BASE_RUNTIME)


def parse_accelerator(accelerator: str) -> tuple[str, int, int]:
    """``"v5e-32"`` -> ``("v5litepod-32", chips, hosts)``; raises on an unknown type."""
    match = re.fullmatch(r"(v\d+[a-z]*|v5litepod)-(\d+)", accelerator)
    if not match:
        raise ValueError(f"accelerator type {accelerator!r} is not of the form v4-64 or v5e-32")
    generation = _ALIASES.get(match[1], match[1])
    if generation not in _GENERATIONS:
        raise ValueError(
            f"unknown TPU generation {match[1]!r}; known: {', '.join([*_GENERATIONS, *_ALIASES])}"
        )
    cores_per_chip, chips_per_host, single_host = _GENERATIONS[generation]
    chips = int(match[2]) // cores_per_chip
    hosts = max(1, chips // chips_per_host) if chips > single_host else 1
    return f"{generation}-{match[2]}", chips, hosts


class Plan(NamedTuple):
    """The commands of a launch: ``first`` (the create call of ``all``), then ``rest``, then,
    once ``first`` has succeeded, ``teardown`` whatever happens in ``rest`` (a resource this
    launch created is not left allocated; one that existed already is not deleted)."""

    first: list[list[str]]
    rest: list[list[str]]
    teardown: list[list[str]]


def commands(args: argparse.Namespace, command: Sequence[str]) -> Plan:
    """The gcloud commands of the requested step(s)."""
    accel, _, _ = parse_accelerator(args.accelerator)
    version = args.version or default_runtime(args.accelerator)
    where = [f"--zone={args.zone}"] + ([f"--project={args.project}"] if args.project else [])
    tpu = ["gcloud", "compute", "tpus"]
    # A multi-slice queued resource names its slices PREFIX-0, PREFIX-1, ...
    nodes = [args.name] if args.num_slices == 1 else [
        f"{args.name}-{i}" for i in range(args.num_slices)
    ]  # fmt: skip

    def on_all_nodes(make: Callable[[str], list[str]]) -> list[list[str]]:
        """One command per node; several run at once (every host must join the run)."""
        per_node = [make(node) for node in nodes]
        if len(per_node) == 1:
            return per_node
        # Wait for each, and fail when any failed (a bare `wait` exits 0 whatever they did).
        started = " ".join(f"{shlex.join(c)} & pids+=($!);" for c in per_node)
        waits = 'rc=0; for p in "${pids[@]}"; do wait "$p" || rc=1; done; exit $rc'
        script = f"pids=(); {started} {waits}"
        return [["bash", "-c", script]]

    def ssh(node: str, remote: str) -> list[str]:
        return [*tpu, "tpu-vm", "ssh", node, *where, "--worker=all", f"--command={remote}"]

    steps: dict[str, list[list[str]]] = {}
    if args.queued:
        create = [
            *tpu, "queued-resources", "create", args.name, *where,
            f"--accelerator-type={accel}", f"--runtime-version={version}",
        ]  # fmt: skip
        if args.num_slices > 1:
            create += [f"--node-count={args.num_slices}", f"--node-prefix={args.name}"]
        else:
            create += [f"--node-id={args.name}"]
        create += ["--spot"] if args.spot else []
        describe = shlex.join([
            *tpu, "queued-resources", "describe", args.name, *where,
            "--format=value(state.state)",
        ])  # fmt: skip
        wait = (  # until the slices exist: minutes, or days in a queue
            f'while true; do state=$({describe}) || exit 1; echo "queued resource: $state"; '
            f'case "$state" in ACTIVE) exit 0;; FAILED|SUSPENDED) exit 1;; esac; sleep 30; done'
        )
        steps["create"] = [create, ["bash", "-c", wait]]  # see Plan: the wait is in `rest`
        steps["teardown"] = [[*tpu, "queued-resources", "delete", args.name, *where, "--force",
                              "--quiet"]]  # fmt: skip
    else:
        if args.num_slices > 1:
            raise SystemExit("--num_slices > 1 needs --queued (multi-slice is a queued resource)")
        create = [
            *tpu, "tpu-vm", "create", args.name, *where,
            f"--accelerator-type={accel}", f"--version={version}",
        ] + (["--spot"] if args.spot else [])  # fmt: skip
        steps["create"] = [create]
        steps["teardown"] = [[*tpu, "tpu-vm", "delete", args.name, *where, "--quiet"]]
    # The TPU VM images are Ubuntu 22.04, whose python3 is 3.10 (vjax needs 3.11): uv brings a
    # 3.11 interpreter with the venv.
    install = (
        "mkdir -p ~/vjax && tar xzf ~/vjax.tar.gz -C ~/vjax && cd ~/vjax && "
        "python3 -m pip install -q --user uv && "
        "~/.local/bin/uv venv -q --allow-existing -p 3.11 .venv && "
        "~/.local/bin/uv pip install -q -p .venv/bin/python -e . 'jax[tpu]'"
    )
    archive = f"/tmp/vjax-{args.name}.tar.gz"
    steps["copy"] = [
        ["bash", "-c", working_tree_archive(archive)],
        *[[*tpu, "tpu-vm", "scp", archive, f"{node}:~/vjax.tar.gz", *where,
           "--worker=all"] for node in nodes],
        *on_all_nodes(lambda node: ssh(node, install)),
    ]  # fmt: skip
    # The venv's programs first on PATH: the command runs as typed (``env KEY=VALUE vjax ...``,
    # ``KEY=VALUE vjax ...``, ``bash -c ...``), its vjax and python the venv's.
    remote = (
        'cd ~/vjax && export PATH="$HOME/vjax/.venv/bin:$PATH" VJAX_DISTRIBUTED=1 && '
        + shlex.join(command)
    )
    if args.mount:
        remote = f"{mount_buckets(args.mount)} && {remote}"
    steps["run"] = on_all_nodes(lambda node: ssh(node, remote))
    if args.step != "all":
        return Plan(steps[args.step], [], [])
    create, *wait = steps["create"]
    return Plan([create], [*wait, *steps["copy"], *steps["run"]], steps["teardown"])


# Cloud Storage FUSE from Google's apt repository for the image's Ubuntu release (its documented
# install). A fresh TPU VM updates its packages at boot: the install waits for dpkg's lock, and
# the update, whose package-lists lock that option may not cover, is tried again for 5 minutes.
_INSTALL_GCSFUSE = (
    "{ command -v gcsfuse >/dev/null || { "
    'echo "deb [signed-by=/usr/share/keyrings/cloud.google.asc] '
    'https://packages.cloud.google.com/apt gcsfuse-$(lsb_release -c -s) main" '
    "| sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null && "
    "curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg "
    "| sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null && "
    "{ tries=0; until sudo apt-get -o DPkg::Lock::Timeout=600 update -q; do "
    'tries=$((tries + 1)); [ "$tries" -lt 10 ] || exit 1; sleep 30; done; } && '
    "sudo apt-get -o DPkg::Lock::Timeout=600 install -y -q gcsfuse; }; }"
)


def bucket_name(text: str) -> str:
    """argparse ``type=``: a Cloud Storage bucket's name, bare or as ``gs://NAME``."""
    name = text.removeprefix("gs://").rstrip("/")
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]", name):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a bucket name (lowercase letters, digits, '-', '_' and '.'; "
            "a whole bucket, e.g. my-bucket or gs://my-bucket, not a folder in it)"
        )
    return name


def mount_buckets(buckets: Sequence[str]) -> str:
    """A shell command that mounts each bucket at ``/mnt/BUCKET`` (installing Cloud Storage
    FUSE where it is missing), leaving a mount already there as it is, so that a second
    ``run`` on the same workers (a resume) mounts nothing twice. A mount whose gcsfuse has
    died (still listed, "Transport endpoint is not connected") is detached and mounted again."""
    mounts = [
        f"{{ mountpoint -q {path} || {{ {{ ! findmnt -rn {path} >/dev/null || "
        f"sudo umount -l {path}; }} && sudo mkdir -p {path} && "
        f'sudo chown "$(id -u):$(id -g)" {path} && gcsfuse --implicit-dirs {bucket} {path}; }}; }}'
        for bucket in buckets
        for path in [shlex.quote(f"/mnt/{bucket}")]
    ]
    return " && ".join([_INSTALL_GCSFUSE, *mounts])


def working_tree_archive(path: str) -> str:
    """A shell command writing this checkout as it is (uncommitted edits and new files, not
    what .gitignore leaves out) to ``path`` as .tar.gz, through a scratch index: the user's
    index and files are untouched."""
    return (
        'index=$(mktemp -u) && export GIT_INDEX_FILE="$index" && git read-tree HEAD && '
        f'git add -A && git archive --format=tar.gz -o {shlex.quote(path)} "$(git write-tree)"; '
        'rc=$?; rm -f "$index"; exit $rc'
    )


def main(argv: Sequence[str] | None = None) -> int:
    options, command = split_command(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=("create", "copy", "run", "teardown", "all"))
    parser.add_argument("--name", required=True, help="TPU (or queued resource) name")
    parser.add_argument("--zone", required=True)
    parser.add_argument("--project", default=None)
    parser.add_argument("--accelerator", required=True, help="e.g. v4-64, v5e-32, v5p-128")
    parser.add_argument(
        "--version",
        default=None,
        help="TPU VM runtime (default: the one for the generation, e.g. v2-alpha-tpuv6e)",
    )
    parser.add_argument("--queued", action="store_true", help="create as a queued resource")
    parser.add_argument("--num_slices", type=count, default=1)
    parser.add_argument("--spot", action="store_true", help="preemptible capacity")
    parser.add_argument(
        "--mount",
        type=bucket_name,
        action="append",
        default=[],
        metavar="BUCKET",
        help="mount gs://BUCKET at /mnt/BUCKET on every worker before run's command (steps "
        "run and all; repeatable)",
    )
    parser.add_argument("--dry_run", action="store_true", help="print the commands only")
    args = parser.parse_args(options)
    if args.mount and args.step not in ("run", "all"):
        parser.error(f"--mount mounts before run's command: give it to run or all, not {args.step}")
    try:
        accel, chips, hosts = parse_accelerator(args.accelerator)
    except ValueError as e:
        parser.error(f"--accelerator: {e}")
    print(
        f"# {accel}: {chips} chips on {hosts} host(s) per slice, {args.num_slices} slice(s): "
        f"{hosts * args.num_slices} processes",
        flush=True,
    )
    plan = commands(args, command)
    code = execute(plan.first, args.dry_run)
    return code or execute(plan.rest, args.dry_run, plan.teardown)


if __name__ == "__main__":
    sys.exit(main())
