"""User errors: mistakes in what a user asked for, shown by the commands as one line, never a
traceback; and the one boundary that does so.

A :class:`UserError` is raised where the mistake is detected (a config field, a path, a split
name), with a message that says what is wrong, where, and how to fix it. The commands
(:mod:`vjax.cli`, ``python -m vjax.main``) run under :func:`run_guarded`, which prints such an
error as ``vjax VERB: error: MESSAGE`` and exits with code 2; ``--debug`` also prints the
traceback. Any other exception is a bug in vjax and keeps its traceback.

>>> raise UserError("train.num_steps must be > 0; set --config.train.num_steps=N")
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Sequence

DEBUG_FLAG = "--debug"
EXIT_USER_ERROR = 2


class UserError(ValueError):
    """A mistake in the user's config, flags or files; the message names it and the fix."""


class NotFoundError(UserError, FileNotFoundError):
    """A file or folder the user named does not exist or does not hold what is needed."""


def one_line(error: BaseException) -> str:
    """The error's message on one line (whitespace, newlines included, collapsed)."""
    return " ".join(str(error).split()) or type(error).__name__


def run_guarded(main: Callable[[list[str]], int], argv: Sequence[str], prog: str = "vjax") -> int:
    """Runs ``main(argv)`` (``--debug`` removed from ``argv``); a :class:`UserError` becomes
    one line on stderr and exit code 2, with its traceback first under ``--debug``."""
    argv = list(argv)
    debug = DEBUG_FLAG in argv
    argv = [a for a in argv if a != DEBUG_FLAG]
    try:
        return main(argv)
    except UserError as e:
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
