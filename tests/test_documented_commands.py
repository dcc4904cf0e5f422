"""Every command in the README's code blocks and the recipes' docstrings parses as written:
each flag of each verb and launcher exists, and each ``--config.KEY=VALUE`` names a field of
its config and fits the field's type. Nothing runs: a command stops once its arguments are
read (train and eval once their config is loaded and overridden, prepare once its dataset's
fields are), so no dataset is prepared and no file is read. A renamed flag or config field
would otherwise break the README's journey at its first command while every test of the code
itself passes."""

import argparse
import ast
import inspect
import os
import re
import shlex

import pytest
from conftest import REPO

import vjax.checkpoint_paths
import vjax.config_utils
import vjax.data.datasets
import vjax.demo
import vjax.main
from vjax import cli
from vjax.config_utils import DEFAULT_CONFIG, load_config

LAUNCHERS = ("launch/local.py", "launch/slurm.py", "launch/tpu_pod.py")
# The parsers of the training modes: these commands go on to load their config.
TRAINING_PROGS = ("vjax train", "vjax eval", "vjax demo", "python -m vjax.main")


class Parsed(Exception):
    """Raised where a command's arguments have all been read, so that nothing runs."""


def commands_in(text: str, prose: bool = False) -> list[list[str]]:
    """The ``vjax ...``, ``python -m vjax.main ...`` and ``python launch/... -- vjax ...``
    lines of ``text``, continuation lines joined, comments dropped. In ``prose`` (a
    docstring) a line that starts with "vjax" and no verb is a sentence, not a command."""
    commands = []
    for line in text.replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line.startswith(("vjax ", "python ")):
            continue  # output, tables, shell set-up
        if prose and line.startswith("vjax ") and line.split()[1] not in cli._verbs():
            continue
        words = shlex.split(line, comments=True)
        if words[:1] == ["vjax"] or words[:3] == ["python", "-m", "vjax.main"]:
            commands.append(words)
        elif words[:1] == ["python"] and words[1] in LAUNCHERS:
            commands.append(words)
    return commands


def documented_commands() -> list[list[str]]:
    """The commands of the README's plain code blocks and of the recipes' docstrings."""
    with open(os.path.join(REPO, "README.md")) as f:
        # Fenced blocks: ```LANG at the start of a line opens one, the next ``` closes it.
        blocks = re.findall(r"^```(\w*)\n(.*?)^```", f.read(), re.M | re.S)
    commands = [c for lang, block in blocks if not lang for c in commands_in(block)]
    for name in sorted(os.listdir(os.path.join(REPO, "configs"))):
        if name.endswith(".py"):
            with open(os.path.join(REPO, "configs", name)) as f:
                docstring = ast.get_docstring(ast.parse(f.read())) or ""
                commands += commands_in(docstring, prose=True)
    return commands


COMMANDS = documented_commands()


def _run(words: list[str]) -> None:
    """Runs a documented line's ``vjax ...`` or ``python -m vjax.main ...`` in this process."""
    if words[0] == "vjax":
        cli._dispatch(words[1:])
    else:
        vjax.main.run(words[3:])


@pytest.fixture
def stop_once_parsed(monkeypatch):
    """Every verb stops with :class:`Parsed` once its arguments are read; train and eval
    once the config is loaded and the overrides applied (which checks their keys and types)."""
    parse_args = argparse.ArgumentParser.parse_args
    apply_overrides = vjax.config_utils.apply_overrides

    def parse_then_stop(self, args=None, namespace=None):
        parsed = parse_args(self, args, namespace)
        if self.prog not in TRAINING_PROGS:
            raise Parsed(parsed)
        return parsed

    def apply_then_stop(config, overrides):
        apply_overrides(config, overrides)
        raise Parsed(config)

    def demo_stops(*args):
        raise Parsed(args)

    def prepare_stops(fields):
        from vjax.data.datasets import preparer

        known = inspect.signature(preparer(fields["name"])).parameters
        assert set(fields) - {"name", "progress_bar"} <= set(known), fields
        raise Parsed(fields)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    monkeypatch.setattr(vjax.config_utils, "apply_overrides", apply_then_stop)
    monkeypatch.setattr(vjax.demo, "run_demo", demo_stops)
    # `vjax eval` without --config evaluates with the run's own: here no run exists.
    monkeypatch.setattr(vjax.checkpoint_paths, "require_trained", lambda workdir: None)
    monkeypatch.setattr(vjax.main, "trained_config", lambda workdir: load_config(DEFAULT_CONFIG))
    monkeypatch.setattr(vjax.data.datasets, "load_dataset", prepare_stops)
    monkeypatch.chdir(REPO)


def test_the_docs_show_the_commands_this_test_reads():
    verbs = {w[1] for w in COMMANDS if w[0] == "vjax"}
    assert {"train", "eval", "demo", "predict", "export", "quantize", "prune", "bench"} <= verbs
    assert any(w[:3] == ["python", "-m", "vjax.main"] for w in COMMANDS)
    assert {w[1] for w in COMMANDS if w[1] in LAUNCHERS} == set(LAUNCHERS)
    assert len(COMMANDS) >= 30


@pytest.mark.parametrize("words", COMMANDS, ids=[" ".join(w)[:70] for w in COMMANDS])
def test_a_documented_command_parses_as_written(words, stop_once_parsed, capsys):
    if words[1] == "quantize":  # its module imports qwix, the deploy extra's
        pytest.importorskip("qwix", reason="qwix is not installed (pip install -e .[deploy])")
    if words[1] in LAUNCHERS:  # the launcher's flags (its dry run), then the command it runs
        import importlib

        split = words.index("--")
        launcher = importlib.import_module(os.path.basename(words[1])[: -len(".py")])
        with pytest.raises(Parsed):
            launcher.main([*words[2:split], "--dry_run", *words[split:]])
        words = words[split + 1 :]
    with pytest.raises(Parsed):
        _run(words)
    assert "error:" not in capsys.readouterr().err
