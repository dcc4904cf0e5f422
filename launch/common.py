"""What the launch scripts share: splitting ``-- COMMAND`` off the arguments and running (or,
with ``--dry_run``, printing) a list of shell commands."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence


def split_command(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """``[opts..., "--", cmd...]`` -> ``(opts, cmd)``; the command must not be empty."""
    argv = list(argv)
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        raise SystemExit("usage: ... [options] -- COMMAND (e.g. vjax train --config=...)")
    split = argv.index("--")
    return argv[:split], argv[split + 1 :]


def execute(commands: Sequence[Sequence[str]], dry_run: bool) -> int:
    """Runs each command in turn (stopping at the first failure), or prints them all."""
    for command in commands:
        print(shlex.join(command), flush=True)
        if not dry_run:
            code = subprocess.run(list(command)).returncode
            if code:
                return code
    return 0
