"""``vjax bench KIND [flags]``: the benchmarks, each printing a table and writing its own
section of ``BENCHMARKS.md`` (other sections are kept).

    vjax bench data     # input pipeline: decoded + augmented frames/s vs plain PyAV
    vjax bench train    # train step: clips/s, TFLOP/s, MFU, memory, compile time per model
    vjax bench infer    # inference latency/throughput per form (float, bf16, int8, exports)
                        # beside PyTorch (torchvision, transformers)
    vjax bench ssl      # label efficiency: VideoMAE pre-training vs from scratch, 10% labels
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

KINDS = {
    "data": "vjax.bench_data",
    "train": "vjax.bench_train",
    "infer": "vjax.bench_infer",
    "ssl": "vjax.bench_ssl",
}


def update_benchmarks(path: str, section: str, body: str) -> None:
    """Replaces (or appends) the ``## section`` of a Markdown file, keeping all others."""
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    header = f"## {section}"
    lines = text.splitlines()
    if header in lines:
        start = lines.index(header)
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), None)
        rest = lines[end:] if end is not None else []
        lines = lines[:start] + [header, "", *body.splitlines(), ""] + rest
    else:
        lines = [*lines, "", header, "", *body.splitlines()]
    with open(path, "w") as f:
        f.write("\n".join(lines).rstrip("\n") + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in KINDS:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    return importlib.import_module(KINDS[argv[0]]).main(argv[1:])
