"""Transparent huge pages for glibc's large allocations, asked for before the process starts.

XLA:CPU allocates a step's temporaries in one block (VideoMAE-Ti's train step at 8x112x112,
batch 4: 221 MiB), which glibc serves with a fresh ``mmap`` and returns after the step. So
every step the kernel faults in and zeroes ~57,000 pages of 4 KiB: 0.1-0.3 s of system time
in a 0.2-0.3 s step on 2 cores. glibc's ``glibc.malloc.hugetlb=1`` tunable (glibc >= 2.35)
backs such mappings with 2 MiB transparent huge pages: ~550 faults a step, and the step ran
1.4-1.5x faster (16-17 -> 23-25 clips/s; PyTorch's eager step moved within its noise).

glibc reads tunables only when a process starts, so the ``vjax`` command re-executes itself
once with the tunable added to ``GLIBC_TUNABLES`` (:func:`reexec_with_huge_pages`), where it
can take effect: Linux with glibc >= 2.35 and transparent huge pages not ``never``. A user who
sets ``glibc.malloc.hugetlb`` in ``GLIBC_TUNABLES`` keeps that choice (``=0``: off). In a
notebook or your own script, start Python with the variable set:

>>> # GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python my_training.py
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

ENV = "GLIBC_TUNABLES"
TUNABLE = "glibc.malloc.hugetlb"
THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"
MIN_GLIBC = (2, 35)  # the first glibc with glibc.malloc.hugetlb


def glibc_version() -> tuple[int, int] | None:
    """The running C library's glibc version, None for another libc or platform."""
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
    except (AttributeError, ValueError, OSError):
        return None
    major, minor, *_ = (*map(int, version.split(".")[:2]), 0)
    return (major, minor) if name == "glibc" else None


def huge_pages_available(thp_setting: str = THP_SETTING) -> bool:
    """Whether the kernel hands out transparent huge pages on request (its setting is
    ``always`` or ``madvise``, not ``never``)."""
    try:
        with open(thp_setting) as f:
            return "[never]" not in f.read()
    except OSError:
        return False


def with_huge_pages(environ: Mapping[str, str]) -> dict[str, str] | None:
    """``environ`` with ``glibc.malloc.hugetlb=1`` added to its ``GLIBC_TUNABLES`` (other
    tunables kept), or None where the user already chose a value for it."""
    given = environ.get(ENV, "")
    if any(item.split("=")[0] == TUNABLE for item in given.split(":")):
        return None
    return {**environ, ENV: ":".join(filter(None, (given, f"{TUNABLE}=1")))}


def reexec_with_huge_pages() -> None:
    """Replaces this process by the same command line with huge pages asked of glibc, where
    that takes effect and the environment does not already say; otherwise returns."""
    environ = with_huge_pages(os.environ)
    version = glibc_version()
    if environ is None or version is None or version < MIN_GLIBC or not huge_pages_available():
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, environ)
