"""vjax/huge_pages.py: the ``vjax`` command re-executes itself once with glibc's huge-page
tunable; with it, large allocations fault in a few huge pages instead of thousands of small
ones (what it does for XLA:CPU's per-step temporaries: BENCHMARKS.md); a user's own choice,
another libc or kernel setting, and a caller's in-process ``main()`` are left alone."""

import os
import subprocess
import sys

import pytest
from conftest import REPO

from vjax import cli, huge_pages
from vjax.huge_pages import ENV, REEXECUTED, TUNABLE, with_huge_pages

needs_huge_pages = pytest.mark.skipif(
    not huge_pages.takes_effect(),
    reason="needs glibc >= 2.35 and transparent huge pages in 'madvise' mode",
)


@pytest.fixture
def no_exec(monkeypatch):
    """This process, as if the tunable were unset, failing the test on any exec."""
    monkeypatch.setattr(os, "execve", lambda *a: pytest.fail("re-executed"))
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.delenv(REEXECUTED, raising=False)


def test_the_tunable_joins_the_users_others_and_never_overrides_a_choice():
    assert with_huge_pages({"PATH": "/bin"}) == {"PATH": "/bin", ENV: f"{TUNABLE}=1"}
    other = {ENV: "glibc.malloc.arena_max=2"}
    assert with_huge_pages(other)[ENV] == f"glibc.malloc.arena_max=2:{TUNABLE}=1"
    assert with_huge_pages({ENV: f"glibc.malloc.arena_max=2:{TUNABLE}=0"}) is None
    assert with_huge_pages({ENV: f"{TUNABLE}=1"}) is None
    assert huge_pages.tunable_value({ENV: f"glibc.malloc.arena_max=2:{TUNABLE}=0"}) == "0"
    assert huge_pages.tunable_value({ENV: "glibc.malloc.arena_max=2"}) is None


@pytest.mark.parametrize(
    "reported, version",
    [("glibc 2.36", (2, 36)), ("glibc 2.40-devel", (2, 40)), ("glibc 2.x", None),
     ("musl 1.2", None), (None, None), (ValueError, None), (AttributeError, None)],
)  # fmt: skip
def test_glibc_version_reads_glibc_only(monkeypatch, reported, version):
    def confstr(name):
        if isinstance(reported, type):
            raise reported(name)
        return reported

    monkeypatch.setattr(os, "confstr", confstr)
    assert huge_pages.glibc_version() == version


def test_only_the_madvise_setting_takes_the_tunable(tmp_path, monkeypatch, no_exec):
    setting = tmp_path / "enabled"
    for text, wanted in [("always [madvise] never", True), ("[always] madvise never", False),
                         ("always madvise [never]", False)]:  # fmt: skip
        setting.write_text(text + "\n")
        assert huge_pages.huge_pages_on_request(str(setting)) is wanted
    assert not huge_pages.huge_pages_on_request(str(tmp_path / "missing"))
    monkeypatch.setattr(huge_pages, "huge_pages_on_request", lambda: False)
    huge_pages.reexec_with_huge_pages()  # returns
    monkeypatch.setattr(huge_pages, "huge_pages_on_request", lambda: True)
    monkeypatch.setattr(huge_pages, "glibc_version", lambda: (2, 34))
    huge_pages.reexec_with_huge_pages()  # returns


def test_no_second_exec_and_a_failed_exec_runs_on(monkeypatch, no_exec):
    monkeypatch.setattr(huge_pages, "takes_effect", lambda: True)
    monkeypatch.setenv(REEXECUTED, "1")  # glibc may drop the tunable itself (secure mode)
    huge_pages.reexec_with_huge_pages()  # returns
    monkeypatch.delenv(REEXECUTED)

    def fail(*args):
        raise OSError("E2BIG")

    monkeypatch.setattr(os, "execve", fail)
    huge_pages.reexec_with_huge_pages()  # returns


def test_main_never_replaces_the_calling_process(monkeypatch, capsys, no_exec):
    monkeypatch.setattr(huge_pages, "takes_effect", lambda: True)
    monkeypatch.setattr(sys, "argv", ["vjax", "--help"])
    assert cli.main() == 0 and cli.main(["--help"]) == 0
    assert "vjax train" in capsys.readouterr().out


def _run(code: str, env: dict) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
        cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _without_tunable() -> dict:
    return {k: v for k, v in os.environ.items() if k not in (ENV, REEXECUTED)}


@needs_huge_pages
def test_the_command_reexecutes_once_with_the_tunable_and_keeps_a_users_choice():
    """``vjax --help`` as the command (``cli.command()``): the code runs twice in one process
    (the exec keeps the pid), the second time with the tunable; a user's value runs it once."""
    code = (
        "import os, sys; sys.argv = ['vjax', '--help']; print('start', os.getpid());"
        "from vjax import cli; import contextlib, io\n"
        "with contextlib.redirect_stdout(io.StringIO()): cli.command()\n"
        f"print('done', os.getpid(), os.environ.get('{ENV}'))"
    )
    lines = [line.split() for line in _run(code, _without_tunable()).splitlines()]
    pid = lines[0][1]
    assert lines == [["start", pid], ["start", pid], ["done", pid, f"{TUNABLE}=1"]]
    chosen = {**_without_tunable(), ENV: f"{TUNABLE}=0"}
    lines = [line.split() for line in _run(code, chosen).splitlines()]
    assert [line[0] for line in lines] == ["start", "done"] and lines[1][2] == f"{TUNABLE}=0"


@needs_huge_pages
def test_the_tunable_saves_the_page_faults_of_large_allocations():
    """64 MiB malloc'd, written and freed again and again (glibc maps each block afresh, as it
    does XLA:CPU's per-step temporaries; numpy asks for huge pages itself, so plain malloc):
    ~16,000 small-page faults each time without the tunable, a few huge pages with it."""
    code = (
        "import ctypes, resource\n"
        "libc = ctypes.CDLL(None)\n"
        "libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(5):\n"
        "    block = libc.malloc(64 << 20); ctypes.memset(block, 1, 64 << 20); libc.free(block)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)"
    )
    small = float(_run(code, _without_tunable()))
    huge = float(_run(code, {**_without_tunable(), ENV: f"{TUNABLE}=1"}))
    assert small > 8000 and huge < small / 4, (small, huge)
