"""The ``vjax`` command: ``vjax VERB [flags]``, the same as ``python -m vjax.main --mode=VERB``.

vjax train --config=configs/demo.py:vivit --workdir=runs/vivit --config.optimizer.lr=3e-4
vjax eval  --config=configs/demo.py:vivit --workdir=runs/vivit --split=test
vjax demo  --workdir=runs/demo
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from vjax.main import MODES
from vjax.main import main as run_main


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in MODES:
        print(__doc__.strip())
        print(f"\nverbs: {', '.join(MODES)}")
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    return run_main([f"--mode={argv[0]}", *argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
