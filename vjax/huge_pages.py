"""Transparent huge pages for glibc's large allocations, asked for before the process starts.

XLA:CPU allocates a step's temporaries in one block (VideoMAE-Ti's train step at 8x112x112,
batch 4: 221 MiB), which glibc serves with a fresh ``mmap`` and returns after the step. So
every step the kernel faults in and zeroes ~57,000 pages of 4 KiB: 0.1-0.3 s of system time
in a 0.2-0.3 s step on 2 cores. glibc's ``glibc.malloc.hugetlb=1`` tunable (glibc >= 2.35)
backs such mappings with 2 MiB transparent huge pages: ~550 faults a step, and the step ran
1.4-1.5x faster (16-17 -> 23-25 clips/s; PyTorch's eager step moved within its noise).

glibc reads tunables only when a process starts, so the ``vjax`` command re-executes itself
once with the tunable added to ``GLIBC_TUNABLES`` (:func:`reexec_with_huge_pages`, from
``vjax.cli.command``), where it takes effect: glibc >= 2.35 and the kernel giving huge pages
on request (``madvise``; under ``always`` every large mapping has them already, and under
``never`` none can). A user's own ``glibc.malloc.hugetlb`` value is kept (``=0``: off). In a
notebook or your own script, start Python with the variable set:

>>> # GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python my_training.py
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping

ENV = "GLIBC_TUNABLES"
TUNABLE = "glibc.malloc.hugetlb"
REEXECUTED = "VJAX_HUGE_PAGES_REEXECUTED"  # set in the new process: never a second exec
THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"
MIN_GLIBC = (2, 35)  # the first glibc with glibc.malloc.hugetlb


def glibc_version() -> tuple[int, int] | None:
    """The running C library's glibc version, None for another libc or platform."""
    try:
        found = re.match(r"glibc (\d+)\.(\d+)", os.confstr("CS_GNU_LIBC_VERSION") or "")
    except (AttributeError, ValueError, OSError):  # no confstr (Windows), unknown name (macOS)
        return None
    return (int(found[1]), int(found[2])) if found else None


def huge_pages_on_request(thp_setting: str = THP_SETTING) -> bool:
    """Whether the kernel hands out transparent huge pages where a program asks (``madvise``
    mode: what glibc's tunable does; ``always`` needs no asking, ``never`` gives none)."""
    try:
        with open(thp_setting) as f:
            return "[madvise]" in f.read()
    except OSError:
        return False


def takes_effect() -> bool:
    """Whether glibc's huge-page tunable would change anything on this machine."""
    version = glibc_version()
    return version is not None and version >= MIN_GLIBC and huge_pages_on_request()


def tunable_value(environ: Mapping[str, str]) -> str | None:
    """The value ``environ``'s ``GLIBC_TUNABLES`` gives ``glibc.malloc.hugetlb``; None if unset."""
    for item in environ.get(ENV, "").split(":"):
        name, _, value = item.partition("=")
        if name == TUNABLE:
            return value
    return None


def with_huge_pages(environ: Mapping[str, str]) -> dict[str, str] | None:
    """``environ`` with ``glibc.malloc.hugetlb=1`` added to its ``GLIBC_TUNABLES`` (other
    tunables kept), or None where the user already chose a value for it."""
    if tunable_value(environ) is not None:
        return None
    return {**environ, ENV: ":".join(filter(None, (environ.get(ENV, ""), f"{TUNABLE}=1")))}


def reexec_with_huge_pages() -> None:
    """Replaces this process by the same command line with huge pages asked of glibc, where
    that takes effect and neither the environment nor an earlier exec settled it; otherwise
    (or if the exec fails) returns."""
    environ = with_huge_pages(os.environ)
    if environ is None or os.environ.get(REEXECUTED) or not takes_effect():
        return
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    try:
        os.execve(
            sys.executable, [sys.executable, *sys.orig_argv[1:]], {**environ, REEXECUTED: "1"}
        )
    except OSError:  # no huge pages then, but the command still runs
        return
