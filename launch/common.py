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
    print(shlex.join(command), flush=True)
    return 0 if dry_run else subprocess.run(list(command)).returncode
