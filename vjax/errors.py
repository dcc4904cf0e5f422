"""User errors: mistakes in what a user asked for, shown by the commands as one line, never a
traceback; and the one boundary that does so.

A :class:`UserError` is raised where the mistake is detected (a config field, a path, a split
name), with a message that says what is wrong, where, and how to fix it. The commands
(:mod:`vjax.cli`, ``python -m vjax.main``) run under :func:`run_guarded`, which prints such an
error as ``vjax VERB: error: MESSAGE`` and exits with code 2; ``--debug`` also prints the
traceback. Any other exception is a bug in vjax and keeps its traceback.

The verbs' flags are parsed by :class:`ArgumentParser`, whose mistakes (a missing or unknown
flag, a value its ``type=`` refuses: :func:`positive_int`, :func:`non_negative_float`,
:func:`output_file`) are such errors too: one line, not argparse's usage and its line.

>>> raise UserError("train.num_steps must be > 0; set --config.train.num_steps=N")
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import NoReturn

DEBUG_FLAG = "--debug"
EXIT_USER_ERROR = 2


class UserError(ValueError):
    """A mistake in the user's config, flags or files; the message names it and the fix."""


class NotFoundError(UserError, FileNotFoundError):
    """A file or folder the user named does not exist or does not hold what is needed."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse for a verb's flags: a mistake raises :class:`UserError` (one line from
    :func:`run_guarded`, ending with where the flags are listed) instead of printing the usage
    and exiting. ``--help`` still prints the help and exits 0."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message} ({self.prog} --help lists the flags)")


def positive_int(text: str) -> int:
    """argparse ``type=``: a whole number of 1 or more (a count: clips, chunk size, top k)."""
    return _whole_number(text, 1)


def non_negative_int(text: str) -> int:
    """argparse ``type=``: a whole number of 0 or more (a count where 0 turns a stage off)."""
    return _whole_number(text, 0)


def _whole_number(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low:
        raise argparse.ArgumentTypeError(f"takes a whole number of {low} or more, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """argparse ``type=``: a finite number of 0 or more (a duration, 0: off)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"takes a number of 0 or more, got {text!r}")
    return value


def number_in(low: float, high: float, *, low_open: bool = False, high_open: bool = False):
    """argparse ``type=``: a number in ``[low, high]`` (``low_open``/``high_open``: that end
    excluded), so a share, a weight or a temperature out of its range is refused when the
    flags are read, not after a model has trained.

    >>> parser.add_argument("--label_fraction", type=number_in(0, 1, low_open=True))
    """
    span = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        inside = (low < value if low_open else low <= value) and (
            value < high if high_open else value <= high
        )
        if not inside:
            raise argparse.ArgumentTypeError(f"takes a number in {span}, got {text!r}")
        return value

    return parse


def positive_float(text: str) -> float:
    """argparse ``type=``: a finite number above 0 (a duration, a rate)."""
    return number_in(0, math.inf, low_open=True, high_open=True)(text)


