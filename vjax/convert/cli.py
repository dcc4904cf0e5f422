"""``vjax convert --from=SOURCE --src=FILE_OR_DIR --out=DIR [--arch=NAME] [--config=FILE]``.

``--frame_stride``, ``--fps`` and ``--sampling`` record how the weights' training sampled its
frames where the source does not say (Hugging Face's configs do not: VideoMAE's Kinetics
models took every 4th frame), so that ``vjax predict`` and ``vjax eval`` cut clips as it did.

Each source is a module ``vjax/convert/<source>.py`` with a function
``from_cli(src, arch, config) -> (config, variables)``; the result is written with
:func:`vjax.convert.save_converted`, so ``vjax.load(DIR)`` opens it.
"""

from __future__ import annotations

import importlib
import math
import sys
from collections.abc import Sequence

from vjax.errors import ArgumentParser, non_negative_float, number_in, path_given
from vjax.tasks import head_sizes

SOURCES = ("hf", "scenic", "vit", "torchvision", "pytorchvideo")


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="vjax convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="source", required=True, choices=SOURCES)
    parser.add_argument(
        "--src", type=path_given, required=True, help="checkpoint file or folder to convert"
    )
    parser.add_argument(
        "--out", type=path_given, required=True, help="folder to write (vjax.load opens it)"
    )
    parser.add_argument("--arch", default=None, help="architecture name, where the source needs it")
    parser.add_argument("--config", default=None, help="source model config, where it needs one")
    sampled = parser.add_argument_group(
        "how the weights' frames were sampled, where the source does not say (recorded in the "
        "folder; vjax predict and vjax eval cut clips by it)"
    )
    stride = number_in(0, math.inf, low_open=True, high_open=True)
    sampled.add_argument("--frame_stride", type=stride, help="VideoMAE on Kinetics: 4")
    sampled.add_argument("--fps", type=non_negative_float, help="decoding rate; 0: the file's")
    sampled.add_argument("--sampling", choices=("random", "tsn"), help="tsn: one frame per part")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    from vjax.checkpoint_paths import require_new_output
    from vjax.convert.common import ConversionError, save_converted

    # A source that does not fit, or an --out that holds a model already, raises a UserError
    # (ConversionError, NotFoundError): the `vjax` command prints it as one line, exit code 2.
    require_new_output(args.out, ConversionError)  # before the (slow) conversion
    module = importlib.import_module(f"vjax.convert.{args.source}")
    config, variables = module.from_cli(args.src, args.arch, args.config)
    given = {key: getattr(args, key) for key in ("frame_stride", "fps", "sampling")}
    for key, value in given.items():
        if value is not None:
            if key in config.input:  # the converter's value may be another type (1 -> 2.5)
                del config.input[key]
            config.input[key] = value
    save_converted(args.out, config, variables)
    print(f"wrote {args.out} ({config.model.name}, classes: {head_sizes(config.class_names)}; "
          f"{sampling_words(config.input)})")  # fmt: skip
    if args.source == "hf" and given["frame_stride"] is None and given["sampling"] is None:
        print("Hugging Face's config does not say how the model's frames were sampled: give "
              "--frame_stride (or --sampling=tsn) as it was trained")  # fmt: skip
    return 0


def sampling_words(inputs) -> str:
    """How a converted folder's clips are cut, in words: ``16 frames at stride 4, 30 fps``."""
    frames = f"{inputs.clip[0]} frames"
    if inputs.get("sampling") == "tsn":
        return f"{frames}, one per equal part of the video"
    fps = inputs.get("fps") or 0
    return f"{frames} at stride {inputs.frame_stride:g}" + (f", {fps:g} fps" if fps else "")
