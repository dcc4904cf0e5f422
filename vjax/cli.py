"""The ``vjax`` command: ``vjax VERB [flags]``.

vjax train  --config=configs/demo.py:vivit --workdir=runs/vivit --config.optimizer.lr=3e-4
vjax eval   --config=configs/demo.py:vivit --workdir=runs/vivit --split=test
vjax demo   --workdir=runs/demo
vjax parity vivit            # params and GFLOPs next to the published tables
vjax convert --from=SOURCE --src=FILE --out=DIR
vjax prepare video_folder --src=DIR_OR_MANIFEST --data_dir=DIR
vjax predict --model=DIR video.mp4 [more.mp4]
vjax bench data|train|ssl    # input pipeline, train step speed, label efficiency -> BENCHMARKS.md
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from vjax.main import MODES

# Verbs other than the training modes: verb -> "module:function(argv) -> exit code".
COMMANDS = {
    "parity": "vjax.parity:main",
    "convert": "vjax.convert.cli:main",
    "prepare": "vjax.data.prepare:main",
    "predict": "vjax.predict:main",
    "bench": "vjax.bench:main",
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbs = (*MODES, *COMMANDS)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in verbs:
        print(__doc__.strip())
        print(f"\nverbs: {', '.join(verbs)}")
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    if argv[0] in COMMANDS:
        module, function = COMMANDS[argv[0]].split(":")
        return getattr(importlib.import_module(module), function)(argv[1:])
    from vjax.main import main as run_main

    return run_main([f"--mode={argv[0]}", *argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
