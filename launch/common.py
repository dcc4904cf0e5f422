"""What the launch scripts share: splitting ``-- COMMAND`` off the arguments, running (or,
with ``--dry_run``, printing) a list of shell commands, and the flags' count type."""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from collections.abc import Sequence

NOT_FOUND = 127  # the shell's exit code for a program it cannot run


def count(text: str) -> int:
    """argparse ``type=``: a whole number of 1 or more (processes, nodes, slices): 0 would run
    nothing and report success. (vjax.errors.positive_int's twin: the launchers import nothing
    of vjax, they run where only gcloud or sbatch may be installed.)"""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"takes a whole number of 1 or more, got {text!r}")
    return value


def cannot_start(program: str, error: OSError) -> str:
    """One line for a program that could not be started (not installed, not on PATH)."""
    return (
        f"cannot start {program!r}: {error.strerror or error} (is it installed and on PATH? "
        "vjax's own command needs its virtual environment activated)"
    )


def split_command(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """``[opts..., "--", cmd...]`` -> ``(opts, cmd)``; the command must not be empty (one line
    and exit 2). ``--help`` without a command is left to argparse (the help, exit 0)."""
    argv = list(argv)
    if "--" not in argv and {"-h", "--help"} & set(argv):
        return argv, []
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        program = os.path.basename(sys.argv[0])
        print(f"{program}: error: no command: [options] -- COMMAND (e.g. -- vjax train "
              "--config=...)", file=sys.stderr)  # fmt: skip
        raise SystemExit(2)
    split = argv.index("--")
    return argv[:split], argv[split + 1 :]


def execute(
    commands: Sequence[Sequence[str]], dry_run: bool, always: Sequence[Sequence[str]] = ()
) -> int:
    """Runs each command in turn, stopping at the first failure (or Ctrl-C: 130), then the
    ``always`` ones (a teardown) whatever happened; or prints them all. Returns the first
    failure's code."""
    code = 0
    try:
        for command in commands:
            code = _run(command, dry_run)
            if code:
                break
    except KeyboardInterrupt:
        code = 130
    for command in always:
        failed = _run(command, dry_run)
        code = code or failed  # the first failure's
    return code


def _run(command: Sequence[str], dry_run: bool) -> int:
    """Prints ``command``, then runs it (not in a dry run); a program that cannot be started is
    one line on stderr and :data:`NOT_FOUND`, a failure like any other."""
    print(shlex.join(command), flush=True)
    if dry_run:
        return 0
    try:
        return subprocess.run(list(command)).returncode
    except OSError as e:
        print(cannot_start(command[0], e), file=sys.stderr, flush=True)
        return NOT_FOUND
