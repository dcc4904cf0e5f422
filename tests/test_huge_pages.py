"""vjax/huge_pages.py: the ``vjax`` command re-executes itself once with glibc's huge-page
tunable; the tunable makes XLA:CPU's per-step temporaries fault in a few huge pages instead of
thousands of small ones; a user's own choice and a caller's in-process ``main(argv)`` are left
alone."""

import os
import subprocess
import sys

import pytest

from vjax import cli, huge_pages
from vjax.huge_pages import ENV, TUNABLE, with_huge_pages

TAKES_EFFECT = (huge_pages.glibc_version() or (0, 0)) >= huge_pages.MIN_GLIBC and (
    huge_pages.huge_pages_available()
)
needs_huge_pages = pytest.mark.skipif(
    not TAKES_EFFECT, reason="needs glibc >= 2.35 and transparent huge pages not 'never'"
)


def test_the_tunable_joins_the_users_others_and_never_overrides_a_choice():
    assert with_huge_pages({"PATH": "/bin"}) == {"PATH": "/bin", ENV: f"{TUNABLE}=1"}
    other = {ENV: "glibc.malloc.arena_max=2"}
    assert with_huge_pages(other)[ENV] == f"glibc.malloc.arena_max=2:{TUNABLE}=1"
    assert with_huge_pages({ENV: f"glibc.malloc.arena_max=2:{TUNABLE}=0"}) is None
    assert with_huge_pages({ENV: f"{TUNABLE}=1"}) is None


def test_a_kernel_without_huge_pages_gets_no_reexec(tmp_path, monkeypatch):
    setting = tmp_path / "enabled"
    setting.write_text("always madvise [never]\n")
    assert not huge_pages.huge_pages_available(str(setting))
    setting.write_text("always [madvise] never\n")
    assert huge_pages.huge_pages_available(str(setting))
    assert not huge_pages.huge_pages_available(str(tmp_path / "missing"))
    monkeypatch.setattr(huge_pages, "huge_pages_available", lambda: False)
    monkeypatch.setattr(os, "execve", lambda *a: pytest.fail("re-executed"))
    monkeypatch.delenv(ENV, raising=False)
    huge_pages.reexec_with_huge_pages()  # returns


def test_main_with_arguments_never_replaces_the_calling_process(monkeypatch, capsys):
    monkeypatch.setattr(os, "execve", lambda *a: pytest.fail("re-executed"))
    monkeypatch.delenv(ENV, raising=False)
    assert cli.main(["--help"]) == 0
    assert "vjax train" in capsys.readouterr().out


def _run(code: str, env: dict) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@needs_huge_pages
def test_the_command_reexecutes_once_with_the_tunable_and_keeps_a_users_choice():
    """``vjax --help`` as a command (``cli.main()``): the code runs twice in one process (the
    exec keeps the pid), the second time with the tunable; a user's value runs it once."""
    code = (
        "import os, sys; sys.argv = ['vjax', '--help']; print('start', os.getpid());"
        "from vjax import cli; import contextlib, io\n"
        "with contextlib.redirect_stdout(io.StringIO()): cli.main()\n"
        f"print('done', os.getpid(), os.environ.get('{ENV}'))"
    )
    env = {k: v for k, v in os.environ.items() if k != ENV}
    lines = [line.split() for line in _run(code, env).splitlines()]
    pid = lines[0][1]
    assert lines == [["start", pid], ["start", pid], ["done", pid, f"{TUNABLE}=1"]]
    lines = [line.split() for line in _run(code, {**env, ENV: f"{TUNABLE}=0"}).splitlines()]
    assert [line[0] for line in lines] == ["start", "done"] and lines[1][2] == f"{TUNABLE}=0"


@needs_huge_pages
def test_the_tunable_saves_the_page_faults_of_xla_temporaries():
    """A jitted function with 64 MiB of temporaries, called repeatedly: without the tunable
    each call faults in its ~16,000 small pages again; with it, a few huge ones."""
    code = (
        "import resource, jax, jax.numpy as jnp\n"
        "f = jax.jit(lambda x: (jnp.sin(x)[::-1] * jnp.cos(x)).sum())\n"
        "x = jnp.ones((8 * 2**20,), jnp.float32)\n"
        "for _ in range(3): f(x).block_until_ready()\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(5): f(x).block_until_ready()\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)"
    )
    env = {k: v for k, v in os.environ.items() if k != ENV}
    small = float(_run(code, env))
    huge = float(_run(code, {**env, ENV: f"{TUNABLE}=1"}))
    assert small > 8000 and huge < small / 10, (small, huge)
