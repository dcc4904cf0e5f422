"""``vjax convert --from=SOURCE --src=FILE_OR_DIR --out=DIR [--arch=NAME] [--config=FILE]``.

Each source is a module ``vjax/convert/<source>.py`` with a function
``from_cli(src, arch, config) -> (config, variables)``; the result is written with
:func:`vjax.convert.save_converted`, so ``vjax.load(DIR)`` opens it.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from vjax.errors import ArgumentParser
from vjax.tasks import head_sizes

SOURCES = ("hf", "scenic", "vit", "torchvision", "pytorchvideo")


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="vjax convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="source", required=True, choices=SOURCES)
    parser.add_argument("--src", required=True, help="checkpoint file or folder to convert")
    parser.add_argument("--out", required=True, help="folder to write (vjax.load opens it)")
    parser.add_argument("--arch", default=None, help="architecture name, where the source needs it")
    parser.add_argument("--config", default=None, help="source model config, where it needs one")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    from vjax.checkpoint_paths import require_new_output
    from vjax.convert.common import ConversionError, save_converted

    # A source that does not fit, or an --out that holds a model already, raises a UserError
    # (ConversionError, NotFoundError): the `vjax` command prints it as one line, exit code 2.
    require_new_output(args.out, ConversionError)  # before the (slow) conversion
    module = importlib.import_module(f"vjax.convert.{args.source}")
    config, variables = module.from_cli(args.src, args.arch, args.config)
    save_converted(args.out, config, variables)
    print(f"wrote {args.out} ({config.model.name}, classes: {head_sizes(config.class_names)})")
    return 0