def path_given(text: str) -> str:
    """argparse ``type=``: a path that is not empty: ``--model=$RUN`` with ``RUN`` unset would
    otherwise name the working directory (and ``--out=`` write into it)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty; give a path (is a shell variable unset?)")
    return text


def output_file(text: str) -> str:
    """argparse ``type=``: a file to write, in a folder that exists and is writable (checked
    when the flags are read, before any work whose result it would hold; no folder is made,
    so a mistyped folder is named, not created). In a bucket (``gs://...``), one that can be
    written."""
    from vjax import storage

    path_given(text)
    if storage.is_remote(text):
        folder, _, name = text.partition("://")[2].rpartition("/")
        if not folder or not name:
            raise argparse.ArgumentTypeError(f"{text!r} names no file; give gs://BUCKET/FILE")
        try:
            if storage.path(text).is_dir():
                raise argparse.ArgumentTypeError(f"{text!r} is a folder; give a file path in it")
            storage.require_writable(text.rpartition("/")[0])
        except UserError as e:
            raise argparse.ArgumentTypeError(str(e)) from e
        return text
    folder = os.path.dirname(os.path.abspath(text))
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is a folder; give a file path in it")
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"folder {folder!r} does not exist; create it first")
    if not os.access(folder, os.W_OK):
        raise argparse.ArgumentTypeError(f"folder {folder!r} is not writable")
    return text


def input_file(text: str) -> str:
    """argparse ``type=``: a local file that exists (a typo or a folder is named before a model
    loads); a URL passes as it is, for its reader to open (av reads rtsp:// and http://)."""
    if "://" not in text:
        if os.path.isdir(text):
            raise argparse.ArgumentTypeError(f"{text!r} is a folder; give the files in it")
        if not os.path.exists(text):
            raise argparse.ArgumentTypeError(f"{text!r} does not exist")
    return text


def optional_output_file(text: str) -> str:
    """argparse ``type=``: a local :func:`output_file`, or ``""`` for none (``--out=''``: print
    only); the benchmarks' tables are local Markdown files."""
    if "://" in text:
        raise argparse.ArgumentTypeError(f"{text!r}: give a local file (the table is Markdown)")
    return text and output_file(text)


def json_output_file(text: str) -> str:
    """argparse ``type=``: :func:`output_file` for a JSON result, refusing an existing local file
    that does not hold JSON: ``--json a.mp4 b.mp4``, typed as if ``--json`` were a switch, would
    otherwise write the result over the video ``a.mp4``."""
    text = output_file(text)
    if os.path.isfile(text):
        with open(text, "rb") as f:
            start = f.read(64).lstrip()
        if start and start[:1] not in (b"{", b"["):
            raise argparse.ArgumentTypeError(
                f"{text!r} exists and does not hold JSON; --json takes the file to write the "
                f"result to (e.g. --json=result.json), and would overwrite it"
            )
    return text


def one_line(error: BaseException) -> str:
    """The error's message on one line (whitespace, newlines included, collapsed)."""
    return " ".join(str(error).split()) or type(error).__name__


# What installs each top-level module of the optional extras (pyproject.toml); jax2onnx goes
# in apart, without its pins, which would downgrade orbax-checkpoint (Makefile).
EXTRA_INSTALLS = {
    **dict.fromkeys(("qwix", "onnx", "onnx_ir", "onnxruntime"), "pip install 'vjax[deploy]'"),
    "jax2onnx": "pip install --no-deps 'jax2onnx>=0.17,<0.18'",
    **dict.fromkeys(
        ("torch", "torchvision", "transformers", "safetensors", "pytorchvideo"),
        "pip install 'vjax[torch]'",
    ),
    "apache_beam": "pip install 'vjax[beam]'",
}


def missing_extra(error: ModuleNotFoundError) -> str | None:
    """What the user lacks, in words, when ``error`` is an optional extra's module not being
    installed (``vjax quantize`` without qwix); None for any other module (a broken install
    or our bug: its traceback stays)."""
    module = (error.name or "").split(".")[0]
    install = EXTRA_INSTALLS.get(module)
    return f"this needs {module}, which is not installed: {install}" if install else None


def home_expanded(argument: str) -> str:
    """``--flag=~/x`` as ``--flag=/home/me/x``: the shell expands a ``~`` that starts a word,
    not one after ``=``, so ``--workdir=~/runs/a`` would otherwise make a folder named ``~``
    in the working directory (and ``--config.train.init_from=~/run`` look for one)."""
    flag, equals, value = argument.partition("=")
    if flag.startswith("--") and equals and value.startswith("~"):
        return f"{flag}={os.path.expanduser(value)}"
    return argument


def run_guarded(main: Callable[[list[str]], int], argv: Sequence[str], prog: str = "vjax") -> int:
    """Runs ``main(argv)`` (``--debug`` removed from ``argv``, a ``~`` starting a flag's value
    expanded: :func:`home_expanded`); a :class:`UserError`, or an optional extra not installed
    (:func:`missing_extra`), becomes one line on stderr and exit code 2, with its traceback
    first under ``--debug``."""
    argv = [home_expanded(a) for a in argv]
    debug = DEBUG_FLAG in argv
    argv = [a for a in argv if a != DEBUG_FLAG]
    try:
        return main(argv)
    except (UserError, ModuleNotFoundError) as e:
        message = one_line(e) if isinstance(e, UserError) else missing_extra(e)
        if message is None:
            raise
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR


# A command ended by SIGTERM exits with this code, the shell's for a process killed by it.
EXIT_SIGTERM = 128 + signal.SIGTERM


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """While the block runs, SIGTERM (``kill``, ``docker stop``, Kubernetes) raises
    ``SystemExit(143)`` in the main thread: the command stops as Ctrl-C stops it, through its
    cleanup (a process pool's workers shut down, a half-written dataset's temporary folder
    removed), instead of dying where it stands. The previous handler comes back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> NoReturn:
        raise SystemExit(EXIT_SIGTERM)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
