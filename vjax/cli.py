"""The ``vjax`` command: ``vjax VERB [flags]``.

vjax train  --config=configs/demo.py:vivit --workdir=runs/vivit --config.optimizer.lr=3e-4
vjax eval   --workdir=runs/vivit --split=test   # with the config it trained with
vjax probe  --config=configs/videomae.py:finetune_motion --workdir=runs/mae  # linear probe
vjax demo   --workdir=runs/demo
vjax parity vivit            # params and GFLOPs next to the published tables
vjax convert --from=SOURCE --src=FILE --out=DIR
vjax prepare video_folder --src=DIR_OR_MANIFEST --data_dir=DIR
vjax predict --model=DIR video.mp4 [more.mp4]   # DIR: a checkpoint or an exported folder
vjax export --model=DIR --out=DIR --format=stablehlo,onnx,savedmodel,tflite
vjax quantize --model=DIR --out=DIR --mode=int8_weights|int8
vjax prune --model=DIR --out=DIR --ratio=0.5 --by=magnitude|taylor  # a smaller dense model
vjax compare RUN_A RUN_B     # two evaluations side by side: per-class deltas, printed and plotted
vjax bench data|train|infer|ssl|distill|prune  # input pipeline, train step, inference
                                 # speed, label efficiency of pre-training, distillation,
                                 # pruning -> BENCHMARKS.md
vjax VERB --import=mine.py ...   # any verb: run a file that registers your own model or
                                 # objective first (train, eval and probe run --config's)
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from vjax.errors import DEBUG_FLAG, UserError, run_guarded, sigterm_unwinds
from vjax.huge_pages import reexec_with_huge_pages
from vjax.main import MODES
from vjax.suggest import closest_hint

# Verbs other than the training modes: verb -> "module:function(argv) -> exit code". Every verb
# runs under the one error boundary (vjax.errors.run_guarded): a UserError is one line, exit 2.
COMMANDS = {
    "parity": "vjax.parity:main",
    "convert": "vjax.convert.cli:main",
    "prepare": "vjax.data.prepare:main",
    "predict": "vjax.predict:main",
    "bench": "vjax.bench:main",
    "export": "vjax.deploy.export:main",
    "quantize": "vjax.deploy.quantize:main",
    "prune": "vjax.pruning:main",
    "compare": "vjax.evaluate.compare:main",
}


def _verbs() -> tuple[str, ...]:
    return (*MODES, *COMMANDS)


IMPORT_FLAG = "--import"


def _split_imports(argv: list[str]) -> tuple[list[str], list[str]]:
    """``(files, rest)``: the files of ``argv``'s ``--import=FILE`` (or ``--import FILE``)
    flags, and the other arguments."""
    files, rest, args = [], [], iter(argv)
    for arg in args:
        if arg.startswith(f"{IMPORT_FLAG}="):
            files.append(arg.partition("=")[2])
        elif arg == IMPORT_FLAG:
            files.append(next(args, ""))
        else:
            rest.append(arg)
    return files, rest


def _imported(argv: list[str]) -> list[str]:
    """``argv`` without its ``--import`` flags, each file run first, so that a model or
    objective it registers is known to any verb (predict, export, quantize, prune take no
    ``--config``)."""
    files, rest = _split_imports(argv)
    if files:
        from vjax.config_utils import users_module

        for file in files:
            users_module(file, f"{IMPORT_FLAG}={file}")
    return rest


def _dispatch(argv: list[str]) -> int:
    argv = _imported(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        print(f"\nverbs: {', '.join(_verbs())}  (vjax VERB --help for one; {DEBUG_FLAG} shows "
              f"the traceback of an error)")  # fmt: skip
        return 0
    verb = argv[0]
    if verb not in _verbs():
        hint = closest_hint(verb, _verbs())
        raise UserError(f"unknown verb {verb!r}{hint} (vjax --help lists them)")
    if verb in COMMANDS:
        module, function = COMMANDS[verb].split(":")
        with sigterm_unwinds():  # training has its own (it saves first)
            return getattr(importlib.import_module(module), function)(argv[1:])
    from vjax.main import run

    return run(argv[1:], mode=verb)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``vjax ARGV`` (default: this process's arguments) in this process."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verb = next((a for a in _split_imports(argv)[1] if a != DEBUG_FLAG), "")
    return run_guarded(_dispatch, argv, f"vjax {verb}" if verb in _verbs() else "vjax")


def command() -> int:
    """The ``vjax`` command: first re-executed with glibc's huge pages where they take effect
    (XLA:CPU's per-step temporaries fault in far fewer pages: :mod:`vjax.huge_pages`), then
    :func:`main`. Only the command does this; a caller's own process is never replaced."""
    reexec_with_huge_pages()
    return main()


if __name__ == "__main__":
    sys.exit(command())
